// Counters defined once (docs/operations.md, "Metric names"): each set of
// counters is a struct of `Int` fields plus one table, `descriptors`, that gives
// every field its metric name, unit, kind and help text. Sums, the swift-metrics
// export, the stop report, `carillon node --stats` and the table in
// docs/operations.md are all derived from the table; a test fails when a field
// has no descriptor or the document differs from the table.

/// What one unit of a counter is.
public enum CounterUnit: String, Sendable, Hashable, CaseIterable {
    case frames
    case messages
    case naks
    case rounds
    case bytes
    case datagrams
    /// Calls of an API or a system call.
    case calls
    case slots
    /// Occurrences of a protocol step (a ballot, a view installed, a suspicion).
    case events
    case nanoseconds
    /// Parts per billion: a clock's drift.
    case partsPerBillion = "ppb"
    /// Service commands (docs/services.md).
    case commands
    /// Client requests to the services, retries included.
    case requests
    /// Client sessions of the services.
    case sessions
}

/// How a value behaves over time.
public enum CounterKind: String, Sendable, Hashable, CaseIterable {
    /// Only grows, from zero when the process starts; sums add it.
    case counter
    /// A level that goes up and down; a sum keeps the later value.
    case gauge
}

/// One counter of a ``CounterSet``: where it is stored and how it is shown.
public struct CounterDescriptor<Counters>: Sendable {
    /// The metric name, snake case with the `carillon_` prefix: `carillon_naks_sent`.
    public let name: String
    public let unit: CounterUnit
    public let kind: CounterKind
    /// What it counts, one line, for operators (exported and in docs/operations.md).
    public let help: String
    /// The field that holds it.
    public let keyPath: WritableKeyPath<Counters, Int> & Sendable

    /// The descriptor of the field at `keyPath`, exported as `name`.
    public init(
        _ name: String, _ unit: CounterUnit, _ keyPath: WritableKeyPath<Counters, Int> & Sendable, _ help: String, kind: CounterKind = .counter
    ) {
        self.name = name
        self.unit = unit
        self.kind = kind
        self.keyPath = keyPath
        self.help = help
    }

    /// The name without the `carillon_` prefix, for text reports: `naks_sent`.
    public var shortName: Substring {
        name.hasPrefix("carillon_") ? name.dropFirst("carillon_".count) : name[...]
    }
}

/// A struct of counters described by one table: every stored field is an `Int`
/// with exactly one entry in ``descriptors``.
public protocol CounterSet: Sendable {
    /// Every counter of the set, in the order reports list them.
    static var descriptors: [CounterDescriptor<Self>] { get }
    /// All zero.
    init()
}

extension CounterSet {
    /// Adds every counter of `other` to this one (gauges take `other`'s value).
    /// Allocates nothing in an optimised build.
    public mutating func add(_ other: Self) {
        for counter in Self.descriptors {
            switch counter.kind {
            case .counter: self[keyPath: counter.keyPath] += other[keyPath: counter.keyPath]
            case .gauge: self[keyPath: counter.keyPath] = other[keyPath: counter.keyPath]
            }
        }
    }

    /// The sum of two sets of counters: a member's totals over several views' instances.
    public static func + (a: Self, b: Self) -> Self {
        var sum = a
        sum.add(b)
        return sum
    }

    /// `naks_sent 12, naks_received 9, …`: every counter in table order, or only
    /// those that are not zero.
    public func report(includingZeros: Bool = true) -> String {
        var parts: [String] = []
        for counter in Self.descriptors {
            let value = self[keyPath: counter.keyPath]
            if includingZeros || value != 0 { parts.append("\(counter.shortName) \(value)") }
        }
        return parts.joined(separator: ", ")
    }
}
