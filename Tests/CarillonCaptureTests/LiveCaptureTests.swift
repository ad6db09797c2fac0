import CarillonAuth
import CarillonCapture
import CarillonRuntime
import CarillonTransport
import Dispatch
import Foundation
import Synchronization
import Testing

/// Whether this process may capture live (root).
let mayCapture = getuid() == 0

final class DecoderBox: @unchecked Sendable {
    var decoder: TapDecoder
    init(_ decoder: TapDecoder) { self.decoder = decoder }
}

/// A live loopback cluster captured by carillon-tap's capture and decoder: the
/// decoded counts must match what the members' own counters say they sent.
@Suite("carillon-tap live capture", .enabled(if: mayCapture, "live capture needs root (CAP_NET_RAW); CI runs as root"))
struct LiveCaptureTests {
    @Test func decodedCountsMatchTheMembersCounters() throws {
        var sockets: [UDPTransport] = []
        for _ in 0..<3 { sockets.append(try UDPTransport(options: UDPTransportOptions(bind: UDPEndpoint("127.0.0.1:0")!, peers: []))) }
        let endpoints = sockets.map(\.localEndpoint)
        sockets.removeAll()
        let ports = endpoints.map { "udp dst port \($0.port)" }.joined(separator: " or ")

        let capture = try PacketCapture.live(interface: "lo")
        try capture.setFilter(ports)
        // The run: the first view's start; slot and repair frames are sealed
        // under its key, which the decoder is told (a cluster that changes no
        // view sends no membership frame to learn it from).
        let start = MemberClock.viewNanos() + 50_000_000
        // The reader thread owns the decoder until it has finished. It signals
        // once it has read `target` packets.
        let box = DecoderBox(TapDecoder(format: .quiet, authenticator: tapKey, runs: [max(start, 1)]))
        let captured = Atomic<Int>(0)
        let target = Atomic<Int>(.max)
        let caughtUp = DispatchSemaphore(value: 0), readerDone = DispatchSemaphore(value: 0)
        let signalled = Atomic<Bool>(false)
        let stop = Atomic<Bool>(false)
        let linkType = capture.linkType
        let reader = Thread {
            _ = try? capture.run { packet, bytes in
                if packet.wireLength >= 0 {
                    box.decoder.packet(timestampNanos: packet.timestampNanos, linkType: linkType, bytes: bytes)
                    captured.add(1, ordering: .sequentiallyConsistent)
                }
                if captured.load(ordering: .sequentiallyConsistent) >= target.load(ordering: .sequentiallyConsistent),
                    !signalled.exchange(true, ordering: .relaxed)
                {
                    caughtUp.signal()
                }
                return !stop.load(ordering: .relaxed)
            }
            readerDone.signal()
        }
        reader.start()

        // Three members, idle blocking, authenticated; 200 messages each.
        let allDelivered = DispatchSemaphore(value: 0)
        var members: [Member] = []
        for node in 0..<3 {
            var configuration = try MemberConfiguration(
                node: node, nodes: endpoints, roundPeriodNanos: 500_000, startNanos: start,
                authentication: .clusterKey(tapKey))
            #expect(configuration.runIdentity == max(start, 1))
            configuration.idleStrategy = .blocking
            configuration.ordering.suspicionSlots = 500
            configuration.ordering.unheardSuspicionSlots = 5_000
            let delivered = Atomic<Int>(0)
            members.append(
                try Member(configuration: configuration) { _, _ in
                    if delivered.add(1, ordering: .relaxed).newValue == 600 { allDelivered.signal() }
                })
        }
        for member in members { try member.start() }
        var queued = 0
        for i in 0..<200 {
            for member in members { if case .queued = member.broadcast(Array("tap-\(i)".utf8)) { queued += 1 } }
        }
        #expect(queued == 600)
        // Bounded waits on events: every member delivered everything; then the
        // capture read every datagram the members' counters say they sent.
        for _ in members { _ = allDelivered.wait(timeout: .now() + 20) }
        let reports = members.map { $0.stop() }
        let sent = reports.reduce(0) { $0 + $1.transport.datagramsSent }
        // Target first, then the count: a packet read after the store signals,
        // one read before it is seen here.
        target.store(sent, ordering: .sequentiallyConsistent)
        if captured.load(ordering: .sequentiallyConsistent) < sent { _ = caughtUp.wait(timeout: .now() + 10) }
        stop.store(true, ordering: .relaxed)
        capture.breakLoop()
        let readerStopped = readerDone.wait(timeout: .now() + 5) == .success
        try #require(readerStopped, "the capture thread did not stop")

        #expect(reports.allSatisfy { $0.ordering.messagesDelivered == 600 })
        let kernel = capture.kernelStatistics
        #expect(kernel?.dropped == 0, "\(String(describing: kernel))")
        let stats = box.decoder.statistics
        #expect(captured.load(ordering: .relaxed) == sent)
        #expect(stats.frames == sent)
        #expect(stats.framesMalformed == 0)
        // Per sender: each frame went to the two peers, so it was captured twice.
        for (rank, report) in reports.enumerated() {
            let seen = stats.members.values.filter { $0.rank == UInt16(rank) && $0.epoch == 1 }
            let slot = seen.reduce(0) { $0 + $1.slotFrames }, repair = seen.reduce(0) { $0 + $1.repairFrames }
            #expect(slot == 2 * report.ordering.slotFramesSent, "rank \(rank)")
            #expect(repair == 2 * report.ordering.repairFramesSent, "rank \(rank)")
            #expect(seen.reduce(0) { $0 + $1.messages } == 2 * report.ordering.messagesBroadcast, "rank \(rank)")
            #expect(seen.allSatisfy { $0.badTags == 0 && $0.missingTags == 0 && $0.runUnknown == 0 })
        }
        // Every slot and repair frame verified under the run's key.
        let slotAndRepair = stats.members.values.reduce(0) { $0 + $1.slotFrames + $1.repairFrames }
        #expect(stats.framesByRun == [max(start, 1): slotAndRepair])
    }

    /// A quiet interface still hands the reader a tick about every 100 ms (the
    /// chance to print periodic statistics and flush `-w`). Before the handle
    /// was polled, libpcap's immediate mode never returned on a quiet bus and
    /// the only way out was `breakLoop` — which this test uses only as a deadline.
    @Test func aQuietCaptureStillTicks() throws {
        let capture = try PacketCapture.live(interface: "lo")
        try capture.setFilter("udp port 9")  // discard: nothing here sends to it
        let ticks = Atomic<Int>(0)
        let ticked = DispatchSemaphore(value: 0), readerDone = DispatchSemaphore(value: 0)
        let reader = Thread {
            _ = try? capture.run { packet, _ in
                if packet.wireLength < 0, ticks.add(1, ordering: .relaxed).newValue == 3 { ticked.signal() }
                return ticks.load(ordering: .relaxed) < 3
            }
            readerDone.signal()
        }
        reader.start()
        let sawTicks = ticked.wait(timeout: .now() + .seconds(10)) == .success
        if !sawTicks { capture.breakLoop() }
        #expect(readerDone.wait(timeout: .now() + .seconds(5)) == .success, "the reader did not stop")
        #expect(sawTicks, "only \(ticks.load(ordering: .relaxed)) quiet ticks in 10 s")
    }
}
