/// A member's record of join requests (docs/protocol.md §15, "Joins and state
/// transfer"): the joiners asking to be admitted at the next change, when each
/// was last heard, and per node the newest incarnation seen in a view (a request
/// of that incarnation or an older one is a replay, or comes from a process that is gone).
struct JoinRequests: Sendable {
    /// Joiners asking to be admitted, at most one incarnation per node, in the order first heard.
    private(set) var pending: [MemberID] = []
    /// The round each pending joiner's request was last heard (by node).
    private(set) var heardRound: [UInt16: UInt64] = [:]
    /// Per node, the newest incarnation this member has seen in a view.
    private(set) var knownIncarnation: [UInt16: UInt64] = [:]

    /// What became of a join request.
    enum Verdict: Equatable {
        /// The joiner is already a member of the view (it missed the decision).
        case alreadyMember
        /// An incarnation no newer than one seen in a view, or older than the run: dropped.
        case stale
        /// Recorded: it joins at the next change while it keeps asking.
        case pending
    }

    /// Takes a request of `joiner` heard at `round` in `view`. Every incarnation
    /// of a run is the clock at a start no earlier than the run's, so one older
    /// than `runIdentity` is from an earlier run. (`staleJoinsTaken`: the canary
    /// that only drops incarnations older than the one in the view.)
    mutating func hear(_ joiner: MemberID, round: UInt64, view: View, runIdentity: UInt64, staleJoinsTaken: Bool = false) -> Verdict {
        let (node, incarnation) = (joiner.node, joiner.incarnation)
        if view.members.contains(joiner) { return .alreadyMember }
        let stale =
            staleJoinsTaken
            ? view.members.contains(where: { $0.node == node && $0.incarnation > incarnation })
            : incarnation <= (knownIncarnation[node] ?? 0) || incarnation < runIdentity
        if stale { return .stale }
        heardRound[node] = round
        if !pending.contains(joiner) {
            pending.removeAll { $0.node == node && $0.incarnation < incarnation }
            if !pending.contains(where: { $0.node == node }) { pending.append(joiner) }
        }
        return .pending
    }

    /// A view was installed: its incarnations become known, and joiners it
    /// admitted (or superseded by a later incarnation in it) stop waiting.
    mutating func installed(_ view: View) {
        for member in view.members { knownIncarnation[member.node] = max(knownIncarnation[member.node] ?? 0, member.incarnation) }
        pending.removeAll { joiner in
            view.members.contains { $0.node == joiner.node && $0.incarnation >= joiner.incarnation }
        }
    }

    /// Forgets joiners not heard for more than `silentRounds` before `round` (one
    /// that died meanwhile would join as a dead member).
    mutating func expire(round: UInt64, silentRounds: UInt64) {
        pending.removeAll { round > (heardRound[$0.node] ?? 0) + silentRounds }
    }
}

/// A joiner's side of joining: when to ask next, and since when it has asked
/// under its current incarnation (asked in vain for long, it takes a fresh one).
struct JoinAttempt: Sendable {
    /// The round this member started asking with its current incarnation (nil: not yet asked).
    private(set) var sinceRound: UInt64?
    /// The next round a join request is due.
    private(set) var nextRequestRound: UInt64 = 0

    /// Starts over (a new incarnation asks at once).
    mutating func restart() {
        nextRequestRound = 0
        sinceRound = nil
    }

    /// At a timeout while joining, at `round`: whether to take a fresh incarnation
    /// (asked for `refreshRounds` in vain), and whether a request is due now (then
    /// the next one is due `retryRounds` later).
    mutating func tick(round: UInt64, refreshRounds: UInt64, retryRounds: Int) -> (refresh: Bool, request: Bool) {
        var refresh = false
        if let since = sinceRound, round >= since &+ refreshRounds {
            sinceRound = round
            refresh = true
        }
        if sinceRound == nil { sinceRound = round }
        guard round >= nextRequestRound else { return (refresh, false) }
        nextRequestRound = round + UInt64(max(retryRounds, 1))
        return (refresh, true)
    }
}
