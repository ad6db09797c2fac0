@testable import CarillonRuntime
import Testing

@Suite("Kernel receive timestamps as arrival times")
struct KernelArrivalTests {
    @Test func aKernelTimestampIsMovedOntoTheViewsTimebase() {
        // The kernel stamped 1,000 ns of CLOCK_REALTIME; the member runs 300 ns behind rank 0 (correction −300).
        #expect(KernelArrival.viewNanos(kernelNanos: 1_000_000, correctionNanos: -300, nowNanos: 1_050_000) == 1_000_300)
        #expect(KernelArrival.viewNanos(kernelNanos: 1_000_000, correctionNanos: 200, nowNanos: 1_050_000) == 999_800)
    }

    @Test func missingOrImplausibleTimestampsLeaveTheReadTime() {
        let now: UInt64 = 5_000_000_000
        #expect(KernelArrival.viewNanos(kernelNanos: nil, correctionNanos: 0, nowNanos: now) == nil)
        #expect(KernelArrival.viewNanos(kernelNanos: 0, correctionNanos: 0, nowNanos: now) == nil)
        #expect(KernelArrival.viewNanos(kernelNanos: -5, correctionNanos: 0, nowNanos: now) == nil)
        // Older than a parked agent's longest sleep, or far after the read: a clock step, not an arrival.
        #expect(KernelArrival.viewNanos(kernelNanos: Int64(now) - 2_000_000_000, correctionNanos: 0, nowNanos: now) == nil)
        #expect(KernelArrival.viewNanos(kernelNanos: Int64(now) + 50_000_000, correctionNanos: 0, nowNanos: now) == nil)
        // Just after the read (the receive call itself) is believed.
        #expect(KernelArrival.viewNanos(kernelNanos: Int64(now) + 2_000, correctionNanos: 0, nowNanos: now) == now + 2_000)
    }

    @Test func theEstimateLogKeepsPercentilesOfMagnitudes() {
        var log = ClockEstimateLog()
        #expect(log.summary(kernelTimestamps: true) == nil)
        for value in [-40, 10, -20, 30, 0] as [Int64] { log.record(value * 1_000) }
        let summary = log.summary(kernelTimestamps: true)
        #expect(summary?.samples == 5)
        #expect(summary?.p50AbsNanos == 20_000)
        #expect(summary?.maxAbsNanos == 40_000)
        // The ring keeps the latest capacity samples: old large ones age out.
        for _ in 0..<ClockEstimateLog.capacity { log.record(1_000) }
        #expect(log.summary(kernelTimestamps: false)?.maxAbsNanos == 1_000)
        #expect(log.summary(kernelTimestamps: false)?.samples == ClockEstimateLog.capacity + 5)
    }
}
