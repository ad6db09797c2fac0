/// A small, fixed-capacity set of round ranges, kept sorted, disjoint and
/// non-adjacent. Used for a sender's known-silent rounds and for the own rounds
/// other members asked to have repaired. Storage is allocated once; inserting
/// never allocates. When more runs arrive than fit, the latest run is dropped:
/// both users can afford that (silent rounds are restated in every frame, NAKs
/// are repeated until answered).
struct RoundRuns: Sendable {
    private var firsts: [UInt64]
    private var lasts: [UInt64]
    private(set) var count = 0

    init(capacity: Int) {
        precondition(capacity >= 1)
        firsts = Array(repeating: 0, count: capacity)
        lasts = Array(repeating: 0, count: capacity)
    }

    var isEmpty: Bool { count == 0 }

    /// The earliest run.
    var first: ClosedRange<UInt64>? { count == 0 ? nil : firsts[0]...lasts[0] }

    /// The last round of the run containing `round`, if any.
    func end(containing round: UInt64) -> UInt64? {
        for i in 0..<count where firsts[i] <= round && round <= lasts[i] { return lasts[i] }
        return nil
    }

    /// The first round of the earliest run starting after `round` (`.max` if none).
    func nextStart(after round: UInt64) -> UInt64 {
        for i in 0..<count where firsts[i] > round { return firsts[i] }
        return .max
    }

    /// Forgets every round below `round`.
    mutating func removeBelow(_ round: UInt64) {
        var kept = 0
        for i in 0..<count where lasts[i] >= round {
            firsts[kept] = max(firsts[i], round)
            lasts[kept] = lasts[i]
            kept += 1
        }
        count = kept
    }

    /// Adds `first...last`, joining every run it overlaps or touches. Returns
    /// whether the set changed.
    @discardableResult
    mutating func insert(_ first: UInt64, _ last: UInt64) -> Bool {
        precondition(first <= last)
        if let end = end(containing: first), end >= last { return false }
        var first = first, last = last
        // Absorb touching runs, compacting the rest in place.
        var kept = 0
        for i in 0..<count {
            let separated = (lasts[i] < first && first - lasts[i] > 1) || (last < firsts[i] && firsts[i] - last > 1)
            if !separated {
                first = min(first, firsts[i])
                last = max(last, lasts[i])
            } else {
                firsts[kept] = firsts[i]
                lasts[kept] = lasts[i]
                kept += 1
            }
        }
        count = kept
        // Insertion point keeps the runs sorted.
        var at = 0
        while at < count, firsts[at] < first { at += 1 }
        if count == firsts.count {
            // Full: the latest run gives way, possibly the new one.
            if at == count { return false }
            count -= 1
        }
        var i = count
        while i > at {
            firsts[i] = firsts[i - 1]
            lasts[i] = lasts[i - 1]
            i -= 1
        }
        firsts[at] = first
        lasts[at] = last
        count += 1
        return true
    }
}
