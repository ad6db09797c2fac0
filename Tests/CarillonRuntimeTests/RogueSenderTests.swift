import CarillonAuth
import CarillonOrdering
import CarillonRuntime
import CarillonTransport
import CarillonWire
import Dispatch
import Glibc
import Testing

/// A plain UDP socket throws forged, unauthenticated, replayed and foreign
/// frames at an authenticated 3-member cluster — and frames sealed with the
/// right cluster key but for an earlier run of the cluster (issue 12, defect
/// 1): nothing from it may be delivered, and the counters must show each kind.
@Suite("Rogue sender (real UDP sockets)", .serialized)
struct RogueSenderTests {
    func frame(sender: UInt16, round: UInt64, epoch: UInt32 = 1, sequence: UInt64, tag: Bool) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 512)
        let length = buffer.withUnsafeMutableBytes { raw -> Int in
            var encoder = try! FrameEncoder(
                buffer: raw, header: FrameHeader(kind: .slot, senderRank: sender, epoch: epoch, round: round, senderTimestampNanos: 0))
            try! encoder.beginSection(.data)
            try! Array("rogue".utf8).withUnsafeBytes { try encoder.appendMessage(sequence: sequence, payload: $0) }
            try! encoder.endSection()
            return try! encoder.finish(tagLength: tag ? FrameAuthenticator.tagBytes : 0)
        }
        return Array(buffer[..<length])
    }

    @Test func nothingFromARogueIsDelivered() throws {
        let endpoints = try freeLoopbackPorts(3)
        let start = MemberClock.viewNanos()
        let logs = (0..<3).map { _ in DeliveryLog(target: 600, milestone: 300) }
        var members: [Member] = []
        for rank in 0..<3 {
            var configuration = try MemberConfiguration(
                node: rank, nodes: endpoints, roundPeriodNanos: 200_000, startNanos: start,
                authentication: .clusterKey(testKey))
            configuration.idleStrategy = .blocking
            configuration.tolerateSlowAgents()
            let log = logs[rank]
            members.append(try Member(configuration: configuration) { log.record($0, $1) })
        }
        for member in members { try member.start() }
        defer { for member in members { member.stop() } }
        func send(_ count: Int) {
            for index in 0..<count {
                for member in members { while case .sendBufferFull = member.broadcast(Array("ok-\(index)".utf8)) { sched_yield() } }
            }
        }
        send(100)

        let wrongKey = try FrameAuthenticator(hexKey: String(repeating: "01", count: 32))
        // Slot frames are sealed under the run's key; a key holder of this run uses it.
        let run = members[0].runIdentity
        #expect(run == start && members.allSatisfy { $0.runIdentity == run })
        let runKey = testKey.bound(toRun: run)
        let schedule = members[0].configuration.ordering.schedule
        let first = members[0].configuration.ordering.firstRound
        let current = schedule.round(atNanos: MemberClock.viewNanos())
        var rogueFrames: [[UInt8]] = []
        // Forged: a future round of member 1, sealed with the wrong key.
        var forged = frame(sender: 1, round: current + 50, sequence: 1_000, tag: true)
        forged.withUnsafeMutableBytes { wrongKey.seal($0) }
        rogueFrames.append(forged)
        // Unauthenticated: no tag at all.
        rogueFrames.append(frame(sender: 1, round: current + 51, sequence: 1_001, tag: false))
        // An earlier run of the same cluster, same key: a slot frame recorded
        // then (its run was another start time), for a round not yet sent here.
        var earlierRun = frame(sender: 1, round: current + 54, sequence: 1_003, tag: true)
        earlierRun.withUnsafeMutableBytes { testKey.bound(toRun: run - 60_000_000_000).seal($0) }
        rogueFrames.append(earlierRun)
        // The cluster key itself does not seal slot frames (only membership frames).
        var clusterKeyOnly = frame(sender: 1, round: current + 55, sequence: 1_004, tag: true)
        clusterKeyOnly.withUnsafeMutableBytes { testKey.seal($0) }
        rogueFrames.append(clusterKeyOnly)
        // Replayed: the right key, but a round of member 1 long received.
        var replayed = frame(sender: 1, round: first, sequence: 1, tag: true)
        replayed.withUnsafeMutableBytes { runKey.seal($0) }
        // Foreign epoch and unknown rank, with the right key.
        var foreign = frame(sender: 1, round: current + 52, epoch: 99, sequence: 1_002, tag: true)
        foreign.withUnsafeMutableBytes { runKey.seal($0) }
        var unknown = frame(sender: 9, round: current + 53, sequence: 1, tag: true)
        unknown.withUnsafeMutableBytes { runKey.seal($0) }
        let rogue = try UDPTransport(options: UDPTransportOptions(bind: UDPEndpoint("127.0.0.1:0")!, peers: endpoints))
        for bytes in rogueFrames + [foreign, unknown] { try bytes.withUnsafeBytes { try rogue.sendToAll($0) } }
        // Replay only once round `first` is received everywhere (every member has
        // delivered the first 300 messages, which lie after it); before that, a
        // key holder's frame for a round not yet received is not a replay but a forgery.
        let milestone = DispatchTime.now() + .seconds(30)
        #expect(logs.allSatisfy { $0.reachedMilestone.wait(timeout: milestone) == .success })
        try replayed.withUnsafeBytes { try rogue.sendToAll($0) }
        send(100)

        let deadline = DispatchTime.now() + .seconds(30)
        let finished = logs.map { $0.done.wait(timeout: deadline) == .success }
        let reports = members.map { $0.stop() }
        #expect(finished.allSatisfy { $0 }, "\(logs.map { $0.entries.withLock(\.count) })")
        let sequences = logs.map { $0.entries.withLock { $0 } }
        #expect(sequences[1] == sequences[0] && sequences[2] == sequences[0])
        #expect(!sequences[0].contains { $0.payload == Array("rogue".utf8) })
        for report in reports {
            // The wrong key, the earlier run's key, and the cluster key on a slot frame.
            #expect(report.runtime.badTag >= 3, "\(report.runtime)")
            #expect(report.runtime.missingTag >= 1, "\(report.runtime)")
            #expect(report.membership.staleEpochFrames >= 1, "a frame of a later epoch is counted by the membership layer")
            #expect(report.ordering.unknownSenderFrames >= 1)
        }
        // The replay reaches members 0 and 2 as a duplicate of member 1's round (member 1 ignores its own rank).
        #expect(reports[0].ordering.duplicateFrames + reports[2].ordering.duplicateFrames >= 1)
    }
}
