import CarillonServices
import Metrics

/// The services' counters through swift-metrics (`carillon_services_*`, with
/// a `node` dimension), published as differences at most every 100 ms from
/// the apply path — never per command — plus two gauges: open sessions and
/// the log index applied.
struct ServiceMetrics {
    static let publishIntervalNanos: UInt64 = 100_000_000

    static let labels = [
        "carillon_services_commands_applied", "carillon_services_retries_answered", "carillon_services_duplicates_ignored",
        "carillon_services_bad_requests", "carillon_services_foreign_sessions", "carillon_services_windows_full",
        "carillon_services_sessions_ended", "carillon_services_view_changes",
    ]

    /// The counters in ``labels``' order.
    static func values(_ c: ServiceCounters) -> [Int] {
        [c.commandsApplied, c.retriesAnswered, c.duplicatesIgnored, c.badRequests, c.foreignSessions, c.windowsFull,
         c.sessionsEnded, c.viewChanges]
    }

    let counters: [Counter]
    let sessions: Gauge
    let appliedIndex: Gauge
    var last = ServiceCounters()
    var nextPublishNanos: UInt64 = 0

    init(node: Int) {
        let dimensions = [("node", String(node))]
        counters = Self.labels.map { Counter(label: $0, dimensions: dimensions) }
        sessions = Gauge(label: "carillon_services_sessions_open", dimensions: dimensions)
        appliedIndex = Gauge(label: "carillon_services_applied_index", dimensions: dimensions)
    }

    mutating func publish(_ now: ServiceCounters, sessionsOpen: Int, index: UInt64, atNanos: UInt64) {
        guard atNanos >= nextPublishNanos else { return }
        nextPublishNanos = atNanos + Self.publishIntervalNanos
        let current = Self.values(now), before = Self.values(last)
        for i in counters.indices where current[i] > before[i] { counters[i].increment(by: Int64(current[i] - before[i])) }
        last = now
        sessions.record(sessionsOpen)
        appliedIndex.record(Double(index))
    }
}
