import CarillonAuth
import CarillonOrdering
import CarillonRuntime
import CarillonTransport
import Dispatch
import Glibc
import Synchronization
import Testing

/// Free UDP ports on 127.0.0.1, found by binding port 0 (the ports are released
/// again, so another process could take one first: the tests bind them
/// immediately after).
func freeLoopbackPorts(_ count: Int) throws -> [UDPEndpoint] {
    var sockets: [UDPTransport] = []
    for _ in 0..<count {
        sockets.append(try UDPTransport(options: UDPTransportOptions(bind: UDPEndpoint("127.0.0.1:0")!, peers: [])))
    }
    return sockets.map(\.localEndpoint)
}

let testKey = try! FrameAuthenticator(hexKey: String(repeating: "5a", count: 32))

/// Collects one member's deliveries and signals when it has `target` of them.
final class DeliveryLog: @unchecked Sendable {
    let entries = Mutex<[MessageKey]>([])
    let done = DispatchSemaphore(value: 0)
    /// Signalled once `milestone` deliveries have been made.
    let reachedMilestone = DispatchSemaphore(value: 0)
    let target: Int
    let milestone: Int
    init(target: Int, milestone: Int = -1) {
        self.target = target
        self.milestone = milestone
    }

    struct MessageKey: Hashable, Sendable { var sender: Int; var sequence: UInt64; var payload: [UInt8] }

    func record(_ delivery: OrderingEffects.Delivery, _ payload: UnsafeRawBufferPointer) {
        let count = entries.withLock {
            $0.append(MessageKey(sender: delivery.sender, sequence: delivery.sequence, payload: Array(payload)))
            return $0.count
        }
        if count == milestone { reachedMilestone.signal() }
        if count == target { done.signal() }
    }
}

@Suite("Loopback cluster (real UDP sockets, one process)", .serialized)
struct LoopbackClusterTests {
    /// Three members on 127.0.0.1, idle strategy `blocking` (three agents share
    /// two cores). Each broadcasts `perMember` messages; every member must
    /// deliver all of them in one identical order.
    func runCluster(loss: LossInjection?, perMember: Int, sharedThread: Bool = false) throws -> ([[DeliveryLog.MessageKey]], [StopReport]) {
        let endpoints = try freeLoopbackPorts(3)
        let start = MemberClock.viewNanos()
        let logs = (0..<3).map { _ in DeliveryLog(target: 3 * perMember) }
        var members: [Member] = []
        for rank in 0..<3 {
            var configuration = try MemberConfiguration(
                node: rank, nodes: endpoints, roundPeriodNanos: 200_000, startNanos: start,
                authentication: .clusterKey(testKey))
            configuration.idleStrategy = .blocking
            configuration.tolerateSlowAgents()
            configuration.lossInjection = loss.map { LossInjection(rate: $0.rate, meanBurst: $0.meanBurst, seed: $0.seed &+ UInt64(rank)) }
            let log = logs[rank]
            members.append(try Member(configuration: configuration) { log.record($0, $1) })
        }
        let shared = sharedThread ? SharedAgent(members: members, idleStrategy: .blocking) : nil
        if let shared { try shared.start() } else { for member in members { try member.start() } }
        for index in 0..<perMember {
            for (rank, member) in members.enumerated() {
                var payload = Array("m\(rank)-\(index)".utf8)
                payload.append(contentsOf: repeatElement(UInt8(index & 0xFF), count: index % 50))
                while case .sendBufferFull = member.broadcast(payload) { sched_yield() }
            }
        }
        // A bounded wait on the event "all delivered", never a sleep for correctness.
        let deadline = DispatchTime.now() + .seconds(30)
        let finished = logs.map { $0.done.wait(timeout: deadline) == .success }
        let reports = shared?.stop() ?? members.map { $0.stop() }
        #expect(finished.allSatisfy { $0 }, "deliveries: \(logs.map { $0.entries.withLock(\.count) }) of \(3 * perMember); \(reports)")
        return (logs.map { $0.entries.withLock { $0 } }, reports)
    }

    @Test func threeMembersDeliverOneOrder() throws {
        let (sequences, reports) = try runCluster(loss: nil, perMember: 300)
        #expect(sequences[0].count == 900)
        #expect(sequences[1] == sequences[0])
        #expect(sequences[2] == sequences[0])
        for sender in 0..<3 {
            #expect(sequences[0].filter { $0.sender == sender }.map(\.sequence) == Array(1...300))
        }
        #expect(reports.allSatisfy { $0.unsentMessages == 0 })
        // One host, one clock: whatever correction the members applied is tiny.
        #expect(reports.allSatisfy { abs($0.runtime.clockCorrectionNanos) < 500_000 }, "\(reports.map(\.runtime))")
        #expect(reports.allSatisfy { $0.transport.datagramsSent > 0 && $0.transport.datagramsReceived > 0 })
    }

    /// The same cluster with all three members' duty cycles on one shared thread.
    @Test func threeMembersOnOneSharedThread() throws {
        let (sequences, reports) = try runCluster(loss: LossInjection(rate: 0.05, meanBurst: 1, seed: 3), perMember: 200, sharedThread: true)
        #expect(sequences[0].count == 600)
        #expect(sequences[1] == sequences[0])
        #expect(sequences[2] == sequences[0])
        #expect(reports.allSatisfy { $0.ordering.slotFramesSent > 0 })
    }

    @Test func fivePercentInjectedLossIsRepaired() throws {
        let (sequences, reports) = try runCluster(loss: LossInjection(rate: 0.05, meanBurst: 2, seed: 42), perMember: 300)
        #expect(sequences[0].count == 900)
        #expect(sequences[1] == sequences[0])
        #expect(sequences[2] == sequences[0])
        var dropped = 0, naks = 0, repaired = 0
        for report in reports {
            dropped += report.transport.datagramsDroppedByInjection
            naks += report.ordering.naksSent
            repaired += report.ordering.framesRetransmitted + report.ordering.silentRangesSent
        }
        #expect(dropped > 0)
        #expect(naks > 0)
        #expect(repaired > 0)
    }
}

@Suite("UDP transport")
struct UDPTransportTests {
    @Test func endpointsParseAndPrint() {
        #expect(UDPEndpoint("10.1.2.3:7000")?.description == "10.1.2.3:7000")
        #expect(UDPEndpoint("239.1.2.3:7000")?.isMulticast == true)
        #expect(UDPEndpoint("10.1.2.3") == nil)
        #expect(UDPEndpoint("10.1.2:7000") == nil)
        #expect(UDPEndpoint("10.1.2.3:70000") == nil)
    }

    @Test func bindingATakenPortIsATypedError() throws {
        let first = try UDPTransport(options: UDPTransportOptions(bind: UDPEndpoint("127.0.0.1:0")!, peers: []))
        var options = UDPTransportOptions(bind: first.localEndpoint, peers: [])
        options.socketBufferBytes = 1 << 16
        // Two unicast members must never share a port: the second bind fails with EADDRINUSE.
        let error = #expect(throws: SystemCallError.self) { _ = try UDPTransport(options: options) }
        #expect(error?.errno == EADDRINUSE)
        #expect(error?.description.contains("bind(127.0.0.1:") == true)
    }

    @Test func fanOutAndBatchedReceiveWithKernelTimestamps() throws {
        let a = try UDPTransport(options: UDPTransportOptions(bind: UDPEndpoint("127.0.0.1:0")!, peers: []))
        let b = try UDPTransport(options: UDPTransportOptions(bind: UDPEndpoint("127.0.0.1:0")!, peers: []))
        let sender = try UDPTransport(options: UDPTransportOptions(bind: UDPEndpoint("127.0.0.1:0")!, peers: [a.localEndpoint, b.localEndpoint]))
        for i in 0..<10 { try [UInt8](repeating: UInt8(i), count: 100).withUnsafeBytes { try sender.sendToAll($0) } }
        #expect(sender.counters.datagramsSent == 20)
        for receiver in [a, b] {
            var got: [UInt8] = []
            var stamped = 0
            // Loopback delivery is synchronous with sendmmsg: everything is already queued.
            while got.count < 10 {
                let n = try receiver.receiveBatch { bytes, info in
                    got.append(bytes[0])
                    if info.kernelTimestampNanos != nil { stamped += 1 }
                    #expect(info.source == sender.localEndpoint)
                }
                if n == 0 { break }
            }
            #expect(got == Array(0..<10))
            #expect(stamped == 10)
        }
    }

    @Test func lossInjectionDropsAboutTheRateAndIsSeeded() {
        var first = LossInjectorProbe(LossInjection(rate: 0.05, meanBurst: 3, seed: 7))
        var second = LossInjectorProbe(LossInjection(rate: 0.05, meanBurst: 3, seed: 7))
        let a = (0..<100_000).map { _ in first.drop() }
        let b = (0..<100_000).map { _ in second.drop() }
        #expect(a == b)
        let rate = Double(a.filter { $0 }.count) / 100_000
        #expect(rate > 0.035 && rate < 0.065, "rate \(rate)")
    }
}

@Suite("Async deliveries", .serialized)
struct AsyncDeliveryTests {
    @Test func deliveriesArriveAsAnAsyncSequenceInOrder() async throws {
        let endpoints = try freeLoopbackPorts(2)
        let start = MemberClock.viewNanos()
        var pairs: [(Member, AsyncStream<DeliveredMessage>)] = []
        for rank in 0..<2 {
            var configuration = try MemberConfiguration(
                node: rank, nodes: endpoints, roundPeriodNanos: 200_000, startNanos: start,
                authentication: .clusterKey(testKey))
            configuration.idleStrategy = .blocking
            configuration.tolerateSlowAgents()
            pairs.append(try Member.withDeliveryStream(configuration: configuration))
        }
        for (member, _) in pairs { try member.start() }
        for i in 0..<50 { _ = try await pairs[i % 2].0.broadcast(waitingFor: Array("a\(i)".utf8)) }
        // Bounded: if deliveries stall, stopping the members ends the streams and the expectations fail.
        let members = pairs.map(\.0)
        let watchdog = Task {
            try await Task.sleep(nanoseconds: 30_000_000_000)  // watchdog timeout, not a wait for correctness
            for member in members { member.stop() }
        }
        defer { watchdog.cancel() }
        var orders: [[String]] = []
        for (_, stream) in pairs {
            var order: [String] = []
            for await message in stream {
                order.append(String(decoding: message.payload, as: UTF8.self))
                if order.count == 50 { break }
            }
            orders.append(order)
        }
        for (member, _) in pairs { member.stop() }
        #expect(orders[0].count == 50)
        #expect(orders[0] == orders[1])
        #expect(Set(orders[0]) == Set((0..<50).map { "a\($0)" }))
    }
}

extension MemberConfiguration {
    /// These tests check ordering over real sockets in a debug build, where
    /// agents sharing 2 cores miss many slots; a false suspicion would start a
    /// view change and renumber sequences. Suspect only after 100 ms (1 s for
    /// a member never heard). Failure detection and view changes are tested in
    /// FailureDetectionTests, CarillonMembershipTests and NamespaceFaultTests.
    mutating func tolerateSlowAgents() {
        ordering.suspicionSlots = 500
        ordering.unheardSuspicionSlots = 5_000
    }
}
