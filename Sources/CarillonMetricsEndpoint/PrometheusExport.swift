import CarillonProcessStats
import CoreMetrics
import Prometheus
import Synchronization

/// What `GET /metrics` shows: every swift-metrics metric made through
/// ``factory`` (a member's `carillon_*` counters, once ``bootstrapMetricsSystem()``
/// made it the process's backend), and the process's CPU time and context
/// switches, brought up to date at each scrape.
///
/// The process figures are counters (totals since the process started), as
/// Prometheus wants them: `rate()` over them gives the share of a core and
/// the wake-ups per second that `carillon node --stats` prints. They come from
/// `getrusage` (``ProcessUsage``): one system call per scrape, nothing between
/// scrapes, and they never go backwards when a thread exits.
public final class PrometheusExport: Sendable {
    public let registry: PrometheusCollectorRegistry
    public let factory: PrometheusMetricsFactory

    /// The process counters and the usage they were last brought to (nil when
    /// the export was made without them).
    private let process: Mutex<ProcessCounters?>

    private struct ProcessCounters {
        var cpuSeconds: Prometheus.Counter
        var voluntarySwitches: Prometheus.Counter
        var involuntarySwitches: Prometheus.Counter
        /// The totals the counters stand at.
        var cpuSecondsAt = 0.0, voluntaryAt: UInt64 = 0, involuntaryAt: UInt64 = 0
    }

    /// The process counters, in the order of ``ProcessUsage``'s fields.
    /// (A function: MetricNameDescriptor is not Sendable, so no static constant.)
    static func processMetrics() -> [MetricNameDescriptor] {
        [
            MetricNameDescriptor(
                namespace: "process", metricName: "cpu_seconds", unitName: "total",
                helpText: "User and system CPU time of the process (all threads), in seconds"),
            MetricNameDescriptor(
                namespace: "carillon", subsystem: "process", metricName: "voluntary_context_switches", unitName: "total",
                helpText: "Voluntary context switches of the process (all threads): wake-ups, each after a wait"),
            MetricNameDescriptor(
                namespace: "carillon", subsystem: "process", metricName: "involuntary_context_switches", unitName: "total",
                helpText: "Involuntary context switches of the process (all threads): preemptions")
        ]
    }

    /// The process counters' names.
    public static var processMetricNames: [String] { processMetrics().map(\.name) }

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(), processMetrics: Bool = true) {
        self.registry = registry
        factory = PrometheusMetricsFactory(registry: registry)
        guard processMetrics else {
            process = Mutex(nil)
            return
        }
        let counters = Self.processMetrics().map { registry.makeCounter(descriptor: $0) }
        process = Mutex(ProcessCounters(cpuSeconds: counters[0], voluntarySwitches: counters[1], involuntarySwitches: counters[2]))
    }

    /// Makes ``factory`` the process's swift-metrics backend. Once per process,
    /// and before any metric is made: a member makes its counters when it is
    /// created, so call this before creating the member.
    public func bootstrapMetricsSystem() {
        MetricsSystem.bootstrap(factory)
    }

    /// The Prometheus text exposition (format 0.0.4) of everything registered.
    public func scrape() -> [UInt8] {
        process.withLock { counters in
            guard var c = counters, let now = ProcessUsage.current() else { return }
            // The kernel's totals only grow; the guards keep a counter from ever being given a negative step.
            if now.cpuSeconds > c.cpuSecondsAt {
                c.cpuSeconds.increment(by: now.cpuSeconds - c.cpuSecondsAt)
                c.cpuSecondsAt = now.cpuSeconds
            }
            if now.voluntarySwitches > c.voluntaryAt {
                c.voluntarySwitches.increment(by: Int64(clamping: now.voluntarySwitches - c.voluntaryAt))
                c.voluntaryAt = now.voluntarySwitches
            }
            if now.involuntarySwitches > c.involuntaryAt {
                c.involuntarySwitches.increment(by: Int64(clamping: now.involuntarySwitches - c.involuntaryAt))
                c.involuntaryAt = now.involuntarySwitches
            }
            counters = c
        }
        return registry.emitToBuffer()
    }
}
