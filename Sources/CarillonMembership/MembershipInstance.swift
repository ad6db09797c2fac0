import CarillonOrdering
import CarillonSchedule
import CarillonWire

/// Everything a ``MembershipInstance`` asks its shell to do after one input:
/// the ordering effects (frames of every kind, deliveries, suspicions) and view
/// events placed among the deliveries.
public struct MembershipEffects: Sendable {
    /// Frames to send (to every configured node) and messages to deliver.
    public var ordering = OrderingEffects()
    /// View events, each after ``ViewEvent/deliveriesBefore`` of ``ordering``'s deliveries.
    public internal(set) var events: [ViewEvent] = []

    public init() {}

    /// Forgets all effects, keeping capacity.
    public mutating func removeAll() {
        ordering.removeAll()
        events.removeAll(keepingCapacity: true)
    }
}

/// Where the rounds of one view change went, as rounds after the first
/// promise (the member wedged): for an operator asking why a change was slow.
public struct ChangeTimeline: Sendable, Hashable, CustomStringConvertible {
    /// The round this member first promised a ballot in the old view.
    public var promisedRound: UInt64 = 0
    /// Rounds from the first promise until this member accepted the value that was decided,
    /// held every frame below its cut, learned the decision, and installed the next view.
    public var acceptedAfter: UInt64?
    public var heldCutAfter: UInt64?
    public var decidedAfter: UInt64?
    public var installedAfter: UInt64?
    /// Ballots this member promised during the change.
    public var ballots = 0

    public var description: String {
        func f(_ v: UInt64?) -> String { v.map(String.init) ?? "-" }
        return "promised@\(promisedRound) accepted+\(f(acceptedAfter)) held+\(f(heldCutAfter)) decided+\(f(decidedAfter)) installed+\(f(installedAfter)) ballots=\(ballots)"
    }
}

/// One member's membership layer, as a pure state machine around the current
/// view's ``/CarillonOrdering/OrderingInstance``: failure detection comes from the ordering
/// instance's slot silence; view changes are a Paxos-style agreement among the
/// members of the current view on the next view and the cut that ends this one.
///
/// **Change.** The lowest-ranked member that does not suspect every lower rank
/// and has a reason (a suspicion, a join request, a leave) proposes under a new
/// ballot. A member that promises the ballot *wedges*: it sends no more data in
/// this view and freezes its delivery at what it has received, then restates
/// its received-below positions. With promises from a majority of the view the
/// proposer picks the value — the highest-ballot proposal any promiser accepted,
/// or else a fresh one: the promisers (plus joiners) as members, and per old
/// rank the cut *max over promisers of its received-below round* — and asks for
/// acceptance. A member accepts and, once it holds every frame below the cut
/// (relayed by any member that has it), says so. A majority of the old view
/// holding the accepted proposal decides it; every member learns that from the
/// restated state alone, so a proposer's crash after that point changes nothing.
///
/// **Install.** A member of the decided view delivers its old view up to the
/// cut (rounds past it are silent by decision), then a view event, then starts
/// the new view's instance at the decided start round and re-queues what it had
/// not sent. A member left out stops and rejoins under a new incarnation. With
/// no majority nothing is decided: a minority side stays wedged and reports that
/// it is not in the primary component.
///
/// Membership frames (kind 3) are sent in the member's slot only while a change,
/// an announcement, a join or a state transfer is under way: the steady state
/// sends none and allocates nothing.
public struct MembershipInstance: Sendable {
    public let configuration: MembershipConfiguration
    /// This process (its incarnation changes when it rejoins).
    public private(set) var me: MemberID

    /// The installed view (`nil` while joining).
    public private(set) var view: View?
    /// The run of the cluster this member belongs to (0: a joiner that has not
    /// been admitted yet). The shell seals slot and repair frames under it.
    public private(set) var runIdentity: UInt64
    /// Per node, the newest incarnation this member has seen in a view: a join
    /// request of that incarnation or an older one is a replay or comes from a
    /// process that is gone, and is ignored.
    var knownIncarnation: [UInt16: UInt64] = [:]
    /// Per rank of the view: the round from which that member's frames have
    /// said it hears nothing from this member (nil: they do not).
    var suspectsMeSince: [UInt64?] = []
    /// Whether an input has been seen (the late-start check runs once).
    var started = false
    /// The installed view's ordering instance.
    public private(set) var ordering: OrderingInstance?
    var rank = 0

    /// The previous view's instance, finished, kept to answer for its frames.
    var retired: OrderingInstance?
    var retiredEpoch: UInt32 = 0
    var retiredUntilRound: UInt64 = 0
    /// The decision that ended the previous view, restated while `announceUntilRound`.
    var announcement: (epoch: UInt32, ballot: UInt64, proposal: ViewProposal)?
    var announceUntilRound: UInt64 = 0

    // Agreement state for the installed view.
    var promised: UInt64 = 0
    var promisedAtRound: UInt64 = 0
    var accepted: (ballot: UInt64, proposal: ViewProposal)?
    /// Whether this member held the accepted value's cut when it promised a
    /// higher ballot (nil: it has promised none above its accepted ballot).
    /// Holding is part of accepting: from that promise on, the hold it states
    /// for the lower ballot no longer changes, so a proposer of the higher
    /// ballot sees every hold a decision of the lower one can have counted.
    var holdsAtHigherPromise: Bool?
    var decided: (ballot: UInt64, proposal: ViewProposal)?
    var finalized = false
    var maxBallotCounter: UInt64 = 0
    var changeSinceRound: UInt64?
    /// Ballots promised in this view (the proposal timeout doubles with each).
    var ballotsSeen = 0
    var timeline = ChangeTimeline()
    /// The timeline of the last view change this member installed.
    public private(set) var lastChange: ChangeTimeline?
    var noPrimaryReported = false
    // What each rank of the view restated last.
    var peerPromised: [UInt64] = []
    var peerAccepted: [UInt64] = []
    var peerHolds: [Bool] = []
    var peerPositions: [[UInt64]?] = []
    var peerProposal: [ViewProposal?] = []
    var peerLeaving: [Bool] = []
    // As proposer.
    var proposing: UInt64 = 0
    var proposingSinceRound: UInt64 = 0
    var pendingJoins: [MemberID] = []
    /// The round each pending joiner's request was last heard (by node).
    var joinHeardRound: [UInt16: UInt64] = [:]
    var leaving = false
    /// A frame of a later epoch was seen at this round (we may have been left out).
    var laterEpochSinceRound: UInt64?
    /// The latest round a frame of a later epoch arrived.
    var laterEpochHeardRound: UInt64 = 0
    /// While fetching a decided cut: the sum of received-below rounds, and the round it last grew.
    var catchUpReceived: UInt64 = 0
    var catchUpProgressRound: UInt64 = 0

    // State transfer, donor side.
    var snapshotPending: [MemberID] = []
    var snapshotEpoch: UInt32 = 0
    var outgoingState: [UInt8] = []
    var outgoing: [(member: MemberID, acked: Int)] = []
    var outgoingUntilRound: UInt64 = 0
    var outgoingFromRound: UInt64 = 0
    var donorDelayRounds: UInt64 = 0
    // State transfer, joiner side.
    var awaitingState = false
    /// The round this joiner installed its first view and began waiting for its state.
    var awaitingStateSinceRound: UInt64 = 0
    /// Messages queued but never sent when this member was left out, sent again after it rejoins.
    var carriedOver: [[UInt8]] = []
    var incomingState: [UInt8] = []
    var incomingTotal: Int?
    var stateAckUntilRound: UInt64 = 0
    var nextJoinRequestRound: UInt64 = 0
    /// The round this member started asking to join with its current incarnation (nil: not yet asked).
    var joiningSinceRound: UInt64?
    /// The round since which this member has heard less than a majority of its view (nil: it hears one).
    var minoritySinceRound: UInt64?
    var stopped = false
    /// The round and time of the latest input.
    var lastRound: UInt64 = 0
    var lastNowNanos: UInt64 = 0
    /// A decision that left this member out, told to the old view while it rejoins.
    var exitAnnouncement: (epoch: UInt32, ballot: UInt64, proposal: ViewProposal, incarnation: UInt64)?
    var exitAnnounceUntilRound: UInt64 = 0

    public private(set) var counters = MembershipCounters()
    /// Counters of the views' ordering instances that are gone.
    var pastOrderingCounters = OrderingCounters()

    /// The ordering counters summed over every view this member ran.
    public var orderingCounters: OrderingCounters {
        pastOrderingCounters + (retired?.counters ?? OrderingCounters()) + (ordering?.counters ?? OrderingCounters())
    }

    /// Whether this member is to hand the joiners of view `epoch` their state
    /// (call ``provideSnapshot(_:forEpoch:)`` at that view's installed event).
    public func isSnapshotRequested(forEpoch epoch: UInt32) -> Bool { !snapshotPending.isEmpty && snapshotEpoch == epoch }

    /// Messages accepted by ``broadcast(_:)-([UInt8])`` not yet sent: queued in the view,
    /// or kept from a view this member was left out of until it rejoins.
    public var pendingMessageCount: Int { (ordering?.pendingMessageCount ?? 0) + carriedOver.count }

    /// Creates the instance; with an initial view it starts as its member, else as a joiner.
    public init(configuration: MembershipConfiguration) throws(MembershipConfigurationError) {
        try configuration.validate()
        self.configuration = configuration
        me = configuration.me
        runIdentity = configuration.runIdentity
        if let initial = configuration.initialView {
            guard let rank = initial.rank(of: me) else { throw .notInInitialView(me) }
            do { try install(view: initial, rank: rank) } catch { throw .ordering(error) }
        }
    }

    private mutating func install(view next: View, rank nextRank: Int) throws(OrderingConfigurationError) {
        var instance = try OrderingInstance(configuration: try configuration.orderingConfiguration(view: next, rank: nextRank))
        // The gaps failure detection learned carry into the next view: a new
        // view does not start at the floor on a host that stalls now and then.
        if let previous = ordering { instance.inheritSuspicionHistory(from: previous, nowNanos: lastNowNanos) }
        view = next
        rank = nextRank
        ordering = instance
        let n = next.members.count
        promised = 0
        accepted = nil
        holdsAtHigherPromise = nil
        decided = nil
        finalized = false
        changeSinceRound = nil
        ballotsSeen = 0
        noPrimaryReported = false
        minoritySinceRound = nil
        proposing = 0
        laterEpochSinceRound = nil
        peerPromised = Array(repeating: 0, count: n)
        peerAccepted = Array(repeating: 0, count: n)
        peerHolds = Array(repeating: false, count: n)
        peerPositions = Array(repeating: nil, count: n)
        peerProposal = Array(repeating: nil, count: n)
        peerLeaving = Array(repeating: false, count: n)
        suspectsMeSince = Array(repeating: nil, count: n)
        for member in next.members { knownIncarnation[member.node] = max(knownIncarnation[member.node] ?? 0, member.incarnation) }
        // Joined, or superseded by a later incarnation already in the view.
        pendingJoins.removeAll { joiner in
            next.members.contains { $0.node == joiner.node && $0.incarnation >= joiner.incarnation }
        }
    }

    // MARK: Observable state

    /// Whether this member is in an installed view and may broadcast.
    public var isMember: Bool { view != nil && !awaitingState && !stopped }
    /// Whether a view change is under way here (wedged: no data sent, delivery frozen).
    public var isChangingView: Bool { promised != 0 || decided != nil }
    /// Whether this member has left (``leave()``) and the cluster has let it go.
    public var hasLeft: Bool { stopped }
    /// The members of the next view this member has accepted (or knows decided), while a change is under way.
    public var pendingViewMembers: [MemberID]? { (decided ?? accepted)?.proposal.members }
    /// This member's rank in the installed view.
    public var currentRank: Int? { view == nil ? nil : rank }

    /// When ``onTimeout(nowNanos:effects:)`` is next needed.
    public var nextDeadlineNanos: UInt64 {
        guard !stopped else { return .max }  // left: nothing more to do
        var deadline = ordering?.nextDeadlineNanos ?? joinDeadlineNanos
        if let retired { deadline = min(deadline, retired.nextDeadlineNanos) }
        return deadline
    }

    var schedule: TDMASchedule { ordering?.configuration.schedule ?? configuration.ordering.schedule }

    var joinDeadlineNanos: UInt64 {
        configuration.ordering.schedule.slotWindow(round: nextJoinRequestRound, rank: 0).startNanos
    }

    // MARK: Inputs

    /// Promise mode: sends queued data now, from any thread, delivering
    /// nothing (see ``/CarillonOrdering/OrderingInstance/sendDataAtOnce(nowNanos:effects:)``).
    /// Only in an installed view with no change under way and nothing carried
    /// over; returns whether a frame was written into `effects`.
    public mutating func sendAtOnce(nowNanos: UInt64, effects: inout OrderingEffects) -> Bool {
        guard isMember, !isChangingView, carriedOver.isEmpty, retired == nil, ordering != nil else { return false }
        return ordering!.sendDataAtOnce(nowNanos: nowNanos, effects: &effects)
    }

    /// Queues `payload` in the installed view; see ``/CarillonOrdering/OrderingInstance/broadcast(_:)-([UInt8])``.
    public mutating func broadcast(_ payload: UnsafeRawBufferPointer) -> BroadcastResult {
        guard isMember, ordering != nil else { return .notInView }
        // Messages kept from an earlier view or incarnation go first: a new
        // one waits (backpressure) until they are all queued, so each
        // sender's messages keep their order.
        if !carriedOver.isEmpty {
            sendCarriedOver()
            guard carriedOver.isEmpty else { return .sendBufferFull }
        }
        return ordering!.broadcast(payload)
    }

    /// Queues a byte array; see ``broadcast(_:)-(UnsafeRawBufferPointer)``.
    public mutating func broadcast(_ payload: [UInt8]) -> BroadcastResult {
        payload.withUnsafeBytes { broadcast($0) }
    }

    /// Asks to leave the cluster gracefully: the next view change leaves this
    /// member out (faster than failure detection), then it stops.
    public mutating func leave() { leaving = true }

    /// Hands the state at the cut of view `epoch` to its joiners; call it when
    /// that view's ``ViewEvent/Kind/installed(_:joined:)`` event with joiners
    /// is delivered, with the application's state at exactly that point of the
    /// stream (every member may call it; the lowest-ranked member that was in
    /// the previous view sends it). A call for another epoch does nothing.
    public mutating func provideSnapshot(_ state: [UInt8], forEpoch epoch: UInt32) {
        guard isSnapshotRequested(forEpoch: epoch) else { return }
        outgoingState = state
        outgoing = snapshotPending.map { ($0, 0) }
        snapshotPending = []
        outgoingFromRound = lastRound + donorDelayRounds
        outgoingUntilRound = outgoingFromRound + UInt64(configuration.retireRounds)
    }

    /// Handles deadlines due at `nowNanos`: slot frames of the view (and of the
    /// previous one while it is retired), membership frames, join requests.
    public mutating func onTimeout(nowNanos: UInt64, effects: inout MembershipEffects) {
        checkLateStart(nowNanos: nowNanos)
        let round = currentRound(nowNanos)
        guard !stopped else { return }
        guard view != nil else {
            // Asked in vain for long: perhaps admitted into a view it never
            // heard of and removed again, after which its incarnation counts as
            // gone (its requests look like replays). Ask again as a new one.
            if let since = joiningSinceRound, round >= since &+ joinRefreshRounds {
                me.incarnation = max(nowNanos, me.incarnation &+ 1)
                joiningSinceRound = round
                counters.incarnationRefreshes += 1
            }
            if joiningSinceRound == nil { joiningSinceRound = round }
            if round >= nextJoinRequestRound {
                nextJoinRequestRound = round + UInt64(max(configuration.joinRetryRounds, 1))
                sendMembershipFrame(epoch: 0, round: round, nowNanos: nowNanos, effects: &effects)
                if let exit = exitAnnouncement, round < exitAnnounceUntilRound {
                    sendAnnouncement((exit.epoch, exit.ballot, exit.proposal), round: round, nowNanos: nowNanos,
                                     incarnation: exit.incarnation, effects: &effects)
                }
            }
            return
        }
        if retired != nil {
            if round >= retiredUntilRound {
                pastOrderingCounters = pastOrderingCounters + retired!.counters
                retired = nil
            } else {
                retired!.onTimeout(nowNanos: nowNanos, effects: &effects.ordering)
            }
        }
        if isMember, !carriedOver.isEmpty { sendCarriedOver() }
        // In promise mode an idle member speaks once per heartbeat; while the
        // membership layer has work every round, its frames go every round.
        ordering!.keepBusy = needsMembershipFrame(round: round) || (announcement != nil && round < announceUntilRound)
            || !outgoing.isEmpty || !carriedOver.isEmpty
        let (beforeRound, beforeFrames) = (ordering!.nextRoundToSend, ordering!.counters.slotFramesSent)
        ordering!.onTimeout(nowNanos: nowNanos, effects: &effects.ordering)
        guard ordering!.nextRoundToSend != beforeRound || ordering!.counters.slotFramesSent != beforeFrames
            || (ordering!.configuration.mode == .promises && ordering!.isFinished)
        else { return }
        // Our slot frame left: the membership step, then our membership frames.
        step(round: round, effects: &effects)
        guard view != nil, !stopped else { return }
        if needsMembershipFrame(round: round) {
            sendMembershipFrame(epoch: view!.epoch, round: round, nowNanos: nowNanos, effects: &effects)
        }
        if let announcement, round < announceUntilRound {
            sendAnnouncement(announcement, round: round, nowNanos: nowNanos, effects: &effects)
        }
        sendStateChunks(round: round, nowNanos: nowNanos, effects: &effects)
    }

    /// Takes in one received datagram (authenticated by the shell, if keys are on).
    ///
    /// While a view change is under way, a change in this member's part of the
    /// agreement (a promise, an accept, holding the cut, learning the decision)
    /// is sent at once in a membership frame, not at its next slot: the view's
    /// data is stopped anyway, and each step of the change then costs a network
    /// hop instead of up to a round. Installing a view announces the decision
    /// at once for the same reason. The frames of the member's slot still
    /// restate everything, which covers their loss.
    @discardableResult
    public mutating func onFrameReceived(
        _ bytes: UnsafeRawBufferPointer, nowNanos: UInt64, effects: inout MembershipEffects
    ) -> FrameDisposition {
        guard !stopped else { return .ignored }
        checkLateStart(nowNanos: nowNanos)
        let epochBefore = view?.epoch
        let before = agreementSignature
        let disposition = receive(bytes, nowNanos: nowNanos, effects: &effects)
        guard !stopped, let view else { return disposition }
        if view.epoch == epochBefore {
            if isChangingView, agreementSignature != before {
                sendMembershipFrame(epoch: view.epoch, round: lastRound, nowNanos: nowNanos, effects: &effects)
            }
        } else if let announcement, announcement.epoch == epochBefore {
            sendAnnouncement(announcement, round: lastRound, nowNanos: nowNanos, effects: &effects)
        }
        return disposition
    }

    /// This member's part of the agreement, as restated in its membership frames.
    private struct AgreementSignature: Equatable {
        var promised: UInt64 = 0
        var accepted: UInt64 = 0
        var proposing: UInt64 = 0
        var decided = false
        var holds = false
    }

    private var agreementSignature: AgreementSignature {
        guard let ordering, isChangingView else { return AgreementSignature() }
        let value = decided ?? accepted
        return AgreementSignature(promised: promised, accepted: value?.ballot ?? 0, proposing: proposing,
                                  decided: decided != nil, holds: value.map { statesHold(of: $0.proposal) } ?? false)
    }

    private mutating func receive(
        _ bytes: UnsafeRawBufferPointer, nowNanos: UInt64, effects: inout MembershipEffects
    ) -> FrameDisposition {
        guard bytes.count >= Wire.headerBytes else {
            return ordering?.onFrameReceived(bytes, nowNanos: nowNanos, effects: &effects.ordering)
                ?? .malformed(.truncated(needed: Wire.headerBytes, available: bytes.count))
        }
        let kind = bytes[5]
        let epoch = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 16, as: UInt32.self))
        if kind == FrameKind.membership.rawValue {
            let frame: FrameView
            do { frame = try FrameView.decode(bytes) } catch { return .malformed(error) }
            counters.membershipFramesReceived += 1
            receiveMembershipFrame(frame, nowNanos: nowNanos, effects: &effects)
            return .accepted
        }
        guard let view else { return .ignored }
        let round = currentRound(nowNanos)
        if epoch == view.epoch {
            let disposition = ordering!.onFrameReceived(bytes, nowNanos: nowNanos, effects: &effects.ordering)
            if isChangingView || awaitingState { step(round: round, effects: &effects) }
            return disposition
        }
        if retired != nil, epoch == retiredEpoch {
            // A member still finishing the previous view: answer it — for as
            // long as it keeps asking — and tell it the decision.
            announceUntilRound = max(announceUntilRound, round + UInt64(configuration.joinRetryRounds))
            retiredUntilRound = max(retiredUntilRound, round + UInt64(configuration.proposalTimeoutRounds))
            return retired!.onFrameReceived(bytes, nowNanos: nowNanos, effects: &effects.ordering)
        }
        if epoch > view.epoch { sawLaterEpoch(round: round) }
        counters.staleEpochFrames += 1
        step(round: round, effects: &effects)
        return .ignored
    }

    /// Queues messages kept from an earlier view or incarnation, in order, as far as the send buffer takes them.
    private mutating func sendCarriedOver() {
        var sent = 0
        for payload in carriedOver {
            guard case .queued = ordering!.broadcast(payload) else { break }
            sent += 1
        }
        carriedOver.removeFirst(sent)
    }

    /// At the first input: a member of the first view that starts this late
    /// is a restart or a straggler the others have stopped waiting for. It
    /// joins as a new incarnation instead of reusing the first view's, whose
    /// rounds its earlier self may have sent (two different frames for one
    /// slot would split the members' deliveries).
    private mutating func checkLateStart(nowNanos: UInt64) {
        guard !started else { return }
        started = true
        guard configuration.canary != .restartReusesFirstView else { return }
        guard let initial = configuration.initialView, let view, view.epoch == initial.epoch else { return }
        let round = schedule.round(atNanos: nowNanos)
        guard round >= initial.startRound &+ UInt64(max(configuration.lateStartRounds, 0)) else { return }
        // What was queued before this first input goes out once it has joined.
        startJoining(as: max(nowNanos, me.incarnation &+ 1))
        counters.lateStarts += 1
    }

    /// Notes a frame of a later epoch: a sign this member may have been left out.
    private mutating func sawLaterEpoch(round: UInt64) {
        if laterEpochSinceRound == nil { laterEpochSinceRound = round }
        laterEpochHeardRound = max(laterEpochHeardRound, round)
    }

    /// Rounds a joiner asks under one incarnation before it takes a fresh one.
    var joinRefreshRounds: UInt64 {
        2 * UInt64(max(configuration.retireRounds, 1)) + 4 * UInt64(max(configuration.proposalTimeoutRounds, 1))
    }

    mutating func currentRound(_ nowNanos: UInt64) -> UInt64 {
        lastNowNanos = max(lastNowNanos, nowNanos)
        lastRound = max(lastRound, schedule.round(atNanos: nowNanos))
        return lastRound
    }

    // MARK: Agreement

    private var majority: Int {
        configuration.canary == .halfIsMajority ? max(1, view!.members.count / 2) : view!.majority
    }

    /// Whether this member counts rank `r` as failing: it has heard nothing
    /// from `r` for the suspicion period, or `r`'s own frames have said for a
    /// suspicion period that it hears nothing from this member — a member that
    /// can send but not receive (a full socket buffer, a lost multicast
    /// membership, a one-way link) is heard but cannot take part.
    private func failing(_ r: Int, round: UInt64) -> Bool {
        guard let ordering, r != rank else { return false }
        if ordering.suspects(rank, r) { return true }
        guard configuration.canary != .deafMayPropose, let since = suspectsMeSince[r] else { return false }
        return round >= since &+ UInt64(max(configuration.ordering.suspicionSlots, 1))
    }

    /// Whether this member hears a majority of the view (itself included): a
    /// member that hears too few — deaf, or on a minority side — never proposes.
    /// Its ballots could only wedge the members that hear it, and it could
    /// never collect their promises.
    private var hearsMajority: Bool {
        guard let ordering, let view else { return false }
        if configuration.canary == .deafMayPropose { return true }
        var heard = 0
        for r in view.members.indices where r == rank || !ordering.suspects(rank, r) { heard += 1 }
        return heard >= majority
    }

    private func isLowestUnsuspected(round: UInt64) -> Bool {
        guard ordering != nil else { return false }
        for lower in 0..<rank where !failing(lower, round: round) { return false }
        return true
    }

    /// Tracks, per rank, since when its frames say it suspects this member.
    private mutating func updateSuspectsMe(round: UInt64) {
        guard let ordering else { return }
        for r in suspectsMeSince.indices where r != rank {
            if ordering.suspects(r, rank) {
                if suspectsMeSince[r] == nil { suspectsMeSince[r] = round }
            } else {
                suspectsMeSince[r] = nil
            }
        }
    }

    private mutating func promise(_ ballot: UInt64, round: UInt64) {
        guard ballot > promised else { return }
        if let accepted, ballot > accepted.ballot, holdsAtHigherPromise == nil, decided == nil {
            holdsAtHigherPromise = ordering!.holds(cut: accepted.proposal.cut)
        }
        promised = ballot
        ballotsSeen += 1
        if ballotsSeen == 1 { timeline = ChangeTimeline(promisedRound: round) }
        timeline.ballots = ballotsSeen
        promisedAtRound = round
        maxBallotCounter = max(maxBallotCounter, ballot >> 16)
        if changeSinceRound == nil { changeSinceRound = round }
        _ = ordering!.wedge()
        counters.promisesMade += 1
    }

    private mutating func accept(_ ballot: UInt64, _ proposal: ViewProposal) {
        guard ballot >= promised, proposal.cut.count == view!.members.count else { return }
        promised = ballot
        if accepted?.ballot != ballot {
            counters.proposalsAccepted += 1
            timeline.acceptedAfter = lastRound &- timeline.promisedRound
            holdsAtHigherPromise = nil
        }
        accepted = (ballot, proposal)
    }

    /// Advances the view change from what is known now.
    private mutating func step(round: UInt64, effects: inout MembershipEffects) {
        // A joiner waiting for its state takes no part until it has it.
        guard let view, ordering != nil else { return }
        if awaitingState {
            // Left behind while waiting: the view moved on without us (a later
            // epoch), or no donor finished the transfer. Rejoining is always safe.
            let later = laterEpochSinceRound.map { round >= $0 + UInt64(configuration.proposalTimeoutRounds) } ?? false
            if later || round >= awaitingStateSinceRound + 2 * UInt64(configuration.retireRounds) {
                exclude(epoch: view.epoch, effects: &effects)
            }
            return
        }
        let n = view.members.count
        updateSuspectsMe(round: round)

        // A decision: a majority of the view accepted the same ballot and holds its cut.
        if decided == nil, let accepted {
            var holders = 0
            for r in 0..<n {
                if r == rank {
                    if statesHold(of: accepted.proposal) { holders += 1 }
                } else if peerAccepted[r] == accepted.ballot, peerHolds[r] {
                    holders += 1
                }
            }
            if holders >= majority { decided = accepted }
            if timeline.heldCutAfter == nil, ordering!.holds(cut: accepted.proposal.cut) {
                timeline.heldCutAfter = round &- timeline.promisedRound
            }
        }
        // Seen a later epoch and could not finish this one in time: we were left
        // out, or cannot get the cut's frames any more. Rejoining is always safe.
        // (A later epoch while this view is healthy is a stray frame, not a sign: forget it.)
        if laterEpochSinceRound != nil, !isChangingView, !ordering!.suspectsAnyone { laterEpochSinceRound = nil }
        // A member of the decided view still fetching the frames below its cut
        // is not left behind while it makes progress: the others keep their
        // finished instance answering while its frames keep coming.
        let catchingUp = decided.map { $0.proposal.members.contains(me) } ?? false
        if catchingUp {
            // Others' rounds only: its own position grows with every slot it sends.
            var received: UInt64 = 0
            for (s, below) in ordering!.receivedBelowBySender.enumerated() where s != rank { received &+= below }
            if received != catchUpReceived { catchUpReceived = received; catchUpProgressRound = round }
        }
        let patienceRounds = UInt64(configuration.proposalTimeoutRounds)
        // Only while the later epoch is still heard: its members announce the
        // decision to anyone they hear in the old view, so a member that hears
        // them and still has no decision after a while was left out; one that
        // hears nothing (deaf, cut off) would only drop out of a view it may
        // be a member of.
        let hearsLaterEpoch = round <= laterEpochHeardRound &+ patienceRounds / 2
        let leftBehind = hearsLaterEpoch && (laterEpochSinceRound.map { since in
            catchingUp ? round >= max(since, catchUpProgressRound) + UInt64(configuration.retireRounds)
                       : round >= since + patienceRounds
        } ?? false)
        if leftBehind {
            exclude(epoch: view.epoch, effects: &effects)
            return
        }
        if let decided {
            guard decided.proposal.members.contains(me) else {
                // Left out: tell the others the decision on the way out — they may
                // still be waiting for this member's statement to learn it.
                exitAnnouncement = (view.epoch, decided.ballot, decided.proposal, me.incarnation)
                exitAnnounceUntilRound = round + UInt64(configuration.proposalTimeoutRounds)
                sendAnnouncement((view.epoch, decided.ballot, decided.proposal), round: round, nowNanos: lastNowNanos,
                                 effects: &effects)
                exclude(epoch: view.epoch, effects: &effects)
                return
            }
            if !finalized {
                // Never below what this member delivered: a cut below it would
                // contradict deliveries already made (a decision this member
                // could not have helped make). Rejoining is always safe.
                let (cursorRound, cursorSlot) = ordering!.deliveryCursor
                let below = decided.proposal.cut.indices.contains { s in
                    decided.proposal.cut[s] < cursorRound &+ (s < cursorSlot ? 1 : 0)
                }
                if below, configuration.canary != .runsNotTold {
                    counters.refusedDecisions += 1
                    exclude(epoch: view.epoch, effects: &effects)
                    return
                }
                finalized = true
                if timeline.ballots == 0 { timeline.promisedRound = round }  // learned it without promising
                timeline.decidedAfter = round &- timeline.promisedRound
                if timeline.acceptedAfter == nil { timeline.acceptedAfter = timeline.decidedAfter }
                let cut = configuration.canary == .skipRaggedTrim ? ordering!.receivedBelowBySender : decided.proposal.cut
                ordering!.finalize(cut: cut, endRound: decided.proposal.startRound, effects: &effects.ordering)
            }
            if ordering!.isFinished || configuration.canary == .installBeforeCutHeld {
                installDecided(decided, round: round, effects: &effects)
            }
            return
        }


        // As proposer: collect promises, then pick the value.
        // Each ballot that failed in this view doubles the wait (up to 32×): a
        // slow cluster settles instead of restarting ballots forever.
        let base = UInt64(configuration.proposalTimeoutRounds)
        let timeout = base << UInt64(min(max(ballotsSeen, 1) - 1, 5))
        if proposing != 0 {
            if round >= proposingSinceRound + timeout || promised > proposing {
                proposing = 0
            } else if accepted?.ballot != proposing {
                choose(round: round)
            }
        }

        // Joins wait until the last view has settled (its joiners have their state).
        // A joiner is added only while it keeps asking (it repeats every
        // joinRetryRounds): one that died meanwhile would join as a dead member.
        pendingJoins.removeAll { round > (joinHeardRound[$0.node] ?? 0) + 3 * UInt64(max(configuration.joinRetryRounds, 1)) }
        let joinsDue = !pendingJoins.isEmpty && round >= view.startRound + base
        var reason = joinsDue || leaving
        // A member that says it is wedged in a change nobody finishes (its
        // proposer gave up, or proposed from a side that lost its majority)
        // is a reason too: it delivers nothing until a decision.
        for r in 0..<n where peerLeaving[r] || failing(r, round: round) || peerPromised[r] != 0 { reason = true }
        let stalled = promised == 0 || round >= promisedAtRound + timeout
        if proposing == 0, reason || promised != 0, stalled, isLowestUnsuspected(round: round), hearsMajority {
            maxBallotCounter += 1
            proposing = maxBallotCounter << 16 | UInt64(me.node)
            proposingSinceRound = round
            counters.ballotsStarted += 1
            promise(proposing, round: round)
            choose(round: round)
        }

        // A member that hears less than a majority cannot change the view (it
        // does not propose) and cannot deliver past the members it does not hear.
        if hearsMajority {
            minoritySinceRound = nil
        } else if minoritySinceRound == nil {
            minoritySinceRound = round
        }
        let waitingSince = [changeSinceRound, minoritySinceRound].compactMap { $0 }.min()
        if let since = waitingSince, !noPrimaryReported, round >= since + 2 * base {
            noPrimaryReported = true
            effects.events.append(ViewEvent(
                deliveriesBefore: effects.ordering.deliveries.count,
                kind: .noPrimaryComponent(epoch: view.epoch, waitingRounds: Int(round - since))))
        }
    }

    /// Whether this member states that it holds `proposal`'s cut: frozen at a
    /// promise above its accepted ballot (see `holdsAtHigherPromise`), live otherwise.
    private func statesHold(of proposal: ViewProposal) -> Bool {
        if decided == nil, let frozen = holdsAtHigherPromise { return frozen }
        return ordering?.holds(cut: proposal.cut) ?? false
    }

    /// With promises for our ballot from a majority, picks the proposal and accepts it.
    private mutating func choose(round: UInt64) {
        let view = view!
        let n = view.members.count
        var promisers: [Int] = []
        for r in 0..<n {
            if r == rank ? promised == proposing : (peerPromised[r] == proposing && peerPositions[r] != nil) {
                promisers.append(r)
            }
        }
        guard promisers.count >= majority else { return }
        // Wait a little for every member we do not suspect, so a slow one is not left out.
        let everyone = (0..<n).allSatisfy { r in promisers.contains(r) || failing(r, round: round) }
        let patience = UInt64(configuration.proposalTimeoutRounds / 2) << UInt64(min(max(ballotsSeen, 1) - 1, 5))
        guard everyone || round >= proposingSinceRound + patience else { return }
        // The highest-ballot proposal any promiser accepted may have been decided: keep it.
        var best: (ballot: UInt64, proposal: ViewProposal)?
        for r in promisers {
            let candidate: (UInt64, ViewProposal)? = r == rank
                ? accepted.map { ($0.ballot, $0.proposal) }
                : peerProposal[r].map { (peerAccepted[r], $0) }
            if let candidate, candidate.0 > 0, candidate.0 > (best?.ballot ?? 0) { best = candidate }
        }
        // A value was decided only if a majority accepted it *and held its
        // cut* — and holds are frozen at a higher promise — so some promiser
        // of this ballot (a majority too) states that it holds it. When none
        // does, it was not decided, and if its cut needs frames that only
        // failed members had, keeping it would wedge the view for good.
        if let chosen = best {
            let held = promisers.contains { r in
                r == rank ? accepted?.proposal == chosen.proposal && statesHold(of: chosen.proposal)
                          : peerProposal[r] == chosen.proposal && peerHolds[r]
            }
            if !held {
                best = nil
                counters.undecidedValuesDropped += 1
            }
        }
        let proposal: ViewProposal
        if let best {
            proposal = best.proposal
        } else {
            var cut = ordering!.receivedBelowBySender
            for r in promisers where r != rank {
                for j in 0..<n { cut[j] = max(cut[j], peerPositions[r]![j]) }
            }
            var members: [MemberID] = []
            for r in promisers where !(r == rank ? leaving : peerLeaving[r]) {
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
            proposal = ViewProposal(members: members, cut: cut, startRound: max(start, view.startRound))
        }
        accept(proposing, proposal)
    }

    private mutating func installDecided(
        _ decided: (ballot: UInt64, proposal: ViewProposal), round: UInt64, effects: inout MembershipEffects
    ) {
        let old = view!
        let proposal = decided.proposal
        let next = View(epoch: old.epoch &+ 1, members: proposal.members, startRound: proposal.startRound)
        let joined = proposal.members.filter { !old.members.contains($0) }
        var finished = ordering!
        // (The caller checked that the decided view contains this member, and
        // input checks bound its size: neither path below is expected.)
        guard let nextRank = next.rank(of: me) else { return }
        do { try install(view: next, rank: nextRank) } catch {
            counters.uninstallableViews += 1
            exclude(epoch: old.epoch, effects: &effects)
            return
        }
        effects.events.append(ViewEvent(deliveriesBefore: effects.ordering.deliveries.count,
                                        kind: .installed(next, joined: joined)))
        // Every queued message moves (payload limits are sized for the largest
        // view, `maxMemberCount`); should the next instance refuse them, they
        // are kept and sent as room allows, never dropped.
        if finished.movePending(into: &ordering!) == nil {
            finished.takePending { payload in carriedOver.append(Array(payload)) }
        }
        if let older = retired { pastOrderingCounters = pastOrderingCounters + older.counters }
        retired = finished
        retiredEpoch = old.epoch
        retiredUntilRound = round + UInt64(configuration.retireRounds)
        announcement = (old.epoch, decided.ballot, proposal)
        announceUntilRound = round + UInt64(configuration.proposalTimeoutRounds)
        counters.viewsInstalled += 1
        timeline.installedAfter = round &- timeline.promisedRound
        lastChange = timeline
        timeline = ChangeTimeline()
        // Members that were in the old view hold the same state at this cut; the
        // lowest-ranked sends it, the next ones take over if it makes no progress.
        snapshotPending = []
        if !joined.isEmpty, let index = proposal.members.filter({ old.members.contains($0) }).firstIndex(of: me) {
            snapshotPending = joined
            snapshotEpoch = next.epoch
            donorDelayRounds = UInt64(index * configuration.joinRetryRounds)
        }
        if leaving { stopped = true }
    }

    private mutating func exclude(epoch: UInt32, effects: inout MembershipEffects) {
        let unsent = ordering?.pendingMessageCount ?? 0
        if leaving {
            stopped = true
        } else {
            effects.events.append(ViewEvent(deliveriesBefore: effects.ordering.deliveries.count,
                                            kind: .excluded(epoch: epoch, unsent: unsent)))
        }
        counters.exclusions += 1
        pastOrderingCounters = orderingCounters
        startJoining(as: me.incarnation &+ 1)
    }

    /// Drops the view, its instances and its agreement state, keeps what was
    /// queued and never sent for after the join, and starts asking to join
    /// as `incarnation` (an exclusion, or a late start of the first view).
    private mutating func startJoining(as incarnation: UInt64) {
        ordering?.takePending { payload in carriedOver.append(Array(payload)) }
        view = nil
        ordering = nil
        retired = nil
        announcement = nil
        awaitingState = false
        me.incarnation = incarnation
        nextJoinRequestRound = 0
        joiningSinceRound = nil
        promised = 0
        decided = nil
        accepted = nil
    }

    // MARK: Membership frames

    private func needsMembershipFrame(round: UInt64) -> Bool {
        isChangingView || leaving || awaitingState || round < stateAckUntilRound
    }

    private struct Fields {
        var promised: UInt64 = 0
        var acceptedBallot: UInt64 = 0
        var decided = false
        var incarnation: UInt64 = 0
        var proposing: UInt64 = 0
        var startRound: UInt64?
        var holdsCut = false
        var joinRequest: UInt64?
        var stateBytes: Int?
        var stateFor: UInt64?
        var stateReceived: Int?
        var leaving = false
        var run: UInt64 = 0
    }

    private mutating func sendMembershipFrame(
        epoch: UInt32, round: UInt64, nowNanos: UInt64, effects: inout MembershipEffects
    ) {
        var fields: [RankEntry] = [RankEntry(rank: ViewField.incarnation.rawValue, value: me.incarnation)]
        if epoch != 0 { fields.append(RankEntry(rank: ViewField.run.rawValue, value: runIdentity)) }
        var positions: [UInt64]?
        var proposal: ViewProposal?
        if epoch == 0 {
            fields.append(RankEntry(rank: ViewField.joinRequest.rawValue, value: me.incarnation))
        } else {
            if promised != 0 {
                fields.append(RankEntry(rank: ViewField.promisedBallot.rawValue, value: promised))
                positions = ordering!.receivedBelowBySender
            }
            if proposing != 0 { fields.append(RankEntry(rank: ViewField.proposingBallot.rawValue, value: proposing)) }
            if let decided {
                fields.append(RankEntry(rank: ViewField.acceptedBallot.rawValue, value: decided.ballot))
                fields.append(RankEntry(rank: ViewField.decided.rawValue, value: 1))
                proposal = decided.proposal
            } else if let accepted {
                fields.append(RankEntry(rank: ViewField.acceptedBallot.rawValue, value: accepted.ballot))
                proposal = accepted.proposal
            }
            if let proposal, statesHold(of: proposal) {
                fields.append(RankEntry(rank: ViewField.holdsCut.rawValue, value: 1))
            }
            if leaving { fields.append(RankEntry(rank: ViewField.leaving.rawValue, value: 1)) }
            // Acknowledge only once the size is known: an empty state is acknowledged after its (empty) chunk.
            if (awaitingState && incomingTotal != nil) || round < stateAckUntilRound {
                fields.append(RankEntry(rank: ViewField.stateReceived.rawValue, value: UInt64(incomingState.count)))
            }
        }
        appendMembershipFrame(epoch: epoch, round: round, nowNanos: nowNanos, fields: fields, positions: positions,
                              proposal: proposal, chunk: nil, effects: &effects)
    }

    private mutating func sendAnnouncement(
        _ announcement: (epoch: UInt32, ballot: UInt64, proposal: ViewProposal), round: UInt64, nowNanos: UInt64,
        incarnation: UInt64? = nil, effects: inout MembershipEffects
    ) {
        let fields = [
            RankEntry(rank: ViewField.incarnation.rawValue, value: incarnation ?? me.incarnation),
            RankEntry(rank: ViewField.run.rawValue, value: runIdentity),
            RankEntry(rank: ViewField.acceptedBallot.rawValue, value: announcement.ballot),
            RankEntry(rank: ViewField.decided.rawValue, value: 1),
        ]
        appendMembershipFrame(epoch: announcement.epoch, round: round, nowNanos: nowNanos, fields: fields,
                              positions: nil, proposal: announcement.proposal, chunk: nil, effects: &effects)
    }

    private mutating func sendStateChunks(round: UInt64, nowNanos: UInt64, effects: inout MembershipEffects) {
        guard !outgoing.isEmpty, round >= outgoingFromRound, round < outgoingUntilRound, let view else {
            if !outgoing.isEmpty, round >= outgoingUntilRound { outgoing = [] }
            return
        }
        let overhead = Wire.headerBytes + 3 * Wire.sectionHeaderBytes + 9 * Wire.rankEntryBytes
            + Wire.messageHeaderBytes + configuration.ordering.tagLength
        let chunkLimit = max(1, min(configuration.stateChunkBytes, configuration.ordering.maxFrameBytes - overhead))
        for (member, acked) in outgoing where acked < outgoingState.count || acked == 0 {
            guard view.members.contains(member) else { continue }
            let end = min(outgoingState.count, acked + chunkLimit)
            let fields = [
                RankEntry(rank: ViewField.incarnation.rawValue, value: me.incarnation),
                RankEntry(rank: ViewField.run.rawValue, value: runIdentity),
                RankEntry(rank: ViewField.stateFor.rawValue, value: UInt64(member.node)),
                RankEntry(rank: ViewField.stateBytes.rawValue, value: UInt64(outgoingState.count)),
            ]
            appendMembershipFrame(epoch: view.epoch, round: round, nowNanos: nowNanos, fields: fields, positions: nil,
                                  proposal: nil, chunk: (acked, Array(outgoingState[acked..<end])), effects: &effects)
            counters.stateBytesSent += end - acked
        }
    }

    private mutating func appendMembershipFrame(
        epoch: UInt32, round: UInt64, nowNanos: UInt64, fields: [RankEntry], positions: [UInt64]?,
        proposal: ViewProposal?, chunk: (offset: Int, bytes: [UInt8])?, effects: inout MembershipEffects
    ) {
        let tagLength = configuration.ordering.tagLength
        let node = me.node
        do {
            try effects.ordering.appendFrame(kind: .membership, round: round,
                                             maxBytes: configuration.ordering.maxFrameBytes) { buffer throws(WireError) in
                try MembershipFrame.encode(into: buffer, sender: node, epoch: epoch, round: round, nowNanos: nowNanos,
                                           fields: fields, positions: positions, proposal: proposal, chunk: chunk,
                                           tagLength: tagLength)
            }
            counters.membershipFramesSent += 1
        } catch {
            // Not reachable with a validated configuration (see `MembershipFrame`); counted, never a trap.
            counters.oversizedFrames += 1
        }
    }

    private mutating func receiveMembershipFrame(_ frame: FrameView, nowNanos: UInt64, effects: inout MembershipEffects) {
        var fields = Fields()
        for entry in frame.viewFieldEntries {
            guard let key = ViewField(rawValue: entry.rank) else { continue }
            switch key {
            case .promisedBallot: fields.promised = entry.value
            case .acceptedBallot: fields.acceptedBallot = entry.value
            case .decided: fields.decided = entry.value != 0
            case .incarnation: fields.incarnation = entry.value
            case .proposingBallot: fields.proposing = entry.value
            case .startRound: fields.startRound = entry.value
            case .holdsCut: fields.holdsCut = entry.value != 0
            case .joinRequest: fields.joinRequest = entry.value
            case .stateBytes: fields.stateBytes = Int(clamping: entry.value)
            case .stateFor: fields.stateFor = entry.value
            case .stateReceived: fields.stateReceived = Int(clamping: entry.value)
            case .leaving: fields.leaving = entry.value != 0
            case .run: fields.run = entry.value
            }
        }
        let node = frame.header.senderRank
        let epoch = frame.header.epoch
        let round = currentRound(nowNanos)
        // Node indices and list lengths within the cluster's node count, or
        // the frame is dropped: a wrong one must not reach an index or a view.
        let nodeCount = configuration.nodeCount
        guard Int(node) < nodeCount, fields.stateFor.map({ $0 < UInt64(nodeCount) }) ?? true,
              frame.viewMemberEntries.count <= nodeCount, frame.viewCutEntries.count <= nodeCount,
              frame.viewPositionEntries.count <= nodeCount
        else {
            counters.outOfRangeFrames += 1
            return
        }
        var proposal: ViewProposal?
        if let start = fields.startRound, frame.viewMemberEntries.count > 0 {
            let members = frame.viewMemberEntries.map { MemberID(node: $0.rank, incarnation: $0.value) }
            var seen = Set<UInt16>()
            guard members.allSatisfy({ Int($0.node) < nodeCount && seen.insert($0.node).inserted }) else {
                counters.outOfRangeFrames += 1
                return
            }
            proposal = ViewProposal(members: members, cut: frame.viewCutEntries.map(\.value), startRound: start)
        }

        if let incarnation = fields.joinRequest {
            let joiner = MemberID(node: node, incarnation: incarnation)
            counters.joinRequestsHeard += 1
            guard let view else { return }
            if view.members.contains(joiner) {
                // It joined but missed the decision: announce it again.
                announceUntilRound = max(announceUntilRound, round + UInt64(configuration.joinRetryRounds))
            } else if configuration.canary == .staleJoinsTaken
                        ? view.members.contains(where: { $0.node == node && $0.incarnation > incarnation })
                        : incarnation <= (knownIncarnation[node] ?? 0) || incarnation < runIdentity {
                // (Every incarnation of this run is the clock at a start no
                // earlier than the run's: an older one is from an earlier run.)
                // An incarnation no newer than one already seen in a view: a
                // replayed request, or one of a process that is gone.
                counters.staleJoinRequests += 1
            } else {
                joinHeardRound[node] = round
                if !pendingJoins.contains(joiner) {
                    pendingJoins.removeAll { $0.node == node && $0.incarnation < incarnation }
                    if !pendingJoins.contains(where: { $0.node == node }) { pendingJoins.append(joiner) }
                }
            }
            return
        }

        guard let view else {
            // Joining: a decided view that contains us.
            // Incarnations are fresh at every start, so a decision recorded in
            // an earlier run cannot list this one: its run is the run to join.
            if fields.decided, let proposal, let myRank = proposal.members.firstIndex(of: me) {
                let next = View(epoch: epoch &+ 1, members: proposal.members, startRound: proposal.startRound)
                do { try install(view: next, rank: myRank) } catch { return }
                runIdentity = fields.run
                awaitingState = true
                awaitingStateSinceRound = round
                incomingState = []
                incomingTotal = nil
                ordering!.holdDelivery(true, effects: &effects.ordering)
                counters.viewsInstalled += 1
                // It knows the decision too: it tells members of the old view
                // that missed it (a member of the new view that excludes itself
                // for want of it would take the new view's majority with it).
                announcement = (epoch, fields.acceptedBallot, proposal)
                announceUntilRound = round + UInt64(configuration.proposalTimeoutRounds)
            }
            return
        }
        guard fields.run == runIdentity || configuration.canary == .runsNotTold else {
            counters.otherRunFrames += 1
            return
        }
        // A member still in the previous epoch may have missed the decision:
        // keep announcing it. One that states the decision itself (it is
        // announcing too) has not missed it — two announcers renewing each
        // other would announce, a frame every round, for good.
        if epoch == retiredEpoch, retired != nil {
            if !fields.decided { announceUntilRound = max(announceUntilRound, round + UInt64(configuration.joinRetryRounds)) }
            return
        }
        if let announcement, epoch == announcement.epoch {
            if !fields.decided { announceUntilRound = max(announceUntilRound, round + UInt64(configuration.joinRetryRounds)) }
            return
        }
        guard epoch == view.epoch else {
            if epoch > view.epoch { sawLaterEpoch(round: round) }
            counters.staleEpochFrames += 1
            return
        }
        // A decision of this view, from any member of this run — one of the
        // view's, or a joiner the decision admitted, or an incarnation that
        // has since been left out: an epoch is decided once, so a genuine
        // frame stating it is the decision (adopted only after a promise).
        if fields.decided, decided == nil, promised != 0, fields.acceptedBallot > 0, let proposal,
           proposal.cut.count == view.members.count, view.rank(ofNode: node).map({ view.members[$0].incarnation != fields.incarnation }) ?? true {
            decided = (fields.acceptedBallot, proposal)
            accepted = decided
            step(round: round, effects: &effects)
            return
        }
        guard let r = view.rank(ofNode: node), view.members[r].incarnation == fields.incarnation, r != rank else { return }

        // State transfer.
        if fields.stateFor == UInt64(me.node), awaitingState, let total = fields.stateBytes {
            incomingTotal = total
            for chunk in frame.messages where chunk.sequence == UInt64(incomingState.count) {
                incomingState.append(contentsOf: chunk.payload)
                counters.stateBytesReceived += chunk.payload.count
            }
            if incomingState.count >= total {
                awaitingState = false
                stateAckUntilRound = round + UInt64(configuration.joinRetryRounds)
                effects.events.append(ViewEvent(deliveriesBefore: effects.ordering.deliveries.count,
                                                kind: .stateReceived(view, state: incomingState)))
                ordering!.holdDelivery(false, effects: &effects.ordering)
                sendCarriedOver()
            }
            return
        }
        if let received = fields.stateReceived, let index = outgoing.firstIndex(where: { $0.member.node == node }) {
            outgoing[index].acked = max(outgoing[index].acked, min(received, outgoingState.count))
            if outgoing[index].acked >= outgoingState.count, received >= outgoingState.count {
                outgoing.remove(at: index)
            }
        }
        guard !awaitingState else { return }

        // Agreement state, restated in full by every frame.
        peerPromised[r] = fields.promised
        peerAccepted[r] = fields.acceptedBallot
        peerHolds[r] = fields.holdsCut
        peerLeaving[r] = fields.leaving
        if frame.viewPositionEntries.count == view.members.count {
            peerPositions[r] = frame.viewPositionEntries.map(\.value)
        }
        if let proposal, proposal.cut.count == view.members.count { peerProposal[r] = proposal }
        maxBallotCounter = max(maxBallotCounter, fields.promised >> 16, fields.proposing >> 16, fields.acceptedBallot >> 16)

        // A decision is adopted only in a view this member promised in: every
        // member of a decided view promised in it, so a decision reaching a
        // member that promised nothing cannot admit it (it learns it was left
        // out from the later epoch instead).
        if fields.decided, decided == nil, let proposal = peerProposal[r], fields.acceptedBallot > 0 {
            if promised != 0 || configuration.canary == .runsNotTold {
                decided = (fields.acceptedBallot, proposal)
                accepted = decided
            } else {
                counters.refusedDecisions += 1
            }
        }
        if fields.proposing != 0 {
            promise(fields.proposing, round: round)
            if fields.acceptedBallot == fields.proposing, let proposal = peerProposal[r] {
                accept(fields.proposing, proposal)
            }
        }
        step(round: round, effects: &effects)
    }
}
