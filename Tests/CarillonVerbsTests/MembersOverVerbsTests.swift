import CarillonOrdering
import CarillonRuntime
import CarillonTransport
import CarillonVerbs
import Dispatch
import Glibc
import Synchronization
import Testing

/// The runtime over the seam: real `Member`s whose frames go through
/// `VerbsTransport` (a polled transport, no descriptor) on the fake fabric.
@Suite("Members over the verbs transport (fake fabric)", .serialized)
struct MembersOverVerbsTests {
    final class Log: @unchecked Sendable {
        let entries = Mutex<[[UInt8]]>([])
        let done = DispatchSemaphore(value: 0)
        let target: Int
        init(target: Int) { self.target = target }
        func record(_ payload: UnsafeRawBufferPointer) {
            if entries.withLock({
                $0.append(Array(payload)); return $0.count
            }) == target {
                done.signal()
            }
        }
    }

    @Test func threeMembersDeliverOneOrderOverAPolledTransport() throws {
        let fabric = FakeFabric()
        let perMember = 50
        // Idle strategy `blocking`: three agents share two cores; a parked agent wakes every poll interval.
        let transports = try fakeCluster(3, fabric: fabric, maxFrameBytes: 1472, sendBuffers: 64, receiveBuffers: 256)
        let start = MemberClock.viewNanos()
        let logs = (0..<3).map { _ in Log(target: 3 * perMember) }
        var members: [Member] = []
        for rank in 0..<3 {
            var configuration = try MemberConfiguration(
                node: rank, nodes: transports[0].options.rendezvous, roundPeriodNanos: 200_000, startNanos: start, authentication: .off)
            configuration.idleStrategy = .blocking
            // Three agents on two cores: suspicion as patient as the loopback tests'.
            configuration.ordering.suspicionSlots = 500
            configuration.ordering.unheardSuspicionSlots = 5_000
            let log = logs[rank]
            members.append(try Member(configuration: configuration, transport: transports[rank]) { _, payload in log.record(payload) })
        }
        #expect(members[0].transportSummary.hasPrefix("rdma ud"))
        for member in members { try member.start() }
        for index in 0..<perMember {
            for (rank, member) in members.enumerated() {
                while case .sendBufferFull = member.broadcast(Array("m\(rank)-\(index)".utf8)) { sched_yield() }
            }
        }
        let deadline = DispatchTime.now() + .seconds(30)
        let finished = logs.map { $0.done.wait(timeout: deadline) == .success }
        for member in members { member.stop() }
        #expect(finished == [true, true, true])
        let orders = logs.map { $0.entries.withLock { $0 } }
        #expect(orders[0].count == 3 * perMember)
        #expect(orders[1] == orders[0] && orders[2] == orders[0])
        #expect(fabric.counts.unregisteredAccesses == 0)
    }

    @Test func aTransportThatDoesNotMatchTheConfigurationIsRefused() throws {
        let transports = try fakeCluster(2, fabric: FakeFabric())
        let configuration = try MemberConfiguration(
            node: 0, nodes: transports[0].options.rendezvous, startNanos: MemberClock.viewNanos(), authentication: .off)
        #expect(throws: MemberConfigurationError.self) { _ = try Member(configuration: configuration, transport: transports[1]) { _, _ in } }
    }
}
