/// A message's identity: who broadcast it and its sequence number.
public struct MessageID: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var sender: Int
    public var sequence: UInt64
    public init(sender: Int, sequence: UInt64) {
        self.sender = sender
        self.sequence = sequence
    }
    public static func < (a: MessageID, b: MessageID) -> Bool { (a.sender, a.sequence) < (b.sender, b.sequence) }
    public var description: String { "(\(sender),\(sequence))" }
}

/// One broken invariant, with where and when it broke.
public struct Violation: Sendable, Hashable, CustomStringConvertible {
    public enum Invariant: String, Sendable, Hashable {
        case agreement, integrity, validity, order
    }
    public var invariant: Invariant
    public var member: Int
    public var virtualNanos: UInt64
    public var detail: String
    public var description: String { "\(invariant.rawValue) violated at member \(member), t=\(virtualNanos)ns: \(detail)" }
}

/// Checks DESIGN.md's invariants incrementally, on every delivery:
/// - agreement: every member's delivered sequence is a prefix of one common sequence;
/// - integrity: a delivered message was broadcast, with the payload it was
///   broadcast with, and is delivered at most once per member;
/// - order: each member's delivery keys `(round, slot, index)` strictly increase;
/// - validity (at the end of the liveness phase): every broadcast message was
///   delivered at every member.
public struct InvariantChecker {
    public private(set) var violations: [Violation] = []
    /// The longest delivered sequence any member has reached; others must be prefixes of it.
    var canonical: [MessageID] = []
    var deliveredCount: [Int]
    var lastKey: [(round: UInt64, slot: Int, index: Int)?]
    var lastSequence: [[UInt64]]
    /// Per sender: the payload of each accepted broadcast, by sequence − 1.
    var broadcasts: [[[UInt8]]]
    /// Per sender and sequence − 1: virtual time of the broadcast, and members that delivered it.
    var broadcastNanos: [[UInt64]]
    var deliveredBy: [[Int]]
    /// Virtual nanoseconds from broadcast to delivery at the last member, per message.
    public private(set) var latenciesNanos: [UInt64] = []
    /// The first messages in delivery order, for demos.
    public var canonicalPrefix: ArraySlice<MessageID> { canonical.prefix(64) }
    /// Stop recording after this many violations (the first one matters).
    let maxViolations = 20

    public init(memberCount: Int) {
        deliveredCount = Array(repeating: 0, count: memberCount)
        lastKey = Array(repeating: nil, count: memberCount)
        lastSequence = Array(repeating: Array(repeating: 0, count: memberCount), count: memberCount)
        broadcasts = Array(repeating: [], count: memberCount)
        broadcastNanos = Array(repeating: [], count: memberCount)
        deliveredBy = Array(repeating: [], count: memberCount)
    }

    /// Total messages accepted by `broadcast` so far.
    public var broadcastCount: Int { broadcasts.reduce(0) { $0 + $1.count } }
    /// Messages delivered at `member`.
    public func delivered(at member: Int) -> Int { deliveredCount[member] }

    /// Records a broadcast the instance accepted with `sequence`.
    public mutating func recordBroadcast(sender: Int, sequence: UInt64, payload: [UInt8], nowNanos: UInt64) {
        if sequence != UInt64(broadcasts[sender].count + 1) {
            report(.integrity, member: sender, nowNanos, "broadcast assigned sequence \(sequence), expected \(broadcasts[sender].count + 1)")
        }
        broadcasts[sender].append(payload)
        broadcastNanos[sender].append(nowNanos)
        deliveredBy[sender].append(0)
    }

    /// Checks one delivery at `member`.
    public mutating func recordDelivery(
        member: Int, id: MessageID, round: UInt64, slot: Int, index: Int, payload: ArraySlice<UInt8>, nowNanos: UInt64
    ) {
        // Integrity: broadcast, same bytes, not twice.
        if id.sender < 0 || id.sender >= broadcasts.count || id.sequence == 0
            || id.sequence > UInt64(broadcasts[id.sender].count)
        {
            report(.integrity, member: member, nowNanos, "delivered \(id), which was never broadcast")
        } else if !broadcasts[id.sender][Int(id.sequence - 1)].elementsEqual(payload) {
            report(.integrity, member: member, nowNanos, "delivered \(id) with a payload other than the one broadcast")
        }
        if id.sender >= 0, id.sender < broadcasts.count {
            if id.sequence <= lastSequence[member][id.sender] {
                report(
                    .integrity, member: member, nowNanos,
                    "delivered \(id) after already delivering sequence \(lastSequence[member][id.sender]) of that sender")
            }
            lastSequence[member][id.sender] = max(lastSequence[member][id.sender], id.sequence)
        }
        // Order: keys strictly increase.
        if let last = lastKey[member], (last.round, last.slot, last.index) >= (round, slot, index) {
            report(
                .order, member: member, nowNanos,
                "delivery key (\(round),\(slot),\(index)) is not after (\(last.round),\(last.slot),\(last.index))")
        }
        lastKey[member] = (round, slot, index)
        // Agreement: a prefix of one common sequence.
        let position = deliveredCount[member]
        if position < canonical.count {
            if canonical[position] != id {
                report(
                    .agreement, member: member, nowNanos,
                    "delivered \(id) at position \(position) where another member delivered \(canonical[position])")
            }
        } else {
            canonical.append(id)
        }
        deliveredCount[member] += 1
        if id.sender >= 0, id.sender < deliveredBy.count, id.sequence >= 1, id.sequence <= UInt64(deliveredBy[id.sender].count) {
            let index = Int(id.sequence - 1)
            deliveredBy[id.sender][index] += 1
            if deliveredBy[id.sender][index] == deliveredCount.count {
                latenciesNanos.append(nowNanos - broadcastNanos[id.sender][index])
            }
        }
    }

    /// Validity: every broadcast was delivered at every member.
    public mutating func checkAllDelivered(nowNanos: UInt64) {
        let total = broadcastCount
        for member in deliveredCount.indices where deliveredCount[member] != total {
            report(
                .validity, member: member, nowNanos,
                "delivered \(deliveredCount[member]) of \(total) broadcast messages after the liveness bound")
        }
    }

    /// `true` once every member has delivered every broadcast.
    public var allDelivered: Bool {
        let total = broadcastCount
        return deliveredCount.allSatisfy { $0 == total }
    }

    mutating func report(_ invariant: Violation.Invariant, member: Int, _ nowNanos: UInt64, _ detail: String) {
        guard violations.count < maxViolations else { return }
        violations.append(Violation(invariant: invariant, member: member, virtualNanos: nowNanos, detail: detail))
    }
}
