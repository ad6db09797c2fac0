/// How far a member's estimate of its offset to the view's timebase (rank 0's
/// clock) wandered while it ran, kept for the stop report.
///
/// The estimate is sampled when the runtime corrects its clock (at most every
/// 100 ms, never per frame) into storage allocated once. On one host every
/// member reads the same CLOCK_REALTIME, so the true offset is zero and these
/// figures are the estimator's error: what kernel receive timestamps shrink
/// (docs/protocol.md §13, docs/benchmarks.md).
public struct ClockEstimateSummary: Sendable, Hashable, CustomStringConvertible {
    /// Estimates sampled (the latest ``ClockEstimateLog/capacity`` are kept).
    public var samples: Int
    /// Median of |estimate| over the kept samples, in nanoseconds.
    public var p50AbsNanos: Int64
    /// 99th percentile of |estimate|, in nanoseconds.
    public var p99AbsNanos: Int64
    /// Largest |estimate|, in nanoseconds.
    public var maxAbsNanos: Int64
    /// Whether arrival times came from the kernel (`SO_TIMESTAMPNS`) or from the agent's clock reads.
    public var kernelTimestamps: Bool

    public var description: String {
        func micros(_ nanos: Int64) -> String { String(Double(nanos / 100) / 10) }
        return "clock estimate toward rank 0 (\(kernelTimestamps ? "kernel receive timestamps" : "agent read times")): "
            + "\(samples) samples, |estimate| p50 \(micros(p50AbsNanos)) µs, p99 \(micros(p99AbsNanos)) µs, max \(micros(maxAbsNanos)) µs"
    }
}

/// The latest clock estimates of one member, in a ring allocated once.
struct ClockEstimateLog {
    static let capacity = 4096
    private var ring = [Int64](repeating: 0, count: ClockEstimateLog.capacity)
    private(set) var count = 0

    mutating func record(_ estimateNanos: Int64) {
        ring[count % Self.capacity] = estimateNanos == .min ? .max : Swift.abs(estimateNanos)
        count += 1
    }

    /// Percentiles of the kept samples (allocates: called at stop only); nil before the first.
    func summary(kernelTimestamps: Bool) -> ClockEstimateSummary? {
        guard count > 0 else { return nil }
        let kept = ring.prefix(min(count, Self.capacity)).sorted()
        func at(_ q: Double) -> Int64 { kept[min(kept.count - 1, Int(Double(kept.count) * q))] }
        return ClockEstimateSummary(
            samples: count, p50AbsNanos: at(0.5), p99AbsNanos: at(0.99), maxAbsNanos: kept.last!,
            kernelTimestamps: kernelTimestamps)
    }
}

/// A kernel receive timestamp turned into the arrival time the instance is given.
enum KernelArrival {
    /// How far from the batch's clock read an arrival time may lie and still be
    /// believed: a datagram waits in the socket for at most a parked agent's
    /// sleep (well under a second), and arrives after the read only by the
    /// time the receive call takes.
    static let maxAgeNanos: UInt64 = 1_000_000_000
    static let maxLeadNanos: UInt64 = 10_000_000

    /// `kernelNanos` (CLOCK_REALTIME) on the view's timebase (minus `correctionNanos`),
    /// or nil when there is none or it is implausibly far from `nowNanos`
    /// (a clock step between the two reads): then the read time stands.
    static func viewNanos(kernelNanos: Int64?, correctionNanos: Int64, nowNanos: UInt64) -> UInt64? {
        guard let kernelNanos, kernelNanos > 0 else { return nil }
        let arrival = UInt64(bitPattern: kernelNanos &- correctionNanos)
        if arrival <= nowNanos { return nowNanos - arrival <= maxAgeNanos ? arrival : nil }
        return arrival - nowNanos <= maxLeadNanos ? arrival : nil
    }
}
