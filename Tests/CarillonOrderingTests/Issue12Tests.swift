import CarillonOrdering
import CarillonSchedule
import CarillonSimulation
import CarillonWire
import Testing

/// Builds one frame by hand, as a member holding the key could.
func handmadeFrame(
    _ kind: FrameKind, from sender: UInt16, round: UInt64, timestamp: UInt64 = 1, epoch: UInt32 = 1,
    _ body: (inout FrameEncoder) throws(WireError) -> Void = { _ throws(WireError) in }
) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: 1472)
    let length = bytes.withUnsafeMutableBytes { buffer -> Int in
        var encoder = try! FrameEncoder(
            buffer: buffer,
            header: FrameHeader(kind: kind, senderRank: sender, epoch: epoch, round: round, senderTimestampNanos: timestamp))
        try! body(&encoder)
        return try! encoder.finish()
    }
    return Array(bytes[..<length])
}

func nakRanges(in frame: [UInt8]) -> [NakRange] {
    frame.withUnsafeBytes { Array(try! FrameView.decode($0).nakRanges) }
}

/// Rounds of the frames embedded in a repair frame.
func embeddedRounds(in frame: [UInt8]) -> [UInt64] {
    frame.withUnsafeBytes { raw in
        let view = try! FrameView.decode(raw)
        return view.embeddedFrames.map { try! FrameView.decode($0).header.round }
    }
}

/// Issue 12, defect 3: a repair storm that never ends.
@Suite("Issue 12 defect 3: repair storm")
struct RepairStormTests {
    /// Four busy members on hosts with small receive queues and a per-frame CPU
    /// cost (slot frames alone take 60% of a member's CPU); member 2 stalls for
    /// 200 rounds, far longer than the 16-round window, at round 100.
    static func stallProfile() -> FaultProfile {
        var p = FaultProfile()
        p.memberCount = 4
        p.roundPeriodNanos = 100_000
        p.windowRounds = 16
        p.faultRounds = 1_500
        p.livenessBoundRounds = 600
        p.baseLatencyNanos = 20_000
        p.jitterNanos = 10_000
        p.lossProbability = 0
        p.duplicateProbability = 0
        p.spikeProbability = 0
        p.partitionProbability = 0
        p.maxClockOffsetNanos = 0
        p.maxDriftPPM = 0
        p.pauseProbability = 0
        p.broadcastProbability = 0.9
        p.maxMessagesPerRound = 32
        p.maxPayloadBytes = 200
        p.receiveQueueFrames = 24
        p.frameCostNanos = p.roundPeriodNanos / 5
        p.scriptedPauses = [ScriptedPause(member: 2, atRound: 100, nanos: 200 * p.roundPeriodNanos)]
        return p
    }

    /// Before: repairs of rounds beyond the window, asked for again and again,
    /// kept ~370 repair frames per 100 rounds going to the end, and the bus
    /// never delivered its backlog. After: the storm is over within 200 rounds
    /// of the stall's end (round 300) and everything is delivered.
    @Test func aStallLongerThanTheWindowEndsAndRepairTrafficStops() {
        var simulator = ClusterSimulator(seed: 1, profile: Self.stallProfile())
        let result = simulator.run()
        #expect(result.passed, "\(result.violations.first.map(String.init(describing:)) ?? "")")
        #expect(result.settledAtNanos != nil)
        let repairsAfter500 = result.repairFramesPerRound.dropFirst(500).reduce(0, +)
        #expect(
            repairsAfter500 == 0,
            "repair frames per 100 rounds: \(stride(from: 0, to: result.repairFramesPerRound.count, by: 100).map { result.repairFramesPerRound[$0..<min($0 + 100, result.repairFramesPerRound.count)].reduce(0, +) })"
        )
        #expect(result.queueDropsPerRound.dropFirst(500).reduce(0, +) == 0)
    }

    /// Member 0 sends data every fourth round; member 1 hears only round 60,
    /// far past its 16-round window. Its NAKs stop at the window end.
    @Test func naksNeverAskBeyondTheReceiveWindow() {
        var cluster = TestCluster(memberCount: 2, windowRounds: 16)
        var last: [UInt8] = []
        for round in UInt64(0)...60 {
            if round % 4 == 0 { _ = cluster.broadcast(0, "r\(round)") }
            last = cluster.openSlot(0, round: round)[0]
        }
        // Member 0 keeps its data within half a window of its stability line
        // (rounds 0 and 4 here), so its round-60 frame is empty: member 1
        // takes it as a silent round even beyond its window, and knows that
        // rounds up to 60 exist.
        #expect(cluster.receive(1, last).0 == .accepted)
        let frames = cluster.openSlot(1, round: 60)
        let naks = nakRanges(in: frames[0])
        #expect(!naks.isEmpty)
        #expect(naks.allSatisfy { $0.lastRound < 16 }, "\(naks)")
    }

    /// Issue 12 (found by the membership swarm): a sender whose peers do not
    /// acknowledge must not put data in rounds they cannot buffer — a wedged
    /// member that had to drop such a round could never hold a cut that
    /// includes it. Data stays within half a window of the stability line.
    @Test func dataStaysWithinHalfAWindowOfTheStabilityLine() {
        var cluster = TestCluster(memberCount: 2, windowRounds: 16)
        var dataRounds: [UInt64] = []
        for round in UInt64(0)...40 {
            _ = cluster.broadcast(0, "r\(round)")
            for frame in cluster.openSlot(0, round: round) {
                let view = try! frame.withUnsafeBytes { try FrameView.decode($0) }
                if view.header.kind == .slot, view.messageCount > 0 { dataRounds.append(round) }
            }
        }
        #expect(!dataRounds.isEmpty)
        #expect(dataRounds.allSatisfy { $0 < 8 }, "\(dataRounds)")
    }

    /// A NAK (by an old or faulty member) for 61 rounds: the repairer sends
    /// only what the asker's window can take, `windowRounds` from its first round.
    @Test func aRepairerSendsNothingTheReceiverCannotTake() {
        var cluster = TestCluster(memberCount: 2, windowRounds: 16)
        for round in UInt64(0)...60 {
            if round % 4 == 0 { _ = cluster.broadcast(0, "r\(round)") }
            cluster.openSlot(0, round: round)
        }
        let nak = handmadeFrame(.slot, from: 1, round: 60) { encoder throws(WireError) in
            try encoder.beginSection(.naks)
            try encoder.appendNak(NakRange(rank: 0, firstRound: 0, lastRound: 60))
            try encoder.endSection()
        }
        cluster.receive(0, nak)
        let frames = cluster.openSlot(0, round: 61)
        let repaired = frames.dropFirst().flatMap(embeddedRounds(in:))
        #expect(!repaired.isEmpty)
        #expect(repaired.allSatisfy { $0 < 16 }, "\(repaired)")
    }
}

/// Issue 12, defect 5: a queued message dropped at a view change to a larger view.
@Suite("Issue 12 defect 5: payload limit of the largest view")
struct PayloadLimitTests {
    /// A message at the 3-member view's limit, queued there, moves to the
    /// 5-member view's instance at the change and is delivered by all five.
    @Test func aMessageQueuedInASmallViewIsDeliveredInALargerOne() {
        var three = TestCluster(memberCount: 3) { $0.maxMemberCount = 5 }
        var five = TestCluster(memberCount: 5) { $0.maxMemberCount = 5 }
        let limit = three.members[0].configuration.maxPayloadBytes
        let payload = [UInt8](repeating: 7, count: limit)
        guard case .queued = three.members[0].broadcast(payload) else { Issue.record("not queued"); return }
        var results: [BroadcastResult] = []
        three.members[0].takePending { results.append(five.members[0].broadcast($0)) }
        #expect(results == [.queued(sequence: 1)])
        five.runRounds(0...2)
        #expect(five.delivered.allSatisfy { $0.map(\.payload) == [payload] })
    }
}

/// Issue 12, defect 8: traps and forgery with the key.
@Suite("Issue 12 defect 8: values from the wire")
struct WireValueTests {
    /// Member 1 knows both directions of its clock to member 0; then a frame
    /// of member 0 stamped 2^63 ns (and one stamped UInt64.max) ahead arrives.
    @Test(arguments: [UInt64(1) << 63, UInt64.max])
    func aFrameStampedFarAheadDoesNotTrap(stamp: UInt64) {
        var cluster = TestCluster(memberCount: 2)
        cluster.runRounds(0...3)
        #expect(cluster.members[1].clockOffsetNanos(from: 0) != nil)
        let forged = handmadeFrame(.slot, from: 0, round: 4, timestamp: stamp) { encoder throws(WireError) in
            try encoder.beginSection(.clockSamples)
            try encoder.appendClockSample(ClockSample(rank: 1, minOneWayNanos: .max - 1))
            try encoder.endSection()
        }
        cluster.receive(1, forged)
        _ = cluster.members[1].clockOffsetNanos(from: 0)
        let low = handmadeFrame(.slot, from: 0, round: 5, timestamp: 1) { encoder throws(WireError) in
            try encoder.beginSection(.clockSamples)
            try encoder.appendClockSample(ClockSample(rank: 1, minOneWayNanos: .min))
            try encoder.endSection()
        }
        cluster.receive(1, low)
        _ = cluster.members[1].clockOffsetNanos(from: 0)
        cluster.runRounds(5...6)
    }

    /// A repair frame relays silence of member 0 up to UInt64.max − 1 (its
    /// received-below mark would become UInt64.max): member 0's later messages
    /// must still be delivered.
    @Test func relayedSilenceToTheEndOfTimeDoesNotSilenceASender() {
        var cluster = TestCluster(memberCount: 3)
        cluster.runRounds(0...1)
        let forged = handmadeFrame(.repair, from: 2, round: 2) { encoder throws(WireError) in
            try encoder.beginSection(.retransmissions)
            try encoder.endSection()
            try encoder.beginSection(.relayedSilence)
            try encoder.appendRelayedSilence(NakRange(rank: 0, firstRound: 2, lastRound: .max - 1))
            try encoder.endSection()
        }
        cluster.receive(1, forged)
        _ = cluster.broadcast(0, "later")
        cluster.runRounds(2...4)
        #expect(cluster.delivered[1].map(\.payload) == [Array("later".utf8)])
        #expect(cluster.members[1].receivedBelowBySender[0] < 100)
    }

    /// A slot frame claiming round UInt64.max − 1 whose silent range covers
    /// every round before it: the sender is not skipped for good.
    @Test func aSlotFrameFromTheEndOfTimeIsIgnored() {
        var cluster = TestCluster(memberCount: 3)
        cluster.runRounds(0...1)
        let forged = handmadeFrame(.slot, from: 0, round: .max - 1) { encoder throws(WireError) in
            try encoder.beginSection(.silentRounds)
            try encoder.appendSilent(SilentRange(firstRound: 2, lastRound: .max - 2))
            try encoder.endSection()
        }
        cluster.receive(1, forged)
        _ = cluster.broadcast(0, "later")
        cluster.runRounds(2...4)
        #expect(cluster.delivered[1].map(\.payload) == [Array("later".utf8)])
    }

    /// A NAK for every round to the end of time reaches a member wedged by a
    /// view change: it relays what it holds and does not trap.
    @Test func aRelayRequestToTheEndOfTimeDoesNotTrap() {
        var cluster = TestCluster(memberCount: 3)
        cluster.runRounds(0...2)
        _ = cluster.members[1].wedge()
        let nak = handmadeFrame(.slot, from: 2, round: 3) { encoder throws(WireError) in
            try encoder.beginSection(.naks)
            try encoder.appendNak(NakRange(rank: 0, firstRound: 0, lastRound: .max))
            try encoder.endSection()
        }
        cluster.receive(1, nak)
        cluster.openSlot(1, round: 3)
    }
}

@Suite("Issue 12: counters and the pending hand-over")
struct Issue12CounterTests {
    /// The clipped NAK and the suppressed repair are counted.
    @Test func clippedNaksAndSuppressedRepairsAreCounted() {
        var cluster = TestCluster(memberCount: 2, windowRounds: 16)
        var last: [UInt8] = []
        for round in UInt64(0)...60 {
            if round % 4 == 0 { _ = cluster.broadcast(0, "r\(round)") }
            last = cluster.openSlot(0, round: round)[0]
        }
        cluster.receive(1, last)
        cluster.openSlot(1, round: 60)
        #expect(cluster.members[1].counters.naksClipped == 1)
        let nak = handmadeFrame(.slot, from: 1, round: 60) { encoder throws(WireError) in
            try encoder.beginSection(.naks)
            try encoder.appendNak(NakRange(rank: 0, firstRound: 0, lastRound: 60))
            try encoder.endSection()
        }
        cluster.receive(0, nak)
        #expect(cluster.members[0].counters.repairsSuppressed == 1)
        // The same NAK again right after the repair: the frames just resent are not resent again.
        cluster.openSlot(0, round: 61)
        cluster.receive(0, nak)
        let again = cluster.openSlot(0, round: 62).dropFirst().flatMap(embeddedRounds(in:))
        #expect(again.isEmpty, "\(again)")
        #expect(cluster.members[0].counters.repairsSuppressed > 2)
    }

    /// The payload limit is that of the largest view; a view larger than
    /// `maxMemberCount` is refused; `movePending` moves all or nothing.
    @Test func payloadLimitIsTheLargestViewsAndPendingMovesAllOrNothing() throws {
        let three = TestCluster(memberCount: 3) { $0.maxMemberCount = 5 }
        let five = TestCluster(memberCount: 5)
        #expect(three.members[0].configuration.maxPayloadBytes == five.members[0].configuration.maxPayloadBytes)
        var configuration = three.members[0].configuration
        configuration.maxMemberCount = 2
        #expect(throws: OrderingConfigurationError.maxMemberCountOutOfRange(maxMemberCount: 2, memberCount: 3)) {
            try configuration.validate()
        }
        // From a 3-member view sized for 3 into a 5-member one: refused, kept.
        var small = TestCluster(memberCount: 3)
        var large = TestCluster(memberCount: 5)
        let limit = small.members[0].configuration.maxPayloadBytes
        _ = small.members[0].broadcast([UInt8](repeating: 1, count: 10))
        _ = small.members[0].broadcast([UInt8](repeating: 2, count: limit))
        #expect(small.members[0].movePending(into: &large.members[0]) == nil)
        #expect(small.members[0].pendingMessageCount == 2)
        #expect(large.members[0].pendingMessageCount == 0)
        // Sized for 5: all move.
        var sized = TestCluster(memberCount: 3) { $0.maxMemberCount = 5 }
        _ = sized.members[0].broadcast([UInt8](repeating: 2, count: sized.members[0].configuration.maxPayloadBytes))
        #expect(sized.members[0].movePending(into: &large.members[0]) == 1)
        #expect(sized.members[0].pendingMessageCount == 0)
        large.runRounds(0...2)
        #expect(large.delivered.allSatisfy { $0.count == 1 })
    }
}

/// Swarm seeds the first sweep with the new faults (pauses of tens of
/// milliseconds, bounded receive queues, replays) found: with NAKs stopped at
/// the window end, a member that fell ~1,000 rounds behind a sender whose
/// silent stretches it had not learned caught up one window per NAK round trip
/// and missed the liveness bound. Repairs now also state the silent stretch
/// that follows the requested rounds.
@Suite("Issue 12: swarm regression seeds")
struct Issue12SwarmSeeds {
    @Test(arguments: [UInt64(624), 1672, 2758, 5995])
    func seedPasses(seed: UInt64) {
        var simulator = ClusterSimulator(seed: seed, profile: .swarm(seed: seed))
        let result = simulator.run()
        #expect(result.passed, "\(result)\n\(result.violations.first.map(String.init(describing:)) ?? "")")
    }
}

/// Found by review after the membership swarm's catch-up fix: an instance whose
/// window followed its cursor while it fetched a decided cut may have
/// overwritten cells below the cursor, so it must never relay again — a relay
/// from it could call a data round it delivered silent.
@Suite("Issue 12: no relays after catching up")
struct RelayAfterCatchUpTests {
    /// What member 1 relays for member 0's rounds 0...3 after it finalized a
    /// cut it held at once (`fetchFirst` false) or one it had to fetch part of.
    static func relayedForMemberZero(fetchFirst: Bool) -> (rounds: [UInt64], silences: Int, finished: Bool) {
        var cluster = TestCluster(memberCount: 3)
        _ = cluster.broadcast(0, "d")
        cluster.runRounds(0...3)
        _ = cluster.members[1].wedge()
        var effects = OrderingEffects()
        cluster.members[1].finalize(cut: fetchFirst ? [4, 4, 8] : [4, 4, 4], endRound: fetchFirst ? 8 : 4, effects: &effects)
        if fetchFirst {
            // Member 2's rounds 4...7 reach it afterwards: it finishes by fetching.
            for round in UInt64(4)...7 { for frame in cluster.openSlot(2, round: round) { cluster.receive(1, frame) } }
        }
        let finished = cluster.members[1].isFinished
        let nak = handmadeFrame(.slot, from: 2, round: 8) { encoder throws(WireError) in
            try encoder.beginSection(.naks)
            try encoder.appendNak(NakRange(rank: 0, firstRound: 0, lastRound: 3))
            try encoder.endSection()
        }
        cluster.receive(1, nak)
        var rounds: [UInt64] = []
        var silences = 0
        for frame in cluster.openSlot(1, round: 9) {
            frame.withUnsafeBytes { raw in
                let view = try! FrameView.decode(raw)
                guard view.header.kind == .repair else { return }
                for embedded in view.embeddedFrames {
                    let inner = try! FrameView.decode(embedded)
                    if inner.header.senderRank == 0 { rounds.append(inner.header.round) }
                }
                silences += view.relayedSilentRanges.filter { $0.rank == 0 }.count
            }
        }
        return (rounds, silences, finished)
    }

    @Test func aMemberThatHeldTheCutRelays() {
        let result = Self.relayedForMemberZero(fetchFirst: false)
        #expect(result.finished)
        #expect(!result.rounds.isEmpty || result.silences > 0, "a member that held the cut answers relay requests")
    }

    @Test func aMemberThatCaughtUpNeverRelays() {
        let result = Self.relayedForMemberZero(fetchFirst: true)
        #expect(result.finished)
        #expect(result.rounds.isEmpty && result.silences == 0, "relayed \(result.rounds), \(result.silences) silences")
    }
}

@Suite("View change: a failed sender's rounds past the window")
struct WedgedNakReachTests {
    /// Services swarm seed 7385 in miniature: member 1 hears nothing from
    /// member 0, which sends empty frames to member 2 only and then dies.
    /// Member 1's report pins the stability line, so both survivors' windows
    /// end 16 rounds past round 3 — and member 0's rounds past that reach
    /// member 1 only as relayed silence. Wedged, member 1 asks past its
    /// window for the suspected sender and comes to hold every round member
    /// 2 holds (the cut a view change would choose); capped at the window
    /// end, as before the fix, it stopped at round 19 and never held it.
    @Test func aWedgedMemberFetchesASuspectedSendersSilencePastItsWindow() {
        var cluster = TestCluster(memberCount: 3, windowRounds: 16)
        cluster.runRounds(0...2)
        for round in UInt64(3)...40 {
            cluster.openSlot(0, round: round)
            cluster.flush(0, to: [2])
            cluster.runRounds(round...round, among: [1, 2])
        }
        #expect(cluster.members[2].receivedBelowBySender[0] == 41)
        #expect(cluster.members[1].receivedBelowBySender[0] <= 19)
        // Member 0 is dead from here; the survivors suspect it, then wedge.
        cluster.runRounds(41...100, among: [1, 2])
        #expect(cluster.members[1].suspectedMembers == [0])
        _ = cluster.members[1].wedge()
        _ = cluster.members[2].wedge()
        cluster.runRounds(101...110, among: [1, 2])
        let cut = (0..<3).map { max(cluster.members[1].receivedBelowBySender[$0], cluster.members[2].receivedBelowBySender[$0]) }
        #expect(cluster.members[1].receivedBelowBySender[0] >= 41, "\(cluster.members[1].receivedBelowBySender)")
        #expect(cluster.members[1].holds(cut: cut) && cluster.members[2].holds(cut: cut), "cut \(cut)")
        #expect(cluster.members[1].counters.conflictingFrames == 0 && cluster.members[2].counters.conflictingFrames == 0)
    }
}
