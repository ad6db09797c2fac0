import CarillonAuth
import CarillonBulk
import CarillonRuntime
import CarillonSchedule
import CarillonTransport
import Dispatch
import Glibc
import Logging
import Synchronization
import Testing

/// The run the tests' channels belong to, and the key their datagrams are sealed with.
let bulkTestRun: UInt64 = 0xC0FF_EE00_1234_5678
let bulkTestKey = testKey.subkey(for: "bulk", run: bulkTestRun)

/// The bulk channel on real loopback sockets: two channels in this process,
/// each with its own thread and socket; idle strategy: the channel blocks in
/// ppoll until a datagram arrives or the pacer's next start.
@Suite struct BulkChannelTests {
    /// Two free loopback ports.
    func endpoints() throws -> [UDPEndpoint] {
        let holders = try (0..<2).map { _ in try UDPTransport(options: UDPTransportOptions(bind: UDPEndpoint("127.0.0.1:0")!, peers: [])) }
        return holders.map(\.localEndpoint)
    }

    final class Received: @unchecked Sendable {
        let transfers = Mutex<[(Int, UInt64, [UInt8])]>([])
        let arrived = DispatchSemaphore(value: 0)
    }

    /// Channel `node`, of incarnation `incarnations[node]`, addressing the others at theirs.
    func channel(
        _ node: Int, _ nodes: [UDPEndpoint], pacing: BulkPacing, loss: Double, received: Received,
        incarnations: [UInt64] = [11, 22]
    ) throws -> BulkChannel {
        var settings = BulkChannelConfiguration(
            node: node, nodes: nodes, authentication: .clusterKey(testKey), runIdentity: bulkTestRun,
            incarnation: incarnations[node], peerIncarnation: { incarnations[$0] })
        settings.pacing = pacing
        settings.linkBitsPerSecond = 400_000_000
        settings.transfer.retransmitTimeoutNanos = 5_000_000
        if loss > 0 { settings.lossInjection = LossInjection(rate: loss, seed: UInt64(node) + 11) }
        let schedule = try TDMASchedule(memberCount: 2, roundPeriodNanos: 200_000, reservation: 0.5)
        let bulk = try BulkChannel(configuration: settings, scheduleSource: { schedule }, clock: { MemberClock.viewNanos() }) { source, id, bytes in
            received.transfers.withLock { $0.append((source, id, bytes)) }
            received.arrived.signal()
        }
        try bulk.validate(against: schedule)
        return bulk
    }

    @Test(arguments: [(BulkPacing.gated, 0.0), (.paced, 0.05), (.unpaced, 0.1)])
    func transfersArriveWholeAndInOrderOverLossySockets(pacing: BulkPacing, loss: Double) throws {
        let nodes = try endpoints()
        let atOne = Received(), atZero = Received()
        let zero = try channel(0, nodes, pacing: pacing, loss: loss, received: atZero)
        let one = try channel(1, nodes, pacing: pacing, loss: loss, received: atOne)
        try zero.start()
        try one.start()
        defer { zero.stop(); one.stop() }
        var random = SystemRandomNumberGenerator()
        let payloads = [300_000, 1, 1_400, 1_401, 2_000_000].map { size in (0..<size).map { _ in UInt8.random(in: 0...255, using: &random) } }
        for payload in payloads {
            guard case .queued = zero.send(payload, to: 1) else { Issue.record("not queued"); return }
        }
        guard case .queued = one.send(payloads[0], to: 0) else { Issue.record("not queued"); return }
        for _ in payloads {
            guard atOne.arrived.wait(timeout: .now() + .seconds(30)) == .success else {
                Issue.record("\(pacing): a transfer did not arrive; sender \(zero.counters), receiver \(one.counters)")
                return
            }
        }
        #expect(atZero.arrived.wait(timeout: .now() + .seconds(30)) == .success)
        let got = atOne.transfers.withLock { $0 }
        #expect(got.map(\.2) == payloads, "\(pacing): bytes or order differ")
        #expect(got.allSatisfy { $0.0 == 0 })
        #expect(atZero.transfers.withLock { $0.map(\.2) } == [payloads[0]])
        // Every transfer acknowledged: nothing pending at the sender.
        let deadline = MemberClock.viewNanos() + 10_000_000_000
        while zero.pendingTransfers > 0, MemberClock.viewNanos() < deadline { _ = atOne.arrived.wait(timeout: .now() + .milliseconds(5)) }
        #expect(zero.pendingTransfers == 0)
        let counters = one.stop()
        if loss > 0 { #expect(counters.transport.datagramsDroppedByInjection > 0) }
        #expect(counters.badTag == 0 && counters.missingTag == 0 && counters.malformed == 0)
    }

    @Test func forgedAndMalformedDatagramsAreRefusedAndCounted() throws {
        let nodes = try endpoints()
        let received = Received()
        let one = try channel(1, nodes, pacing: .gated, loss: 0, received: received)
        try one.start()
        defer { one.stop() }
        let rogue = try UDPTransport(options: UDPTransportOptions(bind: nodes[0], peers: []))
        var datagram = [UInt8](repeating: 0, count: BulkWire.headerBytes + 10 + FrameAuthenticator.tagBytes)
        let header = BulkHeader(
            kind: .data, sender: 0, receiver: 1, chunkBytes: 1_400, chunkIndex: 0, chunkCount: 1,
            tagLength: UInt16(FrameAuthenticator.tagBytes), payloadLength: 10, transferID: 1, totalBytesOrBitmap: 10,
            senderIncarnation: 11, receiverIncarnation: 22)
        datagram.withUnsafeMutableBytes { header.encode(into: $0) }
        // A wrong key's tag, then the right key's tag on a truncated copy, then text.
        let wrongKey = try FrameAuthenticator(hexKey: String(repeating: "01", count: 32))
        datagram.withUnsafeMutableBytes { wrongKey.seal($0) }
        _ = try datagram.withUnsafeBytes { try rogue.send($0, to: nodes[1]) }
        var cut = Array(datagram.dropLast(FrameAuthenticator.tagBytes + 3))
        cut += [UInt8](repeating: 0, count: FrameAuthenticator.tagBytes)
        cut.withUnsafeMutableBytes { bulkTestKey.seal($0) }
        _ = try cut.withUnsafeBytes { try rogue.send($0, to: nodes[1]) }
        _ = try Array("hello".utf8).withUnsafeBytes { try rogue.send($0, to: nodes[1]) }
        // The cluster key itself is not the bulk channel's key: the run's subkey is.
        datagram.withUnsafeMutableBytes { testKey.seal($0) }
        _ = try datagram.withUnsafeBytes { try rogue.send($0, to: nodes[1]) }
        // Then a genuine one-chunk transfer from the same socket: loopback keeps
        // the order, so once it is delivered the others have been judged.
        datagram.withUnsafeMutableBytes { bulkTestKey.seal($0) }
        _ = try datagram.withUnsafeBytes { try rogue.send($0, to: nodes[1]) }
        #expect(received.arrived.wait(timeout: .now() + .seconds(10)) == .success)
        let counters = one.stop()
        #expect(counters.badTag == 2)
        #expect(counters.malformed == 2)
        #expect(counters.receiver.transfersCompleted == 1)
        #expect(received.transfers.withLock { $0.map(\.2) } == [[UInt8](repeating: 0, count: 10)])
    }

    /// Issue 12, defect 9: a restarted receiver delivered 81 replayed
    /// transfers. Datagrams recorded on the wire to one incarnation of a
    /// member and replayed (with their genuine tags) to the next must be
    /// refused and counted; the sender's new transfers still arrive.
    @Test func transfersReplayedToARestartedReceiverAreRefusedAndCounted() throws {
        let nodes = try endpoints()
        let rogue = try UDPTransport(options: UDPTransportOptions(bind: nodes[0], peers: []))
        // Node 0 (incarnation 11) sends node 1 (incarnation 22) 81 one-chunk transfers: recorded.
        var recorded: [[UInt8]] = []
        for id in UInt64(1)...81 {
            recorded.append(sealedChunk(transferID: id, senderIncarnation: 11, receiverIncarnation: 22))
        }
        do {  // the first incarnation's socket closes at the end of this scope
            let first = Received()
            let before = try channel(1, nodes, pacing: .gated, loss: 0, received: first, incarnations: [11, 22])
            try before.start()
            for datagram in recorded { _ = try datagram.withUnsafeBytes { try rogue.send($0, to: nodes[1]) } }
            for _ in recorded { #expect(first.arrived.wait(timeout: .now() + .seconds(10)) == .success) }
            #expect(before.stop().receiver.transfersCompleted == 81)
        }

        // Node 1 restarts as incarnation 23; the recording is replayed, then node 0 sends one genuine transfer.
        let second = Received()
        let after = try channel(1, nodes, pacing: .gated, loss: 0, received: second, incarnations: [11, 23])
        try after.start()
        defer { after.stop() }
        for datagram in recorded { _ = try datagram.withUnsafeBytes { try rogue.send($0, to: nodes[1]) } }
        let genuine = sealedChunk(transferID: 82, senderIncarnation: 11, receiverIncarnation: 23)
        _ = try genuine.withUnsafeBytes { try rogue.send($0, to: nodes[1]) }
        // Loopback keeps the order: once the genuine one is in, every replay has been judged.
        #expect(second.arrived.wait(timeout: .now() + .seconds(10)) == .success)
        let counters = after.stop()
        #expect(second.transfers.withLock { $0.map(\.1) } == [82], "replayed transfers were delivered to the restarted receiver")
        #expect(counters.receiver.wrongIncarnation == 81)
        #expect(counters.replaysRefused == 81)
        #expect(counters.badTag == 0 && counters.malformed == 0)
    }

    /// A one-chunk transfer from node 0 to node 1, sealed with the run's bulk key.
    func sealedChunk(transferID: UInt64, senderIncarnation: UInt64, receiverIncarnation: UInt64) -> [UInt8] {
        var datagram = [UInt8](repeating: UInt8(truncatingIfNeeded: transferID), count: BulkWire.headerBytes + 10 + FrameAuthenticator.tagBytes)
        let header = BulkHeader(
            kind: .data, sender: 0, receiver: 1, chunkBytes: 1_400, chunkIndex: 0, chunkCount: 1,
            tagLength: UInt16(FrameAuthenticator.tagBytes), payloadLength: 10, transferID: transferID,
            totalBytesOrBitmap: 10, senderIncarnation: senderIncarnation, receiverIncarnation: receiverIncarnation)
        datagram.withUnsafeMutableBytes {
            header.encode(into: $0); bulkTestKey.seal($0)
        }
        return datagram
    }

    /// Issue 12, defect 9: the channel authenticated only when given a key,
    /// silently. Beside a member it takes the member's key; without one it
    /// must be told `.off`, and says so in the log.
    @Test func besideAMemberTheChannelTakesItsKeyAndOffIsLogged() throws {
        let nodes = try endpoints()
        let configuration = try MemberConfiguration(
            node: 0, nodes: nodes, startNanos: MemberClock.viewNanos(),
            authentication: .clusterKey(testKey))
        let member = try Member(configuration: configuration) { _, _ in }
        let settings = BulkChannelConfiguration(member: member)
        guard case .clusterKey = settings.authentication else { Issue.record("the member's key was not taken"); return }
        #expect(settings.nodes == BulkChannelConfiguration.endpoints(besideBus: nodes))
        #expect(settings.incarnation() == member.configuration.incarnation)

        let log = LogCapture()
        var off = BulkChannelConfiguration(node: 1, nodes: nodes, authentication: .off, incarnation: 1, peerIncarnation: { _ in 1 })
        off.logger = Logger(label: "test.bulk") { _ in log }
        _ = try BulkChannel(configuration: off, scheduleSource: { nil }, clock: { MemberClock.viewNanos() }) { _, _, _ in }
        let warnings = log.lines.withLock { $0 }.filter { $0.level == .warning }
        #expect(warnings.count == 1 && warnings.first?.message.contains("WITHOUT authentication") == true, "\(warnings)")
    }
}

/// Keeps what is logged through it.
final class LogCapture: LogHandler, @unchecked Sendable {
    let lines = Mutex<[(level: Logger.Level, message: String)]>([])
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        lines.withLock { $0.append((event.level, event.message.description)) }
    }
}
