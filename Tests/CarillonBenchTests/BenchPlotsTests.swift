import CarillonBench
import Foundation
import Testing

@Suite struct BenchPlotsTests {
    @Test func labelNamesSystemMembersSizeAndBulk() {
        let result = Fixtures.interferenceRun.results[1]
        #expect(BenchPlots.label(for: result) == "carillon, 3 members, 64 B, bulk gated")
        let bare = BenchResult(scenario: "x", system: "raw-udp-pingpong", placement: "loopback", parameters: ["size_bytes": "1024"])
        #expect(BenchPlots.label(for: bare) == "raw-udp-pingpong, 1 KiB")
    }

    @Test func percentilePlotHasOneSeriesPerLatencyRow() throws {
        let plot = BenchPlots.percentileDistribution(results: Fixtures.corosyncRun.results, title: "Corosync")
        #expect(plot.series.count == 3)
        #expect(plot.xScale == .log10)
        // Rows that share a label are told apart.
        #expect(Set(plot.series.map(\.name)).count == 3)
        let first = plot.series[0]
        let xs = first.points.map(\.x).dropLast()
        #expect(xs.count == 5)
        #expect(zip(xs, [1.0, 2, 10, 100, 1000]).allSatisfy { abs($0 - $1) < $1 * 1e-9 }, "\(xs)")
        // The maximum is drawn at a finite x: here count = 10,000 → 99.99 %.
        #expect(first.points.last == PlotPoint(x: 10_000, y: 800))
        #expect(plot.xTickLabels?.map(\.label) == ["0%", "90%", "99%", "99.9%", "99.99%"])

        let root = try SVGInspection.root(plot.svg())
        #expect(SVGInspection.elements("polyline", in: root).count == 3)
        #expect(SVGInspection.texts(class: "tick-x", in: root) == ["0%", "90%", "99%", "99.9%", "99.99%"])
    }

    @Test func percentilePlotChoosesItsLatencyScale() {
        // 50 µs … 900 µs: narrow, linear from 0.
        #expect(BenchPlots.percentileDistribution(results: Fixtures.corosyncRun.results, title: "").yScale == .linear)
        // 50 µs … 9,000 µs: wide, log10.
        #expect(BenchPlots.percentileDistribution(results: Fixtures.interferenceRun.results, title: "").yScale == .log10)
    }

    @Test func percentilePlotOfAHistogramStaysFinite() throws {
        let latency = Fixtures.histogramLatency(medianMicros: 100, tail: 2.5, count: 50_000)
        let result = BenchResult(scenario: "baseline", system: "carillon", placement: "loopback", parameters: [:], latency: latency)
        let plot = BenchPlots.percentileDistribution(results: [result], title: "")
        let xs = plot.series[0].points.map(\.x)
        #expect(xs.allSatisfy { $0.isFinite && $0 >= 1 && $0 <= 1e6 })
        #expect(zip(xs.dropFirst(), xs).allSatisfy { $0 >= $1 })
        #expect(plot.series[0].points.last?.y == latency.maxMicros)
        _ = try SVGInspection.root(plot.svg())
    }

    @Test func loadPlotGroupsRowsThatDifferOnlyInLoad() throws {
        let plot = BenchPlots.latencyVersusLoad(results: Fixtures.orderedRun.results, title: "Ordered")
        #expect(
            plot.series.map(\.name) == [
                "carillon, 3 members, 64 B: p50", "carillon, 3 members, 64 B: p99", "carillon, 5 members, 64 B: p50",
                "carillon, 5 members, 64 B: p99"
            ])
        #expect(plot.series[0].points.map(\.x) == [1000, 10_000, 100_000])
        #expect(plot.series[1].points.map(\.y) == [310, 400, 1300])
        #expect(plot.xScale == .log10)
        let root = try SVGInspection.root(plot.svg())
        #expect(SVGInspection.elements("polyline", in: root).count == 4)
    }

    @Test func interferenceBarsFollowTheBulkParameter() throws {
        let plot = BenchPlots.interference(results: Fixtures.interferenceRun.results, title: "Interference")
        #expect(plot.groups == ["none", "gated", "unpaced"])
        #expect(plot.series.map(\.name) == ["p50", "p99", "p99.9"])
        #expect(plot.series[1].values == [400, 600, 1800])
        let root = try SVGInspection.root(plot.svg())
        #expect(SVGInspection.elements("rect", in: root).filter { SVGInspection.attribute("class", of: $0) == "bar" }.count == 9)
    }

    /// Writes one sample of each plot for eyeballing the layout:
    /// `CARILLON_BENCH_PLOT_SAMPLES=/tmp/bench-plot-samples swift test --filter CarillonBenchTests`.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["CARILLON_BENCH_PLOT_SAMPLES"] != nil))
    func writeSamples() throws {
        let directory = URL(fileURLWithPath: ProcessInfo.processInfo.environment["CARILLON_BENCH_PLOT_SAMPLES"]!)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let rows = [
            ("raw-udp-fanout", 70.0, 3.0), ("carillon", 180.0, 2.0), ("corosync-cpg", 400.0, 1.6)
        ].enumerated().map { index, row in
            BenchResult(
                scenario: "baseline", system: row.0, placement: "namespaces", parameters: ["members": "3", "size_bytes": "64"],
                latency: Fixtures.histogramLatency(medianMicros: row.1, tail: row.2, seed: UInt64(index + 1)))
        }
        let samples = [
            ("percentiles.svg", BenchPlots.percentileDistribution(results: rows, title: "Baseline: latency by percentile").svg()),
            ("load.svg", BenchPlots.latencyVersusLoad(results: Fixtures.orderedRun.results, title: "Ordered: latency against offered load").svg()),
            ("bars.svg", BenchPlots.interference(results: Fixtures.interferenceRun.results, title: "Interference: latency under bulk traffic").svg()),
            // Dense: rotated value and group labels, many series, a wrapped legend.
            (
                "bars-dense.svg",
                BarPlot(
                    title: "Dense bars", yLabel: "latency (µs)",
                    groups: ["none", "gated at 50 Mbit/s", "paced at 200 Mbit/s", "unpaced (line rate)", "unpaced, 8 KiB frames"],
                    series: (0..<5).map { s in
                        BarSeries(name: "series number \(s) with a long name", values: (0..<5).map { g in Double((s + 1) * (g + 1)) * 1234.5 })
                    }
                ).svg()
            )
        ]
        for (name, svg) in samples { try Data(svg.utf8).write(to: directory.appendingPathComponent(name)) }
        let run = BenchRun(scenario: "baseline", environment: Fixtures.environment, settings: [:], results: rows)
        let report = BenchReport(runs: [run, Fixtures.interferenceRun, Fixtures.corosyncRun, Fixtures.orderedRun], plotsDirectory: ".")
        try Data(report.markdown().utf8).write(to: directory.appendingPathComponent("report.md"))
    }
}
