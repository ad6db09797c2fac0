/// One client operation on one key of the object store, seen from the client:
/// when it was invoked, what came back and when (in simulated true time).
/// The store's keys are versioned registers: every write is numbered by the
/// service log index that applied it.
public struct RegisterOperation: Sendable, Hashable, CustomStringConvertible {
    public enum Call: Sendable, Hashable {
        case get
        /// Writes the value that names `write` (every write's value is unique).
        case put(write: UInt64)
        case compareAndSet(expected: UInt64, write: UInt64)
        case delete
    }

    public enum Outcome: Sendable, Hashable {
        /// A get found the value of `write` at `version`.
        case value(write: UInt64, version: UInt64)
        /// A get or a delete found no value.
        case absent
        /// A put, compare-and-set or delete took effect at `version`.
        case written(version: UInt64)
        /// A compare-and-set found `current` (0: absent) instead.
        case mismatch(current: UInt64)
    }

    public var call: Call
    /// `nil`: the outcome is unknown (the member crashed or was left out
    /// before answering): the operation may have taken effect, or not.
    public var outcome: Outcome?
    public var invokedNanos: UInt64
    public var respondedNanos: UInt64?
    /// Who asked (session and request id), for reports.
    public var label: String

    public init(call: Call, outcome: Outcome?, invokedNanos: UInt64, respondedNanos: UInt64?, label: String) {
        self.call = call
        self.outcome = outcome
        self.invokedNanos = invokedNanos
        self.respondedNanos = respondedNanos
        self.label = label
    }

    public var description: String {
        let call: String
        switch self.call {
        case .get: call = "get"
        case .put(let w): call = "put w\(w)"
        case .compareAndSet(let e, let w): call = "cas v\(e)→w\(w)"
        case .delete: call = "delete"
        }
        let outcome: String
        switch self.outcome {
        case nil: outcome = "unknown"
        case .value(let w, let v)?: outcome = "w\(w)@v\(v)"
        case .absent?: outcome = "absent"
        case .written(let v)?: outcome = "ok v\(v)"
        case .mismatch(let c)?: outcome = "mismatch v\(c)"
        }
        let end = respondedNanos.map { String($0 / 1_000) } ?? "∞"
        return "\(label) [\(invokedNanos / 1_000), \(end)] µs \(call) → \(outcome)"
    }
}

/// Wing & Gong's search for a linearization (with Lowe's memoization of
/// visited states, as Porcupine does) of a small history of one versioned
/// register. An operation whose outcome is unknown may be linearized at any
/// point after its invocation, or never.
public enum RegisterLinearizability {
    /// The register as the model sees it.
    struct State: Hashable {
        /// The write whose value the key holds; 0 when absent.
        var write: UInt64 = 0
        /// Its version (0 when absent); `nil` when the write's outcome is unknown.
        var version: UInt64? = 0
        /// The largest version applied so far: every later write takes a larger one.
        var floor: UInt64 = 0

        var current: UInt64? { write == 0 ? 0 : version }

        func matches(_ expected: UInt64) -> Bool {
            write == 0 ? expected == 0 : (version == nil || version == expected)
        }
    }

    /// The histories this checks are bounded (a bitmask of operations).
    public static let maxOperations = 32

    /// Whether `operations` have a linearization; unknown gets (they change
    /// nothing and told no one anything) are left out first.
    public static func isLinearizable(_ operations: [RegisterOperation]) -> Bool {
        let ops = operations.filter { !($0.call == .get && $0.outcome == nil) }
        precondition(ops.count <= maxOperations, "a history of \(ops.count) operations is too long to search")
        let known = ops.indices.reduce(UInt32(0)) { ops[$1].outcome == nil ? $0 : $0 | 1 << UInt32($1) }
        var visited: Set<Visit> = []
        return search(ops, done: 0, known: known, state: State(), visited: &visited)
    }

    struct Visit: Hashable {
        var done: UInt32
        var state: State
    }

    static func search(_ ops: [RegisterOperation], done: UInt32, known: UInt32, state: State, visited: inout Set<Visit>) -> Bool {
        if known & ~done == 0 { return true }
        guard visited.insert(Visit(done: done, state: state)).inserted else { return false }
        // Real-time order: an operation may go next only if no remaining
        // operation responded before it was invoked.
        var earliestResponse = UInt64.max
        for i in ops.indices where done & 1 << UInt32(i) == 0 {
            if let responded = ops[i].respondedNanos { earliestResponse = min(earliestResponse, responded) }
        }
        for i in ops.indices where done & 1 << UInt32(i) == 0 && ops[i].invokedNanos <= earliestResponse {
            if let next = step(state, ops[i]),
                search(ops, done: done | 1 << UInt32(i), known: known, state: next, visited: &visited)
            {
                return true
            }
        }
        return false
    }

    /// The state after `op` if it is legal at `state` (register semantics with versions).
    static func step(_ s: State, _ op: RegisterOperation) -> State? {
        var next = s
        switch (op.call, op.outcome) {
        case (.get, .absent?):
            return s.write == 0 ? s : nil
        case (.get, .value(let w, let v)?):
            // A write whose outcome was unknown shows its version now: it
            // must be past every write before it.
            guard s.write == w, s.version == v || (s.version == nil && v > s.floor) else { return nil }
            next.version = v
            next.floor = max(s.floor, v)
            return next
        case (.put(let w), .written(let v)?):
            guard v > s.floor else { return nil }
            return State(write: w, version: v, floor: v)
        case (.compareAndSet(let e, let w), .written(let v)?):
            guard s.matches(e), v > s.floor else { return nil }
            return State(write: w, version: v, floor: v)
        case (.compareAndSet(let e, _), .mismatch(let c)?):
            guard c != e else { return nil }
            if s.write == 0 { return c == 0 ? s : nil }
            guard s.version == c || (s.version == nil && c > s.floor) else { return nil }
            next.version = c
            next.floor = max(s.floor, c)
            return next
        case (.delete, .written(let v)?):
            guard s.write != 0, v > s.floor else { return nil }
            return State(write: 0, version: 0, floor: v)
        case (.delete, .absent?):
            return s.write == 0 ? s : nil
        // Unknown outcomes: the effect, if it took effect here (not taking
        // effect at all is leaving the operation out).
        case (.put(let w), nil):
            return State(write: w, version: nil, floor: s.floor)
        case (.compareAndSet(let e, let w), nil):
            return s.matches(e) ? State(write: w, version: nil, floor: s.floor) : nil
        case (.delete, nil):
            return s.write != 0 ? State(write: 0, version: 0, floor: s.floor) : nil
        default:
            // An outcome the call cannot have (a get that wrote, a put that found nothing).
            return nil
        }
    }
}
