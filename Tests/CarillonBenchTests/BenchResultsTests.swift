import CarillonBench
import Histogram
import Testing

@Suite struct BenchResultsTests {
    @Test func summaryReadsPercentilesFromTheHistogram() {
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        for value in 1...1000 { _ = histogram.record(UInt64(value) * 1000) }
        let summary = LatencySummary(nanoseconds: histogram)
        #expect(summary.count == 1000)
        #expect(abs(summary.p50Micros - 500) < 1)
        #expect(abs(summary.p99Micros - 990) < 1)
        #expect(summary.distribution.last?.percentile == 100)
    }
}
