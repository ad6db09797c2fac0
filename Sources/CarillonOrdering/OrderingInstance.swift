import CarillonSchedule
import CarillonWire

/// One member's TDMA total-order engine, as a pure state machine.
///
/// Inputs are method calls — ``broadcast(_:)-(UnsafeRawBufferPointer)``, ``onSlotOpen(round:nowNanos:effects:)``
/// (or ``onTimeout(nowNanos:effects:)``), ``onFrameReceived(_:nowNanos:effects:)`` —
/// and every output goes into an ``OrderingEffects`` the shell carries out. The
/// instance never reads a clock, never touches a socket and never allocates
/// after `init`: its buffers are sized from the configuration.
///
/// **Order.** Each member sends exactly one slot frame per round, in its own slot.
/// A message's delivery key is `(round, slot, index in batch)`; a frame's
/// messages are delivered once every earlier slot of the view has been received
/// (a frame, possibly empty, or a silent-round statement for it), so every member
/// delivers the same messages in the same order whatever the network does.
///
/// **Loss.** A slot counts as missing once a later frame of its sender arrived or
/// its slot plus ``OrderingConfiguration/lossGraceNanos`` has passed; missing
/// rounds are NAKed in this member's next slot frame, at most every
/// ``OrderingConfiguration/nakRetryNanos`` and not when another member just NAKed
/// them. The sender answers from the frames it keeps until they are stable.
///
/// **Stability.** Each slot frame carries the sender's received-below round; the
/// minimum over members is the stability line. Frames below it and below the
/// delivery cursor are freed; safe delivery waits for it.
public struct OrderingInstance: Sendable {
    public let configuration: OrderingConfiguration
    let memberCount: Int
    let rank: Int
    let windowRounds: Int
    let batchBudgetBytes: Int

    // Received frames per sender × round-in-window, flattened as
    // sender · windowRounds + round % windowRounds. This member's own row holds
    // its own data frames instead, by frame number, until they are delivered
    // here and stable everywhere (see `ownCell`).
    var storeRound: [UInt64]
    var storeHasData: [Bool]
    var storeLength: [Int]
    var storeCount: [Int]
    var storeBytes: [UInt8]
    /// Own row only: when the kept frame was last retransmitted (0: never).
    var storeRepairedNanos: [UInt64]

    /// Per sender: every round below this has been received (or, for ourselves, sent).
    var receivedBelow: [UInt64]
    /// Per sender: one past the highest round heard of.
    var heardBelow: [UInt64]
    /// Per member: its latest reported received-below round.
    var reportedBelow: [UInt64]
    /// Per sender: the lowest round whose data frame was dropped beyond the
    /// window (`.max`: none). A wedged member's NAKs past the window stop
    /// there: what lies beyond it cannot be taken as silence.
    var dataBeyondWindowFrom: [UInt64]
    /// Per sender: next sequence number expected in delivery order.
    var nextDeliverSequence: [UInt64]
    /// Per sender: NAK bookkeeping for suppression and retry.
    var nakSentNanos: [UInt64]
    var nakSentBelow: [UInt64]
    var nakActive: [Bool]
    var nakVisited: [Bool]
    /// Per sender: up to `silentRunsPerSender` runs of rounds known to be silent,
    /// sorted, disjoint and kept beyond the window too, so a member that fell
    /// behind skips silent rounds without buffering or NAKing them one by one.
    var silentRuns: [RoundRuns]
    static let silentRunsPerSender = 4

    var stableBelow: UInt64
    /// Own data frames kept for retransmission: numbers ownHead..<ownTail.
    var ownHead: UInt64 = 0
    var ownTail: UInt64 = 0
    var cursorRound: UInt64
    var cursorSlot: Int
    var nextSendRound: UInt64
    var nextBroadcastSequence: UInt64 = 1
    /// Every own round from this one up to the last sent carried no data.
    var silentSinceRound: UInt64

    // Messages queued for future slots, in data-batch wire format.
    var pending: [UInt8]
    var pendingHead = 0
    var pendingTail = 0
    var pendingMessages = 0

    /// Own rounds other members asked for and not yet repaired.
    var repairRuns: RoundRuns
    var silentScratch: [SilentRange]
    var nakScratch: [NakRange]

    /// Clock offsets to every peer, from frame timestamps.
    var clock: ClockSync
    /// Failure detection: per member, suspected by us, and since which round;
    /// and who suspects whom as the latest frames say (`suspicionHeard[by · n + of]`).
    var suspected: [Bool]
    var suspectedSince: [UInt64]
    var suspicionHeard: [Bool]
    /// Per peer: the longest recent gaps between its frames (the adaptive threshold).
    var arrivals: ArrivalGaps

    // View change (see `wedge()`, `finalize(cut:endRound:)`).
    /// No more data leaves this member in this view once wedged.
    var wedged = false
    var deliveryHeld = false
    /// Per sender: delivery stops below this round (frozen at the wedge, then the end round).
    var deliverBelow: [UInt64]
    /// Per sender: the decided cut; its rounds from here on are silent by decision.
    var cutRound: [UInt64]
    /// First round after the view: `.max` until the cut is decided.
    var endRound: UInt64 = .max
    /// Set at a finalize that leaves part of the cut to fetch: see `windowAnchor`.
    var anchorFollowsCursor = false
    /// Other members' rounds someone asked for while we were wedged: relayed
    /// from what we hold, so a failed member's frames reach every survivor.
    var relayRuns: [RoundRuns]
    var relayScratch: [NakRange]

    // Promise mode (see `OrderingMode.promises` and `onPromiseTimeout`).
    /// When this member last sent a slot frame, and one with data.
    var lastFrameSentNanos: UInt64 = 0
    var lastDataSentNanos: UInt64 = 0
    /// When repair frames last left (they follow at most one batch per round period).
    var lastRepairSentNanos: UInt64 = 0
    /// Whether this member's latest slot frame carried data (it is then never restated as empty).
    var lastSentWasData = false
    /// Whether the latest attempt to send data was held back by the window.
    var dataHeld = false
    /// One past the highest round another member sent data in: our frames must
    /// cover it before anyone can deliver it.
    var owedBelow: UInt64
    /// One past the highest round anyone sent data in, and since when: delivery
    /// waits for it, and a member still missing part of it after the loss
    /// grace NAKs.
    var neededBelow: UInt64
    var neededSinceNanos: UInt64 = 0
    /// Set by the membership layer while it has work every round (a joiner's
    /// state, an announcement): in promise mode frames then go out every round.
    public var keepBusy = false
    /// A frame went out from ``sendDataAtOnce(nowNanos:effects:)``: the next timeout delivers.
    var deliveryDue = false
    /// The latest time an input brought (promise mode's deadline reads
    /// suspicion thresholds as of then, as the input's check did).
    var lastInputNanos: UInt64 = 0
    /// Promise mode, once finished: the next round at whose start the instance wants a timeout.
    var finishedTickRound: UInt64 = 0

    /// Everything counted so far.
    public private(set) var counters = OrderingCounters()

    /// Creates an instance; all of its memory is allocated here.
    public init(configuration: OrderingConfiguration) throws(OrderingConfigurationError) {
        try configuration.validate()
        self.configuration = configuration
        memberCount = configuration.memberCount
        rank = configuration.rank
        windowRounds = configuration.windowRounds
        batchBudgetBytes = configuration.batchBudgetBytes
        let cells = memberCount * windowRounds
        storeRound = Array(repeating: .max, count: cells)
        storeHasData = Array(repeating: false, count: cells)
        storeLength = Array(repeating: 0, count: cells)
        storeCount = Array(repeating: 0, count: cells)
        storeRepairedNanos = Array(repeating: 0, count: cells)
        storeBytes = Array(repeating: 0, count: cells * batchBudgetBytes)
        let first = configuration.firstRound
        receivedBelow = Array(repeating: first, count: memberCount)
        heardBelow = Array(repeating: first, count: memberCount)
        reportedBelow = Array(repeating: first, count: memberCount)
        dataBeyondWindowFrom = Array(repeating: .max, count: memberCount)
        nextDeliverSequence = Array(repeating: 1, count: memberCount)
        nakSentNanos = Array(repeating: 0, count: memberCount)
        nakSentBelow = Array(repeating: first, count: memberCount)
        nakActive = Array(repeating: false, count: memberCount)
        nakVisited = Array(repeating: false, count: memberCount)
        silentRuns = Array(repeating: RoundRuns(capacity: Self.silentRunsPerSender), count: memberCount)
        silentSinceRound = first
        stableBelow = first
        cursorRound = first
        cursorSlot = 0
        nextSendRound = first
        owedBelow = first
        neededBelow = first
        pending = Array(repeating: 0, count: configuration.sendBufferBytes)
        repairRuns = RoundRuns(capacity: 2 * configuration.maxNakRangesPerFrame)
        silentScratch = []
        silentScratch.reserveCapacity(configuration.maxSilentRangesPerRepair)
        nakScratch = []
        nakScratch.reserveCapacity(configuration.maxNakRangesPerFrame)
        clock = ClockSync(memberCount: memberCount)
        suspected = Array(repeating: false, count: memberCount)
        suspectedSince = Array(repeating: 0, count: memberCount)
        suspicionHeard = Array(repeating: false, count: memberCount * memberCount)
        arrivals = ArrivalGaps(memberCount: memberCount, historyNanos: configuration.suspicionHistoryNanos)
        deliverBelow = Array(repeating: .max, count: memberCount)
        cutRound = Array(repeating: .max, count: memberCount)
        relayRuns = Array(repeating: RoundRuns(capacity: 2 * configuration.maxNakRangesPerFrame), count: memberCount)
        relayScratch = []
        relayScratch.reserveCapacity(configuration.maxSilentRangesPerRepair)
    }

    // MARK: Observable state

    /// Every round below this is received by every member (the stability line).
    public var stableBelowRound: UInt64 { stableBelow }
    /// This member has received every frame of every member below this round.
    public var receivedBelowRound: UInt64 { receivedBelow.min()! }
    /// Next delivery key to be delivered: (round, slot).
    public var deliveryCursor: (round: UInt64, slot: Int) { (cursorRound, cursorSlot) }
    /// The round this member sends next.
    public var nextRoundToSend: UInt64 { nextSendRound }
    /// Messages accepted by `broadcast` and not yet sent.
    public var pendingMessageCount: Int { pendingMessages }
    /// When the instance next needs ``onTimeout(nowNanos:effects:)``: its next
    /// slot; in promise mode the earliest of data to send, a promise owed, a
    /// heartbeat, a NAK or repair due and the moment a silent peer reaches
    /// its suspicion threshold.
    public var nextDeadlineNanos: UInt64 {
        switch configuration.mode {
        case .slots: return configuration.schedule.slotWindow(round: nextSendRound, rank: rank).startNanos
        case .promises: return promiseDeadlineNanos
        }
    }

    /// How far this member's clock is ahead of `peer`'s (nanoseconds, negative
    /// when behind), once frames have gone both ways; see `ClockSync`.
    public func clockOffsetNanos(from peer: Int) -> Int64? {
        guard peer >= 0, peer < memberCount, peer != rank else { return nil }
        return clock.offset(from: peer)
    }

    /// Per sender of the view, every round below this has been received (for
    /// this member itself: sent). A view-change promise reports these.
    public var receivedBelowBySender: [UInt64] { receivedBelow }

    /// Whether this member holds every frame below `cut` (one round per sender).
    public func holds(cut: [UInt64]) -> Bool {
        guard cut.count == memberCount else { return false }
        for sender in 0..<memberCount where receivedBelow[sender] < cut[sender] { return false }
        return true
    }

    /// Whether delivery is held (a joiner waiting for its state transfer).
    public var isDeliveryHeld: Bool { deliveryHeld }

    /// Holds or releases delivery; releasing delivers what is due at once.
    public mutating func holdDelivery(_ hold: Bool, effects: inout OrderingEffects) {
        deliveryHeld = hold
        if !hold { advanceDelivery(effects: &effects) }
    }

    /// Whether this member suspects any other member (allocation-free).
    public var suspectsAnyone: Bool { suspected.contains(true) }

    /// Whether ``wedge()`` was called.
    public var isWedged: Bool { wedged }

    /// Whether the decided cut is delivered in full: the view is over here.
    public var isFinished: Bool { endRound != .max && cursorRound >= endRound }

    /// Members this one currently suspects (nothing heard for the threshold, see ``suspicionThresholdNanos(for:nowNanos:)``).
    public var suspectedMembers: [Int] { (0..<memberCount).filter { suspected[$0] } }

    /// Whether `member`'s latest frame said it suspects `target` (for this
    /// member itself: whether it suspects `target` now).
    public func suspects(_ member: Int, _ target: Int) -> Bool {
        guard member >= 0, member < memberCount, target >= 0, target < memberCount else { return false }
        return member == rank ? suspected[target] : suspicionHeard[member * memberCount + target]
    }

    /// End of the receive window: frames of rounds at or above it are not buffered.
    /// Anchored at the lower of the delivery cursor and the stability line, so a
    /// frame is never overwritten before every member holds it: during a view
    /// change any survivor can relay a failed member's frames (see `wedge()`).
    var windowEnd: UInt64 { windowAnchor.addingClamped(UInt64(windowRounds)) }

    /// Where the receive window starts: the lower of the cursor and the
    /// stability line, so that frames stay until every member holds them and
    /// relays are exact. Once the cut is decided and this member still has to
    /// fetch part of it, the other members have left the view and their
    /// positions no longer move the line: the window then follows the cursor
    /// alone, for good, and this instance relays nothing from then on (cells
    /// below the cursor may be overwritten, so its buffer no longer says
    /// which rounds were silent; the members that held the cut relay).
    var windowAnchor: UInt64 { anchorFollowsCursor ? cursorRound : min(cursorRound, stableBelow) }

    /// Rounds from the wire at or above this are beyond what any member can
    /// know: more than a window past the current round (by this member's clock
    /// or its next slot, whichever is later). Frames claiming them are ignored.
    func plausibleRoundLimit(nowNanos: UInt64) -> UInt64 {
        max(nextSendRound, configuration.schedule.round(atNanos: nowNanos)).addingClamped(UInt64(windowRounds) + 1)
    }

    @inline(__always) func cell(_ sender: Int, _ round: UInt64) -> Int {
        sender &* windowRounds &+ Int(round % UInt64(windowRounds))
    }

    /// The cell of own data frame number `frame`.
    @inline(__always) func ownCell(_ frame: UInt64) -> Int {
        rank &* windowRounds &+ Int(frame % UInt64(windowRounds))
    }

    /// Number of the first kept own data frame whose round is at least `round` (`ownTail` if none).
    func ownFrame(atOrAfter round: UInt64) -> UInt64 {
        var low = ownHead, high = ownTail
        while low < high {
            let middle = low + (high - low) / 2
            if storeRound[ownCell(middle)] < round { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// Frees own data frames delivered here and received everywhere.
    mutating func releaseOwnFrames() {
        let below = min(stableBelow, cursorRound)
        while ownHead < ownTail, storeRound[ownCell(ownHead)] < below { ownHead += 1 }
    }

    // MARK: Input: broadcast

    /// Queues `payload` for this member's next slot.
    ///
    /// Returns ``BroadcastResult/sendBufferFull`` — and queues nothing — when the
    /// send buffer cannot take it: that is backpressure, never a drop.
    public mutating func broadcast(_ payload: UnsafeRawBufferPointer) -> BroadcastResult {
        guard payload.count <= configuration.maxPayloadBytes else {
            counters.payloadsTooLarge += 1
            return .payloadTooLarge(maxPayloadBytes: configuration.maxPayloadBytes)
        }
        let entryBytes = Wire.messageHeaderBytes + payload.count
        if pendingTail + entryBytes > pending.count, pendingHead > 0 { compactPending() }
        guard pendingTail + entryBytes <= pending.count else {
            counters.sendBufferFull += 1
            return .sendBufferFull
        }
        let sequence = nextBroadcastSequence
        let tail = pendingTail
        pending.withUnsafeMutableBytes { buffer in
            buffer.storeBytes(of: sequence.littleEndian, toByteOffset: tail, as: UInt64.self)
            buffer.storeBytes(of: UInt32(payload.count).littleEndian, toByteOffset: tail + 8, as: UInt32.self)
            if let base = payload.baseAddress, payload.count > 0 {
                (buffer.baseAddress! + tail + Wire.messageHeaderBytes).copyMemory(from: base, byteCount: payload.count)
            }
        }
        pendingTail += entryBytes
        pendingMessages += 1
        nextBroadcastSequence += 1
        counters.messagesBroadcast += 1
        return .queued(sequence: sequence)
    }

    /// Queues a byte array; see ``broadcast(_:)-(UnsafeRawBufferPointer)``.
    public mutating func broadcast(_ payload: [UInt8]) -> BroadcastResult {
        payload.withUnsafeBytes { broadcast($0) }
    }

    private mutating func compactPending() {
        let live = pendingTail - pendingHead
        let head = pendingHead
        pending.withUnsafeMutableBytes { buffer in
            if live > 0 { buffer.baseAddress!.copyMemory(from: buffer.baseAddress! + head, byteCount: live) }
        }
        pendingHead = 0
        pendingTail = live
    }

    // MARK: Input: view change

    /// Stops this member's data in this view — later slot frames are empty —
    /// and freezes delivery at what it has received now, so it never delivers
    /// past a cut that a view change could still decide. Queued messages stay
    /// queued (``takePending(_:)`` moves them to the next view). From now on the
    /// instance also relays other members' frames it holds when someone NAKs them.
    /// Returns the received-below round per sender, for the promise.
    public mutating func wedge() -> [UInt64] {
        if !wedged {
            wedged = true
            for sender in 0..<memberCount { deliverBelow[sender] = min(deliverBelow[sender], receivedBelow[sender]) }
        }
        return receivedBelow
    }

    /// Applies a decided cut: for each sender, rounds below `cut[sender]` are
    /// delivered (fetched first if missing), rounds from it up to `endRound` are
    /// silent by decision. The view is over once ``isFinished``. Wedges first.
    public mutating func finalize(cut: [UInt64], endRound end: UInt64, effects: inout OrderingEffects) {
        precondition(cut.count == memberCount, "one cut round per member of the view")
        _ = wedge()
        endRound = end
        for sender in 0..<memberCount {
            cutRound[sender] = min(cut[sender], end)
            deliverBelow[sender] = end
            if sender == rank {
                // Our own row is kept by frame number; nobody holds our rounds we did not send.
                if receivedBelow[rank] >= cutRound[rank] { receivedBelow[rank] = max(receivedBelow[rank], end) }
            } else {
                advanceReceived(sender)
            }
        }
        updateStability()
        advanceDelivery(effects: &effects)
        if cursorRound < endRound { anchorFollowsCursor = true }
    }

    /// Moves every queued, unsent message to `next` (the next view's
    /// instance), in order, with new sequence numbers there — all or nothing:
    /// when `next` could not queue every one of them (a smaller payload limit
    /// or less free send buffer), nothing moves, this instance keeps them and
    /// the result is `nil`. Otherwise returns how many moved. With the same
    /// `maxMemberCount`, frame, tag and NAK limits and send buffer in both
    /// configurations, an empty `next` always takes them all.
    public mutating func movePending(into next: inout OrderingInstance) -> Int? {
        var largest = 0
        pending.withUnsafeBytes { queue in
            var offset = pendingHead
            for _ in 0..<pendingMessages {
                let length = Int(UInt32(littleEndian: queue.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self)))
                largest = max(largest, length)
                offset += Wire.messageHeaderBytes + length
            }
        }
        let free = next.pending.count - (next.pendingTail - next.pendingHead)
        guard largest <= next.configuration.maxPayloadBytes, pendingTail - pendingHead <= free else { return nil }
        let moved = pendingMessages
        takePending { payload in
            guard case .queued = next.broadcast(payload) else {
                preconditionFailure("a payload within the limit into a buffer with room was refused")
            }
        }
        return moved
    }

    /// Hands every queued, unsent message's payload to `body`, in order, and
    /// empties the queue (the next view's instance takes them). Every payload
    /// is at most ``OrderingConfiguration/maxPayloadBytes``, which is sized for
    /// the largest view (`maxMemberCount`): an instance of any view up to that
    /// size with the same limits accepts it. ``movePending(into:)`` checks that
    /// before anything leaves this instance.
    public mutating func takePending(_ body: (UnsafeRawBufferPointer) -> Void) {
        pending.withUnsafeBytes { queue in
            var offset = pendingHead
            for _ in 0..<pendingMessages {
                let length = Int(UInt32(littleEndian: queue.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self)))
                let start = offset + Wire.messageHeaderBytes
                body(UnsafeRawBufferPointer(rebasing: queue[start..<(start + length)]))
                offset = start + length
            }
        }
        pendingHead = 0
        pendingTail = 0
        pendingMessages = 0
    }

    // MARK: Input: time

    /// Handles every deadline due at `nowNanos`: if this member's slot has opened,
    /// sends the frame of the latest opened round (declaring any rounds it slept
    /// through silent). Call it at or after ``nextDeadlineNanos``.
    public mutating func onTimeout(nowNanos: UInt64, effects: inout OrderingEffects) {
        if configuration.mode == .promises {
            onPromiseTimeout(nowNanos: nowNanos, effects: &effects)
            return
        }
        guard nowNanos >= nextDeadlineNanos,
            let round = configuration.schedule.latestOpenedRound(rank: rank, atNanos: nowNanos)
        else { return }
        onSlotOpen(round: round, nowNanos: nowNanos, effects: &effects)
    }

    /// This member's slot of `round` has opened: build its slot frame — queued
    /// messages that fit, its received-below position, due NAKs, a silent range
    /// for any rounds skipped since its last frame — then repair frames for
    /// pending NAKs. An empty frame is sent when there is nothing to say: a
    /// slot's silence means loss or failure, never "nothing to send".
    public mutating func onSlotOpen(round: UInt64, nowNanos: UInt64, effects: inout OrderingEffects) {
        guard round >= nextSendRound else { return }
        let frameBytes = configuration.maxFrameBytes
        effects.reserveFrameBytes(frameBytes * (1 + 2 * configuration.maxRepairFramesPerSlot))
        if isFinished {
            // The view is over here: only answer for frames others still miss.
            nextSendRound = round + 1
            emitRepairs(round: round, nowNanos: nowNanos, effects: &effects)
            return
        }
        if round > nextSendRound { counters.roundsCaughtUp += Int(clamping: round - nextSendRound) }
        updateSuspicions(nowNanos: nowNanos, effects: &effects)
        sendSlotFrame(round: round, allowData: true, nowNanos: nowNanos, effects: &effects)

        if configuration.canary != .ignoreNaks {
            emitRepairs(round: round, nowNanos: nowNanos, effects: &effects)
        } else {
            repairRuns.removeBelow(.max)
        }
        advanceDelivery(effects: &effects)
    }

    // MARK: Promise mode

    /// Promise mode: data leaves at once, but at most one data frame per round
    /// period: under load what is queued meanwhile goes in one batch.
    var nextDataNanos: UInt64 { lastDataSentNanos == 0 ? 0 : lastDataSentNanos &+ configuration.schedule.roundPeriodNanos }

    /// Whether frames go out every round period in promise mode: something is
    /// happening that the other members must hear about promptly (a view
    /// change, a suspicion, a gap being NAKed, the membership layer's work).
    var promiseBusy: Bool {
        if keepBusy || wedged || suspectsAnyone { return true }
        for sender in 0..<memberCount where sender != rank && receivedBelow[sender] < min(heardBelow[sender], cutRound[sender]) {
            return true
        }
        return false
    }

    /// Time after which a member still missing part of a round someone sent
    /// data in NAKs it: the loss grace, plus room for the answer's round trip.
    /// Late is not lost here either: at least the longest recent gap between
    /// any peer's frames (an answer from a descheduled member comes late, not never).
    var promiseNakGraceNanos: UInt64 {
        max(4 * configuration.lossGraceNanos, arrivals.recentMaxGap(nowNanos: lastInputNanos))
    }

    public var promiseDebug: String {
        "owed \(owedBelow) needed \(neededBelow)@\(neededSinceNanos) pending \(pendingMessages) wedged \(wedged) held \(dataHeld) lastFrame \(lastFrameSentNanos) lastRepair \(lastRepairSentNanos) busy \(promiseBusy) finished \(isFinished) lastInput \(lastInputNanos) suspected \(suspected) repairs \(repairRuns.isEmpty) end \(endRound)"
    }

    /// See ``nextDeadlineNanos``.
    var promiseDeadlineNanos: UInt64 {
        let period = configuration.schedule.roundPeriodNanos
        let repairsDue = !repairRuns.isEmpty || (wedged && !anchorFollowsCursor && relayRuns.contains { !$0.isEmpty })
        let repairDeadline = repairsDue ? lastRepairSentNanos &+ period : .max
        // Finished: ticks every round like slot mode (the membership layer
        // steps on them until the next view is installed) and answers repairs.
        if isFinished { return min(repairDeadline, configuration.schedule.slotWindow(round: finishedTickRound, rank: rank).startNanos) }
        var deadline = min(repairDeadline, lastFrameSentNanos &+ (promiseBusy ? period : configuration.effectivePromiseHeartbeatNanos))
        if owedBelow > nextSendRound || deliveryDue { deadline = 0 }
        if pendingMessages > 0, !wedged {
            if dataHeld {
                deadline = min(deadline, lastFrameSentNanos &+ period)
            } else {
                // At once, unless this member has run more than two lookaheads
                // ahead of its clock, or sent data less than a round period ago
                // (what is queued meanwhile goes in one frame: batching under load).
                let earliest = nextSendRound > dataAheadRounds ? nextSendRound - dataAheadRounds : 0
                let roundStart = configuration.schedule.slotWindow(round: earliest, rank: 0).startNanos
                deadline = min(deadline, max(roundStart, nextDataNanos))
            }
        }
        if cursorRound < neededBelow, endRound == .max {
            deadline = min(deadline, max(neededSinceNanos &+ promiseNakGraceNanos, lastFrameSentNanos &+ period))
        }
        if configuration.suspicionSlots > 0 {
            for peer in 0..<memberCount where peer != rank && !suspected[peer] {
                let (since, threshold) = silenceBasis(peer: peer, nowNanos: lastInputNanos)
                deadline = min(deadline, since.addingClamped(threshold))
            }
        }
        // Nothing leaves before the view's first round has begun (as in slot mode).
        return max(deadline, configuration.schedule.slotWindow(round: configuration.firstRound, rank: 0).startNanos)
    }

    /// Promise mode's time input: sends a data frame at once if messages are
    /// queued, a promise when another member's data needs one, a heartbeat
    /// when due; then repairs; then checks suspicions.
    mutating func onPromiseTimeout(nowNanos: UInt64, effects: inout OrderingEffects) {
        lastInputNanos = max(lastInputNanos, nowNanos)
        guard nowNanos >= nextDeadlineNanos else { return }
        deliveryDue = false
        let period = configuration.schedule.roundPeriodNanos
        let frameBytes = configuration.maxFrameBytes
        effects.reserveFrameBytes(frameBytes * (1 + 2 * configuration.maxRepairFramesPerSlot))
        let repairsDue = nowNanos >= lastRepairSentNanos &+ period
        if isFinished {
            finishedTickRound = configuration.schedule.round(atNanos: nowNanos) + 1
            if repairsDue { emitPromiseModeRepairs(nowNanos: nowNanos, effects: &effects) }
            return
        }
        updateSuspicions(nowNanos: nowNanos, effects: &effects)
        let clockRound = configuration.schedule.round(atNanos: nowNanos)
        let lookahead = configuration.effectivePromiseLookaheadRounds
        let busy = promiseBusy
        let idle = !busy && nowNanos >= lastDataSentNanos &+ configuration.promiseIdleAfterNanos
        let owed = owedBelow > nextSendRound
        let owedRound = owedBelow > 0 ? owedBelow - 1 : 0
        let wantData =
            dataMayLeave(nowNanos: nowNanos, clockRound: clockRound)
            && (!dataHeld || nowNanos >= lastFrameSentNanos &+ period)
        let heartbeatDue = nowNanos >= lastFrameSentNanos &+ (busy ? period : configuration.effectivePromiseHeartbeatNanos)
        let nakDue =
            cursorRound < neededBelow && endRound == .max && nowNanos >= neededSinceNanos &+ promiseNakGraceNanos
            && nowNanos >= lastFrameSentNanos &+ period
        let reach = idle ? lookahead : (busy ? 0 : configuration.effectivePromiseActiveLookaheadRounds)
        if wantData {
            sendDataFrame(clockRound: clockRound, reach: reach, nowNanos: nowNanos, effects: &effects)
        } else if owed || heartbeatDue || nakDue {
            if owed { counters.promisesOwed += 1 }
            let target = max(owedRound, clockRound.addingClamped(reach))
            if target >= nextSendRound {
                sendSlotFrame(round: target, allowData: false, nowNanos: nowNanos, effects: &effects)
            } else if !lastSentWasData, nextSendRound > configuration.firstRound, counters.slotFramesSent > 0 {
                // Promised far enough already: restate the latest (empty) frame.
                sendSlotFrame(round: nextSendRound - 1, allowData: false, nowNanos: nowNanos, effects: &effects)
            } else {
                sendSlotFrame(round: nextSendRound, allowData: false, nowNanos: nowNanos, effects: &effects)
            }
            counters.promiseFramesSent += 1
        }
        if repairsDue, configuration.canary != .ignoreNaks {
            emitPromiseModeRepairs(nowNanos: nowNanos, effects: &effects)
        } else if configuration.canary == .ignoreNaks {
            repairRuns.removeBelow(.max)
        }
        advanceDelivery(effects: &effects)
    }

    /// Promise mode: sends the queued messages now, in a data frame, and
    /// nothing else — no repairs, no suspicion checks, no deliveries (the
    /// next ``onTimeout(nowNanos:effects:)``, due at once, delivers). For a
    /// shell whose broadcasting thread sends without waiting for its agent.
    /// Returns whether a frame was written.
    public mutating func sendDataAtOnce(nowNanos: UInt64, effects: inout OrderingEffects) -> Bool {
        guard configuration.mode == .promises, pendingMessages > 0, !wedged, endRound == .max, !dataHeld,
            !keepBusy, !suspectsAnyone
        else { return false }
        let clockRound = configuration.schedule.round(atNanos: nowNanos)
        guard nowNanos >= configuration.schedule.slotWindow(round: configuration.firstRound, rank: 0).startNanos,
            dataMayLeave(nowNanos: nowNanos, clockRound: clockRound)
        else { return false }
        lastInputNanos = max(lastInputNanos, nowNanos)
        effects.reserveFrameBytes(configuration.maxFrameBytes)
        sendDataFrame(
            clockRound: clockRound, reach: configuration.effectivePromiseActiveLookaheadRounds, nowNanos: nowNanos,
            effects: &effects)
        deliveryDue = true
        return true
    }

    /// Rounds past its clock a member may stamp data: two lookaheads.
    var dataAheadRounds: UInt64 { 2 * configuration.effectivePromiseLookaheadRounds + 1 }

    /// Whether queued data may leave now: not wedged, not too far ahead of the
    /// clock, not within a round period of the last data frame (the window's
    /// hold-back, `dataHeld`, is the caller's to weigh).
    func dataMayLeave(nowNanos: UInt64, clockRound: UInt64) -> Bool {
        pendingMessages > 0 && !wedged && nextSendRound <= clockRound.addingClamped(dataAheadRounds) && nowNanos >= nextDataNanos
    }

    /// Sends the queued data in the first round it may take, promising `reach`
    /// rounds past the clock. The promise reaches past the clock, not past the
    /// stamp: stamps that leapfrog each other's promises would run away from
    /// the clock and then wait for it.
    private mutating func sendDataFrame(clockRound: UInt64, reach: UInt64, nowNanos: UInt64, effects: inout OrderingEffects) {
        let round = max(nextSendRound, clockRound, owedBelow > 0 ? owedBelow - 1 : 0)
        sendSlotFrame(
            round: round, allowData: true, promiseAheadThrough: clockRound.addingClamped(reach), nowNanos: nowNanos,
            effects: &effects)
    }

    /// Repair frames in promise mode carry the next round to send as theirs:
    /// every round they repair or declare silent lies below it.
    /// At most one batch per round period, whether or not it packed anything.
    ///
    /// A finished instance sends no more slot frames, so its next round to
    /// send stays where it wedged; its repair frames carry the current round
    /// instead, as a finished instance's do in slot mode. That round is what
    /// bounds the silence it relays for others (no receiver takes relayed
    /// silence past the relay's own round): a member still fetching the cut
    /// needs a failed sender's rounds up to the cut relayed as silent, and in
    /// promise mode the cut reaches past the round the relayer wedged at
    /// whenever that sender had promised silence ahead. With the frozen round
    /// those rounds could never be relayed, and the fetching member — of the
    /// decided view — excluded itself for want of them (membership seed 4334).
    private mutating func emitPromiseModeRepairs(nowNanos: UInt64, effects: inout OrderingEffects) {
        let round = isFinished ? max(nextSendRound, configuration.schedule.round(atNanos: nowNanos)) : nextSendRound
        emitRepairs(round: round, nowNanos: nowNanos, effects: &effects)
        lastRepairSentNanos = nowNanos
    }

    /// Sends this member's slot frame for `round` (data only when `allowData`)
    /// and moves its own position past it. A `round` below ``nextRoundToSend``
    /// restates the latest frame, which was empty: same round, fresh sections.
    private mutating func sendSlotFrame(
        round: UInt64, allowData: Bool, promiseAheadThrough: UInt64 = 0, nowNanos: UInt64, effects: inout OrderingEffects
    ) {
        var sentData = false
        let ahead = max(promiseAheadThrough, round)
        appendFrame(kind: .slot, round: round, to: &effects) { instance, buffer throws(WireError) in
            try instance.encodeSlotFrame(
                into: buffer, round: round, allowData: allowData, promiseAheadThrough: ahead,
                nowNanos: nowNanos, sentData: &sentData)
        }
        counters.slotFramesSent += 1
        lastFrameSentNanos = nowNanos
        dataHeld = allowData && !sentData && pendingMessages > 0 && !wedged
        guard round >= nextSendRound else { return }
        lastSentWasData = sentData
        if sentData {
            lastDataSentNanos = nowNanos
            if round + 1 > neededBelow { neededBelow = round + 1; neededSinceNanos = nowNanos }
        }
        // A data frame's promise ahead, if any, is part of it (see encodeSlotFrame).
        nextSendRound = (sentData ? ahead : round) + 1
        receivedBelow[rank] = nextSendRound
        heardBelow[rank] = nextSendRound
        if nextSendRound >= cutRound[rank] { receivedBelow[rank] = max(nextSendRound, endRound) }
        updateStability()
    }

    private mutating func encodeSlotFrame(
        into buffer: UnsafeMutableRawBufferPointer, round: UInt64, allowData: Bool, promiseAheadThrough: UInt64,
        nowNanos: UInt64, sentData: inout Bool
    ) throws(WireError) -> Int {
        var encoder = try FrameEncoder(
            buffer: buffer,
            header: FrameHeader(
                kind: .slot, senderRank: UInt16(rank), epoch: configuration.epoch, round: round,
                senderTimestampNanos: nowNanos))

        // Data only when there is room to keep the frame until it is stable,
        // and only in a round every member can buffer. A member's receive
        // window starts at its own stability line (or its frozen delivery
        // while wedged, which its reported position then stays at, see
        // below); members' lines differ by the reports each heard last, so
        // data stays within half a window of this member's line. A round
        // someone had to drop could keep it from ever holding a cut that
        // includes the round.
        if allowData, pendingMessages > 0, !wedged {
            if ownTail - ownHead < UInt64(windowRounds), round < stableBelow &+ UInt64(windowRounds / 2) {
                sentData = try encodeBatch(&encoder, round: round)
            } else {
                counters.dataHeldByWindow += 1
            }
        }

        // Our own position, counting this frame as sent.
        var ownBelow = round + 1
        for sender in 0..<memberCount where sender != rank { ownBelow = min(ownBelow, receivedBelow[sender]) }
        ownBelow = min(ownBelow, frozenBelow)
        try encoder.beginSection(.positions)
        try encoder.appendPosition(PositionEntry(rank: UInt16(rank), receivedBelowRound: ownBelow))
        try encoder.endSection()

        try encodeNaks(&encoder, nowNanos: nowNanos)

        // Our suspicions, restated in full in every frame.
        var suspicionsOpen = false
        for peer in 0..<memberCount where suspected[peer] {
            if !suspicionsOpen { try encoder.beginSection(.suspicions); suspicionsOpen = true }
            try encoder.appendSuspicion(Suspicion(rank: UInt16(peer), silentSinceRound: suspectedSince[peer]))
        }
        if suspicionsOpen { try encoder.endSection() }

        // What we saw of each peer's clock, so each can compute both directions.
        var clockOpen = false
        for peer in 0..<memberCount where peer != rank {
            guard let oneWay = clock.minOneWay(from: peer) else { continue }
            if !clockOpen { try encoder.beginSection(.clockSamples); clockOpen = true }
            try encoder.appendClockSample(ClockSample(rank: UInt16(peer), minOneWayNanos: oneWay))
        }
        if clockOpen { try encoder.endSection() }

        // Every frame restates the silent run before it, so losing empty frames
        // costs no NAK, and rounds slept through are declared in one entry.
        // Promise mode: a data frame may also promise silence past its round
        // (an empty frame promises by its round alone).
        let promisesAhead = sentData && promiseAheadThrough > round && configuration.mode == .promises
        if round > silentSinceRound || promisesAhead {
            try encoder.beginSection(.silentRounds)
            if round > silentSinceRound {
                try encoder.appendSilent(SilentRange(firstRound: silentSinceRound, lastRound: round - 1))
            }
            if promisesAhead { try encoder.appendSilent(SilentRange(firstRound: round + 1, lastRound: promiseAheadThrough)) }
            try encoder.endSection()
        }
        if sentData { silentSinceRound = round + 1 }
        return try encoder.finish(tagLength: configuration.tagLength)
    }

    /// Moves the longest prefix of queued messages that fits into the frame and the own store.
    private mutating func encodeBatch(_ encoder: inout FrameEncoder, round: UInt64) throws(WireError) -> Bool {
        var taken = 0
        var bytes = 0
        pending.withUnsafeBytes { queue in
            var offset = pendingHead
            while taken < pendingMessages, taken < configuration.maxBatchMessages {
                let length = Int(UInt32(littleEndian: queue.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self)))
                let entry = Wire.messageHeaderBytes + length
                guard bytes + entry <= batchBudgetBytes else { break }
                bytes += entry
                offset += entry
                taken += 1
            }
        }
        guard taken > 0 else { return false }
        let head = pendingHead
        let cell = ownCell(ownTail)
        try pending.withBytes { queue throws(WireError) in
            let batch = UnsafeRawBufferPointer(rebasing: queue[head..<(head + bytes)])
            try encoder.beginSection(.data)
            try encoder.appendEncodedMessages(batch, count: taken)
            try encoder.endSection()
            storeBytes.withUnsafeMutableBytes { store in
                (store.baseAddress! + cell * batchBudgetBytes).copyMemory(from: batch.baseAddress!, byteCount: bytes)
            }
        }
        storeRound[cell] = round
        storeHasData[cell] = true
        storeLength[cell] = bytes
        storeCount[cell] = taken
        storeRepairedNanos[cell] = 0
        ownTail += 1
        pendingHead += bytes
        pendingMessages -= taken
        if pendingMessages == 0 { pendingHead = 0; pendingTail = 0 }
        return true
    }

    /// NAKs every missing round that is due and not recently NAKed (by us or another member).
    private mutating func encodeNaks(_ encoder: inout FrameEncoder, nowNanos: UInt64) throws(WireError) {
        var written = 0
        var open = false
        let limit = configuration.maxNakRangesPerFrame
        let windowEnd = windowEnd
        let graceStart = nowNanos >= configuration.lossGraceNanos ? nowNanos - configuration.lossGraceNanos : 0
        // Senders in order of how far behind we are with them: the one holding
        // delivery and stability back is NAKed first, so another sender's many
        // gaps never starve it.
        for i in nakVisited.indices { nakVisited[i] = false }
        nakVisited[rank] = true
        for _ in 1..<memberCount where written < limit {
            var sender = -1
            for candidate in 0..<memberCount where !nakVisited[candidate] {
                if sender < 0 || receivedBelow[candidate] < receivedBelow[sender] { sender = candidate }
            }
            nakVisited[sender] = true
            let ended: UInt64
            switch configuration.mode {
            case .slots:
                // Late is not lost: a frame is NAKed by time only once its slot
                // ended longer ago than the sender's longest recent gap (a
                // descheduled sender's frames come late, not never); a gap
                // behind a later frame (`heardBelow`) is NAKed at once.
                let learned = arrivals.recentMaxGap(peer: sender, nowNanos: nowNanos)
                let start = learned > configuration.lossGraceNanos ? (nowNanos >= learned ? nowNanos - learned : 0) : graceStart
                ended = configuration.schedule.roundsEnded(rank: sender, atNanos: start)
            case .promises:
                // Nothing is expected by time: only rounds someone sent data in,
                // once the answer is overdue; after a decision, the whole cut.
                if endRound != .max {
                    ended = .max
                } else if wedged {
                    // A view change: every member must come to hold what any
                    // holds (the cut is chosen from them), as in slot mode.
                    ended = max(
                        configuration.schedule.roundsEnded(rank: sender, atNanos: graceStart),
                        cursorRound < neededBelow ? neededBelow : 0)
                } else {
                    ended = cursorRound < neededBelow && nowNanos >= neededSinceNanos &+ promiseNakGraceNanos ? neededBelow : 0
                }
            }
            // Capped at the window end: never ask for what we would drop. A
            // member that fell behind asks for one window at a time; long
            // silent stretches come with the sender's own slot frames. A
            // suspected sender's, while wedged and the cut undecided, reach
            // past it: a failed sender sends no more slot frames, and the
            // stability line it last reported holds every window still, so
            // its rounds past the window come only as relayed silence, which
            // is kept beyond the window — up to the first of its rounds whose
            // data was dropped here (that one cannot be taken, and asking for
            // it again would only bring it again).
            let uncapped = min(max(heardBelow[sender], ended), cutRound[sender])
            let reach =
                wedged && endRound == .max && suspected[sender] ? max(windowEnd, dataBeyondWindowFrom[sender]) : windowEnd
            let dueBelow = min(uncapped, reach)
            if dueBelow < uncapped, receivedBelow[sender] < uncapped { counters.naksClipped += 1 }
            var round = receivedBelow[sender]
            nakScratch.removeAll(keepingCapacity: true)
            while round < dueBelow, written + nakScratch.count < limit {
                if let runEnd = silentRuns[sender].end(containing: round) { round = runEnd + 1; continue }
                if round < windowEnd, storeRound[cell(sender, round)] == round { round += 1; continue }
                // A run of missing rounds starting at `round`, up to the next known round.
                let end = min(dueBelow, silentRuns[sender].nextStart(after: round))
                var last = round
                while last + 1 < end {
                    if last + 1 >= windowEnd { last = end - 1; break }
                    if storeRound[cell(sender, last + 1)] == last + 1 { break }
                    last += 1
                }
                nakScratch.append(NakRange(rank: UInt16(sender), firstRound: round, lastRound: last))
                round = last + 1
            }
            guard let highest = nakScratch.last?.lastRound else { nakActive[sender] = false; continue }
            // Send at once for a gap not asked for yet; repeat only after the
            // retry interval (a gap that merely grows, as behind a silent
            // member, waits for it too).
            let newGap = nakScratch.contains { $0.firstRound >= nakSentBelow[sender] }
            let retry = nowNanos >= nakSentNanos[sender] &+ configuration.nakRetryNanos
            guard !nakActive[sender] || retry || newGap else { continue }
            if !open { try encoder.beginSection(.naks); open = true }
            for nak in nakScratch { try encoder.appendNak(nak) }
            written += nakScratch.count
            nakActive[sender] = true
            nakSentNanos[sender] = nowNanos
            nakSentBelow[sender] = max(nakSentBelow[sender], highest + 1)
        }
        if open {
            try encoder.endSection()
            counters.naksSent += written
        }
    }

    // MARK: Failure detection

    /// How long `peer` may be silent at `nowNanos` before it is suspected:
    /// the floor — `max(suspicionSlots · roundPeriod, suspicionFloorNanos)` —
    /// or `suspicionGapFactor` times the longest gap between its frames in the
    /// last `suspicionHistoryNanos`, whichever is longer, but learning never
    /// goes above `suspicionCeilingNanos`. Nil when detection is off.
    public func suspicionThresholdNanos(for peer: Int, nowNanos: UInt64) -> UInt64? {
        guard configuration.suspicionSlots > 0, peer >= 0, peer < memberCount else { return nil }
        let period = configuration.schedule.roundPeriodNanos
        let floor = max(
            UInt64(configuration.suspicionSlots).multipliedReportingOverflow(by: period).partialValue,
            configuration.suspicionFloorNanos)
        var gap = arrivals.recentMaxGap(peer: peer, nowNanos: nowNanos)
        // Promise mode: an idle peer is heard once per heartbeat by design;
        // only lateness beyond that is learned, and the heartbeat is added.
        let heartbeat = configuration.mode == .promises ? configuration.effectivePromiseHeartbeatNanos : 0
        gap = gap > heartbeat ? gap - heartbeat : 0
        let (learned, overflow) = gap.multipliedReportingOverflow(by: UInt64(max(configuration.suspicionGapFactor, 0)))
        return heartbeat.addingClamped(max(floor, min(overflow ? .max : learned, configuration.suspicionCeilingNanos)))
    }

    /// Promise mode: since when `peer` has been silent (its last new frame, or
    /// the view's first round when never heard) and how long it may be.
    func silenceBasis(peer: Int, nowNanos: UInt64) -> (sinceNanos: UInt64, thresholdNanos: UInt64) {
        let last = arrivals.lastArrivalNanos(peer: peer)
        var threshold = suspicionThresholdNanos(for: peer, nowNanos: nowNanos) ?? .max
        guard last == 0 else { return (last, threshold) }
        let period = configuration.schedule.roundPeriodNanos
        let unheard = UInt64(max(configuration.unheardSuspicionSlots, 0)).multipliedReportingOverflow(by: period)
        threshold = max(threshold, unheard.overflow ? .max : unheard.partialValue)
        return (configuration.schedule.slotWindow(round: configuration.firstRound, rank: 0).startNanos, threshold)
    }

    /// The longest gap between any peer's frames in the recent past: what a
    /// next view's instance can start from (``inheritSuspicionHistory(from:nowNanos:)``).
    public func recentMaxArrivalGapNanos(nowNanos: UInt64) -> UInt64 { arrivals.recentMaxGap(nowNanos: nowNanos) }

    /// Starts this instance's failure detection from what `previous` (the
    /// last view's instance on this member) learned: every peer is first
    /// given the longest recent gap of any peer there. A host that was just
    /// descheduled long enough to cause a view change is likely to be again,
    /// and ranks change between views, so the memory carries over per host,
    /// not per peer. Call it right after creating the next view's instance.
    public mutating func inheritSuspicionHistory(from previous: OrderingInstance, nowNanos: UInt64) {
        let gap = previous.arrivals.recentMaxGap(nowNanos: nowNanos)
        guard gap > 0 else { return }
        for peer in 0..<memberCount where peer != rank { arrivals.record(peer: peer, gapNanos: gap, atNanos: nowNanos) }
    }

    /// A peer whose silence — rounds ended (plus the loss grace) with
    /// nothing heard for them: no frame and no statement covering them — has
    /// reached its threshold (`suspicionThresholdNanos`, in rounds) is
    /// suspected; hearing it again clears the suspicion. `raising: false`
    /// only clears (on a frame's arrival; suspicions are raised at slots).
    private mutating func updateSuspicions(nowNanos: UInt64, raising: Bool = true, effects: inout OrderingEffects) {
        guard configuration.suspicionSlots > 0 else { return }
        if configuration.mode == .promises {
            // Rounds say nothing about time here (promises run ahead of the
            // clock): a peer is suspected after its threshold in time with no
            // new frame at all.
            for peer in 0..<memberCount where peer != rank && (raising || suspected[peer]) {
                let (since, threshold) = silenceBasis(peer: peer, nowNanos: nowNanos)
                let silent = nowNanos >= since.addingClamped(threshold)
                if raising, silent, !suspected[peer] {
                    suspected[peer] = true
                    suspectedSince[peer] = heardBelow[peer]
                    counters.suspicionsRaised += 1
                    effects.membershipEvents.append(.suspected(rank: peer, silentSinceRound: heardBelow[peer]))
                } else if !silent, suspected[peer] {
                    suspected[peer] = false
                    counters.suspicionsCleared += 1
                    effects.membershipEvents.append(.cleared(rank: peer))
                }
            }
            return
        }
        let period = configuration.schedule.roundPeriodNanos
        let graceStart = nowNanos >= configuration.lossGraceNanos ? nowNanos - configuration.lossGraceNanos : 0
        for peer in 0..<memberCount where peer != rank && (raising || suspected[peer]) {
            let ended = configuration.schedule.roundsEnded(rank: peer, atNanos: graceStart)
            // Rounds of the view that ended with nothing at all heard for them.
            let silentFrom = max(heardBelow[peer], configuration.firstRound)
            let silent = ended > silentFrom ? ended - silentFrom : 0
            let nanos = suspicionThresholdNanos(for: peer, nowNanos: nowNanos) ?? .max
            let slots = nanos / period + (nanos % period == 0 ? 0 : 1)
            let threshold =
                heardBelow[peer] > configuration.firstRound
                ? slots : max(slots, UInt64(max(configuration.unheardSuspicionSlots, 0)))
            if raising, silent >= threshold, !suspected[peer] {
                suspected[peer] = true
                suspectedSince[peer] = silentFrom
                counters.suspicionsRaised += 1
                effects.membershipEvents.append(.suspected(rank: peer, silentSinceRound: silentFrom))
            } else if silent < threshold, suspected[peer] {
                suspected[peer] = false
                counters.suspicionsCleared += 1
                effects.membershipEvents.append(.cleared(rank: peer))
            }
        }
    }

    // MARK: Repair

    private mutating func emitRepairs(round: UInt64, nowNanos: UInt64, effects: inout OrderingEffects) {
        var built = 0
        // Rounds below the stability line are held by everyone: a NAK for them is stale.
        repairRuns.removeBelow(stableBelow)
        while !repairRuns.isEmpty, built < configuration.maxRepairFramesPerSlot {
            let packed = appendFrame(kind: .repair, round: round, to: &effects) { instance, buffer throws(WireError) in
                try instance.encodeRepairFrame(into: buffer, round: round, nowNanos: nowNanos)
            }
            guard packed else { break }
            counters.repairFramesSent += 1
            built += 1
        }
        guard wedged, !anchorFollowsCursor else { return }
        for target in 0..<memberCount where target != rank {
            relayRuns[target].removeBelow(stableBelow)
            while !relayRuns[target].isEmpty, built < 2 * configuration.maxRepairFramesPerSlot {
                let packed = appendFrame(kind: .repair, round: round, to: &effects) { instance, buffer throws(WireError) in
                    try instance.encodeRelayFrame(into: buffer, target: target, round: round, nowNanos: nowNanos)
                }
                guard packed else { relayRuns[target].removeBelow(.max); break }
                counters.repairFramesSent += 1
                counters.framesRelayed += 1
                built += 1
            }
        }
    }

    /// Packs another member's requested rounds that this member holds: frames
    /// with data embedded under their sender's rank, rounds known silent as
    /// relayed-silence ranges. Rounds not held are dropped from the request.
    private mutating func encodeRelayFrame(
        into buffer: UnsafeMutableRawBufferPointer, target: Int, round: UInt64, nowNanos: UInt64
    ) throws(WireError) -> Int {
        var encoder = try FrameEncoder(
            buffer: buffer,
            header: FrameHeader(
                kind: .repair, senderRank: UInt16(rank), epoch: configuration.epoch, round: round,
                senderTimestampNanos: nowNanos))
        relayScratch.removeAll(keepingCapacity: true)
        let silentLimit = configuration.maxSilentRangesPerRepair
        let reserveForSilent = Wire.sectionHeaderBytes + Wire.nakEntryBytes * silentLimit + configuration.tagLength
        var embedded = 0
        var full = false
        let known = receivedBelow[target]
        try encoder.beginSection(.retransmissions)
        while !full, let run = relayRuns[target].first {
            var next = max(run.lowerBound, stableBelow)
            while next <= run.upperBound {
                let cell = cell(target, next)
                let stored = next < windowEnd && storeRound[cell] == next
                if stored, storeHasData[cell] {
                    let length = storeLength[cell]
                    let needed = Wire.retransmissionEntryHeaderBytes + Wire.headerBytes + Wire.sectionHeaderBytes + length
                    guard encoder.remainingBytes - reserveForSilent >= needed else { full = true; break }
                    try embedStoredFrame(&encoder, sender: target, round: next, cell: cell)
                    embedded += 1
                    next += 1
                    continue
                }
                // Below our received line and not stored with data: silent (data
                // frames at or above the stability line are never overwritten).
                // Beyond it: only what a silent run says.
                // What we relay as silent never reaches past our own round.
                guard next <= round else { next = run.upperBound.addingClamped(1); break }
                var last: UInt64
                if next < known {
                    last = next
                    while last + 1 < known, last + 1 <= run.upperBound {
                        let c = self.cell(target, last + 1)
                        if last + 1 < windowEnd, storeRound[c] == last + 1, storeHasData[c] { break }
                        last += 1
                    }
                } else if let end = silentRuns[target].end(containing: next) {
                    last = min(end, run.upperBound)
                } else {
                    next = run.upperBound.addingClamped(1)  // not held here: someone else may answer
                    break
                }
                last = min(last, round)
                guard relayScratch.count < silentLimit else { full = true; break }
                relayScratch.append(NakRange(rank: UInt16(target), firstRound: next, lastRound: last))
                next = last + 1
            }
            relayRuns[target].removeBelow(next)
        }
        try encoder.endSection()
        if !relayScratch.isEmpty {
            try encoder.beginSection(.relayedSilence)
            for range in relayScratch { try encoder.appendRelayedSilence(range) }
            try encoder.endSection()
        }
        guard embedded > 0 || !relayScratch.isEmpty else { return 0 }
        counters.framesRetransmitted += embedded
        counters.silentRangesSent += relayScratch.count
        return try encoder.finish(tagLength: configuration.tagLength)
    }

    /// Embeds the stored data frame of `sender`'s `round` (held in `cell`) in the
    /// open retransmission section: own repairs and relays alike.
    private func embedStoredFrame(
        _ encoder: inout FrameEncoder, sender: Int, round: UInt64, cell: Int
    ) throws(WireError) {
        var inner = try encoder.beginEmbeddedFrame(
            header: FrameHeader(
                kind: .slot, senderRank: UInt16(sender), epoch: configuration.epoch,
                round: round, senderTimestampNanos: 0))
        try inner.beginSection(.data)
        let base = cell * batchBudgetBytes
        let length = storeLength[cell]
        try storeBytes.withBytes { store throws(WireError) in
            try inner.appendEncodedMessages(
                UnsafeRawBufferPointer(rebasing: store[base..<(base + length)]),
                count: storeCount[cell])
        }
        try inner.endSection()
        try encoder.endEmbeddedFrame(inner)
    }

    /// Encodes one frame into the next `maxFrameBytes` of the effects and lists it
    /// for sending. `encode` returns the frame's length, 0 for "nothing to send".
    /// Returns whether a frame was added. The limits are computed so frames
    /// always fit: an encoding error is a bug in that arithmetic, and traps.
    @discardableResult
    private mutating func appendFrame(
        kind: FrameKind, round: UInt64, to effects: inout OrderingEffects,
        _ encode: (inout OrderingInstance, UnsafeMutableRawBufferPointer) throws(WireError) -> Int
    ) -> Bool {
        let start = effects.frameBytesUsed
        let frameBytes = configuration.maxFrameBytes
        let length: Int = effects.frameBytes.withUnsafeMutableBytes { all in
            let buffer = UnsafeMutableRawBufferPointer(rebasing: all[start..<(start + frameBytes)])
            do throws(WireError) { return try encode(&self, buffer) } catch {
                preconditionFailure("\(kind) frame exceeded its computed budget: \(error)")
            }
        }
        guard length > 0 else { return false }
        effects.frames.append(.init(offset: start, length: length, kind: kind, round: round))
        effects.frameBytesUsed += length
        return true
    }

    /// Packs requested own rounds, earliest first, until the frame is full: kept
    /// data frames embedded whole, rounds without data as silent ranges.
    /// Returns 0 when nothing was packed.
    private mutating func encodeRepairFrame(
        into buffer: UnsafeMutableRawBufferPointer, round: UInt64, nowNanos: UInt64
    ) throws(WireError) -> Int {
        var encoder = try FrameEncoder(
            buffer: buffer,
            header: FrameHeader(
                kind: .repair, senderRank: UInt16(rank), epoch: configuration.epoch, round: round,
                senderTimestampNanos: nowNanos))
        silentScratch.removeAll(keepingCapacity: true)
        let silentLimit = configuration.maxSilentRangesPerRepair
        let reserveForSilent = Wire.sectionHeaderBytes + Wire.silentEntryBytes * silentLimit + configuration.tagLength
        var embedded = 0
        var full = false
        try encoder.beginSection(.retransmissions)
        // No receiver's window reaches past our own received-below round plus
        // the window (its stability line is at most the position we report).
        let takeableBelow = receivedBelow.min()!.addingClamped(UInt64(windowRounds))
        // At most once per NAK retry interval (less a quarter, for clock jitter).
        let holdoff = configuration.nakRetryNanos - configuration.nakRetryNanos / 4
        while !full, let run = repairRuns.first {
            var next = run.lowerBound
            while next <= run.upperBound {
                // Every own data frame at or above the stability line is kept, so a
                // round without a kept frame was silent.
                let frame = ownFrame(atOrAfter: next)
                let cell = ownCell(frame)
                if frame < ownTail, storeRound[cell] == next {
                    guard next < takeableBelow else {
                        // Nobody can take it: drop the rest of the request.
                        counters.repairsSuppressed += 1
                        next = run.upperBound + 1
                        break
                    }
                    // Resent moments ago (another member asked for it too): once is enough.
                    if storeRepairedNanos[cell] != 0, nowNanos < storeRepairedNanos[cell] &+ holdoff,
                        nowNanos >= storeRepairedNanos[cell]
                    {
                        counters.repairsSuppressed += 1
                        next += 1
                        continue
                    }
                    let length = storeLength[cell]
                    let needed = Wire.retransmissionEntryHeaderBytes + Wire.headerBytes + Wire.sectionHeaderBytes + length
                    guard encoder.remainingBytes - reserveForSilent >= needed else { full = true; break }
                    try embedStoredFrame(&encoder, sender: rank, round: next, cell: cell)
                    storeRepairedNanos[cell] = nowNanos
                    embedded += 1
                    next += 1
                } else {
                    // A silent run: up to the next kept data frame (or the end of the request).
                    guard silentScratch.count < silentLimit else { full = true; break }
                    let last = frame < ownTail ? min(run.upperBound, storeRound[cell] - 1) : run.upperBound
                    silentScratch.append(SilentRange(firstRound: next, lastRound: last))
                    next = last + 1
                }
            }
            // The asker stops its NAKs at its window end; when our rounds after
            // the request carried no data up to a later data frame (or up to now),
            // say so: silent rounds are taken beyond the window, and a member
            // that fell behind skips the stretch without asking round by round.
            if !full, next == run.upperBound &+ 1, next < nextSendRound, repairRuns.end(containing: next) == nil {
                let frame = ownFrame(atOrAfter: next)
                // (Up to the last round before this one: the slot frame just sent speaks for itself.)
                let dataRound = frame < ownTail ? storeRound[ownCell(frame)] : nextSendRound - 1
                if dataRound > next {
                    if let lastRange = silentScratch.last, lastRange.lastRound &+ 1 == next {
                        silentScratch[silentScratch.count - 1].lastRound = dataRound - 1
                    } else if silentScratch.count < silentLimit {
                        silentScratch.append(SilentRange(firstRound: next, lastRound: dataRound - 1))
                    }
                }
            }
            repairRuns.removeBelow(next)
        }
        try encoder.endSection()
        if !silentScratch.isEmpty {
            try encoder.beginSection(.silentRounds)
            for range in silentScratch { try encoder.appendSilent(range) }
            try encoder.endSection()
        }
        guard embedded > 0 || !silentScratch.isEmpty else { return 0 }
        counters.framesRetransmitted += embedded
        counters.silentRangesSent += silentScratch.count
        return try encoder.finish(tagLength: configuration.tagLength)
    }

    // MARK: Input: frames

    /// Takes in one received datagram (authenticated by the shell, if keys are on).
    ///
    /// - Parameters:
    ///   - nowNanos: the time on the view's timebase as the shell reads it for this batch.
    ///   - arrivalNanos: when the datagram arrived, on the same timebase, if the
    ///     shell knows it more precisely than `nowNanos` (a kernel receive
    ///     timestamp). Only clock estimation uses it: the time a frame waited
    ///     in the socket for a parked agent is not network delay, and leaving
    ///     it in skews the min-filter by each side's wake-up latency.
    @discardableResult
    public mutating func onFrameReceived(
        _ bytes: UnsafeRawBufferPointer, nowNanos: UInt64, arrivalNanos: UInt64? = nil, effects: inout OrderingEffects
    ) -> FrameDisposition {
        counters.framesReceived += 1
        lastInputNanos = max(lastInputNanos, nowNanos)
        let frame: FrameView
        do { frame = try FrameView.decode(bytes) } catch {
            counters.malformedFrames += 1
            return .malformed(error)
        }
        let header = frame.header
        guard header.epoch == configuration.epoch else { counters.wrongEpochFrames += 1; return .ignored }
        let sender = Int(header.senderRank)
        guard sender < memberCount else { counters.unknownSenderFrames += 1; return .ignored }
        guard sender != rank else { return .ignored }
        // Every round from the wire is range-checked before use.
        let roundLimit = plausibleRoundLimit(nowNanos: nowNanos)
        if header.kind != .membership, header.round >= roundLimit {
            counters.implausibleRounds += 1
            return .ignored
        }
        // Failure detection learns the gaps between a peer's new frames (not replays of old rounds).
        if header.round &+ 1 >= heardBelow[sender] { arrivals.observe(peer: sender, nowNanos: nowNanos) }

        var disposition = FrameDisposition.accepted
        switch header.kind {
        case .membership:
            // The membership layer's; it never hands them here.
            return .ignored
        case .slot:
            clock.observe(peer: sender, sentNanos: header.senderTimestampNanos, receivedNanos: arrivalNanos ?? nowNanos)
            for sample in frame.clockSampleEntries where Int(sample.rank) == rank {
                clock.peerReported(sender, minOneWayNanos: sample.minOneWayNanos)
            }
            // A slot frame restates its sender's suspicions in full; older frames say less.
            if header.round + 1 >= heardBelow[sender] {
                let row = sender * memberCount
                for target in 0..<memberCount { suspicionHeard[row + target] = false }
                for suspicion in frame.suspicionEntries where Int(suspicion.rank) < memberCount {
                    suspicionHeard[row + Int(suspicion.rank)] = true
                }
            }
            // Late, not lost: a new frame arriving after its slot plus the grace.
            if configuration.mode == .slots, header.round >= receivedBelow[sender],
                nowNanos > configuration.schedule.slotWindow(round: header.round, rank: sender).endNanos &+ configuration.lossGraceNanos
            {
                counters.lateFrames += 1
            }
            disposition = acceptFrame(
                from: sender, round: header.round, batch: frame.dataBatchBytes,
                count: frame.messageCount, nowNanos: nowNanos, effects: &effects)
        case .repair:
            disposition = .duplicate
            for embedded in frame.embeddedFrames {
                // Validated with the outer frame, so this cannot fail. Frames of
                // another member are relays during a view change.
                guard let inner = try? FrameView.decode(embedded), inner.header.epoch == header.epoch,
                    Int(inner.header.senderRank) < memberCount
                else { counters.foreignEmbeddedFrames += 1; continue }
                let origin = Int(inner.header.senderRank)
                guard origin != rank else { continue }
                guard inner.header.round < roundLimit else { counters.implausibleRounds += 1; continue }
                if acceptFrame(
                    from: origin, round: inner.header.round, batch: inner.dataBatchBytes,
                    count: inner.messageCount, nowNanos: nowNanos, effects: &effects) == .accepted
                {
                    disposition = .accepted
                }
            }
            // Relayed silence reaches at most the relayer's own round: it cannot
            // know another member's rounds that have not happened yet.
            for relayed in frame.relayedSilentRanges where Int(relayed.rank) < memberCount && Int(relayed.rank) != rank {
                let range = SilentRange(firstRound: relayed.firstRound, lastRound: relayed.lastRound)
                if acceptSilentRanges(CollectionOfOne(range), from: Int(relayed.rank), frameRound: header.round + 1) {
                    disposition = .accepted
                }
            }
        }
        // A repair frame is accepted when it taught anything; a slot frame's
        // disposition is its own round's, whatever its silent ranges added.
        let aheadBelow = header.kind == .slot && configuration.mode == .promises ? roundLimit : 0
        if acceptSilentRanges(frame.silentRanges, from: sender, frameRound: header.round, aheadBelow: aheadBelow),
            header.kind == .repair
        {
            disposition = .accepted
        }
        acceptPositions(frame.positionEntries, from: sender)
        acceptNaks(frame.nakRanges, from: sender, nowNanos: nowNanos, roundLimit: roundLimit)
        if disposition == .accepted { counters.framesAccepted += 1 }
        // A suspect heard again is cleared at once, not at our next slot: a
        // proposer choosing meanwhile must not leave it out.
        if suspectsAnyone { updateSuspicions(nowNanos: nowNanos, raising: false, effects: &effects) }
        advanceDelivery(effects: &effects)
        return disposition
    }

    /// Another member sent data in `round`: our frames must cover it (promise
    /// mode answers at once), and delivery waits for everyone's.
    private mutating func noteData(round: UInt64, nowNanos: UInt64) {
        owedBelow = max(owedBelow, round.addingClamped(1))
        if round.addingClamped(1) > neededBelow {
            neededBelow = round.addingClamped(1)
            neededSinceNanos = nowNanos
        }
    }

    private mutating func acceptFrame(
        from sender: Int, round: UInt64, batch: UnsafeRawBufferPointer, count: Int, nowNanos: UInt64,
        effects: inout OrderingEffects
    ) -> FrameDisposition {
        if round < UInt64.max { heardBelow[sender] = max(heardBelow[sender], round + 1) }
        let cell = cell(sender, round)
        if round < receivedBelow[sender] || storeRound[cell] == round {
            counters.duplicateFrames += 1
            if configuration.canary == .redeliverDuplicates, count > 0 {
                deliverBatch(batch, count: count, sender: sender, round: round, effects: &effects, checkSequence: false)
            }
            if round >= receivedBelow[sender], !storeHasData[cell], count > 0 { counters.conflictingFrames += 1 }
            return .duplicate
        }
        guard round < windowEnd else {
            // An empty frame needs no buffer: remember it as a silent round.
            if count == 0 {
                learnSilentRun(sender, first: round, last: round)
                advanceReceived(sender)
                return .accepted
            }
            counters.framesBeyondWindow += 1
            dataBeyondWindowFrom[sender] = min(dataBeyondWindowFrom[sender], round)
            return .beyondWindow
        }
        guard batch.count <= batchBudgetBytes else {
            counters.oversizedBatches += 1
            return .ignored
        }
        if batch.count > 0 {
            storeBytes.withUnsafeMutableBytes { store in
                (store.baseAddress! + cell * batchBudgetBytes).copyMemory(from: batch.baseAddress!, byteCount: batch.count)
            }
        }
        storeRound[cell] = round
        storeHasData[cell] = count > 0
        storeLength[cell] = batch.count
        storeCount[cell] = count
        if count > 0 { noteData(round: round, nowNanos: nowNanos) }
        if configuration.canary == .deliverOnArrival, count > 0 {
            deliverBatch(batch, count: count, sender: sender, round: round, effects: &effects, checkSequence: true)
        }
        advanceReceived(sender)
        return .accepted
    }

    /// Marks a sender's silent rounds as received-empty. Returns whether any was new.
    private mutating func acceptSilentRanges<Ranges: Sequence<SilentRange>>(
        _ ranges: Ranges, from sender: Int, frameRound: UInt64, aheadBelow: UInt64 = 0
    ) -> Bool {
        var any = false
        let windowEnd = windowEnd
        for range in ranges {
            // A member can only declare rounds before the frame's own round
            // silent — or, in promise mode, promise rounds after it (below
            // `aheadBelow`, the plausible limit).
            let before = range.lastRound < frameRound
            let ahead = range.firstRound > frameRound && range.lastRound < aheadBelow && range.firstRound <= range.lastRound
            guard before || ahead else { counters.invalidSilentRanges += 1; continue }
            heardBelow[sender] = max(heardBelow[sender], range.lastRound + 1)
            if learnSilentRun(sender, first: range.firstRound, last: range.lastRound) { any = true }
            var round = max(range.firstRound, receivedBelow[sender])
            while round <= range.lastRound, round < windowEnd {
                let cell = cell(sender, round)
                if storeRound[cell] != round {
                    storeRound[cell] = round
                    storeHasData[cell] = false
                    storeLength[cell] = 0
                    storeCount[cell] = 0
                    any = true
                } else if storeHasData[cell] {
                    counters.conflictingFrames += 1
                }
                round += 1
            }
        }
        if any { advanceReceived(sender) }
        return any
    }

    private mutating func acceptPositions(_ entries: FixedEntrySequence<PositionEntry>, from sender: Int) {
        var changed = false
        for entry in entries where Int(entry.rank) == sender {
            // Nobody can have received our rounds we have not sent.
            guard entry.receivedBelowRound <= nextSendRound else { counters.implausiblePositions += 1; continue }
            if entry.receivedBelowRound > reportedBelow[sender] {
                reportedBelow[sender] = entry.receivedBelowRound
                changed = true
            }
        }
        if changed { updateStability() }
    }

    private mutating func acceptNaks(
        _ naks: FixedEntrySequence<NakRange>, from sender: Int, nowNanos: UInt64, roundLimit: UInt64
    ) {
        // A NAK lists its sender's missing rounds of us from its received-below
        // round on, and its window ends at most `windowRounds` past that: the
        // first range bounds what it can take.
        var takeableBelow = UInt64.max
        for nak in naks {
            let target = Int(nak.rank)
            if target == rank {
                counters.naksReceived += 1
                guard nextSendRound > 0, nak.firstRound <= nak.lastRound else { counters.staleNaks += 1; continue }
                if takeableBelow == .max { takeableBelow = nak.firstRound.addingClamped(UInt64(windowRounds)) }
                let first = max(nak.firstRound, stableBelow)
                var last = min(nak.lastRound, nextSendRound - 1)
                if last >= takeableBelow {
                    counters.repairsSuppressed += 1
                    last = takeableBelow - 1
                }
                guard first <= last else { counters.staleNaks += 1; continue }
                repairRuns.insert(first, last)
            } else if target < memberCount, wedged, !anchorFollowsCursor, nak.lastRound >= stableBelow {
                // During a view change, answer for any member from what we hold
                // (nobody holds rounds past the plausible limit).
                let first = max(nak.firstRound, stableBelow)
                let last = min(nak.lastRound, roundLimit - 1)
                if nak.lastRound > last { counters.implausibleRounds += 1 }
                if first <= last { relayRuns[target].insert(first, last) }
            } else if target < memberCount, nakActive[target] || receivedBelow[target] < heardBelow[target] {
                // Someone else asked for what we miss too: hold ours back one retry interval.
                let missing = receivedBelow[target]
                if nak.firstRound <= missing, missing <= nak.lastRound {
                    nakActive[target] = true
                    nakSentNanos[target] = nowNanos
                    nakSentBelow[target] = max(nakSentBelow[target], min(nak.lastRound &+ 1, heardBelow[target]))
                    counters.naksSuppressed += 1
                }
            }
        }
    }

    /// Adds `first...last` to the sender's known-silent runs. Returns whether it
    /// taught anything about rounds not yet received.
    @discardableResult
    private mutating func learnSilentRun(_ sender: Int, first: UInt64, last: UInt64) -> Bool {
        let below = receivedBelow[sender]
        guard last >= below else { return false }
        silentRuns[sender].removeBelow(below)
        return silentRuns[sender].insert(max(first, below), last)
    }

    private mutating func advanceReceived(_ sender: Int) {
        var below = receivedBelow[sender]
        while true {
            if storeRound[cell(sender, below)] == below { below += 1; continue }
            if let end = silentRuns[sender].end(containing: below) { below = end + 1; continue }
            break
        }
        if below >= cutRound[sender] { below = max(below, endRound) }
        if below != receivedBelow[sender] {
            receivedBelow[sender] = below
            updateStability()
        }
    }

    /// While wedged, delivery stops below the rounds received at the wedge, and
    /// so does this member's receive window: its reported position stays there,
    /// so that no member sends data in rounds it could not buffer. `.max` otherwise.
    var frozenBelow: UInt64 { wedged && endRound == .max ? deliverBelow.min()! : .max }

    private mutating func updateStability() {
        var line = min(receivedBelow.min()!, frozenBelow)
        reportedBelow[rank] = line
        for member in 0..<memberCount where member != rank { line = min(line, reportedBelow[member]) }
        stableBelow = max(stableBelow, line)
        releaseOwnFrames()
    }

    // MARK: Delivery

    private mutating func advanceDelivery(effects: inout OrderingEffects) {
        guard !deliveryHeld else { return }
        while cursorRound < receivedBelow[cursorSlot], cursorRound < deliverBelow[cursorSlot] {
            if configuration.deliveryMode == .safe, cursorRound >= stableBelow, endRound == .max { break }
            var cell = cell(cursorSlot, cursorRound)
            if cursorSlot == rank { cell = ownCell(ownFrame(atOrAfter: cursorRound)) }
            if storeRound[cell] == cursorRound, storeHasData[cell], cursorRound < cutRound[cursorSlot],
                configuration.canary != .deliverOnArrival
            {
                let base = cell * batchBudgetBytes
                let length = storeLength[cell]
                let count = storeCount[cell]
                let sender = cursorSlot, round = cursorRound
                storeBytes.withUnsafeBytes { store in
                    deliverBatch(
                        UnsafeRawBufferPointer(rebasing: store[base..<(base + length)]), count: count,
                        sender: sender, round: round, effects: &effects, checkSequence: true)
                }
            }
            cursorSlot += 1
            if cursorSlot == memberCount {
                cursorSlot = 0
                cursorRound += 1
                releaseOwnFrames()
            }
        }
    }

    private mutating func deliverBatch(
        _ batch: UnsafeRawBufferPointer, count: Int, sender: Int, round: UInt64, effects: inout OrderingEffects,
        checkSequence: Bool
    ) {
        var index = 0
        for message in MessageSequence(validatedBatch: batch, count: count) {
            defer { index += 1 }
            if checkSequence {
                let expected = nextDeliverSequence[sender]
                if message.sequence < expected { counters.duplicateMessages += 1; continue }
                if message.sequence > expected { counters.sequenceGaps += 1 }
                nextDeliverSequence[sender] = message.sequence &+ 1
            }
            effects.appendDelivery(
                epoch: configuration.epoch, sender: sender, sequence: message.sequence, round: round, index: index,
                payload: message.payload)
            counters.messagesDelivered += 1
        }
    }
}

extension Array where Element == UInt8 {
    /// `withUnsafeBytes` that keeps a typed error typed.
    @inline(__always)
    func withBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        let result: Result<R, E> = withUnsafeBytes { bytes in
            do throws(E) { return .success(try body(bytes)) } catch { return .failure(error) }
        }
        return try result.get()
    }
}

extension OrderingInstance: CustomDebugStringConvertible {
    /// The instance's positions, for logs and failing simulator seeds.
    public var debugDescription: String {
        "rank \(rank): next send \(nextSendRound), cursor (\(cursorRound),\(cursorSlot)), stable below \(stableBelow), "
            + "received below \(receivedBelow), heard below \(heardBelow), reported \(reportedBelow), "
            + "pending \(pendingMessages), repair \(repairRuns.first.map { "from \($0)" } ?? "none")"
    }
}

extension UInt64 {
    /// `self + other`, stopping at `.max` instead of trapping: for rounds and
    /// times derived from values on the wire.
    @inline(__always)
    func addingClamped(_ other: UInt64) -> UInt64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? .max : sum
    }
}
