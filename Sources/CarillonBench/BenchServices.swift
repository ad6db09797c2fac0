import Foundation

/// The `services` scenario in the report: one row per metric and system,
/// Carillon's p50 against each etcd's, and a percentile plot per metric.
extension BenchReport {
    /// The `metric` parameter of `services` rows, in reading order.
    public static let servicesMetrics = [
        "lock acquire+release", "lock hand-off rate", "put", "get linearizable", "get serializable", "lock takeover after kill -9"
    ]

    /// The issue's acceptance for `services`: Carillon's lock acquire+release
    /// p50 at least this many times lower than every etcd's in the same run,
    /// and its lock takeover after kill -9 p50 at most this many µs.
    public static let servicesGoals = (lockRoundTimesLower: 10.0, takeoverP50Micros: 10_000.0)

    /// One line per Carillon row with a figure — its p50 (hand-off: grants
    /// per second and the hand-off p50) beside each etcd system's (`etcd-…`
    /// rows of the same metric; for the takeover the row with the shortest
    /// TTL) and how many times lower (or higher) it is — then the two goals
    /// of ``servicesGoals``. Empty without `carillon` rows.
    public static func servicesRatioLines(_ results: [BenchResult]) -> [String] {
        let carillon = results.filter { $0.system == "carillon" }
        guard !carillon.isEmpty else { return [] }
        var references: [String] = []
        for row in results where row.system.hasPrefix("etcd") && !references.contains(row.system) { references.append(row.system) }
        var metrics = servicesMetrics.filter { metric in carillon.contains { $0[parameter: "metric"] == metric } }
        for row in carillon where !metrics.contains(row[parameter: "metric"]) { metrics.append(row[parameter: "metric"]) }

        /// The etcd row a Carillon row of `metric` is compared with, per system.
        func reference(_ system: String, _ metric: String) -> BenchResult? {
            let rows = results.filter { $0.system == system && $0[parameter: "metric"] == metric && ($0.latency != nil || $0.throughput != nil) }
            return rows.min { (Double($0[parameter: "ttl_s"]) ?? 0) < (Double($1[parameter: "ttl_s"]) ?? 0) }
        }
        func against(_ mine: Double, _ theirs: Double, lowerIsBetter: Bool) -> String {
            guard mine > 0, theirs > 0, mine.isFinite, theirs.isFinite else { return "" }
            let better = lowerIsBetter ? theirs / mine : mine / theirs
            if better >= 1 { return " (\(times(better)) \(lowerIsBetter ? "lower" : "higher"))" }
            return " (\(times(1 / better)) \(lowerIsBetter ? "higher" : "lower"))"
        }
        func ttlText(_ row: BenchResult) -> String {
            let ttl = row[parameter: "ttl_s"], granted = row[parameter: "granted_ttl_s"]
            guard !ttl.isEmpty else { return "" }
            return " at TTL \(ttl) s" + (granted.isEmpty || granted == ttl ? "" : " (granted \(granted) s)")
        }

        var lines: [String] = []
        var lockRatios: [(String, Double)]?
        var takeoverP50: Double?
        for metric in metrics {
            let rows = carillon.filter { $0[parameter: "metric"] == metric }
            for row in rows {
                let consistency = row[parameter: "consistency"]
                let name = metric + (rows.count > 1 && !consistency.isEmpty ? " (\(consistency))" : "")
                if let rate = row.throughput?.meanMessagesPerSecond {
                    var parts = ["carillon \(messageRate(rate)) grants/s"]
                    for system in references {
                        guard let theirs = reference(system, metric)?.throughput?.meanMessagesPerSecond else { continue }
                        parts.append("\(system) \(messageRate(theirs)) grants/s" + against(rate, theirs, lowerIsBetter: false))
                    }
                    var line = "\(name): " + parts.joined(separator: ", ")
                    if let latency = row.latency {
                        var handOff = ["carillon \(duration(micros: latency.p50Micros))"]
                        for system in references {
                            guard let theirs = reference(system, metric)?.latency?.p50Micros else { continue }
                            handOff.append("\(system) \(duration(micros: theirs))" + against(latency.p50Micros, theirs, lowerIsBetter: true))
                        }
                        line += "; hand-off p50: " + handOff.joined(separator: ", ")
                    }
                    lines.append(line)
                } else if let latency = row.latency {
                    var parts = ["carillon \(duration(micros: latency.p50Micros))"]
                    var ratios: [(String, Double)] = []
                    for system in references {
                        guard let other = reference(system, metric), let theirs = other.latency?.p50Micros else { continue }
                        parts.append(
                            "\(system) \(duration(micros: theirs))\(ttlText(other))" + against(latency.p50Micros, theirs, lowerIsBetter: true))
                        if latency.p50Micros > 0 { ratios.append((system, theirs / latency.p50Micros)) }
                    }
                    lines.append("\(name) p50: " + parts.joined(separator: ", "))
                    if metric == servicesMetrics[0], lockRatios == nil { lockRatios = ratios }
                    if metric == servicesMetrics[5], takeoverP50 == nil { takeoverP50 = latency.p50Micros }
                }
            }
        }
        if let lockRatios, !lockRatios.isEmpty {
            let met = lockRatios.allSatisfy { $0.1 >= servicesGoals.lockRoundTimesLower }
            lines.append(
                "goal, lock acquire+release p50 at least \(times(servicesGoals.lockRoundTimesLower)) lower than etcd's: **\(met ? "met" : "not met")** ("
                    + lockRatios.map { "\(times($0.1)) against \($0.0)" }.joined(separator: ", ") + ")")
        }
        if let takeoverP50 {
            let met = takeoverP50 <= servicesGoals.takeoverP50Micros
            lines.append(
                "goal, lock takeover after kill -9 p50 ≤ \(duration(micros: servicesGoals.takeoverP50Micros)): **\(met ? "met" : "not met")** (\(duration(micros: takeoverP50)))"
            )
        }
        return lines
    }

    /// The rows of a `services` run, metric by metric: system, what sets the
    /// row apart (consistency, TTL, contenders, configuration), p50, p99 and
    /// max as durations, the count, grants per second, notes.
    static func servicesTable(_ results: [BenchResult]) -> String {
        func metricRank(_ row: BenchResult) -> Int { servicesMetrics.firstIndex(of: row[parameter: "metric"]) ?? servicesMetrics.count }
        var systems: [String] = []
        for system in ["carillon"] + results.map(\.system) where !systems.contains(system) {
            if results.contains(where: { $0.system == system }) { systems.append(system) }
        }
        let ordered = results.enumerated().sorted { a, b in
            (metricRank(a.element), systems.firstIndex(of: a.element.system) ?? 0, a.offset)
                < (metricRank(b.element), systems.firstIndex(of: b.element.system) ?? 0, b.offset)
        }.map(\.element)
        let rows = ordered.map { row -> [String] in
            var setting: [String] = []
            if !row[parameter: "consistency"].isEmpty { setting.append(row[parameter: "consistency"]) }
            if !row[parameter: "ttl_s"].isEmpty {
                let granted = row[parameter: "granted_ttl_s"]
                setting.append(
                    "TTL \(row[parameter: "ttl_s"]) s" + (granted.isEmpty || granted == row[parameter: "ttl_s"] ? "" : " (granted \(granted) s)"))
            }
            if !row[parameter: "contenders"].isEmpty { setting.append("\(row[parameter: "contenders"]) contenders") }
            if !row[parameter: "value_bytes"].isEmpty { setting.append(sizeText(row[parameter: "value_bytes"])) }
            if !row[parameter: "config"].isEmpty { setting.append(row[parameter: "config"]) }
            let latency = row.latency
            return [
                row[parameter: "metric"], row.system, row.placement, setting.joined(separator: ", "),
                latency.map { duration(micros: $0.p50Micros) } ?? "–", latency.map { duration(micros: $0.p99Micros) } ?? "–",
                latency.map { duration(micros: $0.maxMicros) } ?? "–", latency.map { messageRate(Double($0.count)) } ?? "–",
                row.throughput.map { messageRate($0.meanMessagesPerSecond) } ?? "–", row.notes.joined(separator: "; ")
            ]
        }
        return table(
            headers: ["metric", "system", "placement", "setting", "p50", "p99", "max", "n", "grants/s", "notes"],
            alignments: ["---", "---", "---", "---", "---:", "---:", "---:", "---:", "---:", "---"], rows: rows)
    }

    /// "Durability of an acknowledged write: `system` — …" per system, from the rows' `durability`.
    static func servicesDurability(_ results: [BenchResult]) -> String? {
        var seen: [String] = []
        var parts: [String] = []
        for row in results where !row[parameter: "durability"].isEmpty && !seen.contains(row.system) {
            seen.append(row.system)
            parts.append("`\(row.system)`: \(row[parameter: "durability"])")
        }
        return parts.isEmpty ? nil : "Durability of an acknowledged write — " + parts.joined(separator: "; ") + "."
    }

    /// One percentile plot per metric with latency rows, `services-<metric>-percentiles.svg`.
    static func servicesPlotFiles(_ run: BenchRun) -> [(fileName: String, title: String, svg: String)] {
        var metrics = servicesMetrics
        for row in run.results where !metrics.contains(row[parameter: "metric"]) { metrics.append(row[parameter: "metric"]) }
        var files: [(fileName: String, title: String, svg: String)] = []
        for metric in metrics {
            let rows = run.results.filter { $0[parameter: "metric"] == metric && $0.latency != nil }
            guard !rows.isEmpty else { continue }
            let title = "Services: \(metric)\(metric == "lock hand-off rate" ? " (release → next grant)" : ""), latency by percentile"
            files.append(
                (
                    "\(fileStem(run.scenario))-\(slug(metric))-percentiles.svg", title,
                    BenchPlots.percentileDistribution(results: rows, title: title).svg()
                ))
        }
        return files
    }

    /// `lock takeover after kill -9` → `lock-takeover-after-kill-9`.
    static func slug(_ text: String) -> String {
        var out = ""
        for c in text.lowercased() {
            if c.isASCII && (c.isLetter || c.isNumber) { out.append(c) } else if !out.isEmpty && out.last != "-" { out.append("-") }
        }
        while out.hasSuffix("-") { out.removeLast() }
        return out.isEmpty ? "metric" : out
    }

    /// A duration for mixed ranges: `0.312 ms`, `4.56 ms`, `45.6 ms`, `1.90 s`.
    public static func duration(micros: Double) -> String {
        guard micros.isFinite else { return "–" }
        let ms = micros / 1000
        if ms < 1 { return String(format: "%.3f ms", ms) }
        if ms < 10 { return String(format: "%.2f ms", ms) }
        if ms < 1000 { return String(format: "%.1f ms", ms) }
        return String(format: "%.2f s", ms / 1000)
    }

    /// A factor: `9.2×` below 10, `44×` from 10, `1,234×` from 1,000.
    static func times(_ factor: Double) -> String {
        guard factor.isFinite else { return "–" }
        return factor < 10 ? String(format: "%.1f×", factor) : PlotNumber.fixed(factor, decimals: 0) + "×"
    }

    /// `64 B`.
    static func sizeText(_ bytes: String) -> String { BenchPlots.sizeText(bytes) }
}
