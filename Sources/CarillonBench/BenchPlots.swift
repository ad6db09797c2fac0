import Foundation

/// The plots of the benchmark suite, built from ``BenchResult`` rows.
public enum BenchPlots {
    /// The percentile ticks of ``percentileDistribution(results:title:)``: the x
    /// value of percentile `p` is `1 / (1 − p/100)`, so each tick is one more "9".
    static let percentileTicks: [PlotTick] = [
        PlotTick(value: 1, label: "0%"), PlotTick(value: 10, label: "90%"), PlotTick(value: 100, label: "99%"),
        PlotTick(value: 1e3, label: "99.9%"), PlotTick(value: 1e4, label: "99.99%"), PlotTick(value: 1e5, label: "99.999%"),
        PlotTick(value: 1e6, label: "99.9999%")
    ]

    /// The largest x drawn: 99.9999 %.
    static let maximumPercentileX = 1e6

    /// The legend name of a row: its system, then members, payload size and bulk
    /// traffic when those parameters are present, e.g. `carillon, 3 members, 64 B, bulk gated`.
    public static func label(for result: BenchResult) -> String {
        var parts = [result.system]
        if let members = result.parameters["members"], !members.isEmpty {
            parts.append(members == "1" ? "1 member" : "\(members) members")
        }
        if let size = result.parameters["size_bytes"], !size.isEmpty { parts.append(sizeText(size)) }
        if let bulk = result.parameters["bulk"], !bulk.isEmpty { parts.append("bulk \(bulk)") }
        return parts.joined(separator: ", ")
    }

    /// The classic HdrHistogram percentile plot: one line per row with a latency
    /// distribution, x = percentile on a log scale of `1 / (1 − p)` labelled
    /// `0%`, `90%`, `99%`, `99.9%`, …, y = latency in µs (log10 when the largest
    /// value is more than 50 times the smallest, else linear from 0).
    ///
    /// The 100th percentile (the maximum) has no finite x; it is drawn at
    /// `x = count` (a maximum of n samples stands for roughly the 1 − 1/n quantile),
    /// but never left of the previous point nor beyond 99.9999 %.
    public static func percentileDistribution(results: [BenchResult], title: String) -> LinePlot {
        let rows = results.filter { $0.latency != nil }
        let names = distinctLabels(for: rows, ignoring: [])
        var series: [PlotSeries] = []
        var largestX = 1.0
        for (row, name) in zip(rows, names) {
            guard let latency = row.latency else { continue }
            var points: [PlotPoint] = []
            for point in latency.distribution where point.percentile < 100 {
                let x = min(100 / (100 - max(point.percentile, 0)), maximumPercentileX)
                points.append(PlotPoint(x: x, y: point.valueMicros))
            }
            if let maximum = latency.distribution.last(where: { $0.percentile >= 100 }) {
                let x = min(max(Double(latency.count), points.last?.x ?? 1), maximumPercentileX)
                points.append(PlotPoint(x: x, y: maximum.valueMicros))
            }
            largestX = max(largestX, points.map(\.x).max() ?? 1)
            series.append(PlotSeries(name: name, points: points))
        }
        let lastTick = max(100, pow(10, log10(largestX).rounded(.up)))
        return LinePlot(
            title: title, xLabel: "percentile", yLabel: "latency (µs)", xScale: .log10,
            yScale: wideRange(series.flatMap { $0.points.map(\.y) }) ? .log10 : .linear, series: series,
            xTickLabels: percentileTicks.filter { $0.value <= lastTick * 1.000001 }, showsMarkers: false)
    }

    /// Latency against offered load: x = the `offered_per_second` parameter
    /// (messages per second offered in total), y = p50 and p99 latency in µs.
    /// Rows that share every other parameter (and system and placement) form one
    /// group, drawn as two series, `…: p50` and `…: p99`, in increasing load.
    /// Either axis is log10 when its largest value is more than 50 times its smallest.
    public static func latencyVersusLoad(results: [BenchResult], title: String) -> LinePlot {
        struct GroupKey: Hashable {
            var system: String
            var placement: String
            var parameters: [String: String]
        }
        var order: [GroupKey] = []
        var members: [GroupKey: [(load: Double, latency: LatencySummary)]] = [:]
        var firstRows: [BenchResult] = []
        for row in results {
            guard let latency = row.latency, let load = Double(row[parameter: "offered_per_second"]), load.isFinite else {
                continue
            }
            var parameters = row.parameters
            parameters["offered_per_second"] = nil
            let key = GroupKey(system: row.system, placement: row.placement, parameters: parameters)
            if members[key] == nil {
                order.append(key)
                firstRows.append(row)
            }
            members[key, default: []].append((load, latency))
        }
        let names = distinctLabels(for: firstRows, ignoring: ["offered_per_second"])
        var series: [PlotSeries] = []
        for (key, name) in zip(order, names) {
            let points = (members[key] ?? []).sorted { $0.load < $1.load }
            series.append(PlotSeries(name: "\(name): p50", points: points.map { PlotPoint(x: $0.load, y: $0.latency.p50Micros) }))
            series.append(PlotSeries(name: "\(name): p99", points: points.map { PlotPoint(x: $0.load, y: $0.latency.p99Micros) }))
        }
        let xs = series.flatMap { $0.points.map(\.x) }
        let ys = series.flatMap { $0.points.map(\.y) }
        return LinePlot(
            title: title, xLabel: "offered load (messages/s, total)", yLabel: "latency (µs)",
            xScale: wideRange(xs) ? .log10 : .linear, yScale: wideRange(ys) ? .log10 : .linear, series: series)
    }

    /// Latency under bulk traffic: one group of bars per row with a latency
    /// summary, named by its `bulk` parameter (`none`, `gated`, `unpaced`, …) in
    /// row order, with bars for p50, p99 and p99.9 in µs. When several rows share
    /// a `bulk` value the groups are named by ``label(for:)`` instead.
    public static func interference(results: [BenchResult], title: String) -> BarPlot {
        let rows = results.filter { $0.latency != nil }
        var groups = rows.map { $0[parameter: "bulk"].isEmpty ? "bulk ?" : $0[parameter: "bulk"] }
        if Set(groups).count < groups.count { groups = distinctLabels(for: rows, ignoring: []) }
        let latencies = rows.compactMap(\.latency)
        return BarPlot(
            title: title, yLabel: "latency (µs)", groups: groups,
            series: [
                BarSeries(name: "p50", values: latencies.map(\.p50Micros)),
                BarSeries(name: "p99", values: latencies.map(\.p99Micros)),
                BarSeries(name: "p99.9", values: latencies.map(\.p999Micros))
            ])
    }

    // MARK: Helpers

    /// Whether positive `values` span more than a factor of 50 (then a log axis reads better).
    static func wideRange(_ values: [Double]) -> Bool {
        let positive = values.filter { $0.isFinite && $0 > 0 }
        guard let low = positive.min(), let high = positive.max() else { return false }
        return high / low > 50
    }

    /// ``label(for:)`` of each row, extended with `key=value` of the parameters
    /// (and placement) that tell apart rows whose labels would collide.
    static func distinctLabels(for rows: [BenchResult], ignoring: Set<String>) -> [String] {
        var labels = rows.map(label(for:))
        let shown: Set<String> = ["members", "size_bytes", "bulk"]
        for label in Set(labels) {
            let indices = labels.indices.filter { labels[$0] == label }
            guard indices.count > 1 else { continue }
            let keys = Set(indices.flatMap { rows[$0].parameters.keys }).subtracting(shown).subtracting(ignoring).sorted()
            let varying = keys.filter { key in Set(indices.map { rows[$0][parameter: key] }).count > 1 }
            let placementVaries = Set(indices.map { rows[$0].placement }).count > 1
            for index in indices {
                var extra = varying.compactMap { key in rows[index].parameters[key].map { "\(key)=\($0)" } }
                if placementVaries { extra.insert(rows[index].placement, at: 0) }
                if !extra.isEmpty { labels[index] += ", " + extra.joined(separator: ", ") }
            }
        }
        // Rows that differ in nothing shown: number them.
        var seen: [String: Int] = [:]
        let duplicated = Set(labels.filter { label in labels.filter { $0 == label }.count > 1 })
        for index in labels.indices where duplicated.contains(labels[index]) {
            let label = labels[index]
            let number = (seen[label] ?? 0) + 1
            seen[label] = number
            labels[index] = "\(label) #\(number)"
        }
        return labels
    }

    /// `64 B`, `1 KiB`, `1,500 B`.
    static func sizeText(_ bytes: String) -> String {
        guard let value = Int(bytes) else { return bytes }
        if value >= 1024, value % 1024 == 0 {
            return value % (1024 * 1024) == 0 ? "\(value / (1024 * 1024)) MiB" : "\(value / 1024) KiB"
        }
        return PlotNumber.fixed(Double(value), decimals: 0) + " B"
    }
}
