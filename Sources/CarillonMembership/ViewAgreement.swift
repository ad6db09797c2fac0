/// A ballot and the value (next view and cut) accepted or decided under it.
typealias BallotValue = (ballot: UInt64, proposal: ViewProposal)

/// One member's part of the Paxos-style agreement on the view that follows the
/// installed one (docs/protocol.md §15, "Prepare and promise" to "The decision"),
/// and what every other rank of the view last restated of its own part.
///
/// Pure bookkeeping: it knows nothing of frames, the ordering instance or time
/// beyond the rounds it is given. ``MembershipInstance`` wedges its ordering
/// instance at a promise, asks it whether a cut is held and sends the frames.
struct ViewAgreement: Sendable {
    /// The highest ballot promised in this view (0: none, no change under way).
    private(set) var promised: UInt64 = 0
    /// The round of the latest promise.
    private(set) var promisedAtRound: UInt64 = 0
    /// The value accepted under the highest ballot this member accepted.
    private(set) var accepted: BallotValue?
    /// Whether this member held the accepted value's cut when it promised a
    /// higher ballot (nil: it has promised none above its accepted ballot).
    /// Holding is part of accepting: from that promise on, the hold it states
    /// for the lower ballot no longer changes, so a proposer of the higher
    /// ballot sees every hold a decision of the lower one can have counted.
    private(set) var holdsAtHigherPromise: Bool?
    /// The decided value, once known.
    private(set) var decided: BallotValue?
    /// Whether the ordering instance was told to finish at the decided cut.
    var cutFinalized = false
    /// The highest ballot counter seen (ballots are `counter << 16 | node`); kept across views.
    private(set) var maxBallotCounter: UInt64 = 0
    /// The round this member first promised in this view.
    private(set) var changeSinceRound: UInt64?
    /// Ballots promised in this view (the proposal timeout doubles with each).
    private(set) var ballotsSeen = 0
    /// As proposer: the ballot this member proposes (0: none) and since when.
    private(set) var proposing: UInt64 = 0
    private(set) var proposingSinceRound: UInt64 = 0

    // What each rank of the view restated last.
    private(set) var peerPromised: [UInt64] = []
    private(set) var peerAccepted: [UInt64] = []
    private(set) var peerHolds: [Bool] = []
    private(set) var peerPositions: [[UInt64]?] = []
    private(set) var peerProposal: [ViewProposal?] = []
    private(set) var peerLeaving: [Bool] = []

    init(memberCount: Int = 0) { startView(memberCount: memberCount) }

    /// Members of the view this agreement runs in.
    var memberCount: Int { peerPromised.count }

    /// Whether a change is under way: a ballot promised or a decision known.
    var isUnderway: Bool { promised != 0 || decided != nil }

    /// A new view: forgets everything but the ballot counter (ballots keep growing).
    mutating func startView(memberCount n: Int) {
        promised = 0
        accepted = nil
        holdsAtHigherPromise = nil
        decided = nil
        cutFinalized = false
        changeSinceRound = nil
        ballotsSeen = 0
        proposing = 0
        peerPromised = Array(repeating: 0, count: n)
        peerAccepted = Array(repeating: 0, count: n)
        peerHolds = Array(repeating: false, count: n)
        peerPositions = Array(repeating: nil, count: n)
        peerProposal = Array(repeating: nil, count: n)
        peerLeaving = Array(repeating: false, count: n)
    }

    /// Leaving the view (to rejoin): no promise, no value.
    mutating func abandon() {
        promised = 0
        decided = nil
        accepted = nil
    }

    /// Promises `ballot` if it is higher than every ballot promised so far;
    /// returns whether it did (a lower or equal ballot is refused).
    /// `holdsAccepted` tells whether this member holds the accepted value's cut now.
    mutating func promise(_ ballot: UInt64, round: UInt64, holdsAccepted: (ViewProposal) -> Bool) -> Bool {
        guard ballot > promised else { return false }
        if let accepted, ballot > accepted.ballot, holdsAtHigherPromise == nil, decided == nil {
            holdsAtHigherPromise = holdsAccepted(accepted.proposal)
        }
        promised = ballot
        ballotsSeen += 1
        promisedAtRound = round
        maxBallotCounter = max(maxBallotCounter, ballot >> 16)
        if changeSinceRound == nil { changeSinceRound = round }
        return true
    }

    /// Accepts `proposal` under `ballot` unless a higher ballot was promised or
    /// the cut does not cover the view; returns whether a ballot not accepted before was.
    @discardableResult
    mutating func accept(_ ballot: UInt64, _ proposal: ViewProposal) -> Bool {
        guard ballot >= promised, proposal.cut.count == memberCount else { return false }
        promised = ballot
        let isNew = accepted?.ballot != ballot
        if isNew { holdsAtHigherPromise = nil }
        accepted = (ballot, proposal)
        return isNew
    }

    /// Takes the decision (learned, or counted here): it is also the accepted value.
    mutating func learn(_ decision: BallotValue) {
        decided = decision
        accepted = decision
    }

    /// Starts a ballot of this member's own, higher than every ballot seen.
    mutating func startBallot(node: UInt16, round: UInt64) -> UInt64 {
        maxBallotCounter += 1
        proposing = maxBallotCounter << 16 | UInt64(node)
        proposingSinceRound = round
        return proposing
    }

    /// Gives up proposing (timed out, or a higher ballot was promised).
    mutating func stopProposing() { proposing = 0 }

    /// Records what rank `r` restated in a membership frame of this view.
    mutating func restate(
        rank r: Int, promised: UInt64, accepted: UInt64, holds: Bool, leaving: Bool, proposing: UInt64,
        positions: [UInt64]?, proposal: ViewProposal?
    ) {
        peerPromised[r] = promised
        peerAccepted[r] = accepted
        peerHolds[r] = holds
        peerLeaving[r] = leaving
        if let positions, positions.count == memberCount { peerPositions[r] = positions }
        if let proposal, proposal.cut.count == memberCount { peerProposal[r] = proposal }
        maxBallotCounter = max(maxBallotCounter, promised >> 16, proposing >> 16, accepted >> 16)
    }

    /// Whether this member states that it holds `proposal`'s cut: frozen at a
    /// promise above its accepted ballot (see ``holdsAtHigherPromise``), `live` otherwise.
    func statesHold(_ live: @autoclosure () -> Bool) -> Bool {
        if decided == nil, let frozen = holdsAtHigherPromise { return frozen }
        return live()
    }

    /// Whether a majority of the view accepted the accepted value's ballot and
    /// holds its cut (this member at `ownRank` counts if `ownHolds`): then it is decided.
    func acceptedIsHeldByMajority(ownRank: Int, ownHolds: Bool, majority: Int) -> Bool {
        guard let accepted else { return false }
        var holders = 0
        for r in 0..<memberCount {
            if r == ownRank {
                if ownHolds { holders += 1 }
            } else if peerAccepted[r] == accepted.ballot, peerHolds[r] {
                holders += 1
            }
        }
        return holders >= majority
    }

    /// `rounds`, doubled for each ballot that failed in this view (up to 32×).
    func backoff(_ rounds: UInt64) -> UInt64 { rounds << UInt64(min(max(ballotsSeen, 1) - 1, 5)) }

    /// The ranks that promised this member's ballot (others only once their positions are known).
    func promisers(ownRank: Int) -> [Int] {
        var promisers: [Int] = []
        for r in 0..<memberCount {
            if r == ownRank ? promised == proposing : (peerPromised[r] == proposing && peerPositions[r] != nil) {
                promisers.append(r)
            }
        }
        return promisers
    }

    /// The highest-ballot value any of `promisers` accepted (it may have been decided).
    func highestAccepted(among promisers: [Int], ownRank: Int) -> BallotValue? {
        var best: BallotValue?
        for r in promisers {
            let candidate: BallotValue? =
                r == ownRank
                ? accepted.map { ($0.ballot, $0.proposal) }
                : peerProposal[r].map { (peerAccepted[r], $0) }
            if let candidate, candidate.ballot > 0, candidate.ballot > (best?.ballot ?? 0) { best = candidate }
        }
        return best
    }

    /// Whether some promiser states that it holds `proposal` (this member if `ownHolds`):
    /// a value no promiser holds cannot have been decided.
    func isHeld(_ proposal: ViewProposal, among promisers: [Int], ownRank: Int, ownHolds: () -> Bool) -> Bool {
        promisers.contains { r in
            r == ownRank ? accepted?.proposal == proposal && ownHolds() : peerProposal[r] == proposal && peerHolds[r]
        }
    }

    /// A fresh value: the promisers that are not leaving (and not superseded by a
    /// newer incarnation asking to join) as members, then joiners — fewer than the
    /// members carried over, but at least one — and per rank the highest
    /// received-below round any promiser stated (`ownPositions` for this member).
    func freshProposal(
        view: View, ownRank: Int, ownPositions: [UInt64], ownLeaving: Bool, promisers: [Int], pendingJoins: [MemberID]
    ) -> ViewProposal {
        let n = view.members.count
        var cut = ownPositions
        for r in promisers where r != ownRank {
            for j in 0..<n { cut[j] = max(cut[j], peerPositions[r]![j]) }
        }
        var members: [MemberID] = []
        for r in promisers where !(r == ownRank ? ownLeaving : peerLeaving[r]) {
            let member = view.members[r]
            if pendingJoins.contains(where: { $0.node == member.node && $0.incarnation > member.incarnation }) { continue }
            members.append(member)
        }
        // Fewer joiners than members carried over (but at least one): if every
        // joiner then dies, the carried members are still a majority of the
        // new view and can remove them. The rest join at the next change.
        let carried = members.count
        var joiners = 0
        for joiner in pendingJoins where !members.contains(where: { $0.node == joiner.node }) && joiners < max(1, carried - 1) {
            members.append(joiner)
            joiners += 1
        }
        // The next view starts where the last cut ends.
        let start = cut.max() ?? view.startRound
        return ViewProposal(members: members, cut: cut, startRound: max(start, view.startRound))
    }
}
