import CarillonMembership
import CarillonOrdering
import CarillonTransport
import Metrics

/// The member's counters published through swift-metrics: every counter of
/// every ``CounterSet`` table (ordering, membership, transport, runtime), under
/// the table's name with a `node` dimension. The agent publishes differences
/// every `publishIntervalNanos`, never per message, so a metrics backend costs
/// nothing on the hot path.
struct MemberMetrics {
    static let publishIntervalNanos: UInt64 = 100_000_000

    private var ordering: ExportedCounters<OrderingCounters>
    private var membership: ExportedCounters<MembershipCounters>
    private var transport: ExportedCounters<TransportCounters>
    private var runtime: ExportedCounters<RuntimeCounters>
    var nextPublishNanos: UInt64 = 0

    /// Every exported name, in publishing order.
    static var labels: [String] {
        OrderingCounters.descriptors.map(\.name) + MembershipCounters.descriptors.map(\.name)
            + TransportCounters.descriptors.map(\.name) + RuntimeCounters.descriptors.map(\.name)
    }

    /// `factory`: where the counters go (the process's metrics system unless a test gives its own).
    init(node: Int, factory: any MetricsFactory = MetricsSystem.factory) {
        let dimensions = [("node", String(node))]
        ordering = ExportedCounters(dimensions: dimensions, factory: factory)
        membership = ExportedCounters(dimensions: dimensions, factory: factory)
        transport = ExportedCounters(dimensions: dimensions, factory: factory)
        runtime = ExportedCounters(dimensions: dimensions, factory: factory)
    }

    /// Publishes what changed since the last call; allocates nothing in an optimised build (a metrics backend may).
    mutating func publish(_ o: OrderingCounters, _ m: MembershipCounters, _ t: TransportCounters, _ r: RuntimeCounters) {
        ordering.publish(o)
        membership.publish(m)
        transport.publish(t)
        runtime.publish(r)
    }
}

/// One counter set's swift-metrics handles, made from its table: a `Counter`
/// per counter (incremented by what grew), a `Gauge` per gauge (recorded when it changed).
/// The member exports its sets with it, and the services node theirs.
public struct ExportedCounters<Counters: CounterSet>: Sendable {
    private enum Handle: Sendable {
        case counter(Counter)
        case gauge(Gauge)
    }

    /// In the order of `Counters.descriptors`.
    private let handles: [Handle]
    private var last: [Int]

    /// A handle per descriptor of `Counters`, named as the table names it, with
    /// `dimensions` (`[("node", "3")]`), made by `factory`.
    public init(dimensions: [(String, String)], factory: any MetricsFactory = MetricsSystem.factory) {
        handles = Counters.descriptors.map { counter in
            switch counter.kind {
            case .counter: .counter(Counter(label: counter.name, dimensions: dimensions, factory: factory))
            case .gauge: .gauge(Gauge(label: counter.name, dimensions: dimensions, factory: factory))
            }
        }
        // A gauge is recorded at the first publish, whatever its value.
        last = Counters.descriptors.map { $0.kind == .gauge ? .min : 0 }
    }

    /// Exports what changed since the last call: counters by the amount they
    /// grew, gauges at their new value (every gauge at the first call).
    /// Allocates nothing in an optimised build (a metrics backend may).
    public mutating func publish(_ now: Counters) {
        var index = 0
        for counter in Counters.descriptors {
            defer { index += 1 }
            let value = now[keyPath: counter.keyPath]
            switch handles[index] {
            case .counter(let handle):
                // Counters only grow; a smaller value (never expected) is not exported as a decrease.
                guard value > last[index] else { continue }
                handle.increment(by: Int64(value - last[index]))
            case .gauge(let handle):
                guard value != last[index] else { continue }
                handle.record(value)
            }
            last[index] = value
        }
    }
}
