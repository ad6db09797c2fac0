import CarillonOrdering
import CarillonSchedule
import CarillonSimulation
import Testing

/// Issue 12 defect 7: the clock correction, out of `Member` into a pure
/// corrector, must follow a real offset and never run away on the estimates
/// a churning cluster produces (−4 to −120 ms swings between views).
@Suite("Clock corrector")
struct ClockCorrectorTests {
    let schedule = try! TDMASchedule(memberCount: 3, roundPeriodNanos: 100_000, reservation: 0.5)
    var settings: ClockCorrector.Settings { .init(schedule: schedule) }
    static let publish: UInt64 = 100_000_000  // the runtime calls the corrector every 100 ms

    /// The rule `Member.publishAndCorrect` applied before the corrector, verbatim:
    /// half the residual when beyond a slot, then a pause of three filter
    /// buckets, the pause forgotten at every new view.
    struct OldRule {
        var correction: Int64 = 0
        var next: UInt64 = 0
        var epoch: UInt32?
        mutating func update(now: UInt64, epoch: UInt32, residual: Int64, slot: UInt64, period: UInt64) {
            if epoch != self.epoch { self.epoch = epoch; next = 0 }
            if abs(residual) > Int64(slot), now >= next {
                correction += residual / 2
                next = now + 3 * UInt64(ClockFilter.bucketFrames) * period
            }
        }
    }

    /// Churn on one host: every member shares the true clock, a new view every
    /// 40 ms, and each view's young estimator says the member is 4–120 ms
    /// behind on top of whatever its correction did (the estimate is
    /// `−correction + noise`, true offset zero). 60 s of it.
    @Test func churnEstimatesNeverMoveTheClock() {
        var random = SimulationRandom(seed: 12)
        var corrector = ClockCorrector(settings: settings)
        var old = OldRule()
        var epoch: UInt32 = 1
        var now: UInt64 = 1_000_000_000
        var worstNew: Int64 = 0, worstOld: Int64 = 0
        for tick in 0..<600 {
            if tick % 2 == 0 || random.int(in: 0...2) == 0 { epoch += 1 }  // views live 40–200 ms
            let noise = -Int64(random.int(in: 4_000_000...120_000_000))
            corrector.update(nowNanos: now, epoch: epoch, timebase: 0, estimateNanos: -corrector.correctionNanos + noise)
            old.update(
                now: now, epoch: epoch, residual: -old.correction + noise, slot: schedule.slotNanos,
                period: schedule.roundPeriodNanos)
            worstNew = max(worstNew, Int64(corrector.correctionNanos.magnitude))
            worstOld = max(worstOld, Int64(old.correction.magnitude))
            now += Self.publish
        }
        // The old rule chases the noise: tens of milliseconds, every view.
        #expect(worstOld > 20_000_000, "old rule: worst correction \(worstOld) ns")
        // The corrector: no view lives long enough to settle, so no step at all.
        #expect(worstNew == 0, "worst correction \(worstNew) ns")
        #expect(corrector.steps == 0)
    }

    /// The same scattered estimates in one long view: rejected, never applied.
    @Test func scatteredEstimatesInALongViewAreRejected() {
        var random = SimulationRandom(seed: 7)
        var corrector = ClockCorrector(settings: settings)
        var old = OldRule()
        var now: UInt64 = 1_000_000_000
        for _ in 0..<600 {
            let noise = -Int64(random.int(in: 4_000_000...120_000_000))
            corrector.update(nowNanos: now, epoch: 1, timebase: 0, estimateNanos: -corrector.correctionNanos + noise)
            old.update(
                now: now, epoch: 1, residual: -old.correction + noise, slot: schedule.slotNanos,
                period: schedule.roundPeriodNanos)
            now += Self.publish
        }
        #expect(old.correction.magnitude > 20_000_000, "old rule: \(old.correction) ns")
        #expect(corrector.correctionNanos == 0, "correction \(corrector.correctionNanos) ns")
        #expect(corrector.estimatesRejected > 50)
    }

    /// A real offset of 30 ms between hosts, estimated within ±20 µs: followed,
    /// in steps no larger than the large step, at the bounded rate.
    @Test func followsAStableOffset() {
        var random = SimulationRandom(seed: 3)
        var corrector = ClockCorrector(settings: settings)
        let offset: Int64 = 30_000_000
        var now: UInt64 = 1_000_000_000
        var applied: [(UInt64, Int64)] = []
        for _ in 0..<200 {  // 20 s
            let estimate = offset - corrector.correctionNanos + Int64(random.int(in: 0...40_000)) - 20_000
            let step = corrector.update(nowNanos: now, epoch: 1, timebase: 0, estimateNanos: estimate)
            if step != 0 { applied.append((now, step)) }
            now += Self.publish
        }
        #expect(
            abs(corrector.correctionNanos - offset) <= Int64(schedule.slotNanos) + 20_000,
            "correction \(corrector.correctionNanos) ns for an offset of \(offset)")
        #expect(applied.allSatisfy { $0.1.magnitude <= settings.largeStepNanos })
        // Rate: over any second, no more than one second of slew plus the budget's capacity.
        for (at, _) in applied {
            let window = applied.filter { $0.0 >= at && $0.0 < at + 1_000_000_000 }.map { $0.1.magnitude }.reduce(0, +)
            #expect(window <= settings.maxSlewNanosPerSecond + settings.largeStepNanos)
        }
    }

    /// A 1 ms offset seen through ±300 µs of noise (a loaded host): followed
    /// without overshooting, never by more than half an estimate at once.
    @Test func noisyOffsetConvergesWithoutOvershoot() {
        var random = SimulationRandom(seed: 5)
        var corrector = ClockCorrector(settings: settings)
        let offset: Int64 = 1_000_000
        var now: UInt64 = 1_000_000_000
        var highest: Int64 = 0
        for _ in 0..<600 {  // 60 s
            let estimate = offset - corrector.correctionNanos + Int64(random.int(in: 0...600_000)) - 300_000
            let step = corrector.update(nowNanos: now, epoch: 1, timebase: 0, estimateNanos: estimate)
            #expect(step.magnitude <= (estimate.magnitude + 600_000) / 2 + 1)
            highest = max(highest, corrector.correctionNanos)
            now += Self.publish
        }
        #expect(highest <= offset + 300_000, "overshot to \(highest)")
        #expect(abs(corrector.correctionNanos - offset) < 400_000, "correction \(corrector.correctionNanos)")
    }

    /// Within a slot is noise (asymmetric wake-ups on one host): nothing moves.
    @Test func noiseWithinTheDeadbandIsLeftAlone() {
        var random = SimulationRandom(seed: 1)
        var corrector = ClockCorrector(settings: settings)
        var now: UInt64 = 1_000_000_000
        for _ in 0..<600 {
            corrector.update(
                nowNanos: now, epoch: 1, timebase: 0,
                estimateNanos: Int64(random.int(in: 0...Int(schedule.slotNanos))) - Int64(schedule.slotNanos / 2))
            now += Self.publish
        }
        #expect(corrector.correctionNanos == 0)
    }

    /// A new view settles first, and keeps the correction it had.
    @Test func aNewViewSettlesBeforeStepping() {
        var corrector = ClockCorrector(settings: settings)
        var now: UInt64 = 1_000_000_000
        for _ in 0..<60 {
            corrector.update(nowNanos: now, epoch: 1, timebase: 0, estimateNanos: 5_000_000 - corrector.correctionNanos)
            now += Self.publish
        }
        let kept = corrector.correctionNanos
        #expect(kept > 4_000_000)
        // The next view: the estimate says something different at once, but the
        // corrector waits out the settle time and three samples.
        var stepped: UInt64?
        let viewStart = now
        for _ in 0..<20 {
            if corrector.update(nowNanos: now, epoch: 2, timebase: 0, estimateNanos: 8_000_000 - corrector.correctionNanos) != 0,
                stepped == nil
            {
                stepped = now - viewStart
            }
            now += Self.publish
        }
        #expect(corrector.correctionNanos != 0)
        let stepAfter = try! #require(stepped)
        #expect(stepAfter >= settings.settleNanos + 2 * settings.sampleIntervalNanos)
    }

    /// Drift: a timebase running 50 ppm apart shows as ≈ 50,000 ppb once ten seconds are kept.
    @Test func estimatesDrift() {
        var corrector = ClockCorrector(settings: settings)
        var now: UInt64 = 1_000_000_000
        for _ in 0..<200 {
            let offset = Int64(Double(now - 1_000_000_000) * 50e-6)
            corrector.update(nowNanos: now, epoch: 1, timebase: 0, estimateNanos: offset - corrector.correctionNanos)
            now += Self.publish
        }
        let drift = try! #require(corrector.driftPPB)
        #expect(abs(drift - 50_000) < 2_000, "drift \(drift)")
    }
}
