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

    /// `me` is read before the lock: a caller that stalled across a rejoin
    /// holds an older identity than the sessions, and must leave them be.
    @Test func anOlderIdentityLeavesNewerSessionsAlone() {
        let node = ServiceNode()
        let answers = Mutex<[ServiceStatus]>([])
        let session = node.openSession(sink: ServiceNode.SessionSink(), as: MemberID(node: 0, incarnation: 5))
        node.core.withLock { core in
            core.sessions[session.client]!.sentOnce = true
            core.sessions[session.client]!.pending[1] = ServiceNode.Pending(
                service: 1, body: [], consistency: .agreed, submittedNanos: 0,
                callback: { r in answers.withLock { $0.append(r.status) } })
        }
        node.settleIdentities(me: MemberID(node: 0, incarnation: 4))
        #expect(node.core.withLock { $0.sessions[session.client]?.id.member.incarnation } == 5)
        #expect(answers.withLock { $0 }.isEmpty)
        node.settleIdentities(me: MemberID(node: 0, incarnation: 6))
        #expect(node.core.withLock { $0.sessions[session.client] } == nil)
        #expect(answers.withLock { $0 } == [.outcomeUnknown])
    }

    /// A `safe` answer held for stability when the member is left out (or the
    /// node stops) is answered, never dropped: an in-process caller would
    /// otherwise wait for ever.
    @Test func answersHeldForStabilityAreAnsweredWhenTheMemberIsLeftOutOrStops() {
        for leftOut in [true, false] {
            let node = ServiceNode()
            let answers = Mutex<[ServiceStatus]>([])
            node.core.withLock { core in
                core.safeHeld.append(
                    ServiceNode.Held(
                        session: 1, requestID: 1, response: ServiceResponse(status: .ok),
                        callback: { r in answers.withLock { $0.append(r.status) } }))
            }
            if leftOut {
                node.endAllSessions(.outcomeUnknown)
            } else {
                node.running.store(true, ordering: .relaxed)
                node.stop()
            }
            #expect(answers.withLock { $0 } == [leftOut ? .outcomeUnknown : .sessionEnded])
            #expect(node.core.withLock { $0.safeHeld.isEmpty })
        }
    }

    /// A joiner waiting for its services state that never comes (its donor
    /// died, or the state could not be taken) serves nothing: its callers
    /// hear noPrimary after the same wait as without a primary component.
    @Test func aJoinerWhoseStateNeverComesAnswersNoPrimary() async throws {
        let cluster = try LoopbackServicesTests.Cluster()
        defer { cluster.stop() }
        try await helper.waitUntil { cluster.services.allSatisfy(\.inPrimary) }
        let node = cluster.services[1]
        let answers = Mutex<[ServiceStatus]>([])
        let session = node.openSession()
        let base = monotonicNanos()
        node.core.withLock { core in
            // As a joiner between its manifest and a state that does not come.
            core.awaiting = (core.host.view!, StateManifest(epoch: core.host.view!.epoch + 1, donorNode: 0))
            core.sessions[session.client]!.pending[1] = ServiceNode.Pending(
                service: 1, body: [], consistency: .agreed, submittedNanos: base,
                callback: { r in answers.withLock { $0.append(r.status) } })
        }
        node.tick(now: base)
        #expect(answers.withLock { $0 }.isEmpty)
        node.tick(now: base + 2 * node.options.noPrimaryWaitNanos)
        #expect(answers.withLock { $0 } == [.noPrimary])
    }
}

/// A member that rejoined and still waits for its own services state is
/// asked, at the next view change, to donate to new joiners (a fresh-clone CI
/// run: five nodes churning at start, node 0 donated while catching up, sent
/// a stale state, and the joiners never served).
@Suite struct DonorCatchingUpTests {
    @Test func aDonorStillCatchingUpAnnouncesByEpochAndSendsTheStateAtThatInstallation() throws {
        let node = ServiceNode()
        let me = MemberID(node: 2, incarnation: 7)
        let joinedView = View(epoch: 5, members: [MemberID(node: 0, incarnation: 1), MemberID(node: 1, incarnation: 1), me], startRound: 100)
        let joiner = MemberID(node: 3, incarnation: 9)
        // Node 0 left: this member is now the first of the new view that was in the old one.
        let nextView = View(epoch: 6, members: [me, MemberID(node: 1, incarnation: 1), joiner], startRound: 200)
        let (bytes, sendNow, _) = node.core.withLock { core in
            core.awaiting = (joinedView, StateManifest(epoch: 5, donorNode: 0))
            core.deferred = [.view(.installed(nextView, joined: [joiner]))]
            return ServiceNode.stateToProvide(&core, me: me, hasBulk: true)
        }
        // Nothing to send yet (its host is not at this cut), and the manifest
        // is the one every donor writes for epoch 6.
        #expect(sendNow == nil)
        let manifest = try #require(StateManifest.decode(bytes))
        #expect(manifest == StateManifest(epoch: 6, donorNode: 2))
        // Its own state arrives: the held events are applied, and at the
        // installation of epoch 6 the state is taken and queued for the joiner.
        var restored = node.core.withLock { $0.blankHost }
        restored.begin(in: joinedView)
        let out = node.core.withLock { core -> ServiceNode.Outgoing in
            var out = ServiceNode.Outgoing()
            node.install(restored, core: &core, stability: nil, out: &out)
            return out
        }
        #expect(out.donations.map(\.1) == [[joiner]])
        node.hand(out)  // outside the lock, as every caller does
        #expect(node.background.waitUntilIdle(deadline: .now() + 30))
        let sends = node.core.withLock { $0.stateSends }
        #expect(sends.map(\.0) == [3])
        let send = try #require(sends.first)
        let state = try #require(StateManifest.state(fromTransfer: send.1))
        var received = node.core.withLock { $0.blankHost }
        let failure: ServiceStateError? = state.withUnsafeBytes { b in
            do throws(ServiceStateError) {
                try received.restore(b)
                return nil
            } catch { return error }
        }
        #expect(failure == nil)
        #expect(received.view?.epoch == 6)
        #expect(manifest.announces(received))
        // A stale state (the one this member had before catching up) is not the one announced.
        #expect(!manifest.announces(restored))
    }
}

/// A join whose state transfer finished in the same duty cycle as the
/// exclusion that followed it is handed over when the incarnation has
/// already moved on: the holding took the new identity then, the exclusion
/// ended the member's own session 0, and the next join (same identity) must
/// still give it one — else every commit of a migration to this member is
/// dropped before it is sent (a netns-migration run: two migrations to a
/// rejoined h2 aborted at their 90 s deadline).
@Suite struct MemberSessionAcrossRejoinTests {
    @Test func aJoinGivesTheMemberItsOwnSessionEvenWhenTheHoldingAlreadyHasItsIdentity() {
        let node = ServiceNode()
        let me = node.currentMember()
        node.core.withLock { core in
            core.holding = ObjectHolding(me: me)
            core.sessions = [:]  // as the exclusion left them
        }
        node.viewEvent(.stateReceived(View(epoch: 5, members: [me], startRound: 1), state: StateManifest(epoch: 5, donorNode: 1).encoded))
        #expect(node.core.withLock { $0.sessions[OwnedObjectService.memberClient]?.id.member } == me)
        #expect(node.core.withLock { $0.holding?.me } == me)
    }
}
