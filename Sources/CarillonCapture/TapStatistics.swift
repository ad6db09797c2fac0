import CarillonSchedule
import CarillonWire
import Foundation

/// What carillon-tap counts: per member (by epoch and slot), per round, and overall.
public struct TapStatistics: Sendable {
    /// One member's traffic, as the capture saw it.
    public struct Member: Sendable, Hashable {
        public var epoch: UInt32
        public var rank: UInt16
        public var slotFrames = 0
        public var repairFrames = 0
        public var membershipFrames = 0
        public var messages = 0
        public var payloadBytes = 0
        public var datagramBytes = 0
        /// Rounds skipped between consecutive slot frames (lost in capture or on the wire, or a member that was late).
        public var gapRounds = 0
        public var nakRanges = 0
        public var retransmittedFrames = 0
        public var badTags = 0
        public var missingTags = 0
        /// Slot and repair frames whose tag could not be checked: no run known yet (not bad tags).
        public var runUnknown = 0
        /// Rounds between a frame's round and the lowest position it acknowledges (how far stability trails).
        public var stabilityLagSum = 0
        public var stabilityLagMax = 0
        public var stabilityLagSamples = 0
        /// Arrival minus the slot's start on the schedule, nanoseconds (with a schedule).
        public var slotErrorSum: Double = 0
        public var slotErrorMin: Int64 = .max
        public var slotErrorMax: Int64 = .min
        public var slotErrorSamples = 0
        /// Slot frames' datagram bytes, against the slot capacity (with a schedule and a link rate).
        public var slotFrameBytes = 0
        var lastSlotRound: UInt64?
    }

    /// The schedule, to reconstruct slot times and capacity (`nil`: no timing statistics).
    public var schedule: TDMASchedule?
    /// Link rate for slot capacity, bits per second.
    public var linkBitsPerSecond: Double = 10e9

    public private(set) var members: [UInt64: Member] = [:]
    public var packetsNotUDP = 0
    public var framesMalformed = 0
    public private(set) var frames = 0
    /// Slot and repair frames whose tag verified, by the run whose key it verified under.
    public private(set) var framesByRun: [UInt64: Int] = [:]
    public private(set) var firstNanos: UInt64 = .max
    public private(set) var lastNanos: UInt64 = 0
    /// Rounds whose slot frames were all captured, and rounds with some missing (needs the schedule's member count).
    public private(set) var roundsComplete = 0
    public private(set) var roundsIncomplete = 0
    /// Slot-frame senders seen per recent round (bit per rank), settled once 1,024 rounds old.
    var recentRounds: [UInt64: UInt64] = [:]
    var highestRound: UInt64 = 0

    public init(schedule: TDMASchedule? = nil) { self.schedule = schedule }

    mutating func record(
        _ view: FrameView, _ totals: FrameTotals, timestampNanos: UInt64, authentication: AuthenticationStatus,
        verifiedRun: UInt64? = nil, datagramBytes: Int
    ) {
        let h = view.header
        frames += 1
        firstNanos = min(firstNanos, timestampNanos)
        lastNanos = max(lastNanos, timestampNanos)
        let key = UInt64(h.epoch) << 16 | UInt64(h.senderRank)
        var m = members[key] ?? Member(epoch: h.epoch, rank: h.senderRank)
        m.datagramBytes += datagramBytes
        switch authentication {
        case .badTag: m.badTags += 1
        case .noTag: m.missingTags += 1
        case .runUnknown: m.runUnknown += 1
        case .verified, .unchecked: break
        }
        if let verifiedRun { framesByRun[verifiedRun, default: 0] += 1 }
        switch h.kind {
        case .slot:
            m.slotFrames += 1
            m.slotFrameBytes += datagramBytes
            // A round far from the last one is a damaged, forged or foreign frame,
            // not a gap: only jumps below a million rounds count, and the last
            // round follows the frames actually seen (no arithmetic can overflow).
            if let last = m.lastSlotRound, h.round > last, h.round - last > 1, h.round - last < 1_000_000 {
                m.gapRounds &+= Int(h.round - last - 1)
            }
            if m.lastSlotRound == nil || h.round > m.lastSlotRound! && h.round - m.lastSlotRound! < 1_000_000 {
                m.lastSlotRound = h.round
            }
            if let schedule, Int(h.senderRank) < schedule.memberCount {
                let error = Int64(bitPattern: timestampNanos &- schedule.slotWindow(round: h.round, rank: Int(h.senderRank)).startNanos)
                m.slotErrorSum += Double(error)
                m.slotErrorMin = min(m.slotErrorMin, error)
                m.slotErrorMax = max(m.slotErrorMax, error)
                m.slotErrorSamples += 1
                noteRound(h.round, rank: Int(h.senderRank), memberCount: schedule.memberCount)
            }
        case .repair: m.repairFrames += 1
        case .membership: m.membershipFrames += 1
        }
        m.messages += view.messageCount
        m.payloadBytes += totals.payloadBytes
        for _ in view.nakRanges { m.nakRanges += 1 }
        m.retransmittedFrames += totals.embeddedFrames
        var lowest = UInt64.max
        for entry in view.positionEntries { lowest = min(lowest, entry.receivedBelowRound) }
        if lowest != .max, h.round >= lowest {
            let lag = Int(min(h.round - lowest, 1 << 32))
            m.stabilityLagSum &+= lag
            m.stabilityLagMax = max(m.stabilityLagMax, lag)
            m.stabilityLagSamples += 1
        }
        members[key] = m
    }

    mutating func noteRound(_ round: UInt64, rank: Int, memberCount: Int) {
        guard rank < 64 else { return }
        // A round far from the ones seen is a damaged or foreign frame: ignored here.
        if highestRound != 0, round > highestRound ? round - highestRound > 1_000_000 : highestRound - round > 1_000_000 { return }
        recentRounds[round, default: 0] |= 1 << UInt64(rank)
        highestRound = max(highestRound, round)
        guard recentRounds.count > 2_048 else { return }
        let full: UInt64 = memberCount >= 64 ? .max : (1 << UInt64(memberCount)) - 1
        for (r, seen) in recentRounds where highestRound - r > 1_024 {
            if seen & full == full { roundsComplete += 1 } else { roundsIncomplete += 1 }
            recentRounds[r] = nil
        }
    }

    /// Settles the rounds still pending (call once at the end).
    public mutating func settle() {
        guard let schedule else { return }
        let count = schedule.memberCount
        let full: UInt64 = count >= 64 ? .max : (1 << UInt64(count)) - 1
        for (_, seen) in recentRounds { if seen & full == full { roundsComplete += 1 } else { roundsIncomplete += 1 } }
        recentRounds.removeAll()
    }

    /// A table an operator can read.
    public func report() -> String {
        var lines: [String] = []
        let seconds = lastNanos > firstNanos ? Double(lastNanos - firstNanos) / 1e9 : 0
        lines.append(
            "carillon-tap statistics: \(frames) frames in \(String(format: "%.3f", seconds)) s; \(framesMalformed) malformed; \(packetsNotUDP) packets not bus datagrams"
        )
        lines.append(
            "  epoch slot   frames(slot/repair/memb)   msgs    payload B  gaps  naks  retx  bad-tag no-tag run-unk  lag(avg/max rnd)  slot error µs (min/avg/max)  occupancy"
        )
        for key in members.keys.sorted() {
            let m = members[key]!
            let lag =
                m.stabilityLagSamples > 0
                ? String(format: "%.1f/%d", Double(m.stabilityLagSum) / Double(m.stabilityLagSamples), m.stabilityLagMax) : "-"
            let timing =
                m.slotErrorSamples > 0
                ? String(
                    format: "%.1f/%.1f/%.1f", Double(m.slotErrorMin) / 1e3, m.slotErrorSum / Double(m.slotErrorSamples) / 1e3,
                    Double(m.slotErrorMax) / 1e3)
                : "-"
            var occupancy = "-"
            if let schedule, m.slotFrames > 0 {
                let capacity = Double(schedule.slotNanos - schedule.guardNanos) / 1e9 * linkBitsPerSecond / 8
                occupancy = String(format: "%.2f%%", 100 * Double(m.slotFrameBytes) / Double(m.slotFrames) / capacity)
            }
            let frames = "\(m.slotFrames)/\(m.repairFrames)/\(m.membershipFrames)"
            func pad(_ s: String, _ width: Int, left: Bool = false) -> String {
                s.count >= width
                    ? s : (left ? s + String(repeating: " ", count: width - s.count) : String(repeating: " ", count: width - s.count) + s)
            }
            lines.append(
                "  " + pad("\(m.epoch)", 5) + " " + pad("\(m.rank)", 4) + "   " + pad(frames, 24, left: true) + " "
                    + pad("\(m.messages)", 6) + " " + pad("\(m.payloadBytes)", 12) + " " + pad("\(m.gapRounds)", 5) + " "
                    + pad("\(m.nakRanges)", 5) + " " + pad("\(m.retransmittedFrames)", 5) + "  " + pad("\(m.badTags)", 7) + " "
                    + pad("\(m.missingTags)", 6) + " " + pad("\(m.runUnknown)", 7) + "  " + pad(lag, 17, left: true) + " "
                    + pad(timing, 28, left: true) + " " + occupancy)
        }
        let unknown = members.values.reduce(0) { $0 + $1.runUnknown }
        if unknown > 0 {
            lines.append("  tags: \(unknown) slot/repair frames not checked, run unknown (give --run or --config); not counted as bad tags")
        }
        if !framesByRun.isEmpty {
            lines.append(
                "  runs: " + framesByRun.keys.sorted().map { "\($0) (\(framesByRun[$0]!) slot/repair frames verified)" }.joined(separator: ", "))
        }
        if schedule != nil {
            let total = roundsComplete + roundsIncomplete
            lines.append(
                "  rounds: \(roundsComplete) of \(total) complete (every member's slot frame captured)\(total > 0 ? String(format: ", %.2f%%", 100 * Double(roundsComplete) / Double(total)) : "")"
            )
            if let schedule, seconds > 0 {
                let reserved = schedule.reservation * linkBitsPerSecond / 8
                let used = Double(members.values.reduce(0) { $0 + $1.datagramBytes }) / seconds
                lines.append(
                    String(
                        format: "  capacity: reserved %.1f MB/s (%.0f%% of %.1f Gbit/s), used %.3f MB/s", reserved / 1e6,
                        schedule.reservation * 100, linkBitsPerSecond / 1e9, used / 1e6))
            }
        }
        return lines.joined(separator: "\n")
    }
}
