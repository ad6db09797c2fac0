import CarillonClient
import CarillonMembership
import CarillonRuntime
@testable import CarillonServiceNode
import CarillonServices
import Foundation
import Synchronization
import Testing

/// A session opened under an earlier incarnation of its member: the member
/// was left out of a view and rejoined while a client connected (a CI run's
/// migration test hung so, for 78 minutes, on `carillon obj where`: every
/// member refused the session's commands as another member's, and the node
/// sent them again for ever). Three members on loopback UDP, idle strategy
/// blocking; every wait bounded.
@Suite("Sessions keep to their member's identity (loopback UDP)", .serialized)
struct SessionIdentityTests {
    let helper = LoopbackServicesTests()

    func earlierIncarnation(of node: ServiceNode) -> MemberID {
        let me = node.currentMember()
        return MemberID(node: me.node, incarnation: me.incarnation - 1)
    }

    @Test func aSessionThatNeverSentTakesTheNewIdentityAndIsAnswered() async throws {
        let cluster = try LoopbackServicesTests.Cluster()
        defer { cluster.stop() }
        try await helper.waitUntil { cluster.services.allSatisfy(\.inPrimary) }
        let node = cluster.services[0]
        let stale = node.openSession(sink: ServiceNode.SessionSink(), as: earlierIncarnation(of: node))
        let total = try await helper.bounded { try await stale.add("n", 1) }
        #expect(total == 1)
        #expect(node.status.counters.foreignSessions == 0)
        // Every member applied it, under the member's identity now.
        let other = cluster.services[1].openSession()
        #expect(try await helper.bounded { try await other.add("n", 0) } == 1)
    }

    @Test func aSessionThatSentUnderTheOldIdentityEndsWithOutcomeUnknown() async throws {
        let cluster = try LoopbackServicesTests.Cluster()
        defer { cluster.stop() }
        try await helper.waitUntil { cluster.services.allSatisfy(\.inPrimary) }
        let node = cluster.services[0]
        let ends = Mutex<[ServiceStatus]>([])
        let stale = node.openSession(
            sink: ServiceNode.SessionSink(onEnd: { status in ends.withLock { $0.append(status) } }), as: earlierIncarnation(of: node))
        // As if a command had gone out under the old incarnation before it was left out.
        node.core.withLock { $0.sessions[stale.client]!.sentOnce = true }
        let outcome = try await helper.bounded { () -> ServiceStatus? in
            do {
                _ = try await stale.add("n", 1)
                return nil
            } catch let error as ServiceCallError {
                return error.status
            }
        }
        #expect(outcome == .outcomeUnknown)
        #expect(ends.withLock { $0 } == [.outcomeUnknown])
        // Nothing of it was applied; a new session works.
        let fresh = node.openSession()
        #expect(try await helper.bounded { try await fresh.add("n", 0) } == 0)
    }
}
