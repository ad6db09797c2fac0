import CarillonBench
import Foundation
import Testing

@Suite struct BenchReportTests {
    let other = BenchRun(
        scenario: "zzz", environment: Fixtures.environment, settings: [:],
        results: [BenchResult(scenario: "zzz", system: "carillon", placement: "loopback", parameters: [:])])

    var report: String {
        BenchReport(
            runs: [Fixtures.corosyncRun, other, Fixtures.interferenceRun, Fixtures.orderedRun, Fixtures.baselineRun],
            plotsDirectory: "bench"
        ).markdown()
    }

    @Test func sectionsComeInScenarioOrder() throws {
        let headings = report.split(separator: "\n").filter { $0.hasPrefix("### ") }
        #expect(headings == ["### Baseline", "### Ordered", "### Interference", "### Corosync", "### Zzz"])
    }

    @Test func sectionHasCommandAndEnvironment() {
        #expect(report.contains("```sh\ncarillon-bench run --scenario interference --members 3\n```"))
        #expect(
            report.contains(
                "Run 2026-11-27T10:00:00Z on commit `abc1234`: 2 CPUs, kernel `6.1.0-27-amd64`, release build. Settings: `idle=blocking`, `round_period_us=100`."
            ))
    }

    @Test func tableHasTheVaryingColumnsAndTheRows() {
        let lines = report.components(separatedBy: "\n")
        #expect(lines.contains("| bulk | p50 (µs) | p99 (µs) | p99.9 (µs) | max (µs) | notes |"))
        #expect(lines.contains("| --- | ---: | ---: | ---: | ---: | --- |"))
        #expect(lines.contains("| none | 120.0 | 400.0 | 950.5 | 1,500 |  |"))
        #expect(lines.contains("| gated | 130.0 | 600.0 | 1,200 | 2,000 |  |"))
        #expect(lines.contains("| unpaced | 300.0 | 1,800 | 5,000 | 9,000 | bulk sender fell short \\| 3% |"))
        // Baseline: only the system varies.
        #expect(lines.contains("| system | p50 (µs) | p99 (µs) | p99.9 (µs) | max (µs) |"))
        #expect(lines.contains("| raw-udp-fanout | 70.3 | 180.0 | 1,415 | 3,000 |"))
        // Corosync: latency and throughput columns, dashes where a row has none.
        #expect(lines.contains("| system | size (B) | mode | p50 (µs) | p99 (µs) | p99.9 (µs) | max (µs) | msgs/s per member | MB/s per member |"))
        #expect(lines.contains("| corosync-cpg | 64 | throughput | – | – | – | – | 35,000 | 2.2 |"))
        #expect(lines.contains("| carillon | 64 | closed-loop | 150.0 | 300.0 | 500.0 | 800.0 | – | – |"))
        // Ordered: offered load gets thousands separators.
        #expect(lines.contains("| 5 | 100,000 | 200.0 | 1,300 | 2,900 | 12,000 |"))
    }

    @Test func interferenceRatiosAreComputedFromP99() {
        #expect(report.contains("p99 inflation factor (p99 with bulk traffic ÷ p99 with bulk=none, 400.0 µs): gated 1.50×, unpaced 4.50×."))
        let section = BenchReport(runs: [Fixtures.interferenceRun], plotsDirectory: "").markdown()
        #expect(section.contains("gated 1.50×, unpaced 4.50×"))
        // No ratios without a bulk=none row, and none outside the interference scenario.
        var withoutNone = Fixtures.interferenceRun
        withoutNone.results.removeFirst()
        #expect(!BenchReport(runs: [withoutNone], plotsDirectory: "").markdown().contains("inflation"))
        #expect(!BenchReport(runs: [Fixtures.baselineRun], plotsDirectory: "").markdown().contains("inflation"))
    }

    @Test func corosyncHasASideBySideTable() {
        let lines = report.components(separatedBy: "\n")
        #expect(lines.contains("| size (B) | system | p50 (µs) | p99 (µs) | p99.9 (µs) | msgs/s per member |"))
        let rows = lines.filter { $0.hasPrefix("| 64 | ") || $0.hasPrefix("| 1,024 | ") }
        #expect(
            rows == [
                "| 64 | carillon | 150.0 | 300.0 | 500.0 | 100,000 |",
                "| 64 | corosync-cpg | 90.0 | 250.0 | 700.0 | 35,000 |",
                "| 1,024 | carillon | 160.0 | 320.0 | 1,234 | – |"
            ])
    }

    @Test func plotsAreLinked() {
        #expect(report.contains("![Interference: latency by percentile](bench/interference-percentiles.svg)"))
        #expect(report.contains("![Interference: latency under bulk traffic](bench/interference-bars.svg)"))
        #expect(report.contains("![Ordered: latency by percentile, open loop](bench/ordered-open-loop-percentiles.svg)"))
        #expect(report.contains("![Ordered: latency against offered load](bench/ordered-load.svg)"))
        #expect(report.contains("(bench/corosync-percentiles.svg)"))
        #expect(!report.contains("baseline-load.svg") && !report.contains("corosync-bars.svg") && !report.contains("zzz-"))
        #expect(BenchReport(runs: [Fixtures.baselineRun], plotsDirectory: "").markdown().contains("](baseline-percentiles.svg)"))
    }

    @Test func plotFilesMatchTheScenario() throws {
        #expect(BenchReport.plotFiles(for: Fixtures.interferenceRun).map(\.fileName) == ["interference-percentiles.svg", "interference-bars.svg"])
        #expect(BenchReport.plotFiles(for: Fixtures.orderedRun).map(\.fileName) == ["ordered-open-loop-percentiles.svg", "ordered-load.svg"])
        // Closed-loop rows and open-loop rows get a distribution plot each, one line per row.
        var mixed = Fixtures.orderedRun
        var closed = mixed.results[0]
        closed.parameters["offered_per_second"] = nil
        closed.parameters["mode"] = "closed-loop"
        mixed.results.append(closed)
        let files = BenchReport.plotFiles(for: mixed)
        #expect(files.map(\.fileName) == ["ordered-percentiles.svg", "ordered-open-loop-percentiles.svg", "ordered-load.svg"])
        func lines(_ svg: String) throws -> Int {
            SVGInspection.elements("polyline", in: try SVGInspection.root(svg)).filter { SVGInspection.attribute("class", of: $0) == "series-line" }
                .count
        }
        #expect(try lines(files[0].svg) == 1)
        #expect(try lines(files[1].svg) == Fixtures.orderedRun.results.filter { $0.latency != nil }.count)
        #expect(BenchReport.plotFiles(for: Fixtures.baselineRun).map(\.fileName) == ["baseline-percentiles.svg"])
        #expect(BenchReport.plotFiles(for: other).isEmpty)
        for file in BenchReport.plotFiles(for: Fixtures.orderedRun) + BenchReport.plotFiles(for: Fixtures.interferenceRun) {
            let root = try SVGInspection.root(file.svg)
            #expect(SVGInspection.texts(class: "title", in: root) == [file.title])
        }
    }

    @Test func debugBuildsAreFlagged() {
        var run = Fixtures.baselineRun
        run.environment.buildMode = "debug"
        run.environment.commit = nil
        let markdown = BenchReport(runs: [run], plotsDirectory: "bench").markdown()
        #expect(markdown.contains("on commit `unknown`"))
        #expect(markdown.contains("debug build (not a release build: figures are not meaningful)."))
    }

    // MARK: Splice

    let begin = "<!-- carillon-bench:begin -->"
    let end = "<!-- carillon-bench:end -->"

    @Test func spliceReplacesBetweenTheMarkers() {
        let document = "# Benchmarks\n\nIntro.\n\n\(begin)\nold table\nold text\n\(end)\n\n## After\n\nKept.\n"
        let spliced = BenchReport.splice(report: "### New\n\nfresh\n", into: document)
        #expect(spliced == "# Benchmarks\n\nIntro.\n\n\(begin)\n### New\n\nfresh\n\(end)\n\n## After\n\nKept.\n")
        #expect(BenchReport.splice(report: "### New\n\nfresh\n", into: spliced) == spliced)
        #expect(BenchReport.splice(report: "", into: document) == "# Benchmarks\n\nIntro.\n\n\(begin)\n\(end)\n\n## After\n\nKept.\n")
    }

    @Test func spliceAppendsWhenTheMarkersAreAbsent() {
        let document = "# Benchmarks\n\nHand-written.\n"
        let spliced = BenchReport.splice(report: "### New\n", into: document)
        #expect(spliced == "# Benchmarks\n\nHand-written.\n\n## carillon-bench results\n\n\(begin)\n### New\n\(end)\n")
        #expect(BenchReport.splice(report: "### New\n", into: spliced) == spliced)
        #expect(BenchReport.splice(report: "### Newer\n", into: spliced).contains("\(begin)\n### Newer\n\(end)\n"))
        #expect(BenchReport.splice(report: "### New\n", into: "") == "## carillon-bench results\n\n\(begin)\n### New\n\(end)\n")
    }

    @Test func spliceClosesAnUnterminatedBlock() {
        let document = "# B\n\n\(begin)\nstale\n"
        let spliced = BenchReport.splice(report: "### New\n", into: document)
        #expect(spliced == "# B\n\n\(begin)\n### New\n\(end)\n")
        #expect(BenchReport.splice(report: "### New\n", into: spliced) == spliced)
    }

    @Test func spliceOfTheFullReportIsIdempotent() {
        let document = "# Benchmarks\n\n\(begin)\n\(end)\n\nTail.\n"
        let once = BenchReport.splice(report: report, into: document)
        #expect(once.contains("### Interference"))
        #expect(once.hasSuffix("\(end)\n\nTail.\n"))
        #expect(BenchReport.splice(report: report, into: once) == once)
    }

    @Test func latencySectionGivesIssue13sRatios() throws {
        func bus(_ mode: String, _ ordering: String, hog: String, p50: Double, p99: Double) -> BenchResult {
            var parameters = ["members": "3", "size_bytes": "64", "mode": mode, "ordering": ordering, "hog": hog]
            if mode == "open-loop" { parameters["offered_per_second"] = "10000" }
            return BenchResult(
                scenario: "latency", system: "carillon", placement: "namespaces", parameters: parameters,
                latency: Fixtures.latency(p50: p50, p99: p99, p999: p99 * 2, max: p99 * 3))
        }
        let rows = [
            BenchResult(
                scenario: "latency", system: "raw-udp-fanout", placement: "namespaces",
                parameters: ["members": "3", "size_bytes": "64", "mode": "closed-loop"],
                latency: Fixtures.latency(p50: 100, p99: 200, p999: 400, max: 800)),
            bus("closed-loop", "slots", hog: "no", p50: 200, p99: 500),
            bus("closed-loop", "promises", hog: "no", p50: 140, p99: 300),
            bus("open-loop", "slots", hog: "no", p50: 250, p99: 900),
            bus("open-loop", "promises", hog: "no", p50: 150, p99: 600),
            bus("closed-loop", "slots", hog: "yes", p50: 300, p99: 1500),
            bus("closed-loop", "promises", hog: "yes", p50: 150, p99: 450)
        ]
        let lines = BenchReport.latencyRatioLines(rows)
        #expect(
            lines == [
                "closed loop p50 / fan-out p50: slots 2.00×, promises 1.40× (goal ≤ 1.5×; met: promises) — µs: fan-out 100.0, slots 200.0, promises 140.0",
                "closed loop p99 / fan-out p99: slots 2.50×, promises 1.50× (goal ≤ 2×; met: promises) — µs: fan-out 200.0, slots 500.0, promises 300.0",
                "open loop (all sending, 10,000/s) p50 / fan-out p50: slots 2.50×, promises 1.50× (goal ≤ 2×; met: promises) — µs: fan-out 100.0, slots 250.0, promises 150.0",
                "with a CPU hog on every core, closed loop p99 / p99 without: slots 3.00×, promises 1.50× (goal ≤ 2×; met: promises) — µs: slots 1,500 against 500.0, promises 450.0 against 300.0"
            ])
        let run = BenchRun(scenario: "latency", environment: Fixtures.environment, settings: [:], results: rows)
        let text = BenchReport(runs: [run, Fixtures.baselineRun], plotsDirectory: "bench").markdown()
        #expect(text.split(separator: "\n").filter { $0.hasPrefix("### ") } == ["### Baseline", "### Latency"])
        #expect(text.contains("Against issue 13's latency goals (ratios of the rows above):\n\n- closed loop p50 / fan-out p50: slots 2.00×"))
        // One offered load: a distribution plot per loop, no load plot.
        #expect(BenchReport.plotFiles(for: run).map(\.fileName) == ["latency-percentiles.svg", "latency-open-loop-percentiles.svg"])
        // Without the hog rows (--no-hog) the hog line is left out; without rows, no line at all.
        #expect(BenchReport.latencyRatioLines(Array(rows.prefix(5))).count == 3)
        #expect(BenchReport.latencyRatioLines([]).isEmpty)
    }
}
