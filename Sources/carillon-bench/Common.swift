import ArgumentParser
import CarillonBench
import Foundation
import Glibc

/// Options every scenario takes.
struct CommonOptions: ParsableArguments {
    @Option(help: "Directory for <scenario>.json, <scenario>.csv and the SVG plots.")
    var out = "bench-results"
    @Flag(help: "Run the members as separate processes on 127.0.0.1 instead of in network namespaces (the fallback without root; results say so).")
    var loopback = false
    @Option(
        help:
            "Idle strategy of every member: blocking, spin-then-park[:NANOS] or busy-spin (default: blocking; `idle` keeps the node's default, spin-then-park). Two busy-spinning members fill this 2-core VM."
    )
    var idle: String?
    @Option(
        help:
            "How the members order messages, written into their configuration as \"ordering\": promises (send at once; idle members promise silence ahead; the default) or slots (every member sends in its TDMA slot every round)."
    )
    var ordering = "promises"
    @Flag(help: "A short run with few messages (a smoke test; figures are not meant to be quoted).")
    var quick = false

    func validate() throws {
        if let idle, !["blocking", "busy-spin"].contains(idle), !idle.hasPrefix("spin-then-park") {
            throw ValidationError("--idle must be blocking, spin-then-park[:NANOS] or busy-spin")
        }
        if !["slots", "promises"].contains(ordering) { throw ValidationError("--ordering must be promises or slots, not \(ordering)") }
    }

    /// The idle strategy of the scenarios that choose one: --idle, or blocking.
    var idleStrategy: String { idle ?? "blocking" }

    /// A bus with these options' idle strategy and ordering, the rest as `BusSpec` has it.
    func busSpec() -> BusSpec {
        var spec = BusSpec()
        spec.idle = idleStrategy
        spec.ordering = ordering
        return spec
    }

    /// Namespaces as root unless --loopback; loopback (said so on stderr) otherwise.
    func placement(needsNamespaces: Bool = false) throws -> Placement {
        if loopback {
            if needsNamespaces { throw ValidationError("this scenario shapes a link between namespaces: run it as root without --loopback") }
            return .loopback
        }
        if getuid() == 0 { return .namespaces }
        if needsNamespaces { throw ValidationError("this scenario needs network namespaces: run it as root (sudo)") }
        FileHandle.standardError.write(
            Data(
                "carillon-bench: not root, so the members run as separate processes on loopback (results are labelled `loopback`); run with sudo for network namespaces\n"
                    .utf8))
        return .loopback
    }

    /// A fresh work directory for logs under the output directory.
    func workDirectory(_ scenario: String) throws -> String {
        let path = "\(out)/work/\(scenario)"
        try? FileManager.default.removeItem(atPath: path)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}

/// Writes a run's JSON, CSV and plots into `directory`; returns the paths written.
@discardableResult
func save(_ run: BenchRun, to directory: String) throws -> [String] {
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    var written: [String] = []
    let json = "\(directory)/\(run.scenario).json"
    try run.jsonData().write(to: URL(fileURLWithPath: json))
    written.append(json)
    let csv = "\(directory)/\(run.scenario).csv"
    try run.csv().write(toFile: csv, atomically: true, encoding: .utf8)
    written.append(csv)
    for plot in BenchReport.plotFiles(for: run) {
        let path = "\(directory)/\(plot.fileName)"
        try plot.svg.write(toFile: path, atomically: true, encoding: .utf8)
        written.append(path)
    }
    FileHandle.standardError.write(Data("carillon-bench: wrote \(written.joined(separator: ", "))\n".utf8))
    return written
}

/// Parses "64,1024" style lists.
func parseList<T: LosslessStringConvertible>(_ text: String, _ name: String) throws -> [T] {
    let values = text.split(separator: ",").map { T(String($0.trimmingCharacters(in: .whitespaces))) }
    guard !values.isEmpty, values.allSatisfy({ $0 != nil }) else { throw ValidationError("\(name): expected a comma-separated list, got \(text)") }
    return values.map { $0! }
}

/// A latency (and throughput) row from a bus outcome.
func row(
    _ scenario: String, system: String = "carillon", topology: Topology, parameters: [String: String],
    outcome: BusOutcome, latency: Bool = true, throughput: Bool = false
) -> BenchResult {
    BenchResult(
        scenario: scenario, system: system, placement: topology.label, parameters: parameters,
        latency: latency && outcome.atAll.totalCount > 0 ? LatencySummary(nanoseconds: outcome.atAll) : nil,
        throughput: throughput
            ? ThroughputSummary(
                messagesPerSecondPerMember: outcome.messagesPerSecond,
                bytesPerSecondPerMember: outcome.bytesPerSecond) : nil,
        cost: outcome.cost, notes: outcome.notes)
}

func micros(_ value: Double) -> String { String(format: "%.1f", value) }

/// "p50 … p99 … p99.9 … µs (n); cpu … % of one core, … wake-ups/s …" for progress lines.
func describe(_ outcome: BusOutcome) -> String {
    let h = outcome.atAll
    let cost = outcome.cost.map { "; " + describe($0) } ?? ""
    guard h.totalCount > 0 else { return "no message delivered at every member" + cost }
    return
        "p50 \(micros(Double(h.valueAtPercentile(50)) / 1000)) p99 \(micros(Double(h.valueAtPercentile(99)) / 1000)) p99.9 \(micros(Double(h.valueAtPercentile(99.9)) / 1000)) µs (\(h.totalCount) msgs)"
        + cost
}
