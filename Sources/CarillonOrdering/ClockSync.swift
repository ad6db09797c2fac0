/// Estimates how far this member's clock is from each peer's, from the
/// timestamps frames already carry — no extra messages.
///
/// Every frame's header holds its sender's clock at sending. On arrival,
/// `receive − send = (my clock − peer clock) + delay`. Keeping the minimum of
/// that over a sliding window filters queueing out (the min-filter); each slot
/// frame reports the minimum this member saw from every peer (a `clockSamples`
/// section), so both directions of each pair are known and
/// `offset = (minOneWay(peer→me) − minOneWay(me→peer)) / 2`, assuming the
/// fastest path is about as fast both ways. Pure: time is an argument.
///
/// Clocks decide only when a member sends; nothing delivered depends on
/// these estimates.
/// The clock estimator's filter length, for shells that pace their corrections.
public enum ClockFilter {
    /// Frames per peer in one min-filter bucket; the filter spans one to two buckets.
    public static let bucketFrames = 256
}

struct ClockSync: Sendable {
    /// Samples per min-filter bucket; the filter spans one to two buckets.
    static let bucketSamples = ClockFilter.bucketFrames

    private var current: [Int64]
    private var previous: [Int64]
    private var samples: [Int]
    /// Per peer: the minimum one-way figure the peer reported for our frames.
    private(set) var reportedByPeer: [Int64]

    init(memberCount: Int) {
        current = Array(repeating: .max, count: memberCount)
        previous = Array(repeating: .max, count: memberCount)
        samples = Array(repeating: 0, count: memberCount)
        reportedByPeer = Array(repeating: .max, count: memberCount)
    }

    /// Records a frame from `peer` stamped `sentNanos` (its clock) that arrived at `receivedNanos` (ours).
    mutating func observe(peer: Int, sentNanos: UInt64, receivedNanos: UInt64) {
        guard sentNanos != 0 else { return }  // retransmitted frames carry no timestamp
        let oneWay = Int64(bitPattern: receivedNanos &- sentNanos)
        current[peer] = min(current[peer], oneWay)
        samples[peer] += 1
        if samples[peer] == Self.bucketSamples {
            previous[peer] = current[peer]
            current[peer] = .max
            samples[peer] = 0
        }
    }

    /// The filtered minimum `receive − send` for frames from `peer`, if any arrived.
    func minOneWay(from peer: Int) -> Int64? {
        let value = min(current[peer], previous[peer])
        return value == .max ? nil : value
    }

    /// Records the peer's report of its minimum for our frames.
    mutating func peerReported(_ peer: Int, minOneWayNanos: Int64) {
        reportedByPeer[peer] = minOneWayNanos
    }

    /// How far this member's clock is ahead of `peer`'s, when both directions are known.
    func offset(from peer: Int) -> Int64? {
        guard let inbound = minOneWay(from: peer), reportedByPeer[peer] != .max else { return nil }
        // Both figures come from the wire (a timestamp, a peer's report) and
        // may be anything: halve before subtracting when the difference overflows.
        let (difference, overflow) = inbound.subtractingReportingOverflow(reportedByPeer[peer])
        return overflow ? inbound / 2 - reportedByPeer[peer] / 2 : difference / 2
    }
}
