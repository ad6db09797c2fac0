import CarillonSchedule

/// Turns a member's estimate of its clock offset to the view's timebase
/// (``OrderingInstance/clockOffsetNanos(from:)`` toward rank 0) into a clock
/// correction that follows a real offset and never runs away on a bad
/// estimate. Pure: the shell passes its local clock reading, the view's epoch,
/// the timebase's identity and the estimate; the corrector answers with the
/// step it applied. The runtime's `Member` runs it a few times a second, and
/// a simulator can run the same code on per-node clocks.
///
/// The rules (docs/protocol.md §13):
/// - **Settle.** After a step, and when a new view starts (its estimator
///   starts empty), estimates are ignored for ``Settings/settleNanos``: the
///   min-filters must refill with samples taken under the current correction.
/// - **Sample.** At most one estimate per ``Settings/sampleIntervalNanos`` is
///   kept; a step needs ``Settings/samples`` (5) kept estimates of the same
///   view since the last step.
/// - **Dead band.** A median within ``Settings/deadbandNanos`` (a slot) is
///   estimator noise — asymmetric wake-ups on one host — and left alone.
/// - **Stable → up to a large step.** When they agree — spread at most
///   ``Settings/toleranceNanos`` or 1/32 of their median — half the median
///   is applied, at most ``Settings/largeStepNanos``.
/// - **Noisy but consistent → a small step.** When they disagree by no more
///   than ``Settings/noiseLimitNanos`` and all point the same way beyond the
///   dead band, at most ``Settings/smallStepNanos`` (a fraction of a round).
/// - **Scattered → nothing.** An estimate that swings by more (as during
///   churn: −4 to −120 ms between views) is not a clock error; it is counted
///   in ``estimatesRejected`` and never applied.
/// - **Rate.** Whatever the tier, the total applied is bounded by a budget
///   that refills at ``Settings/maxSlewNanosPerSecond`` (capped at one large
///   step).
///
/// Clocks decide only when a member sends: nothing delivered depends on this.
public struct ClockCorrector: Sendable {
    public struct Settings: Sendable, Hashable {
        /// A median estimate within this is noise and left alone.
        public var deadbandNanos: UInt64
        /// Estimates within this of each other (or within 1/32 of their
        /// median) are stable.
        public var toleranceNanos: UInt64
        /// Estimates scattered by more than this are not applied at all.
        public var noiseLimitNanos: UInt64
        /// Largest step from estimates that are consistent but not stable.
        public var smallStepNanos: UInt64
        /// Largest step from stable estimates.
        public var largeStepNanos: UInt64
        /// The rate budget's refill: most correction applied per second of local time.
        public var maxSlewNanosPerSecond: UInt64
        /// Estimates kept at most this often.
        public var sampleIntervalNanos: UInt64
        /// Estimates ignored this long after a step or a new view.
        public var settleNanos: UInt64
        /// Kept estimates a step needs (at least 3).
        public var samples: Int

        /// Defaults for a schedule: dead band one slot, tolerance half a round,
        /// noise limit ten rounds, small steps a quarter round, large steps
        /// 20 ms, 20 ms/s of slew, an estimate per 100 ms, and a settle time of
        /// three min-filter buckets (`3 × ClockFilter.bucketFrames` rounds).
        public init(schedule: TDMASchedule) {
            let round = schedule.roundPeriodNanos
            deadbandNanos = schedule.slotNanos
            toleranceNanos = round / 2
            noiseLimitNanos = 10 * round
            smallStepNanos = max(round / 4, 1)
            largeStepNanos = 20_000_000
            maxSlewNanosPerSecond = 20_000_000
            sampleIntervalNanos = 100_000_000
            settleNanos = 3 * UInt64(ClockFilter.bucketFrames) * round
            samples = 5
        }
    }

    public let settings: Settings
    /// The correction now: the shell's view clock is its local clock minus this.
    public private(set) var correctionNanos: Int64 = 0
    /// Drift against the timebase, parts per billion, once kept estimates span ten seconds.
    public private(set) var driftPPB: Int64?
    /// Steps applied so far.
    public private(set) var steps = 0
    /// Sets of estimates too scattered to apply.
    public private(set) var estimatesRejected = 0

    private var epoch: UInt32?
    private var timebase: UInt64?
    private var settleUntilNanos: UInt64?
    private var lastSampleNanos: UInt64?
    /// The kept estimates since the last step, oldest first (at most `settings.samples`).
    private var samples: [Int64]
    private var sorted: [Int64]
    private var budgetNanos: UInt64
    private var budgetAtNanos: UInt64?
    /// (local time, total offset = correction + estimate), for the drift; fixed capacity.
    private var driftHistory: [(atNanos: UInt64, offsetNanos: Int64)]
    private static let driftCapacity = 128

    public init(settings: Settings) {
        self.settings = settings
        budgetNanos = settings.largeStepNanos
        samples = []
        samples.reserveCapacity(max(settings.samples, 3))
        sorted = []
        sorted.reserveCapacity(max(settings.samples, 3))
        driftHistory = []
        driftHistory.reserveCapacity(Self.driftCapacity)
    }

    /// One observation at local time `nowNanos`: this member is in view
    /// `epoch` (nil: in none), whose timebase member is `timebase` (an
    /// identity the caller chooses; nil when unknown), and its offset to the
    /// timebase under the current correction is estimated as `estimateNanos`
    /// (nil: this member is the timebase, or no estimate yet). Returns the step
    /// added to ``correctionNanos`` (0 for none).
    @discardableResult
    public mutating func update(nowNanos: UInt64, epoch: UInt32?, timebase: UInt64?, estimateNanos: Int64?) -> Int64 {
        if timebase != self.timebase {
            self.timebase = timebase
            driftHistory.removeAll(keepingCapacity: true)
            driftPPB = nil
        }
        if epoch != self.epoch {
            // A new view's estimator starts empty: its first minima come from
            // a handful of frames. Start over, keeping the correction.
            self.epoch = epoch
            samples.removeAll(keepingCapacity: true)
            settleUntilNanos = nowNanos &+ settings.settleNanos
        }
        refillBudget(nowNanos: nowNanos)
        guard let estimate = estimateNanos else { return 0 }
        if let until = settleUntilNanos, nowNanos < until { return 0 }
        if let last = lastSampleNanos, nowNanos >= last, nowNanos - last < settings.sampleIntervalNanos { return 0 }
        lastSampleNanos = nowNanos
        keep(estimate)
        recordDrift(nowNanos: nowNanos, offset: correctionNanos.addingClamped(estimate))
        guard samples.count >= max(settings.samples, 3) else { return 0 }

        sorted.removeAll(keepingCapacity: true)
        sorted.append(contentsOf: samples)
        sorted.sort()
        let low = sorted.first!, high = sorted.last!
        let median = sorted[sorted.count / 2]
        let (difference, overflow) = high.subtractingReportingOverflow(low)
        let spread = overflow ? UInt64.max : UInt64(difference)
        let size = median.magnitude
        guard size > settings.deadbandNanos else { return 0 }
        let cap: UInt64
        if spread <= max(settings.toleranceNanos, size / 32) {
            cap = settings.largeStepNanos
        } else if spread <= settings.noiseLimitNanos, (low > 0 || high < 0),
            min(low.magnitude, high.magnitude) > settings.deadbandNanos
        {
            cap = settings.smallStepNanos
        } else {
            estimatesRejected += 1
            samples.removeAll(keepingCapacity: true)
            return 0
        }
        let wanted = min(size / 2, cap, budgetNanos)
        guard wanted > 0 else { return 0 }
        let step = median < 0 ? -Int64(wanted) : Int64(wanted)
        correctionNanos = correctionNanos.addingClamped(step)
        budgetNanos -= wanted
        steps += 1
        // The estimate reflects the old correction until the filters refill.
        samples.removeAll(keepingCapacity: true)
        settleUntilNanos = nowNanos &+ settings.settleNanos
        return step
    }

    private mutating func keep(_ estimate: Int64) {
        if samples.count >= max(settings.samples, 3) { samples.removeFirst() }
        samples.append(estimate)
    }

    private mutating func refillBudget(nowNanos: UInt64) {
        defer { budgetAtNanos = nowNanos }
        guard let at = budgetAtNanos, nowNanos > at else { return }
        let elapsed = nowNanos - at
        let earned = min(Double(elapsed) / 1e9 * Double(settings.maxSlewNanosPerSecond), Double(settings.largeStepNanos))
        budgetNanos = min(settings.largeStepNanos, budgetNanos &+ UInt64(earned))
    }

    private mutating func recordDrift(nowNanos: UInt64, offset: Int64) {
        if driftHistory.count == Self.driftCapacity { driftHistory.removeFirst() }
        driftHistory.append((nowNanos, offset))
        if let first = driftHistory.first, nowNanos > first.atNanos &+ 10_000_000_000 {
            let slope = (Double(offset) - Double(first.offsetNanos)) / Double(nowNanos - first.atNanos)
            driftPPB = Int64(exactly: (slope * 1e9).rounded()) ?? nil
        }
    }
}

extension Int64 {
    /// `self + other`, saturating at the bounds instead of trapping.
    @inline(__always) func addingClamped(_ other: Int64) -> Int64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? (other > 0 ? .max : .min) : sum
    }
}
