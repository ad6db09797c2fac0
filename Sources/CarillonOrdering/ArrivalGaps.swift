/// Failure detection's memory: per peer, the longest gap between arrivals of
/// its frames over the recent past, so a peer that is merely descheduled now
/// and then (a loaded host) is given that much more time before it is
/// suspected (docs/protocol.md §14).
///
/// Gaps are kept as the maximum per time bucket: `buckets` buckets of
/// `bucketNanos` each, so the memory spans `buckets · bucketNanos` and forgets
/// a burst of lateness once that has passed. Fixed memory (allocated in
/// `init`); time is an argument.
struct ArrivalGaps: Sendable {
    let memberCount: Int
    let buckets: Int
    let bucketNanos: UInt64
    /// Per peer: local time of the last new frame heard, 0 for none yet.
    private var lastArrival: [UInt64]
    /// Per peer × bucket: the bucket's number (time / bucketNanos) and its longest gap.
    private var bucketNumber: [UInt64]
    private var bucketMax: [UInt64]

    init(memberCount: Int, historyNanos: UInt64, buckets: Int = 8) {
        self.memberCount = memberCount
        self.buckets = max(buckets, 1)
        bucketNanos = max(historyNanos / UInt64(self.buckets), 1)
        lastArrival = Array(repeating: 0, count: memberCount)
        bucketNumber = Array(repeating: .max, count: memberCount * self.buckets)
        bucketMax = Array(repeating: 0, count: memberCount * self.buckets)
    }

    /// A new frame of `peer` arrived at `nowNanos`.
    mutating func observe(peer: Int, nowNanos: UInt64) {
        let last = lastArrival[peer]
        lastArrival[peer] = max(last, nowNanos)
        guard last != 0, nowNanos > last else { return }
        record(peer: peer, gapNanos: nowNanos - last, atNanos: nowNanos)
    }

    /// Records a gap of `gapNanos` for `peer`, as if it ended at `atNanos`.
    mutating func record(peer: Int, gapNanos: UInt64, atNanos: UInt64) {
        let number = atNanos / bucketNanos
        let index = peer * buckets + Int(number % UInt64(buckets))
        if bucketNumber[index] != number {
            bucketNumber[index] = number
            bucketMax[index] = 0
        }
        bucketMax[index] = max(bucketMax[index], gapNanos)
    }

    /// The longest gap of `peer` in the buckets that are not older than the memory.
    func recentMaxGap(peer: Int, nowNanos: UInt64) -> UInt64 {
        let now = nowNanos / bucketNanos
        var longest: UInt64 = 0
        for index in (peer * buckets)..<((peer + 1) * buckets) {
            let number = bucketNumber[index]
            guard number != .max, number <= now, now - number < UInt64(buckets) else { continue }
            longest = max(longest, bucketMax[index])
        }
        return longest
    }

    /// The longest recent gap of any peer.
    func recentMaxGap(nowNanos: UInt64) -> UInt64 {
        var longest: UInt64 = 0
        for peer in 0..<memberCount { longest = max(longest, recentMaxGap(peer: peer, nowNanos: nowNanos)) }
        return longest
    }

    /// When `peer`'s last new frame arrived (0: never).
    func lastArrivalNanos(peer: Int) -> UInt64 { lastArrival[peer] }

    /// The latest arrival heard from anyone (0: none).
    var latestArrivalNanos: UInt64 { lastArrival.max() ?? 0 }
}
