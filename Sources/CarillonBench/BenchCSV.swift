import Foundation

extension BenchRun {
    /// The fixed columns after the parameters, in order.
    static let csvMeasurementColumns = [
        "count", "min_us", "mean_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "msgs_per_s_per_member",
        "bytes_per_s_per_member", "notes"
    ]

    /// The columns of member cost, before `notes`, when any row has one.
    static let csvCostColumns = ["cpu_percent_of_one_core_max_member", "wakeups_per_s_max_member", "involuntary_switches_per_s_max_member"]

    /// The results as CSV, one line per result after a header:
    ///
    /// `scenario,system,placement,<parameter keys>,count,min_us,mean_us,p50_us,p90_us,p99_us,p999_us,max_us,msgs_per_s_per_member,bytes_per_s_per_member,notes`
    ///
    /// When any row measured what its members cost (``BenchResult/cost``), the
    /// columns `cpu_percent_of_one_core_max_member`, `wakeups_per_s_max_member`
    /// and `involuntary_switches_per_s_max_member` (the busiest member's figure:
    /// a limit holds for every member when it holds for that one) come before
    /// `notes`; the JSON has every member's.
    ///
    /// The parameter columns are the union of every row's parameter keys, sorted.
    /// A cell is empty where a row has no such parameter, no latency or no
    /// throughput. Numbers have at most 3 decimals and no thousands separators;
    /// per-member rates are the mean over members; notes are joined with `; `.
    /// Fields containing a comma, a double quote or a line break are quoted as in
    /// RFC 4180 (quotes doubled). Lines end with `\n`.
    public func csv() -> String {
        let parameterKeys = Set(results.flatMap { $0.parameters.keys }).sorted()
        let withCost = results.contains { $0.cost != nil }
        var measurementColumns = BenchRun.csvMeasurementColumns
        if withCost { measurementColumns.insert(contentsOf: BenchRun.csvCostColumns, at: measurementColumns.count - 1) }
        var lines = [(["scenario", "system", "placement"] + parameterKeys + measurementColumns).map(csvField)]
        func number(_ value: Double?) -> String {
            guard let value, value.isFinite else { return "" }
            return PlotNumber.trimmed(value, maxDecimals: 3)
        }
        for result in results {
            var fields = [result.scenario, result.system, result.placement]
            fields += parameterKeys.map { result.parameters[$0] ?? "" }
            let latency = result.latency
            fields.append(latency.map { String($0.count) } ?? "")
            fields += [
                latency?.minMicros, latency?.meanMicros, latency?.p50Micros, latency?.p90Micros, latency?.p99Micros,
                latency?.p999Micros, latency?.maxMicros, result.throughput?.meanMessagesPerSecond,
                result.throughput?.meanBytesPerSecond
            ].map(number)
            if withCost {
                let cost = result.cost
                fields += [cost?.maxCPUPercent, cost?.maxWakeupsPerSecond, cost?.involuntarySwitchesPerSecond.max()].map(number)
            }
            fields.append(result.notes.joined(separator: "; "))
            lines.append(fields.map(csvField))
        }
        return lines.map { $0.joined(separator: ",") }.joined(separator: "\n") + "\n"
    }
}

/// `field` as an RFC 4180 CSV field: quoted, with quotes doubled, when it
/// contains a comma, a double quote or a line break.
func csvField(_ field: String) -> String {
    guard field.contains(where: { $0 == "," || $0 == "\"" || $0.isNewline }) else { return field }
    return "\"" + field.replacingOccurrences(of: "\"", with: "\"\"") + "\""
}
