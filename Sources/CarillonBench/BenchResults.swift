import Foundation
import Histogram

/// Where and how a benchmark ran: recorded with every result so that a figure
/// is never separated from the machine that produced it.
public struct BenchEnvironment: Codable, Sendable, Hashable {
    /// ISO 8601 time the run started (UTC).
    public var date: String
    /// Online CPUs (`sysconf(_SC_NPROCESSORS_ONLN)`).
    public var cpuCount: Int
    /// `uname -r`.
    public var kernel: String
    /// `release` or `debug`: figures are only meaningful from `release`.
    public var buildMode: String
    /// `git describe --always --dirty` of the tree, when known (`-dirty`: uncommitted changes).
    public var commit: String?
    /// The command line that produced the results, so a reader can rerun it.
    public var command: String

    public init(date: String, cpuCount: Int, kernel: String, buildMode: String, commit: String?, command: String) {
        self.date = date
        self.cpuCount = cpuCount
        self.kernel = kernel
        self.buildMode = buildMode
        self.commit = commit
        self.command = command
    }
}

/// One point of a percentile distribution: `percentile` in [0, 100].
public struct PercentilePoint: Codable, Sendable, Hashable {
    public var percentile: Double
    public var valueMicros: Double

    public init(percentile: Double, valueMicros: Double) {
        self.percentile = percentile
        self.valueMicros = valueMicros
    }
}

/// A latency distribution, summarised from an HdrHistogram of nanoseconds.
public struct LatencySummary: Codable, Sendable, Hashable {
    public var count: UInt64
    public var minMicros: Double
    public var meanMicros: Double
    public var p50Micros: Double
    public var p90Micros: Double
    public var p99Micros: Double
    public var p999Micros: Double
    public var maxMicros: Double
    /// The distribution for plots (HdrHistogram's percentile iteration, 5 ticks per half distance).
    public var distribution: [PercentilePoint]

    public init(
        count: UInt64, minMicros: Double, meanMicros: Double, p50Micros: Double, p90Micros: Double, p99Micros: Double,
        p999Micros: Double, maxMicros: Double, distribution: [PercentilePoint]
    ) {
        self.count = count
        self.minMicros = minMicros
        self.meanMicros = meanMicros
        self.p50Micros = p50Micros
        self.p90Micros = p90Micros
        self.p99Micros = p99Micros
        self.p999Micros = p999Micros
        self.maxMicros = maxMicros
        self.distribution = distribution
    }

    /// Summarises a histogram whose values are nanoseconds.
    public init(nanoseconds histogram: Histogram<UInt64>) {
        func micros(_ value: UInt64) -> Double { Double(value) / 1000 }
        count = histogram.totalCount
        minMicros = micros(histogram.min)
        meanMicros = histogram.mean / 1000
        p50Micros = micros(histogram.valueAtPercentile(50))
        p90Micros = micros(histogram.valueAtPercentile(90))
        p99Micros = micros(histogram.valueAtPercentile(99))
        p999Micros = micros(histogram.valueAtPercentile(99.9))
        maxMicros = micros(histogram.max)
        var points: [PercentilePoint] = []
        if histogram.totalCount > 0 {
            for step in histogram.percentiles(ticksPerHalfDistance: 5) {
                points.append(PercentilePoint(percentile: step.percentileLevelIteratedTo, valueMicros: micros(step.value)))
                if step.percentileLevelIteratedTo >= 100 { break }
            }
        }
        distribution = points
    }
}

/// Delivered traffic: per member and the mean over members.
public struct ThroughputSummary: Codable, Sendable, Hashable {
    /// Messages delivered per second at each member, first to last delivery.
    public var messagesPerSecondPerMember: [Double]
    /// Payload bytes delivered per second at each member.
    public var bytesPerSecondPerMember: [Double]

    public init(messagesPerSecondPerMember: [Double], bytesPerSecondPerMember: [Double]) {
        self.messagesPerSecondPerMember = messagesPerSecondPerMember
        self.bytesPerSecondPerMember = bytesPerSecondPerMember
    }

    public var meanMessagesPerSecond: Double {
        messagesPerSecondPerMember.isEmpty ? 0 : messagesPerSecondPerMember.reduce(0, +) / Double(messagesPerSecondPerMember.count)
    }

    public var meanBytesPerSecond: Double {
        bytesPerSecondPerMember.isEmpty ? 0 : bytesPerSecondPerMember.reduce(0, +) / Double(bytesPerSecondPerMember.count)
    }
}

/// What each member process cost over a run's measured phase, in member
/// order (h0, h1, …): CPU time (user + system, from `/proc/<pid>/stat`) as a
/// share of one core, and context switches per second (summed over the
/// process's threads from `/proc/<pid>/task/*/status`). A voluntary switch is
/// a thread going to sleep, so voluntary switches per second count wake-ups.
///
/// In JSON the keys are `seconds`, `cpu_percent_of_one_core`,
/// `wakeups_per_second` and `involuntary_switches_per_second`. Results files
/// from before this field have no `cost` and still load.
public struct CostSummary: Codable, Sendable, Hashable {
    /// Length of the measured phase, seconds (the mean over members).
    public var seconds: Double
    /// CPU time over the phase ÷ its length × 100, per member (100: one core busy all the time).
    public var cpuPercentOfOneCore: [Double]
    /// Voluntary context switches per second, per member.
    public var wakeupsPerSecond: [Double]
    /// Involuntary context switches (preemptions) per second, per member.
    public var involuntarySwitchesPerSecond: [Double]

    enum CodingKeys: String, CodingKey {
        case seconds
        case cpuPercentOfOneCore = "cpu_percent_of_one_core"
        case wakeupsPerSecond = "wakeups_per_second"
        case involuntarySwitchesPerSecond = "involuntary_switches_per_second"
    }

    public init(seconds: Double, cpuPercentOfOneCore: [Double], wakeupsPerSecond: [Double], involuntarySwitchesPerSecond: [Double]) {
        self.seconds = seconds
        self.cpuPercentOfOneCore = cpuPercentOfOneCore
        self.wakeupsPerSecond = wakeupsPerSecond
        self.involuntarySwitchesPerSecond = involuntarySwitchesPerSecond
    }

    /// The busiest member's CPU share (0 without members).
    public var maxCPUPercent: Double { cpuPercentOfOneCore.max() ?? 0 }
    /// The most wake-ups per second of any member (0 without members).
    public var maxWakeupsPerSecond: Double { wakeupsPerSecond.max() ?? 0 }

    /// Two measured phases of the same members pooled: each member's rates
    /// weighted by the phases' lengths (for runs of one setting repeated).
    public func merged(with other: CostSummary) -> CostSummary {
        let total = seconds + other.seconds
        guard total > 0, cpuPercentOfOneCore.count == other.cpuPercentOfOneCore.count else { return self }
        func pool(_ a: [Double], _ b: [Double]) -> [Double] {
            zip(a, b).map { ($0 * seconds + $1 * other.seconds) / total }
        }
        return CostSummary(
            seconds: total, cpuPercentOfOneCore: pool(cpuPercentOfOneCore, other.cpuPercentOfOneCore),
            wakeupsPerSecond: pool(wakeupsPerSecond, other.wakeupsPerSecond),
            involuntarySwitchesPerSecond: pool(involuntarySwitchesPerSecond, other.involuntarySwitchesPerSecond))
    }
}

/// One measured configuration: a row of a results table.
public struct BenchResult: Codable, Sendable, Hashable {
    /// `baseline`, `ordered`, `throughput`, `interference`, `corosync`, `idle`, `latency` or `services`.
    public var scenario: String
    /// What was measured, e.g. `carillon`, `raw-udp-pingpong`, `raw-udp-fanout`, `corosync-cpg`, `etcd-tmpfs`, `etcd-disk`.
    public var system: String
    /// `namespaces` (separate processes in network namespaces on a bridge) or
    /// `loopback` (separate processes on 127.0.0.1: the fallback without root).
    public var placement: String
    /// Named parameters as text: `members`, `size_bytes`, `round_period_us`,
    /// `reservation`, `idle`, `mode` (closed-loop / open-loop), `offered_per_second`,
    /// `bulk` (none / gated / paced / unpaced), `link_mbit`, …
    public var parameters: [String: String]
    public var latency: LatencySummary?
    public var throughput: ThroughputSummary?
    /// What each member process cost over the measured phase (nil: not measured,
    /// e.g. raw UDP agents, Corosync, or results files from before it was).
    public var cost: CostSummary?
    /// Anything the reader must know about this row (a member that fell short, a fallback).
    public var notes: [String]

    public init(
        scenario: String, system: String, placement: String, parameters: [String: String],
        latency: LatencySummary? = nil, throughput: ThroughputSummary? = nil, cost: CostSummary? = nil, notes: [String] = []
    ) {
        self.scenario = scenario
        self.system = system
        self.placement = placement
        self.parameters = parameters
        self.latency = latency
        self.throughput = throughput
        self.cost = cost
        self.notes = notes
    }

    /// A parameter by name, or `""`.
    public subscript(parameter name: String) -> String { parameters[name] ?? "" }
}

/// The results of one `carillon-bench` invocation: one scenario, its environment
/// and every row it measured. Saved as `<scenario>.json` (and `.csv`) in the
/// output directory, next to the scenario's SVG plots.
public struct BenchRun: Codable, Sendable, Hashable {
    public var scenario: String
    public var environment: BenchEnvironment
    /// Scenario-wide settings that hold for every row (idle strategy, shaping, …).
    public var settings: [String: String]
    public var results: [BenchResult]

    public init(scenario: String, environment: BenchEnvironment, settings: [String: String], results: [BenchResult]) {
        self.scenario = scenario
        self.environment = environment
        self.settings = settings
        self.results = results
    }

    public func jsonData() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }

    public static func load(from url: URL) throws -> BenchRun {
        try JSONDecoder().decode(BenchRun.self, from: Data(contentsOf: url))
    }
}
