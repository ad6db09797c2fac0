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
        return
            "promised@\(promisedRound) accepted+\(f(acceptedAfter)) held+\(f(heldCutAfter)) decided+\(f(decidedAfter)) installed+\(f(installedAfter)) ballots=\(ballots)"
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
///
/// **Structure.** Where the member stands is one stored ``phase``; the
/// agreement (``ViewAgreement``), the state transfer (``OutgoingStateTransfer``,
/// ``IncomingStateTransfer``) and joins (``JoinRequests``, ``JoinAttempt``) are
/// small pure structs this instance drives: it owns the ordering instances,
/// routes frames and encodes its own.
public struct MembershipInstance: Sendable {
    public let configuration: MembershipConfiguration
    /// This process (its incarnation changes when it rejoins).
    public private(set) var me: MemberID

    /// The installed view (`nil` while joining).
    public private(set) var view: View?
    /// The run of the cluster this member belongs to (0: a joiner that has not
    /// been admitted yet). The shell seals slot and repair frames under it.
    public private(set) var runIdentity: UInt64
    /// Where this member stands: joining, awaiting its state, a member, changing view, or left.
    public private(set) var phase: MembershipPhase = .joining
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
    /// Members of this view that were in the previous one (this member
    /// aside): until each has been heard in this view, the retired instance
    /// stays — one that missed the end of the previous view (paused, cut
    /// off) needs its frames to finish it, and without them it would leave
    /// this view, which may then have no majority left (services swarm
    /// seed 6171).
    var retiredNeededBy: [MemberID] = []
    /// The decision that ended the previous view, restated while `announceUntilRound`.
    var announcement: (epoch: UInt32, ballot: UInt64, proposal: ViewProposal)?
    var announceUntilRound: UInt64 = 0
    /// The next round whose slot sends the announcement on its own, before the view's own frames start
    /// (promise mode: a decided view starts at its cut's largest round, often rounds after the install).
    var announceAloneRound: UInt64 = 0

    /// The agreement on the view after the installed one.
    var agreement = ViewAgreement()
    var timeline = ChangeTimeline()
    /// The timeline of the last view change this member installed.
    public private(set) var lastChange: ChangeTimeline?
    var noPrimaryReported = false
    /// Join requests heard, as a member.
    var joins = JoinRequests()
    /// Asking to join, as a joiner.
    var joinAttempt = JoinAttempt()
    /// Asked to leave (``leave()``): the next change leaves this member out.
    var leaving = false
    /// A frame of a later epoch was seen at this round (we may have been left out).
    var laterEpochSinceRound: UInt64?
    /// The latest round a frame of a later epoch arrived.
    var laterEpochHeardRound: UInt64 = 0
    /// While fetching a decided cut: the sum of received-below rounds, and the round it last grew.
    var catchUpReceived: UInt64 = 0
    var catchUpProgressRound: UInt64 = 0

    /// State transfer, donor side.
    var outgoingState = OutgoingStateTransfer()
    /// State transfer, joiner side.
    var incomingState = IncomingStateTransfer()
    /// Messages queued but never sent when this member was left out, sent again after it rejoins.
    var carriedOver: [[UInt8]] = []
    /// The round since which this member has heard less than a majority of its view (nil: it hears one).
    var minoritySinceRound: UInt64?
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
    public func isSnapshotRequested(forEpoch epoch: UInt32) -> Bool { outgoingState.isRequested(forEpoch: epoch) }

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
            phase = .member
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
        agreement.startView(memberCount: n)
        noPrimaryReported = false
        minoritySinceRound = nil
        laterEpochSinceRound = nil
        suspectsMeSince = Array(repeating: nil, count: n)
        joins.installed(next)
    }

    /// A promise or a decision in the installed view: a steady member starts changing view.
    private mutating func enterChange() {
        if phase == .member, agreement.isUnderway { phase = .changingView }
    }

    // MARK: Observable state

    /// Whether this member is in an installed view and may broadcast.
    public var isMember: Bool { phase == .member || phase == .changingView }
    /// Whether a view change is under way here (wedged: no data sent, delivery frozen).
    public var isChangingView: Bool { phase == .changingView }
    /// Whether this member has left (``leave()``) and the cluster has let it go.
    public var hasLeft: Bool { phase == .left }
    /// The members of the next view this member has accepted (or knows decided), while a change is under way.
    public var pendingViewMembers: [MemberID]? { (agreement.decided ?? agreement.accepted)?.proposal.members }
    /// This member's rank in the installed view.
    public var currentRank: Int? { view == nil ? nil : rank }

    /// When ``onTimeout(nowNanos:effects:)`` is next needed.
    public var nextDeadlineNanos: UInt64 {
        guard phase != .left else { return .max }  // left: nothing more to do
        var deadline = ordering?.nextDeadlineNanos ?? joinDeadlineNanos
        if let retired { deadline = min(deadline, retired.nextDeadlineNanos) }
        if let round = announceAloneDueRound { deadline = min(deadline, schedule.slotWindow(round: round, rank: rank).startNanos) }
        return deadline
    }

    /// The round whose slot next sends the announcement on its own, or nil: no
    /// announcement, its window over, or the view's own frames carry it.
    var announceAloneDueRound: UInt64? {
        guard announcement != nil, let view, isMember else { return nil }
        let round = max(announceAloneRound, lastRound)
        return round < view.startRound && round < announceUntilRound ? round : nil
    }

    var schedule: TDMASchedule { ordering?.configuration.schedule ?? configuration.ordering.schedule }

    var joinDeadlineNanos: UInt64 {
        configuration.ordering.schedule.slotWindow(round: joinAttempt.nextRequestRound, rank: 0).startNanos
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
        outgoingState.provide(state, forEpoch: epoch, round: lastRound, sendRounds: configuration.retireRounds)
    }

    /// Handles deadlines due at `nowNanos`: slot frames of the view (and of the
    /// previous one while it is retired), membership frames, join requests.
    public mutating func onTimeout(nowNanos: UInt64, effects: inout MembershipEffects) {
        checkLateStart(nowNanos: nowNanos)
        let round = currentRound(nowNanos)
        guard phase != .left else { return }
        guard phase != .joining else {
            // Asked in vain for long: perhaps admitted into a view it never
            // heard of and removed again, after which its incarnation counts as
            // gone (its requests look like replays). Ask again as a new one.
            let (refresh, request) = joinAttempt.tick(
                round: round, refreshRounds: joinRefreshRounds,
                retryRounds: configuration.joinRetryRounds)
            if refresh {
                me.incarnation = max(nowNanos, me.incarnation &+ 1)
                counters.incarnationRefreshes += 1
            }
            if request {
                sendMembershipFrame(epoch: 0, round: round, nowNanos: nowNanos, effects: &effects)
                if let exit = exitAnnouncement, round < exitAnnounceUntilRound {
                    sendAnnouncement(
                        (exit.epoch, exit.ballot, exit.proposal), round: round, nowNanos: nowNanos,
                        incarnation: exit.incarnation, effects: &effects)
                }
            }
            return
        }
        if retired != nil {
            if round >= retiredUntilRound, !retiredStillNeeded {
                pastOrderingCounters = pastOrderingCounters + retired!.counters
                retired = nil
            } else {
                retired!.onTimeout(nowNanos: nowNanos, effects: &effects.ordering)
            }
        }
        if isMember, !carriedOver.isEmpty { sendCarriedOver() }
        // Until the view's own frames start (promise mode: its start round is
        // the cut's largest, often rounds away), the announcement goes on its
        // own, once a round at this member's slot: the old view's members that
        // missed the decision hear nothing else that states it.
        if let announcement, let due = announceAloneDueRound, due <= round,
            nowNanos >= schedule.slotWindow(round: round, rank: rank).startNanos
        {
            announceAloneRound = round + 1
            sendAnnouncement(announcement, round: round, nowNanos: nowNanos, effects: &effects)
        }
        // In promise mode an idle member speaks once per heartbeat; while the
        // membership layer has work every round, its frames go every round.
        ordering!.keepBusy =
            needsMembershipFrame(round: round) || (announcement != nil && round < announceUntilRound)
            || outgoingState.isSending || !carriedOver.isEmpty
        let (beforeRound, beforeFrames) = (ordering!.nextRoundToSend, ordering!.counters.slotFramesSent)
        ordering!.onTimeout(nowNanos: nowNanos, effects: &effects.ordering)
        guard
            ordering!.nextRoundToSend != beforeRound || ordering!.counters.slotFramesSent != beforeFrames
                || (ordering!.configuration.mode == .promises && ordering!.isFinished)
        else { return }
        // Our slot frame left: the membership step, then our membership frames.
        step(round: round, effects: &effects)
        guard view != nil, phase != .left else { return }
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
    ///
    /// `arrivalNanos`, when the shell has it (a kernel receive timestamp on the
    /// view's timebase), is the datagram's arrival time for clock estimation
    /// only (``/CarillonOrdering/OrderingInstance/onFrameReceived(_:nowNanos:arrivalNanos:effects:)``).
    @discardableResult
    public mutating func onFrameReceived(
        _ bytes: UnsafeRawBufferPointer, nowNanos: UInt64, arrivalNanos: UInt64? = nil, effects: inout MembershipEffects
    ) -> FrameDisposition {
        guard phase != .left else { return .ignored }
        checkLateStart(nowNanos: nowNanos)
        let epochBefore = view?.epoch
        let before = agreementSignature
        let disposition = receive(bytes, nowNanos: nowNanos, arrivalNanos: arrivalNanos, effects: &effects)
        guard phase != .left, let view else { return disposition }
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
        guard ordering != nil, isChangingView else { return AgreementSignature() }
        let value = agreement.decided ?? agreement.accepted
        return AgreementSignature(
            promised: agreement.promised, accepted: value?.ballot ?? 0, proposing: agreement.proposing,
            decided: agreement.decided != nil, holds: value.map { statesHold(of: $0.proposal) } ?? false)
    }

    private mutating func receive(
        _ bytes: UnsafeRawBufferPointer, nowNanos: UInt64, arrivalNanos: UInt64?, effects: inout MembershipEffects
    ) -> FrameDisposition {
        guard bytes.count >= Wire.headerBytes else {
            return ordering?.onFrameReceived(bytes, nowNanos: nowNanos, arrivalNanos: arrivalNanos, effects: &effects.ordering)
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
            let disposition = ordering!.onFrameReceived(bytes, nowNanos: nowNanos, arrivalNanos: arrivalNanos, effects: &effects.ordering)
            if isChangingView || phase == .awaitingState { step(round: round, effects: &effects) }
            return disposition
        }
        if retired != nil, epoch == retiredEpoch {
            // A member still finishing the previous view: answer it — for as
            // long as it keeps asking — and tell it the decision.
            announceUntilRound = max(announceUntilRound, round + UInt64(configuration.joinRetryRounds))
            retiredUntilRound = max(retiredUntilRound, round + UInt64(configuration.proposalTimeoutRounds))
            return retired!.onFrameReceived(bytes, nowNanos: nowNanos, arrivalNanos: arrivalNanos, effects: &effects.ordering)
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

    /// Promises `ballot` (a higher one than any promised) and wedges the view's instance.
    private mutating func promise(_ ballot: UInt64, round: UInt64) {
        let promisedNow: Bool
        do {
            let ordering = ordering!
            promisedNow = agreement.promise(ballot, round: round) { ordering.holds(cut: $0.cut) }
        }
        guard promisedNow else { return }
        if agreement.ballotsSeen == 1 { timeline = ChangeTimeline(promisedRound: round) }
        timeline.ballots = agreement.ballotsSeen
        _ = ordering!.wedge()
        counters.promisesMade += 1
        enterChange()
    }

    private mutating func accept(_ ballot: UInt64, _ proposal: ViewProposal) {
        if agreement.accept(ballot, proposal) {
            counters.proposalsAccepted += 1
            timeline.acceptedAfter = lastRound &- timeline.promisedRound
        }
        enterChange()
    }

    /// Takes a decision (learned from a frame or counted here).
    private mutating func learn(_ decision: BallotValue) {
        agreement.learn(decision)
        enterChange()
    }

    /// Advances the view change from what is known now.
    private mutating func step(round: UInt64, effects: inout MembershipEffects) {
        // A joiner waiting for its state takes no part until it has it.
        guard let view, ordering != nil else { return }
        if phase == .awaitingState {
            // Left behind while waiting: the view moved on without us (a later
            // epoch), or no donor finished the transfer. Rejoining is always safe.
            let later = laterEpochSinceRound.map { round >= $0 + UInt64(configuration.proposalTimeoutRounds) } ?? false
            if later || round >= incomingState.sinceRound + 2 * UInt64(configuration.retireRounds) {
                exclude(epoch: view.epoch, effects: &effects)
            }
            return
        }
        let n = view.members.count
        updateSuspectsMe(round: round)

        // A decision: a majority of the view accepted the same ballot and holds its cut.
        if agreement.decided == nil, let accepted = agreement.accepted {
            if agreement.acceptedIsHeldByMajority(ownRank: rank, ownHolds: statesHold(of: accepted.proposal), majority: majority) {
                learn(accepted)
            }
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
        let catchingUp = agreement.decided.map { $0.proposal.members.contains(me) } ?? false
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
        // A member that accepted a value naming itself may well be in the
        // later view (services swarm seed 8844: deaf from the round its view
        // was decided, it left the moment it heard again, before the
        // decision's announcement reached it, and the view of two it was in
        // lost its majority): it waits as long as a catching-up member — the
        // others keep their retired instance and announce while it is unheard.
        let mayBeInLaterView = agreement.accepted.map { $0.proposal.members.contains(me) } ?? false
        let leftBehind =
            hearsLaterEpoch
            && (laterEpochSinceRound.map { since in
                catchingUp
                    ? round >= max(since, catchUpProgressRound) + UInt64(configuration.retireRounds)
                    : round >= since + (mayBeInLaterView ? UInt64(configuration.retireRounds) : patienceRounds)
            } ?? false)
        if leftBehind {
            exclude(epoch: view.epoch, effects: &effects)
            return
        }
        if let decided = agreement.decided {
            guard decided.proposal.members.contains(me) else {
                // Left out: tell the others the decision on the way out — they may
                // still be waiting for this member's statement to learn it.
                exitAnnouncement = (view.epoch, decided.ballot, decided.proposal, me.incarnation)
                exitAnnounceUntilRound = round + UInt64(configuration.proposalTimeoutRounds)
                sendAnnouncement(
                    (view.epoch, decided.ballot, decided.proposal), round: round, nowNanos: lastNowNanos,
                    effects: &effects)
                exclude(epoch: view.epoch, effects: &effects)
                return
            }
            if !agreement.cutFinalized {
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
                agreement.cutFinalized = true
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
        let timeout = agreement.backoff(base)
        if agreement.proposing != 0 {
            if round >= agreement.proposingSinceRound + timeout || agreement.promised > agreement.proposing {
                agreement.stopProposing()
            } else if agreement.accepted?.ballot != agreement.proposing {
                choose(round: round)
            }
        }

        // Joins wait until the last view has settled (its joiners have their state).
        // A joiner is added only while it keeps asking (it repeats every
        // joinRetryRounds): one that died meanwhile would join as a dead member.
        joins.expire(round: round, silentRounds: 3 * UInt64(max(configuration.joinRetryRounds, 1)))
        let joinsDue = !joins.pending.isEmpty && round >= view.startRound + base
        var reason = joinsDue || leaving
        // A member that says it is wedged in a change nobody finishes (its
        // proposer gave up, or proposed from a side that lost its majority)
        // is a reason too: it delivers nothing until a decision.
        for r in 0..<n where agreement.peerLeaving[r] || failing(r, round: round) || agreement.peerPromised[r] != 0 { reason = true }
        let stalled = agreement.promised == 0 || round >= agreement.promisedAtRound + timeout
        if agreement.proposing == 0, reason || agreement.promised != 0, stalled, isLowestUnsuspected(round: round), hearsMajority {
            let ballot = agreement.startBallot(node: me.node, round: round)
            counters.ballotsStarted += 1
            promise(ballot, round: round)
            choose(round: round)
        }

        // A member that hears less than a majority cannot change the view (it
        // does not propose) and cannot deliver past the members it does not hear.
        if hearsMajority {
            minoritySinceRound = nil
        } else if minoritySinceRound == nil {
            minoritySinceRound = round
        }
        let waitingSince = [agreement.changeSinceRound, minoritySinceRound].compactMap { $0 }.min()
        if let since = waitingSince, !noPrimaryReported, round >= since + 2 * base {
            noPrimaryReported = true
            effects.events.append(
                ViewEvent(
                    deliveriesBefore: effects.ordering.deliveries.count,
                    kind: .noPrimaryComponent(epoch: view.epoch, waitingRounds: Int(round - since))))
        }
    }

    /// Whether this member states that it holds `proposal`'s cut: frozen at a
    /// promise above its accepted ballot (see ``ViewAgreement/holdsAtHigherPromise``), live otherwise.
    private func statesHold(of proposal: ViewProposal) -> Bool {
        agreement.statesHold(ordering?.holds(cut: proposal.cut) ?? false)
    }

    /// With promises for our ballot from a majority, picks the proposal and accepts it.
    private mutating func choose(round: UInt64) {
        let view = view!
        let n = view.members.count
        let promisers = agreement.promisers(ownRank: rank)
        guard promisers.count >= majority else { return }
        // Wait a little for every member we do not suspect, so a slow one is not left out.
        let everyone = (0..<n).allSatisfy { r in promisers.contains(r) || failing(r, round: round) }
        let patience = agreement.backoff(UInt64(configuration.proposalTimeoutRounds / 2))
        guard everyone || round >= agreement.proposingSinceRound + patience else { return }
        // The highest-ballot proposal any promiser accepted may have been decided: keep it.
        var best = agreement.highestAccepted(among: promisers, ownRank: rank)
        // A value was decided only if a majority accepted it *and held its
        // cut* — and holds are frozen at a higher promise — so some promiser
        // of this ballot (a majority too) states that it holds it. When none
        // does, it was not decided, and if its cut needs frames that only
        // failed members had, keeping it would wedge the view for good.
        if let chosen = best,
            !agreement.isHeld(chosen.proposal, among: promisers, ownRank: rank, ownHolds: { statesHold(of: chosen.proposal) })
        {
            best = nil
            counters.undecidedValuesDropped += 1
        }
        let proposal =
            best?.proposal
            ?? agreement.freshProposal(
                view: view, ownRank: rank, ownPositions: ordering!.receivedBelowBySender,
                ownLeaving: leaving, promisers: promisers, pendingJoins: joins.pending)
        accept(agreement.proposing, proposal)
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
        phase = .member
        effects.events.append(
            ViewEvent(
                deliveriesBefore: effects.ordering.deliveries.count,
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
        retiredNeededBy = proposal.members.filter { old.members.contains($0) && $0 != me }
        announcement = (old.epoch, decided.ballot, proposal)
        announceUntilRound = round + UInt64(configuration.proposalTimeoutRounds)
        announceAloneRound = round + 1
        counters.viewsInstalled += 1
        timeline.installedAfter = round &- timeline.promisedRound
        lastChange = timeline
        timeline = ChangeTimeline()
        // Members that were in the old view hold the same state at this cut; the
        // lowest-ranked sends it, the next ones take over if it makes no progress.
        let donorIndex = joined.isEmpty ? nil : proposal.members.filter({ old.members.contains($0) }).firstIndex(of: me)
        outgoingState.request(
            donorIndex == nil ? [] : joined, epoch: next.epoch,
            delayRounds: UInt64((donorIndex ?? 0) * configuration.joinRetryRounds))
        if leaving { phase = .left }
    }

    /// Whether a member of this view that was in the previous one has not
    /// been heard in this view yet (``retiredNeededBy``).
    var retiredStillNeeded: Bool {
        guard let view, let ordering else { return false }
        let received = ordering.receivedBelowBySender
        for member in retiredNeededBy {
            guard let r = view.rank(of: member), received.indices.contains(r) else { continue }
            if received[r] <= view.startRound { return true }
        }
        return false
    }

    private mutating func exclude(epoch: UInt32, effects: inout MembershipEffects) {
        let unsent = ordering?.pendingMessageCount ?? 0
        if !leaving {
            effects.events.append(
                ViewEvent(
                    deliveriesBefore: effects.ordering.deliveries.count,
                    kind: .excluded(epoch: epoch, unsent: unsent)))
        }
        counters.exclusions += 1
        pastOrderingCounters = orderingCounters
        startJoining(as: me.incarnation &+ 1)
        if leaving { phase = .left }
    }

    /// Drops the view, its instances and its agreement state, keeps what was
    /// queued and never sent for after the join, and starts asking to join
    /// as `incarnation` (an exclusion, or a late start of the first view).
    private mutating func startJoining(as incarnation: UInt64) {
        ordering?.takePending { payload in carriedOver.append(Array(payload)) }
        view = nil
        ordering = nil
        retired = nil
        retiredNeededBy = []
        announcement = nil
        phase = .joining
        me.incarnation = incarnation
        joinAttempt.restart()
        agreement.abandon()
    }

    // MARK: Membership frames

    private func needsMembershipFrame(round: UInt64) -> Bool {
        isChangingView || leaving || phase == .awaitingState || round < incomingState.acknowledgeUntilRound
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
            if agreement.promised != 0 {
                fields.append(RankEntry(rank: ViewField.promisedBallot.rawValue, value: agreement.promised))
                positions = ordering!.receivedBelowBySender
            }
            if agreement.proposing != 0 {
                fields.append(RankEntry(rank: ViewField.proposingBallot.rawValue, value: agreement.proposing))
            }
            if let decided = agreement.decided {
                fields.append(RankEntry(rank: ViewField.acceptedBallot.rawValue, value: decided.ballot))
                fields.append(RankEntry(rank: ViewField.decided.rawValue, value: 1))
                proposal = decided.proposal
            } else if let accepted = agreement.accepted {
                fields.append(RankEntry(rank: ViewField.acceptedBallot.rawValue, value: accepted.ballot))
                proposal = accepted.proposal
            }
            if let proposal, statesHold(of: proposal) {
                fields.append(RankEntry(rank: ViewField.holdsCut.rawValue, value: 1))
            }
            if leaving { fields.append(RankEntry(rank: ViewField.leaving.rawValue, value: 1)) }
            // Acknowledge only once the size is known: an empty state is acknowledged after its (empty) chunk.
            if (phase == .awaitingState && incomingState.total != nil) || round < incomingState.acknowledgeUntilRound {
                fields.append(RankEntry(rank: ViewField.stateReceived.rawValue, value: UInt64(incomingState.bytes.count)))
            }
        }
        appendMembershipFrame(
            epoch: epoch, round: round, nowNanos: nowNanos, fields: fields, positions: positions,
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
            RankEntry(rank: ViewField.decided.rawValue, value: 1)
        ]
        appendMembershipFrame(
            epoch: announcement.epoch, round: round, nowNanos: nowNanos, fields: fields,
            positions: nil, proposal: announcement.proposal, chunk: nil, effects: &effects)
    }

    private mutating func sendStateChunks(round: UInt64, nowNanos: UInt64, effects: inout MembershipEffects) {
        guard let view else { return }
        let overhead =
            Wire.headerBytes + 3 * Wire.sectionHeaderBytes + 9 * Wire.rankEntryBytes
            + Wire.messageHeaderBytes + configuration.ordering.tagLength
        let chunkLimit = max(1, min(configuration.stateChunkBytes, configuration.ordering.maxFrameBytes - overhead))
        for (member, range) in outgoingState.chunks(round: round, view: view, chunkLimit: chunkLimit) {
            let fields = [
                RankEntry(rank: ViewField.incarnation.rawValue, value: me.incarnation),
                RankEntry(rank: ViewField.run.rawValue, value: runIdentity),
                RankEntry(rank: ViewField.stateFor.rawValue, value: UInt64(member.node)),
                RankEntry(rank: ViewField.stateBytes.rawValue, value: UInt64(outgoingState.state.count))
            ]
            appendMembershipFrame(
                epoch: view.epoch, round: round, nowNanos: nowNanos, fields: fields, positions: nil,
                proposal: nil, chunk: (range.lowerBound, Array(outgoingState.state[range])), effects: &effects)
            counters.stateBytesSent += range.count
        }
    }

    private mutating func appendMembershipFrame(
        epoch: UInt32, round: UInt64, nowNanos: UInt64, fields: [RankEntry], positions: [UInt64]?,
        proposal: ViewProposal?, chunk: (offset: Int, bytes: [UInt8])?, effects: inout MembershipEffects
    ) {
        let tagLength = configuration.ordering.tagLength
        let node = me.node
        do {
            try effects.ordering.appendFrame(
                kind: .membership, round: round,
                maxBytes: configuration.ordering.maxFrameBytes
            ) { buffer throws(WireError) in
                try MembershipFrame.encode(
                    into: buffer, sender: node, epoch: epoch, round: round, nowNanos: nowNanos,
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
            switch joins.hear(
                joiner, round: round, view: view, runIdentity: runIdentity,
                staleJoinsTaken: configuration.canary == .staleJoinsTaken)
            {
            case .alreadyMember:
                // It joined but missed the decision: announce it again.
                announceUntilRound = max(announceUntilRound, round + UInt64(configuration.joinRetryRounds))
            case .stale:
                // A replayed request, or one of a process that is gone.
                counters.staleJoinRequests += 1
            case .pending:
                break
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
                phase = .awaitingState
                incomingState.start(round: round)
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
        if fields.decided, agreement.decided == nil, agreement.promised != 0, fields.acceptedBallot > 0, let proposal,
            proposal.cut.count == view.members.count, view.rank(ofNode: node).map({ view.members[$0].incarnation != fields.incarnation }) ?? true
        {
            learn((fields.acceptedBallot, proposal))
            step(round: round, effects: &effects)
            return
        }
        guard let r = view.rank(ofNode: node), view.members[r].incarnation == fields.incarnation, r != rank else { return }

        // State transfer.
        if fields.stateFor == UInt64(me.node), phase == .awaitingState, let total = fields.stateBytes {
            incomingState.announce(total: total)
            for chunk in frame.messages where incomingState.receive(offset: chunk.sequence, chunk.payload) {
                counters.stateBytesReceived += chunk.payload.count
            }
            if incomingState.isComplete {
                phase = .member
                incomingState.completed(round: round, acknowledgeRounds: configuration.joinRetryRounds)
                effects.events.append(
                    ViewEvent(
                        deliveriesBefore: effects.ordering.deliveries.count,
                        kind: .stateReceived(view, state: incomingState.bytes)))
                ordering!.holdDelivery(false, effects: &effects.ordering)
                sendCarriedOver()
            }
            return
        }
        if let received = fields.stateReceived { outgoingState.acknowledge(node: node, received: received) }
        guard phase != .awaitingState else { return }

        // Agreement state, restated in full by every frame.
        let positions = frame.viewPositionEntries.count == view.members.count ? frame.viewPositionEntries.map(\.value) : nil
        agreement.restate(
            rank: r, promised: fields.promised, accepted: fields.acceptedBallot, holds: fields.holdsCut,
            leaving: fields.leaving, proposing: fields.proposing, positions: positions, proposal: proposal)

        // A decision is adopted only in a view this member promised in: every
        // member of a decided view promised in it, so a decision reaching a
        // member that promised nothing cannot admit it (it learns it was left
        // out from the later epoch instead).
        if fields.decided, agreement.decided == nil, let proposal = agreement.peerProposal[r], fields.acceptedBallot > 0 {
            if agreement.promised != 0 || configuration.canary == .runsNotTold {
                learn((fields.acceptedBallot, proposal))
            } else {
                counters.refusedDecisions += 1
            }
        }
        if fields.proposing != 0 {
            promise(fields.proposing, round: round)
            if fields.acceptedBallot == fields.proposing, let proposal = agreement.peerProposal[r] {
                accept(fields.proposing, proposal)
            }
        }
        step(round: round, effects: &effects)
    }
}
