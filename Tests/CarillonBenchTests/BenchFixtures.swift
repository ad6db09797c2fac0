import CarillonBench
import Foundation
import FoundationXML
import Histogram
import Testing

/// Shared fixtures and helpers of the CarillonBench tests.
enum Fixtures {
    static let environment = BenchEnvironment(
        date: "2026-11-27T10:00:00Z", cpuCount: 2, kernel: "6.1.0-27-amd64", buildMode: "release", commit: "abc1234",
        command: "carillon-bench run --scenario interference --members 3")

    /// A summary with exact figures and a coarse distribution through them.
    static func latency(
        min: Double = 50, p50: Double, p90: Double? = nil, p99: Double, p999: Double, max: Double, count: UInt64 = 10_000
    ) -> LatencySummary {
        let p90 = p90 ?? (p50 + p99) / 2
        return LatencySummary(
            count: count, minMicros: min, meanMicros: p50 * 1.1, p50Micros: p50, p90Micros: p90, p99Micros: p99,
            p999Micros: p999, maxMicros: max,
            distribution: [
                PercentilePoint(percentile: 0, valueMicros: min), PercentilePoint(percentile: 50, valueMicros: p50),
                PercentilePoint(percentile: 90, valueMicros: p90), PercentilePoint(percentile: 99, valueMicros: p99),
                PercentilePoint(percentile: 99.9, valueMicros: p999), PercentilePoint(percentile: 100, valueMicros: max)
            ])
    }

    /// A summary of a realistic, long-tailed histogram (deterministic).
    static func histogramLatency(medianMicros: Double, tail: Double, count: Int = 20_000, seed: UInt64 = 1) -> LatencySummary {
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        for _ in 0..<count {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            let u = max(Double(state % 1_000_000) / 1_000_000, 1e-6)
            // Pareto-like tail above a floor near the median.
            let micros = medianMicros * 0.7 + medianMicros * 0.3 * pow(u, -1 / tail)
            _ = histogram.record(UInt64(micros * 1000))
        }
        return LatencySummary(nanoseconds: histogram)
    }

    static let interferenceRun = BenchRun(
        scenario: "interference", environment: environment, settings: ["idle": "blocking", "round_period_us": "100"],
        results: [
            BenchResult(
                scenario: "interference", system: "carillon", placement: "namespaces",
                parameters: ["members": "3", "size_bytes": "64", "bulk": "none"],
                latency: latency(p50: 120, p99: 400, p999: 950.5, max: 1500.4)),
            BenchResult(
                scenario: "interference", system: "carillon", placement: "namespaces",
                parameters: ["members": "3", "size_bytes": "64", "bulk": "gated"],
                latency: latency(p50: 130, p99: 600, p999: 1200, max: 2000)),
            BenchResult(
                scenario: "interference", system: "carillon", placement: "namespaces",
                parameters: ["members": "3", "size_bytes": "64", "bulk": "unpaced"],
                latency: latency(p50: 300, p99: 1800, p999: 5000, max: 9000), notes: ["bulk sender fell short | 3%"])
        ])

    static let corosyncRun = BenchRun(
        scenario: "corosync", environment: environment, settings: [:],
        results: [
            BenchResult(
                scenario: "corosync", system: "carillon", placement: "namespaces",
                parameters: ["size_bytes": "64", "mode": "closed-loop"], latency: latency(p50: 150, p99: 300, p999: 500, max: 800)),
            BenchResult(
                scenario: "corosync", system: "corosync-cpg", placement: "namespaces",
                parameters: ["size_bytes": "64", "mode": "closed-loop"], latency: latency(p50: 90, p99: 250, p999: 700, max: 900)),
            BenchResult(
                scenario: "corosync", system: "carillon", placement: "namespaces",
                parameters: ["size_bytes": "64", "mode": "throughput"],
                throughput: ThroughputSummary(messagesPerSecondPerMember: [100_000, 100_000], bytesPerSecondPerMember: [6_400_000, 6_400_000])),
            BenchResult(
                scenario: "corosync", system: "corosync-cpg", placement: "namespaces",
                parameters: ["size_bytes": "64", "mode": "throughput"],
                throughput: ThroughputSummary(messagesPerSecondPerMember: [35_000.4], bytesPerSecondPerMember: [2_240_000])),
            BenchResult(
                scenario: "corosync", system: "carillon", placement: "namespaces",
                parameters: ["size_bytes": "1024", "mode": "closed-loop"], latency: latency(p50: 160, p99: 320, p999: 1234.4, max: 2000))
        ])

    static let orderedRun: BenchRun = {
        var results: [BenchResult] = []
        for load in [1000.0, 10_000, 100_000] {
            for members in ["3", "5"] {
                let parameters = ["members": members, "size_bytes": "64", "mode": "open-loop", "offered_per_second": String(Int(load))]
                let summary = latency(p50: 100 + load / 1000, p99: 300 + load / 100, p999: 900 + load / 50, max: 2000 + load / 10)
                results.append(
                    BenchResult(scenario: "ordered", system: "carillon", placement: "loopback", parameters: parameters, latency: summary))
            }
        }
        return BenchRun(scenario: "ordered", environment: environment, settings: ["idle": "blocking"], results: results)
    }()

    static let baselineRun = BenchRun(
        scenario: "baseline", environment: environment, settings: [:],
        results: [
            BenchResult(
                scenario: "baseline", system: "raw-udp-fanout", placement: "namespaces", parameters: ["members": "3", "size_bytes": "64"],
                latency: latency(p50: 70.3, p99: 180, p999: 1415.4, max: 3000)),
            BenchResult(
                scenario: "baseline", system: "carillon", placement: "namespaces", parameters: ["members": "3", "size_bytes": "64"],
                latency: latency(p50: 177.2, p99: 617, p999: 2687.7, max: 5000))
        ])
}

// MARK: - SVG inspection

enum SVGInspection {
    /// The root element of `svg`, which must parse as XML.
    static func root(_ svg: String) throws -> XMLElement {
        let document = try XMLDocument(data: Data(svg.utf8))
        return try #require(document.rootElement())
    }

    /// Every element under (and including) `element` named `name`, in document order.
    static func elements(_ name: String, in element: XMLElement) -> [XMLElement] {
        var found: [XMLElement] = []
        if (element.localName ?? element.name) == name { found.append(element) }
        for child in element.children ?? [] {
            if let child = child as? XMLElement { found += elements(name, in: child) }
        }
        return found
    }

    /// An attribute's value. (Looked up by hand: on Linux, `attribute(forName:)`
    /// finds nothing on an element in the SVG default namespace.)
    static func attribute(_ name: String, of element: XMLElement) -> String? {
        element.attributes?.first { ($0.localName ?? $0.name) == name || $0.name == name }?.stringValue
    }

    /// The text of the `<text>` elements of class `cls`.
    static func texts(class cls: String, in root: XMLElement) -> [String] {
        elements("text", in: root).filter { attribute("class", of: $0) == cls }.map { $0.stringValue ?? "" }
    }
}
