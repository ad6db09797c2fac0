import CarillonAuth
import CarillonBulk
import CarillonRuntime
import CarillonSchedule
import CarillonTransport
import Dispatch
import Glibc
import Synchronization
import Testing

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

    func channel(_ node: Int, _ nodes: [UDPEndpoint], pacing: BulkPacing, loss: Double, received: Received) throws -> BulkChannel {
        var settings = BulkChannelConfiguration(node: node, nodes: nodes)
        settings.pacing = pacing
        settings.linkBitsPerSecond = 400_000_000
        settings.authenticator = testKey
        settings.transfer.retransmitTimeoutNanos = 5_000_000
        if loss > 0 { settings.lossInjection = LossInjection(rate: loss, seed: UInt64(node) + 11) }
        let schedule = try TDMASchedule(memberCount: 2, roundPeriodNanos: 200_000, reservation: 0.5)
        let bulk = try BulkChannel(configuration: settings, scheduleSource: { schedule }, clock: { Clock.viewNanos() }) { source, id, bytes in
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
        let deadline = Clock.viewNanos() + 10_000_000_000
        while zero.pendingTransfers > 0, Clock.viewNanos() < deadline { _ = atOne.arrived.wait(timeout: .now() + .milliseconds(5)) }
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
        let header = BulkHeader(kind: .data, sender: 0, receiver: 1, chunkBytes: 1_400, chunkIndex: 0, chunkCount: 1,
                                tagLength: UInt16(FrameAuthenticator.tagBytes), payloadLength: 10, transferID: 1, totalBytesOrBitmap: 10)
        datagram.withUnsafeMutableBytes { header.encode(into: $0) }
        // A wrong key's tag, then the right key's tag on a truncated copy, then text.
        let wrongKey = try FrameAuthenticator(hexKey: String(repeating: "01", count: 32))
        datagram.withUnsafeMutableBytes { wrongKey.seal($0) }
        _ = try datagram.withUnsafeBytes { try rogue.send($0, to: nodes[1]) }
        var cut = Array(datagram.dropLast(FrameAuthenticator.tagBytes + 3))
        cut += [UInt8](repeating: 0, count: FrameAuthenticator.tagBytes)
        cut.withUnsafeMutableBytes { testKey.seal($0) }
        _ = try cut.withUnsafeBytes { try rogue.send($0, to: nodes[1]) }
        _ = try Array("hello".utf8).withUnsafeBytes { try rogue.send($0, to: nodes[1]) }
        // Then a genuine one-chunk transfer from the same socket: loopback keeps
        // the order, so once it is delivered the others have been judged.
        datagram.withUnsafeMutableBytes { testKey.seal($0) }
        _ = try datagram.withUnsafeBytes { try rogue.send($0, to: nodes[1]) }
        #expect(received.arrived.wait(timeout: .now() + .seconds(10)) == .success)
        let counters = one.stop()
        #expect(counters.badTag == 1)
        #expect(counters.malformed == 2)
        #expect(counters.receiver.transfersCompleted == 1)
        #expect(received.transfers.withLock { $0.map(\.2) } == [[UInt8](repeating: 0, count: 10)])
    }
}
