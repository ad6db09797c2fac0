import CarillonBench
import Foundation
import Testing

/// What member processes cost (`BenchResult.cost`): JSON keys, files without
/// it, CSV columns, the report's columns and the idle scenario's sentence.
@Suite struct BenchCostTests {
    static let idleCost = CostSummary(
        seconds: 30, cpuPercentOfOneCore: [1.5, 31.26, 0.5], wakeupsPerSecond: [800, 9410.4, 20],
        involuntarySwitchesPerSecond: [1, 15, 0])
    static let loadedCost = CostSummary(
        seconds: 30, cpuPercentOfOneCore: [40, 41, 42], wakeupsPerSecond: [7000, 7100, 7200],
        involuntarySwitchesPerSecond: [200, 210, 220])

    static let idleRun = BenchRun(
        scenario: "idle", environment: Fixtures.environment, settings: ["ordering": "slots"],
        results: [
            BenchResult(
                scenario: "idle", system: "carillon", placement: "namespaces",
                parameters: ["members": "3", "phase": "idle", "mode": "idle"], cost: idleCost),
            BenchResult(
                scenario: "idle", system: "carillon", placement: "namespaces",
                parameters: ["members": "3", "phase": "loaded", "mode": "open-loop", "rate_per_member": "1000"],
                latency: Fixtures.latency(p50: 300, p99: 900, p999: 1500, max: 2000),
                throughput: ThroughputSummary(messagesPerSecondPerMember: [3000, 3000, 3000], bytesPerSecondPerMember: [192_000, 192_000, 192_000]),
                cost: loadedCost)
        ])

    @Test func costIsAnOptionalObjectWithSnakeCaseArraysPerMember() throws {
        let object = try JSONSerialization.jsonObject(with: Self.idleRun.jsonData()) as? [String: Any]
        let rows = try #require(object?["results"] as? [[String: Any]])
        let cost = try #require(rows[0]["cost"] as? [String: Any])
        #expect(Set(cost.keys) == ["seconds", "cpu_percent_of_one_core", "wakeups_per_second", "involuntary_switches_per_second"])
        #expect(cost["cpu_percent_of_one_core"] as? [Double] == [1.5, 31.26, 0.5])
        #expect(cost["wakeups_per_second"] as? [Double] == [800, 9410.4, 20])
        // Round trip.
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("crln-cost-\(getpid()).json")
        defer { try? FileManager.default.removeItem(at: url) }
        try Self.idleRun.jsonData().write(to: url)
        #expect(try BenchRun.load(from: url) == Self.idleRun)
    }

    @Test func resultsFilesFromBeforeCostStillLoad() throws {
        // A row as written before the field existed: no "cost" key.
        let old = Fixtures.interferenceRun
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("crln-nocost-\(getpid()).json")
        defer { try? FileManager.default.removeItem(at: url) }
        try old.jsonData().write(to: url)
        #expect(try String(contentsOf: url, encoding: .utf8).contains("\"cost\"") == false)
        let loaded = try BenchRun.load(from: url)
        #expect(loaded == old && loaded.results.allSatisfy { $0.cost == nil })
    }

    @Test func csvHasTheBusiestMembersCostBeforeTheNotes() {
        let lines = Self.idleRun.csv().split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        let header = lines[0]
        #expect(
            Array(header.suffix(4)) == [
                "cpu_percent_of_one_core_max_member", "wakeups_per_s_max_member", "involuntary_switches_per_s_max_member", "notes"
            ])
        #expect(Array(lines[1].suffix(4)) == ["31.26", "9410.4", "15", ""])
        #expect(Array(lines[2].suffix(4)) == ["42", "7200", "220", ""])
        // Without cost anywhere, no cost columns (the other scenarios' CSV is unchanged).
        #expect(!Fixtures.interferenceRun.csv().contains("wakeups"))
    }

    @Test func reportShowsEachMembersCostAndTheIdleGoal() {
        let text = BenchReport(runs: [Self.idleRun, Fixtures.baselineRun], plotsDirectory: "bench").markdown()
        let headings = text.split(separator: "\n").filter { $0.hasPrefix("### ") }
        #expect(headings == ["### Baseline", "### Idle"])
        let lines = text.components(separatedBy: "\n")
        #expect(lines.contains { $0.hasPrefix("| phase |") && $0.contains("| CPU % of one core, per member | wake-ups/s, per member |") })
        #expect(lines.contains { $0.hasPrefix("| idle |") && $0.hasSuffix("| 1.5 / 31.3 / 0.5 | 800 / 9,410 / 20 |") })
        #expect(lines.contains { $0.hasPrefix("| loaded |") && $0.hasSuffix("| 40.0 / 41.0 / 42.0 | 7,000 / 7,100 / 7,200 |") })
        #expect(text.contains("Busiest member: idle 31.3 % of one core and 9,410 wake-ups/s; loaded 42.0 % of one core and 7,200 wake-ups/s."))
        #expect(text.contains("**not met**"))
        // Baseline has no cost: no cost columns there.
        #expect(!lines.contains { $0.hasPrefix("| system |") && $0.contains("wake-ups") })
    }

    @Test func pooledPhasesWeighEachMemberByTime() {
        let a = CostSummary(seconds: 1, cpuPercentOfOneCore: [10, 20], wakeupsPerSecond: [100, 200], involuntarySwitchesPerSecond: [0, 0])
        let b = CostSummary(seconds: 3, cpuPercentOfOneCore: [30, 40], wakeupsPerSecond: [500, 600], involuntarySwitchesPerSecond: [4, 8])
        let pooled = a.merged(with: b)
        #expect(pooled.seconds == 4)
        #expect(pooled.cpuPercentOfOneCore == [25, 35])
        #expect(pooled.wakeupsPerSecond == [400, 500])
        #expect(pooled.involuntarySwitchesPerSecond == [3, 6])
    }
}
