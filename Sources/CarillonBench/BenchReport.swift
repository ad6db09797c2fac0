import Foundation

/// The markdown report of a set of benchmark runs: the part of
/// `docs/benchmarks.md` between the `carillon-bench` markers.
///
/// Each run becomes a `### <Scenario>` section with the command that produced
/// it, its environment, a table of its rows and links to its plots (see
/// ``plotFiles(for:)`` for the SVGs to write next to the report).
public struct BenchReport: Sendable {
    /// The line that opens the generated part of a document.
    public static let beginMarker = "<!-- carillon-bench:begin -->"
    /// The line that closes the generated part of a document.
    public static let endMarker = "<!-- carillon-bench:end -->"
    /// The order of the sections; other scenarios follow in the order given.
    public static let scenarioOrder = ["baseline", "ordered", "throughput", "interference", "corosync", "idle", "latency", "services"]

    public var runs: [BenchRun]
    /// Where the SVGs are, relative to the markdown file, e.g. `bench`.
    public var plotsDirectory: String

    /// - Parameters:
    ///   - runs: one run per scenario, in any order.
    ///   - plotsDirectory: the directory of the SVGs relative to the markdown file (`""` for the same directory).
    public init(runs: [BenchRun], plotsDirectory: String) {
        self.runs = runs
        self.plotsDirectory = plotsDirectory
    }

    /// The report: one section per run, ordered baseline, ordered, throughput,
    /// interference, corosync, idle, latency, services, then the others. Ends with a newline.
    public func markdown() -> String {
        let ordered = runs.enumerated().sorted { a, b in
            let rankA = BenchReport.scenarioOrder.firstIndex(of: a.element.scenario) ?? BenchReport.scenarioOrder.count
            let rankB = BenchReport.scenarioOrder.firstIndex(of: b.element.scenario) ?? BenchReport.scenarioOrder.count
            return (rankA, a.offset) < (rankB, b.offset)
        }.map(\.element)
        return ordered.map(section).joined(separator: "\n")
    }

    /// The plots a run has, with the file names the report links to:
    /// - `<scenario>-percentiles.svg`, the percentile distribution, for a run with latency rows;
    /// - `<scenario>-load.svg`, latency against offered load, when a row with latency has `offered_per_second` (not for `latency`, which has one load);
    /// - `interference-bars.svg`, p50/p99/p99.9 by bulk traffic, for the `interference` scenario;
    /// - for `services`, instead of all these, `services-<metric>-percentiles.svg` per metric (every system's row of that metric).
    public static func plotFiles(for run: BenchRun) -> [(fileName: String, title: String, svg: String)] {
        if run.scenario == "services" { return servicesPlotFiles(run) }
        var files: [(fileName: String, title: String, svg: String)] = []
        let stem = fileStem(run.scenario)
        let name = scenarioTitle(run.scenario)
        let latencyRows = run.results.filter { $0.latency != nil }
        // Open-loop rows get a distribution plot of their own (beside the load
        // plot): with the closed-loop rows in one plot it has too many lines to read.
        let openLoop = latencyRows.filter { $0.parameters["offered_per_second"] != nil }
        let others = latencyRows.filter { $0.parameters["offered_per_second"] == nil }
        if !others.isEmpty {
            let title = "\(name): latency by percentile"
            let plot = BenchPlots.percentileDistribution(results: others, title: title)
            files.append(("\(stem)-percentiles.svg", title, plot.svg()))
        }
        if !openLoop.isEmpty {
            let title = "\(name): latency by percentile, open loop"
            let plot = BenchPlots.percentileDistribution(results: openLoop, title: title)
            files.append(("\(stem)-open-loop-percentiles.svg", title, plot.svg()))
        }
        // `latency` has one offered load: its load plot would be one point per line.
        if run.scenario != "latency", !openLoop.isEmpty {
            let title = "\(name): latency against offered load"
            let plot = BenchPlots.latencyVersusLoad(results: run.results, title: title)
            files.append(("\(stem)-load.svg", title, plot.svg()))
        }
        if run.scenario == "interference", !latencyRows.isEmpty {
            let title = "Interference: latency under bulk traffic"
            let plot = BenchPlots.interference(results: run.results, title: title)
            files.append(("interference-bars.svg", title, plot.svg()))
        }
        return files
    }

    /// `document` with the text between the marker lines replaced by `report`
    /// (the marker lines are kept). Without markers, a `## carillon-bench results`
    /// heading, the markers and the report are appended. A begin marker without
    /// an end marker after it is closed at the end of the document. Splicing the
    /// same report twice gives the same document as splicing it once.
    public static func splice(report: String, into document: String) -> String {
        var body = report
        while body.hasSuffix("\n") { body.removeLast() }
        let block = body.isEmpty ? "" : body + "\n"

        var lines = document.components(separatedBy: "\n")
        let trimmed = lines.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        if let begin = trimmed.firstIndex(of: beginMarker) {
            let end = trimmed[(begin + 1)...].firstIndex(of: endMarker)
            var replacement = block.isEmpty ? [] : block.dropLast().components(separatedBy: "\n")
            if end == nil { replacement.append(endMarker) }
            lines.replaceSubrange((begin + 1)..<(end ?? lines.count), with: replacement)
            var result = lines.joined(separator: "\n")
            if end == nil { result += "\n" }
            return result
        }

        var result = document
        while result.hasSuffix("\n") { result.removeLast() }
        if !result.isEmpty { result += "\n\n" }
        return result + "## carillon-bench results\n\n" + beginMarker + "\n" + block + endMarker + "\n"
    }

    // MARK: - Sections

    private func section(_ run: BenchRun) -> String {
        var parts: [String] = []
        parts.append("### \(BenchReport.scenarioTitle(run.scenario))")
        parts.append("```sh\n\(run.environment.command)\n```")
        parts.append(BenchReport.environmentLine(run))
        if run.scenario == "services" {
            if !run.results.isEmpty { parts.append(BenchReport.servicesTable(run.results)) }
            if let durability = BenchReport.servicesDurability(run.results) { parts.append(durability) }
            let lines = BenchReport.servicesRatioLines(run.results)
            if !lines.isEmpty {
                parts.append("Carillon against etcd in this run (p50 of the rows above):\n\n" + lines.map { "- " + $0 }.joined(separator: "\n"))
            }
        } else if !run.results.isEmpty {
            parts.append(BenchReport.resultsTable(run.results))
        }
        if run.scenario == "interference", let sentence = BenchReport.inflationSentence(run.results) {
            parts.append(sentence)
        }
        if run.scenario == "idle", let sentence = BenchReport.idleGoalSentence(run.results) {
            parts.append(sentence)
        }
        if run.scenario == "latency" {
            let lines = BenchReport.latencyRatioLines(run.results)
            if !lines.isEmpty {
                parts.append("Against issue 13's latency goals (ratios of the rows above):\n\n" + lines.map { "- " + $0 }.joined(separator: "\n"))
            }
        }
        if run.scenario == "corosync", let table = BenchReport.sideBySideTable(run.results) {
            parts.append("Carillon and Corosync CPG side by side (latency from the closed-loop rows, throughput from the throughput rows):")
            parts.append(table)
        }
        let directory = plotsDirectory.isEmpty || plotsDirectory.hasSuffix("/") ? plotsDirectory : plotsDirectory + "/"
        let images = BenchReport.plotFiles(for: run).map { file in
            "![\(BenchReport.escapedLinkText(file.title))](\(directory)\(file.fileName))"
        }
        if !images.isEmpty { parts.append(images.joined(separator: "\n\n")) }
        return parts.joined(separator: "\n\n") + "\n"
    }

    /// `Run 2026-… on commit `abc1234`: 2 CPUs, kernel `…`, release build. Settings: `k=v`, ….`
    static func environmentLine(_ run: BenchRun) -> String {
        let environment = run.environment
        var line = "Run \(environment.date) on commit `\(environment.commit ?? "unknown")`: "
        line += "\(environment.cpuCount) \(environment.cpuCount == 1 ? "CPU" : "CPUs"), kernel `\(environment.kernel)`, "
        line += "\(environment.buildMode) build"
        if environment.buildMode != "release" { line += " (not a release build: figures are not meaningful)" }
        line += "."
        if !run.settings.isEmpty {
            line += " Settings: " + run.settings.sorted { $0.key < $1.key }.map { "`\($0.key)=\($0.value)`" }.joined(separator: ", ") + "."
        }
        return line
    }

    /// The rows: the columns that vary across rows, then latency and throughput figures and notes.
    static func resultsTable(_ results: [BenchResult]) -> String {
        func varies(_ value: (BenchResult) -> String) -> Bool { Set(results.map(value)).count > 1 }
        var keyColumns: [(header: String, value: (BenchResult) -> String)] = []
        if varies(\.system) { keyColumns.append(("system", \.system)) }
        if varies(\.placement) { keyColumns.append(("placement", \.placement)) }
        for key in orderedParameterKeys(results) where varies({ $0[parameter: key] }) {
            keyColumns.append((parameterHeader(key), { parameterText($0[parameter: key]) }))
        }
        if keyColumns.isEmpty { keyColumns.append(("system", \.system)) }

        var headers = keyColumns.map(\.header)
        // Numeric key columns (members, sizes, loads) are right-aligned like the figures.
        var alignments = keyColumns.map { column in
            results.allSatisfy { Double(column.value($0).replacingOccurrences(of: ",", with: "")) != nil } ? "---:" : "---"
        }
        var rows = results.map { result in keyColumns.map { $0.value(result) } }
        if results.contains(where: { $0.latency != nil }) {
            headers += ["p50 (µs)", "p99 (µs)", "p99.9 (µs)", "max (µs)"]
            alignments += Array(repeating: "---:", count: 4)
            for (index, result) in results.enumerated() {
                rows[index] += [\LatencySummary.p50Micros, \.p99Micros, \.p999Micros, \.maxMicros].map { path in
                    result.latency.map { micros($0[keyPath: path]) } ?? "–"
                }
            }
        }
        if results.contains(where: { $0.throughput != nil }) {
            headers += ["msgs/s per member", "MB/s per member"]
            alignments += ["---:", "---:"]
            for (index, result) in results.enumerated() {
                rows[index].append(result.throughput.map { messageRate($0.meanMessagesPerSecond) } ?? "–")
                rows[index].append(result.throughput.map { megabytes($0.meanBytesPerSecond) } ?? "–")
            }
        }
        if results.contains(where: { $0.cost != nil }) {
            headers += ["CPU % of one core, per member", "wake-ups/s, per member"]
            alignments += ["---:", "---:"]
            for (index, result) in results.enumerated() {
                rows[index].append(
                    result.cost.map { $0.cpuPercentOfOneCore.map { PlotNumber.fixed($0, decimals: 1) }.joined(separator: " / ") } ?? "–")
                rows[index].append(result.cost.map { $0.wakeupsPerSecond.map(messageRate).joined(separator: " / ") } ?? "–")
            }
        }
        if results.contains(where: { !$0.notes.isEmpty }) {
            headers.append("notes")
            alignments.append("---")
            for (index, result) in results.enumerated() { rows[index].append(result.notes.joined(separator: "; ")) }
        }
        return table(headers: headers, alignments: alignments, rows: rows)
    }

    /// The p99 inflation factor of each bulk setting against `bulk=none`, or nil without a `none` row.
    static func inflationSentence(_ results: [BenchResult]) -> String? {
        let rows = results.filter { $0.latency != nil && !$0[parameter: "bulk"].isEmpty }
        guard let none = rows.first(where: { $0[parameter: "bulk"] == "none" })?.latency, none.p99Micros > 0 else {
            return nil
        }
        var seen: Set<String> = ["none"]
        var factors: [String] = []
        for row in rows where seen.insert(row[parameter: "bulk"]).inserted {
            guard let p99 = row.latency?.p99Micros, p99.isFinite else { continue }
            factors.append("\(row[parameter: "bulk"]) \(PlotNumber.fixed(p99 / none.p99Micros, decimals: 2))×")
        }
        guard !factors.isEmpty else { return nil }
        return "p99 inflation factor (p99 with bulk traffic ÷ p99 with bulk=none, \(micros(none.p99Micros)) µs): "
            + factors.joined(separator: ", ") + "."
    }

    /// The limits of issue 13 for an idle bus, per member.
    public static let idleGoal = (cpuPercent: 2.0, wakeupsPerSecond: 1_000.0)

    /// The busiest member of each phase, and whether the idle phase is within
    /// ``idleGoal``; nil without rows that measured cost.
    static func idleGoalSentence(_ results: [BenchResult]) -> String? {
        var parts: [String] = []
        var verdict = ""
        for result in results {
            guard let cost = result.cost else { continue }
            let phase = result[parameter: "phase"].isEmpty ? result.system : result[parameter: "phase"]
            parts.append(
                "\(phase) \(PlotNumber.fixed(cost.maxCPUPercent, decimals: 1)) % of one core and \(messageRate(cost.maxWakeupsPerSecond)) wake-ups/s")
            if result[parameter: "phase"] == "idle" {
                let met = cost.maxCPUPercent <= idleGoal.cpuPercent && cost.maxWakeupsPerSecond <= idleGoal.wakeupsPerSecond
                verdict =
                    " Goal for an idle bus, each member ≤ \(PlotNumber.fixed(idleGoal.cpuPercent, decimals: 0)) % of one core and "
                    + "≤ \(messageRate(idleGoal.wakeupsPerSecond)) wake-ups/s: **\(met ? "met" : "not met")** in this run."
            }
        }
        guard !parts.isEmpty else { return nil }
        return "Busiest member: " + parts.joined(separator: "; ") + "." + verdict
    }

    /// Issue 13's latency goals, as ratios: the bus's closed-loop p50 and p99
    /// against raw UDP fan-out's, its open-loop p50 (every member sending)
    /// against the fan-out's p50, and its closed-loop p99 beside a CPU hog on
    /// every core against its p99 without.
    public static let latencyGoals = (closedP50: 1.5, closedP99: 2.0, openP50: 2.0, hogP99: 2.0)

    /// The ratios of a `latency` run against ``latencyGoals``, one line each,
    /// from its rows: `system=raw-udp-fanout` (the floor) and `system=carillon`
    /// rows told apart by the parameters `mode` (`closed-loop`, `open-loop`),
    /// `ordering` and `hog` (`yes`, `no`). A line is left out when its rows are
    /// missing; an ordering whose row has no latency shows `–`.
    public static func latencyRatioLines(_ results: [BenchResult]) -> [String] {
        let fanout = results.first { $0.system == "raw-udp-fanout" && $0.latency != nil }?.latency
        let bus = results.filter { $0.system == "carillon" }
        var orderings: [String] = []
        for ordering in ["slots", "promises"] + bus.map({ $0[parameter: "ordering"] }) where !orderings.contains(ordering) {
            if bus.contains(where: { $0[parameter: "ordering"] == ordering }) { orderings.append(ordering) }
        }
        func latency(_ ordering: String, _ mode: String, hog: String) -> LatencySummary? {
            bus.first { $0[parameter: "ordering"] == ordering && $0[parameter: "mode"] == mode && $0[parameter: "hog"] == hog }?.latency
        }
        func present(_ mode: String, hog: String) -> Bool {
            bus.contains { $0[parameter: "mode"] == mode && $0[parameter: "hog"] == hog }
        }
        func ratio(_ value: Double?, _ reference: Double?) -> Double? {
            guard let value, let reference, reference > 0, value.isFinite else { return nil }
            return value / reference
        }
        /// "slots 1.96×, promises 1.57× (goal ≤ 1.5×; met: promises) — µs: fan-out 72.3, slots 141.7, promises 113.5"
        func line(
            _ title: String, goal: Double, referenceName: String, reference: Double?,
            values: [(ordering: String, value: Double?)]
        ) -> String {
            let ratios = values.map { ($0.ordering, ratio($0.value, reference)) }
            let figures = ratios.map { "\($0.0) \($0.1.map { PlotNumber.fixed($0, decimals: 2) + "×" } ?? "–")" }
            let met = ratios.filter { $0.1.map { $0 <= goal } ?? false }.map { $0.0 }
            let micros =
                ["\(referenceName) \(reference.map(BenchReport.micros) ?? "–")"]
                + values.map { "\($0.ordering) \($0.value.map(BenchReport.micros) ?? "–")" }
            return "\(title): " + figures.joined(separator: ", ")
                + " (goal ≤ \(PlotNumber.trimmed(goal, maxDecimals: 2))×; met: \(met.isEmpty ? "none" : met.joined(separator: ", ")))"
                + " — µs: " + micros.joined(separator: ", ")
        }
        var lines: [String] = []
        if let fanout, present("closed-loop", hog: "no") {
            lines.append(
                line(
                    "closed loop p50 / fan-out p50", goal: latencyGoals.closedP50, referenceName: "fan-out", reference: fanout.p50Micros,
                    values: orderings.map { ($0, latency($0, "closed-loop", hog: "no")?.p50Micros) }))
            lines.append(
                line(
                    "closed loop p99 / fan-out p99", goal: latencyGoals.closedP99, referenceName: "fan-out", reference: fanout.p99Micros,
                    values: orderings.map { ($0, latency($0, "closed-loop", hog: "no")?.p99Micros) }))
        }
        if let fanout, present("open-loop", hog: "no") {
            let offered = bus.first { $0[parameter: "mode"] == "open-loop" }.map { $0[parameter: "offered_per_second"] } ?? ""
            let load = Double(offered).map { ", \(PlotNumber.fixed($0, decimals: 0))/s" } ?? ""
            lines.append(
                line(
                    "open loop (all sending\(load)) p50 / fan-out p50", goal: latencyGoals.openP50, referenceName: "fan-out",
                    reference: fanout.p50Micros, values: orderings.map { ($0, latency($0, "open-loop", hog: "no")?.p50Micros) }))
        }
        if present("closed-loop", hog: "yes") {
            let hogged = orderings.filter { ordering in
                bus.contains { $0[parameter: "ordering"] == ordering && $0[parameter: "mode"] == "closed-loop" && $0[parameter: "hog"] == "yes" }
            }
            let ratios = hogged.map {
                ($0, ratio(latency($0, "closed-loop", hog: "yes")?.p99Micros, latency($0, "closed-loop", hog: "no")?.p99Micros))
            }
            let figures = ratios.map { "\($0.0) \($0.1.map { PlotNumber.fixed($0, decimals: 2) + "×" } ?? "–")" }
            let met = ratios.filter { $0.1.map { $0 <= latencyGoals.hogP99 } ?? false }.map { $0.0 }
            let micros = hogged.map { ordering in
                "\(ordering) \(latency(ordering, "closed-loop", hog: "yes").map { BenchReport.micros($0.p99Micros) } ?? "–") against "
                    + "\(latency(ordering, "closed-loop", hog: "no").map { BenchReport.micros($0.p99Micros) } ?? "–")"
            }
            lines.append(
                "with a CPU hog on every core, closed loop p99 / p99 without: " + figures.joined(separator: ", ")
                    + " (goal ≤ \(PlotNumber.trimmed(latencyGoals.hogP99, maxDecimals: 2))×; met: \(met.isEmpty ? "none" : met.joined(separator: ", ")))"
                    + " — µs: " + micros.joined(separator: ", "))
        }
        return lines
    }

    /// For each `size_bytes` and system: p50/p99/p99.9 from the `mode=closed-loop`
    /// row and msgs/s per member from the `mode=throughput` row.
    static func sideBySideTable(_ results: [BenchResult]) -> String? {
        var systems: [String] = []
        for system in ["carillon", "corosync-cpg"] + results.map(\.system) where !systems.contains(system) {
            if results.contains(where: { $0.system == system }) { systems.append(system) }
        }
        var sizes: [String] = []
        for result in results where !sizes.contains(result[parameter: "size_bytes"]) { sizes.append(result[parameter: "size_bytes"]) }
        sizes.sort { (Int($0) ?? Int.max, $0) < (Int($1) ?? Int.max, $1) }

        var rows: [[String]] = []
        for size in sizes {
            for system in systems {
                let matching = results.filter { $0.system == system && $0[parameter: "size_bytes"] == size }
                let latency = matching.first { $0[parameter: "mode"] == "closed-loop" && $0.latency != nil }?.latency
                let throughput = matching.first { $0[parameter: "mode"] == "throughput" && $0.throughput != nil }?.throughput
                guard latency != nil || throughput != nil else { continue }
                var row = [parameterText(size), system]
                row += [latency?.p50Micros, latency?.p99Micros, latency?.p999Micros].map { $0.map(micros) ?? "–" }
                row.append(throughput.map { messageRate($0.meanMessagesPerSecond) } ?? "–")
                rows.append(row)
            }
        }
        guard !rows.isEmpty else { return nil }
        return table(
            headers: ["size (B)", "system", "p50 (µs)", "p99 (µs)", "p99.9 (µs)", "msgs/s per member"],
            alignments: ["---:", "---", "---:", "---:", "---:", "---:"], rows: rows)
    }

    // MARK: - Formatting

    /// Parameters in a fixed reading order, then the rest sorted.
    static let parameterOrder = [
        "phase", "members", "size_bytes", "round_period_us", "reservation", "idle", "mode", "ordering", "hog", "offered_per_second", "bulk",
        "link_mbit"
    ]

    static func orderedParameterKeys(_ results: [BenchResult]) -> [String] {
        let keys = Set(results.flatMap { $0.parameters.keys })
        return parameterOrder.filter(keys.contains) + keys.subtracting(parameterOrder).sorted()
    }

    static func parameterHeader(_ key: String) -> String {
        switch key {
        case "size_bytes": return "size (B)"
        case "round_period_us": return "round period (µs)"
        case "offered_per_second": return "offered (msgs/s)"
        case "link_mbit": return "link (Mbit/s)"
        default: return key.replacingOccurrences(of: "_", with: " ")
        }
    }

    /// A parameter value: whole numbers get thousands separators.
    static func parameterText(_ value: String) -> String {
        guard let number = Int(value) else { return value }
        return PlotNumber.fixed(Double(number), decimals: 0)
    }

    /// µs: one decimal below 1,000, whole with thousands separators from 1,000 (`177.2`, `1,234`).
    static func micros(_ value: Double) -> String {
        guard value.isFinite else { return "–" }
        let rounded = (value * 10).rounded() / 10
        return abs(rounded) < 1000 ? PlotNumber.fixed(value, decimals: 1) : PlotNumber.fixed(value, decimals: 0)
    }

    /// Messages per second: whole, with thousands separators.
    static func messageRate(_ value: Double) -> String {
        value.isFinite ? PlotNumber.fixed(value, decimals: 0) : "–"
    }

    /// Bytes per second as MB/s (10⁶ bytes) with one decimal.
    static func megabytes(_ bytesPerSecond: Double) -> String {
        bytesPerSecond.isFinite ? PlotNumber.fixed(bytesPerSecond / 1e6, decimals: 1) : "–"
    }

    /// `baseline` → `Baseline`.
    static func scenarioTitle(_ scenario: String) -> String {
        scenario.isEmpty ? "Unnamed" : scenario.prefix(1).uppercased() + scenario.dropFirst()
    }

    /// The scenario as a file name: letters, digits, `-` and `_`; anything else becomes `-`.
    static func fileStem(_ scenario: String) -> String {
        let stem = String(scenario.map { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") ? $0 : "-" })
        return stem.isEmpty ? "run" : stem
    }

    static func escapedLinkText(_ text: String) -> String {
        text.replacingOccurrences(of: "[", with: "\\[").replacingOccurrences(of: "]", with: "\\]")
    }

    static func table(headers: [String], alignments: [String], rows: [[String]]) -> String {
        func line(_ cells: [String]) -> String { "| " + cells.map(cell).joined(separator: " | ") + " |" }
        return ([line(headers), "| " + alignments.joined(separator: " | ") + " |"] + rows.map(line)).joined(separator: "\n")
    }

    /// Text safe inside a table cell: `|` escaped, line breaks as spaces.
    static func cell(_ text: String) -> String {
        text.replacingOccurrences(of: "|", with: "\\|").replacingOccurrences(of: "\r\n", with: " ")
            .replacingOccurrences(of: "\n", with: " ").replacingOccurrences(of: "\r", with: " ")
    }
}
