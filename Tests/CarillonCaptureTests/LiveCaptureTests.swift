import CarillonAuth
import CarillonCapture
import CarillonRuntime
import CarillonTransport
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
        // The reader thread owns the decoder until it has finished.
        let box = DecoderBox(TapDecoder(format: .quiet, authenticator: tapKey))
        let captured = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
        let finished = Atomic<Bool>(false)
        let linkType = capture.linkType
        let reader = Thread {
            _ = try? capture.run { packet, bytes in
                if packet.wireLength >= 0 {
                    box.decoder.packet(timestampNanos: packet.timestampNanos, linkType: linkType, bytes: bytes)
                    captured.add(1, ordering: .relaxed)
                }
                return !stop.load(ordering: .relaxed)
            }
            finished.store(true, ordering: .releasing)
        }
        reader.start()

        // Three members, idle blocking, authenticated; a few hundred messages each.
        let start = Clock.viewNanos() + 50_000_000
        var members: [Member] = []
        for node in 0..<3 {
            var configuration = try MemberConfiguration(node: node, nodes: endpoints, roundPeriodNanos: 500_000, startNanos: start,
                                                        authentication: .clusterKey(tapKey))
            configuration.idleStrategy = .blocking
            configuration.ordering.suspicionSlots = 500
            configuration.ordering.unheardSuspicionSlots = 5_000
            members.append(try Member(configuration: configuration) { _, _ in })
        }
        for member in members { try member.start() }
        for i in 0..<200 {
            for member in members { _ = member.broadcast(Array("tap-\(i)".utf8)) }
            Thread.sleep(forTimeInterval: 0.001)  // pacing the senders, not waiting for a result
        }
        // Bounded wait for the members to have delivered everything.
        let deadline = Date().addingTimeInterval(20)
        while members.contains(where: { $0.orderingCounters.messagesDelivered < 600 }), Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        let reports = members.map { $0.stop() }
        let sent = reports.reduce(0) { $0 + $1.transport.datagramsSent }
        // Bounded wait for the capture to have read every datagram sent.
        let captureDeadline = Date().addingTimeInterval(10)
        while captured.load(ordering: .relaxed) < sent, Date() < captureDeadline { Thread.sleep(forTimeInterval: 0.01) }
        stop.store(true, ordering: .relaxed)
        capture.breakLoop()
        let readerDeadline = Date().addingTimeInterval(5)
        while !finished.load(ordering: .acquiring), Date() < readerDeadline { Thread.sleep(forTimeInterval: 0.01) }
        let readerStopped = finished.load(ordering: .acquiring)
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
            #expect(seen.allSatisfy { $0.badTags == 0 && $0.missingTags == 0 })
        }
    }
}
