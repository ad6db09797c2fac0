import CarillonMembership
import CarillonServices

/// What the services simulator's checkers found (`carillon-sim --services`).
public enum ServiceViolation: Sendable, Hashable, CustomStringConvertible {
    /// The checker that reports a violation.
    public enum Checker: String, Sendable, Hashable, CaseIterable {
        case lockSafety = "lock safety"
        case replicaEquality = "replica equality"
        case linearizability
        case exactlyOnce = "exactly once"
        /// Owned objects: one owner, holders' copies as ordered, reads in bus order.
        case objectOwnership = "object ownership"
        /// Capability checks: the same at every member, rights enforced.
        case capabilities
        /// Not a service's: the stream the services are fed broke a bound of the membership layer.
        case viewBounds = "view bounds"
    }

    /// At `node`'s stream, `lock` was granted to `grantee` in `mode` (token
    /// `token`) while `holders` held it in a mode that excludes it.
    case grantWhileHeld(node: Int, lock: String, grantee: SessionID, mode: LockMode, token: UInt64, holders: [SessionID])
    /// At `node`'s stream, a grant of `lock` carried a token not above an earlier grant's.
    case tokenNotIncreasing(node: Int, lock: String, token: UInt64, previous: UInt64)
    /// At `node`'s stream, a release was answered `ok` for a session that did not hold the lock.
    case releaseOfUnheld(node: Int, lock: String, session: SessionID)
    /// Two members granted different locks, sessions or tokens on the part of
    /// epoch `epoch` both delivered (`first`/`second`: the first grants that
    /// differ, `nil` where one has none).
    case grantsDiffer(epoch: UInt32, nodes: [Int], first: String?, second: String?)
    /// A member's service state (``ServiceHost/digest``) right after installing
    /// `epoch` is not the one other members had there.
    case digestDiffers(epoch: UInt32, node: Int, expected: UInt64, found: UInt64)
    /// A joiner's state right after it was received at `epoch` is not the
    /// state the members had when they installed that view.
    case joinerStateDiffers(epoch: UInt32, node: Int, expected: UInt64, found: UInt64)
    /// A joiner could not take the state it was given.
    case stateUnreadable(epoch: UInt32, node: Int, error: String)
    /// After the run settled (every member in one view, every message
    /// delivered everywhere), two members' services hold different states.
    case finalStatesDiffer(nodes: [Int], index: UInt64)
    /// No linearization of this key's history exists (register semantics with versions).
    case notLinearizable(key: String, history: [RegisterOperation])
    /// A request was answered twice, differently (a retry applied again).
    case answersDiffer(session: SessionID, request: UInt64, first: String, then: String)
    /// A counter's sums cannot come from applying each distinct `add` once.
    case counterMiscounted(key: String, detail: String)
    /// A cancel withdrew a waiting acquire, which was never answered.
    case withdrawnWaitUnanswered(session: SessionID, request: UInt64)
    /// `node` delivered in `epoch` at `round`, at or after the first round of
    /// the next view (`nextViewStart`): the view's survivors cut it before
    /// that, so what the member applied there (and answered its clients)
    /// happened nowhere else.
    case deliveredAfterViewEnded(node: Int, epoch: UInt32, round: UInt64, nextViewStart: UInt64)
    /// An effect named a copy `node` did not hold (`count` times): the directory and the holders disagree.
    case copyMissing(node: Int, count: Int)
    /// After the run settled, `node`'s copy of `object` is not the object as
    /// ordered up to the directory's `version` (it holds `found`): a committed write was lost or misapplied.
    case objectCopyDiffers(object: String, node: Int, version: UInt64, found: UInt64)
    /// A read answered with `version` returned other bytes than the object had at that version.
    case readDiffers(object: String, version: UInt64, expected: [UInt8], found: [UInt8])
    /// A write presented a capability without the write right and was applied.
    case rightIgnored(session: SessionID, request: UInt64, rights: String)

    public var checker: Checker {
        switch self {
        case .grantWhileHeld, .tokenNotIncreasing, .releaseOfUnheld, .grantsDiffer: .lockSafety
        case .digestDiffers, .joinerStateDiffers, .stateUnreadable, .finalStatesDiffer: .replicaEquality
        case .notLinearizable: .linearizability
        case .answersDiffer, .counterMiscounted, .withdrawnWaitUnanswered: .exactlyOnce
        case .deliveredAfterViewEnded: .viewBounds
        case .copyMissing, .objectCopyDiffers, .readDiffers: .objectOwnership
        case .rightIgnored: .capabilities
        }
    }

    public var description: String {
        let text: String
        switch self {
        case .grantWhileHeld(let node, let lock, let grantee, let mode, let token, let holders):
            text =
                "node \(node) granted \(lock) \(mode) to \(grantee) (token \(token)) while \(holders.map(\.description).joined(separator: ", ")) held it"
        case .tokenNotIncreasing(let node, let lock, let token, let previous):
            text = "node \(node) granted \(lock) with token \(token), not above the earlier \(previous)"
        case .releaseOfUnheld(let node, let lock, let session):
            text = "node \(node) answered ok to \(session)'s release of \(lock), which it did not hold"
        case .grantsDiffer(let epoch, let nodes, let first, let second):
            text =
                "nodes \(nodes.map(String.init).joined(separator: " and ")) granted differently in epoch \(epoch): "
                + "\(first ?? "nothing") against \(second ?? "nothing")"
        case .digestDiffers(let epoch, let node, let expected, let found):
            text = "node \(node)'s state at epoch \(epoch) is \(hex(found)), others had \(hex(expected))"
        case .joinerStateDiffers(let epoch, let node, let expected, let found):
            text = "node \(node) joined epoch \(epoch) with state \(hex(found)), the members had \(hex(expected))"
        case .stateUnreadable(let epoch, let node, let error):
            text = "node \(node) could not take the state of epoch \(epoch): \(error)"
        case .finalStatesDiffer(let nodes, let index):
            text = "nodes \(nodes.map(String.init).joined(separator: " and ")) hold different states at log index \(index) after the run settled"
        case .notLinearizable(let key, let history):
            text =
                "key \(key): no linearization of \(history.count) operations:\n"
                + history.map { "      \($0)" }.joined(separator: "\n")
        case .answersDiffer(let session, let request, let first, let then):
            text = "\(session) request \(request) answered \(first), then \(then)"
        case .counterMiscounted(let key, let detail):
            text = "counter \(key): \(detail)"
        case .deliveredAfterViewEnded(let node, let epoch, let round, let start):
            text = "node \(node) delivered in epoch \(epoch) at round \(round); epoch \(epoch + 1) starts at round \(start)"
        case .withdrawnWaitUnanswered(let session, let request):
            text = "\(session) request \(request): an acquire withdrawn by a cancel was never answered"
        case .copyMissing(let node, let count):
            text = "node \(node) was told to use a copy it does not hold (\(count) times)"
        case .objectCopyDiffers(let object, let node, let version, let found):
            text = "node \(node)'s copy of \(object) (version \(found)) is not the object as ordered up to version \(version)"
        case .readDiffers(let object, let version, let expected, let found):
            text = "a read of \(object) at version \(version) returned \(found), the object held \(expected)"
        case .rightIgnored(let session, let request, let rights):
            text = "\(session) request \(request) wrote with a capability of rights \(rights) and was applied"
        }
        return "\(checker.rawValue): \(text)"
    }
}

func hex(_ value: UInt64) -> String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, 16 - digits.count)) + digits
}
