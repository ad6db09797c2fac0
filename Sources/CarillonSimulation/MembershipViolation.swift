import CarillonMembership

/// What the membership simulator's checkers found (`carillon-sim --membership`).
/// Each case's ``description`` is the line the sweep prints.
public enum MembershipViolation: Sendable, Hashable, CustomStringConvertible {
    /// The checker that reports a violation.
    public enum Checker: String, Sendable, Hashable, CaseIterable {
        case integrity
        case agreement
        case order
        case virtualSynchrony = "virtual synchrony"
        case singlePrimary = "single primary"
        case replicaEquality = "replica equality"
        case stateTransfer = "state transfer"
        case validity
        case liveness
        /// A counter whose non-zero value means a bug (see ``MembershipViolation/counterNotZero(node:counter:value:)``).
        case counters
    }

    /// `node` delivered a payload that is not one the simulator broadcast (of `bytes` bytes).
    case malformedPayload(node: Int, bytes: Int)
    /// `node` delivered message `id`, which nobody broadcast.
    case neverSent(node: Int, id: UInt64)
    /// `node` delivered message `id` a second time.
    case duplicate(node: Int, id: UInt64)
    /// In safe delivery, two processes' deliveries in `epoch` are not prefixes of one another.
    case agreement(nodes: [Int], epoch: UInt32)
    /// Two processes delivered the messages they have in common in `epoch` in different orders.
    case order(nodes: [Int], epoch: UInt32)
    /// Two processes that both installed the view after `epoch` delivered
    /// different messages in it (`counts`: how many each delivered).
    case virtualSynchrony(nodes: [Int], epoch: UInt32, counts: [Int])
    /// `epoch` was installed with two different member lists.
    case singlePrimary(epoch: UInt32, members: [MemberID], otherMembers: [MemberID])
    /// `node`'s digest of delivered messages at `epoch` differs from the others'.
    case replicaEquality(node: Int, epoch: UInt32)
    /// The state `node` received by state transfer at `epoch` has another digest than the members'.
    case stateTransferDigest(node: Int, epoch: UInt32)
    /// `node`, never excluded, queued message `id` and never delivered it.
    case validity(node: Int, id: UInt64)
    /// The cluster did not settle (one view with every node, every probe
    /// delivered) within `boundRounds` of the faults' end; `views`: each node's view.
    case liveness(boundRounds: Int, views: [String])
    /// `node`'s counter `counter` (ordering or membership) is `value`, where
    /// any non-zero value means a bug: the simulator never corrupts frames.
    case counterNotZero(node: Int, counter: String, value: Int)

    public var checker: Checker {
        switch self {
        case .malformedPayload, .neverSent, .duplicate: .integrity
        case .agreement: .agreement
        case .order: .order
        case .virtualSynchrony: .virtualSynchrony
        case .singlePrimary: .singlePrimary
        case .replicaEquality: .replicaEquality
        case .stateTransferDigest: .stateTransfer
        case .validity: .validity
        case .liveness: .liveness
        case .counterNotZero: .counters
        }
    }

    public var description: String {
        switch self {
        case .malformedPayload(let node, let bytes):
            return "node \(node) delivered a payload of \(bytes) bytes"
        case .neverSent(let node, let id):
            return "integrity: node \(node) delivered \(id), never sent"
        case .duplicate(let node, let id):
            return "integrity: node \(node) delivered \(id) twice"
        case .agreement(let nodes, let epoch):
            return "agreement: nodes \(Self.pair(nodes)) delivered different sequences in epoch \(epoch)"
        case .order(let nodes, let epoch):
            return "order: nodes \(Self.pair(nodes)) delivered common messages of epoch \(epoch) in different orders"
        case .virtualSynchrony(let nodes, let epoch, let counts):
            return "virtual synchrony: nodes \(Self.pair(nodes)) delivered \(Self.pair(counts)) messages in epoch \(epoch)"
        case .singlePrimary(let epoch, let members, let otherMembers):
            return "single primary: epoch \(epoch) installed as \(members) and as \(otherMembers)"
        case .replicaEquality(let node, let epoch):
            return "replica equality: node \(node) digest at epoch \(epoch) differs"
        case .stateTransferDigest(let node, let epoch):
            return "state transfer: node \(node) received a digest at epoch \(epoch) that differs"
        case .validity(let node, let id):
            return "validity: node \(node) queued \(id) and never delivered it"
        case .liveness(let bound, let views):
            return "liveness: not settled \(bound) rounds after faults stopped; "
                + views.enumerated().map { "node \($0.offset): \($0.element)" }.joined(separator: "; ")
        case .counterNotZero(let node, let counter, let value):
            return "counters: node \(node) counted \(value) \(counter) (must stay 0)"
        }
    }

    static func pair(_ values: [Int]) -> String { values.map(String.init).joined(separator: " and ") }
}
