import CarillonRuntime
import CarillonServices
import Metrics

/// The services' counters and gauges through swift-metrics, from the
/// ``ServiceCounters`` table (`carillon_services_*`, with a `node` dimension),
/// published as differences at most every 100 ms from the apply path, never
/// per command.
struct ServiceMetrics {
    static let publishIntervalNanos: UInt64 = 100_000_000

    /// Every exported name, in publishing order.
    static var labels: [String] { ServiceCounters.descriptors.map(\.name) }

    private var exported: ExportedCounters<ServiceCounters>
    var nextPublishNanos: UInt64 = 0

    /// `factory`: where the counters go (the process's metrics system unless a test gives its own).
    init(node: Int, factory: any MetricsFactory = MetricsSystem.factory) {
        exported = ExportedCounters(dimensions: [("node", String(node))], factory: factory)
    }

    /// Publishes what changed, unless the last publish was less than ``publishIntervalNanos`` before `atNanos`.
    mutating func publish(_ now: ServiceCounters, atNanos: UInt64) {
        guard atNanos >= nextPublishNanos else { return }
        nextPublishNanos = atNanos + Self.publishIntervalNanos
        exported.publish(now)
    }
}
