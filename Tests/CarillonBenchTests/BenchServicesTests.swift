import CarillonBench
import Foundation
import Testing

/// The `services` scenario in the report: ratios against etcd, the goals, the table and the plots.
@Suite struct BenchServicesTests {
    static func row(
        _ system: String, _ metric: String, p50: Double, extra: [String: String] = [:], rate: Double? = nil,
        placement: String = "loopback"
    ) -> BenchResult {
        var parameters = ["metric": metric, "durability": "\(system) durability"]
        parameters.merge(extra) { _, new in new }
        return BenchResult(
            scenario: "services", system: system, placement: placement, parameters: parameters,
            latency: Fixtures.latency(p50: p50, p99: p50 * 3, p999: p50 * 4, max: p50 * 5, count: 100),
            throughput: rate.map { ThroughputSummary(messagesPerSecondPerMember: [$0], bytesPerSecondPerMember: [0]) })
    }

    static let run = BenchRun(
        scenario: "services", environment: Fixtures.environment, settings: ["carillon": "3 nodes"],
        results: [
            row("etcd-tmpfs", "lock acquire+release", p50: 1_100),
            row("etcd-tmpfs", "lock hand-off rate", p50: 3_000, extra: ["contenders": "2"], rate: 250),
            row("etcd-tmpfs", "put", p50: 480),
            row("etcd-tmpfs", "lock takeover after kill -9", p50: 7_000_000, extra: ["ttl_s": "10"]),
            row("etcd-tmpfs", "lock takeover after kill -9", p50: 1_900_000, extra: ["ttl_s": "1", "granted_ttl_s": "2"]),
            row("etcd-disk", "lock acquire+release", p50: 5_300),
            row("carillon", "lock acquire+release", p50: 120, extra: ["consistency": "agreed"], placement: "namespaces"),
            row(
                "carillon", "lock hand-off rate", p50: 200, extra: ["consistency": "agreed", "contenders": "2"], rate: 2_900, placement: "namespaces"),
            row("carillon", "put", p50: 150, extra: ["consistency": "agreed", "value_bytes": "64"], placement: "namespaces"),
            row("carillon", "put", p50: 720, extra: ["consistency": "safe", "value_bytes": "64"], placement: "namespaces"),
            row("carillon", "lock takeover after kill -9", p50: 8_100, extra: ["consistency": "agreed", "kills": "5"], placement: "namespaces")
        ])

    @Test func ratiosAgainstEveryEtcdAndTheGoals() {
        let lines = BenchReport.servicesRatioLines(Self.run.results)
        #expect(
            lines == [
                "lock acquire+release p50: carillon 0.120 ms, etcd-tmpfs 1.10 ms (9.2× lower), etcd-disk 5.30 ms (44× lower)",
                "lock hand-off rate: carillon 2,900 grants/s, etcd-tmpfs 250 grants/s (12× higher); hand-off p50: carillon 0.200 ms, etcd-tmpfs 3.00 ms (15× lower)",
                "put (agreed) p50: carillon 0.150 ms, etcd-tmpfs 0.480 ms (3.2× lower)",
                "put (safe) p50: carillon 0.720 ms, etcd-tmpfs 0.480 ms (1.5× higher)",
                // The takeover is compared with etcd's shortest TTL.
                "lock takeover after kill -9 p50: carillon 8.10 ms, etcd-tmpfs 1.90 s at TTL 1 s (granted 2 s) (235× lower)",
                "goal, lock acquire+release p50 at least 10× lower than etcd's: **not met** (9.2× against etcd-tmpfs, 44× against etcd-disk)",
                "goal, lock takeover after kill -9 p50 ≤ 10.0 ms: **met** (8.10 ms)"
            ])
        // Without Carillon rows there is nothing to compare.
        #expect(BenchReport.servicesRatioLines(Self.run.results.filter { $0.system != "carillon" }).isEmpty)
        // Without etcd rows: Carillon's figures and the takeover goal only.
        let alone = BenchReport.servicesRatioLines(Self.run.results.filter { $0.system == "carillon" })
        #expect(alone.first == "lock acquire+release p50: carillon 0.120 ms")
        #expect(alone.last == "goal, lock takeover after kill -9 p50 ≤ 10.0 ms: **met** (8.10 ms)")
    }

    @Test func durationsAcrossTheRange() {
        #expect(BenchReport.duration(micros: 26.6) == "0.027 ms")
        #expect(BenchReport.duration(micros: 4_560) == "4.56 ms")
        #expect(BenchReport.duration(micros: 45_600) == "45.6 ms")
        #expect(BenchReport.duration(micros: 1_900_000) == "1.90 s")
    }

    @Test func sectionHasTheTableDurabilityRatiosAndAPlotPerMetric() throws {
        let section = BenchReport(runs: [Self.run], plotsDirectory: "bench").markdown()
        let lines = section.components(separatedBy: "\n")
        #expect(lines.contains("| metric | system | placement | setting | p50 | p99 | max | n | grants/s | notes |"))
        // Metric by metric, Carillon first.
        let rows = lines.filter { $0.hasPrefix("| lock acquire+release |") }
        #expect(
            rows == [
                "| lock acquire+release | carillon | namespaces | agreed | 0.120 ms | 0.360 ms | 0.600 ms | 100 | – |  |",
                "| lock acquire+release | etcd-tmpfs | loopback |  | 1.10 ms | 3.30 ms | 5.50 ms | 100 | – |  |",
                "| lock acquire+release | etcd-disk | loopback |  | 5.30 ms | 15.9 ms | 26.5 ms | 100 | – |  |"
            ])
        #expect(
            lines.contains("| lock takeover after kill -9 | etcd-tmpfs | loopback | TTL 1 s (granted 2 s) | 1.90 s | 5.70 s | 9.50 s | 100 | – |  |"))
        #expect(lines.contains("| put | carillon | namespaces | safe, 64 B | 0.720 ms | 2.16 ms | 3.60 ms | 100 | – |  |"))
        #expect(
            section.contains(
                "Durability of an acknowledged write — `etcd-tmpfs`: etcd-tmpfs durability; `etcd-disk`: etcd-disk durability; `carillon`: carillon durability."
            ))
        #expect(section.contains("- goal, lock takeover after kill -9 p50 ≤ 10.0 ms: **met** (8.10 ms)"))
        #expect(section.contains("![Services: lock acquire+release, latency by percentile](bench/services-lock-acquire-release-percentiles.svg)"))
        #expect(!section.contains("services-percentiles.svg"))

        let files = BenchReport.plotFiles(for: Self.run)
        #expect(
            files.map(\.fileName) == [
                "services-lock-acquire-release-percentiles.svg", "services-lock-hand-off-rate-percentiles.svg", "services-put-percentiles.svg",
                "services-lock-takeover-after-kill-9-percentiles.svg"
            ])
        // One line per system's row of the metric, on a log axis (1 ms to 2 s).
        let takeover = try SVGInspection.root(files[3].svg)
        let series = SVGInspection.elements("polyline", in: takeover).filter { SVGInspection.attribute("class", of: $0) == "series-line" }
        #expect(series.count == 3)
    }

    @Test func servicesComesAfterLatency() {
        let latency = BenchRun(scenario: "latency", environment: Fixtures.environment, settings: [:], results: [])
        let headings = BenchReport(runs: [Self.run, latency, Fixtures.baselineRun], plotsDirectory: "").markdown()
            .split(separator: "\n").filter { $0.hasPrefix("### ") }
        #expect(headings == ["### Baseline", "### Latency", "### Services"])
    }
}
