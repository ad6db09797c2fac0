import CarillonSchedule
import CarillonWire

/// When a message is handed to the application.
public enum DeliveryMode: String, Sendable, CaseIterable {
    /// As soon as every earlier slot of the view has arrived: total order, one
    /// network traversal after the sender's slot.
    case agreed
    /// Additionally only once every member has received the message's round
    /// (below the stability line): a delivered message survives any single failure.
    case safe
}

/// When a member may send its frame for a round (docs/protocol.md §15).
public enum OrderingMode: String, Sendable, CaseIterable {
    /// Time division: every member sends one frame per round, in its own slot,
    /// whether it has anything to say or not. A message waits for its
    /// sender's next slot (half a round on average).
    case slots
    /// Send at once with promises: a member sends a frame when it has data —
    /// at once, for the current round (or the first round past its own
    /// promises) — and otherwise only to promise silence: "nothing from me
    /// before round r". A frame for a future round is such a promise. An idle
    /// member promises a few milliseconds ahead and speaks once per heartbeat;
    /// a member that hears data for a round it has not promised answers at
    /// once. The order is the same `(round, slot, index)` key as in slot mode,
    /// and a round is delivered once every member's frames cover it, so
    /// clocks decide only when frames leave, never what is delivered.
    case promises
}

/// The limits and timing of one member's ordering instance. Every limit is
/// fixed at start; memory is allocated once, in ``OrderingInstance/init(configuration:)``.
public struct OrderingConfiguration: Sendable {
    /// This member's rank (and slot) in the view.
    public var rank: Int
    /// The view's TDMA schedule; its member count is the view's size.
    public var schedule: TDMASchedule
    /// The view's epoch; frames of other epochs are ignored.
    public var epoch: UInt32 = 1
    /// The most members any view of this cluster can have (for example its
    /// node count); defaults to this view's size. ``maxPayloadBytes`` is sized
    /// for it, so a message queued in this view fits a frame of every later
    /// view up to this size: one `broadcast` accepted is never dropped at a
    /// view change. Every view of a cluster should use the same value.
    public var maxMemberCount: Int
    /// Agreed or safe delivery.
    public var deliveryMode: DeliveryMode = .agreed
    /// Largest datagram this member sends (slot frames and repair frames alike).
    public var maxFrameBytes: Int = 1472
    /// Rounds of other members' frames buffered ahead of the delivery cursor,
    /// and own data frames kept for retransmission until they are stable. Bounds
    /// memory at `memberCount · windowRounds · batchBudgetBytes` bytes. For full
    /// throughput it must exceed the stability lag in rounds (about two one-way
    /// latencies plus a round, twice that in safe mode); below it the bus still
    /// delivers, throttled by NAK round trips.
    public var windowRounds: Int = 256
    /// Bytes of messages queued for future slots before `broadcast` pushes back.
    public var sendBufferBytes: Int = 1 << 18
    /// Most messages in one frame's batch.
    public var maxBatchMessages: Int = 1024
    /// Most NAK ranges in one frame.
    public var maxNakRangesPerFrame: Int = 8
    /// Most silent ranges in one repair frame.
    public var maxSilentRangesPerRepair: Int = 8
    /// Most repair frames sent after one slot frame.
    public var maxRepairFramesPerSlot: Int = 4
    /// Time after a sender's slot ends before its missing frame counts as lost.
    public var lossGraceNanos: UInt64
    /// Time before a NAK for the same gap is repeated.
    public var nakRetryNanos: UInt64
    /// A member from which nothing was heard for this many consecutive slots
    /// (each past its slot end plus `lossGraceNanos`) is suspected — or for
    /// longer, see `suspicionFloorNanos` and `suspicionGapFactor`. 0 turns
    /// failure detection off. Suspicion is an observation, not a verdict: it
    /// is cleared as soon as the member is heard again.
    public var suspicionSlots: Int = 20
    /// The least silence, in time, before a member is suspected, whatever the
    /// round period: the threshold is never below `max(suspicionSlots ·
    /// roundPeriod, suspicionFloorNanos)`. 3 ms by default: longer than the
    /// wake-up delays of a member at normal priority on a quiet 2-vCPU host
    /// (which 20 slots, 2 ms, were not), short enough that `kill -9` → new
    /// view stays near 5 ms at 100 µs rounds (docs/protocol.md §14).
    public var suspicionFloorNanos: UInt64 = 3_000_000
    /// Adaptive part: the threshold is at least this many times the longest
    /// gap between the member's frames seen in the last `suspicionHistoryNanos`
    /// (a member descheduled for 8 ms now and then is given 24 ms: stalls on a
    /// loaded host vary by more than 2× from one to the next). 0 turns
    /// learning off.
    public var suspicionGapFactor: Int = 3
    /// How long a learned gap is remembered (a loaded host stays loaded for a
    /// while; 16 s forgot a burst and the next one was a false suspicion).
    public var suspicionHistoryNanos: UInt64 = 60_000_000_000
    /// Learning never raises the threshold above this (a dead member is still
    /// suspected within it, however unsteady it was before).
    public var suspicionCeilingNanos: UInt64 = 500_000_000
    /// Slots of silence before a member never heard in this view is suspected
    /// (members of a new view start at slightly different times). At least
    /// `suspicionSlots`.
    public var unheardSuspicionSlots: Int = 200
    /// When frames leave: slot by slot, or at once with promises.
    public var mode: OrderingMode = .slots
    /// Promise mode: an idle member's frames promise silence this many rounds
    /// past its clock's round (0: derived, two heartbeats' worth of rounds).
    /// A member that hears data promises it answers only up to that data's
    /// round, so the other members' first message after a silence is not
    /// pushed this far out.
    public var promiseLookaheadRounds: Int = 0
    /// Promise mode: a member that is not idle promises silence this many
    /// rounds past each frame it sends, data frames included (0: derived,
    /// 500 µs worth of rounds, at most the idle lookahead). Other members'
    /// data then mostly falls inside its promise and is delivered on arrival
    /// instead of waiting for its answer; its own next message is stamped
    /// past it, which costs no time (stamps are not waits).
    public var promiseActiveLookaheadRounds: Int = 0
    /// Promise mode: an idle member sends a frame at least this often (its
    /// heartbeat: failure detection, clock samples, positions).
    public var promiseHeartbeatNanos: UInt64 = 3_000_000
    /// Promise mode: a member that sent no data for this long is idle and
    /// promises ``effectivePromiseLookaheadRounds`` ahead.
    public var promiseIdleAfterNanos: UInt64 = 2_000_000
    /// Room left at the end of every frame for an authentication tag.
    public var tagLength: Int = 0
    /// The view's first round.
    public var firstRound: UInt64 = 0
    /// The link rate, when known: `validate()` then checks that a maximum-size
    /// frame fits one slot's send window. Repair frames follow the slot frame
    /// and may spill past it (they are rare and bounded by `maxRepairFramesPerSlot`).
    public var linkBitsPerSecond: UInt64? = nil
    /// A deliberately broken variant, for showing the checkers can fail. Never set outside tests.
    @_spi(Canary) public var canary: OrderingCanary? = nil

    /// A configuration with defaults derived from the schedule.
    public init(rank: Int, schedule: TDMASchedule) {
        self.rank = rank
        self.schedule = schedule
        self.maxMemberCount = schedule.memberCount
        self.lossGraceNanos = schedule.roundPeriodNanos
        self.nakRetryNanos = 2 * schedule.roundPeriodNanos
    }

    /// Members in the view.
    public var memberCount: Int { schedule.memberCount }

    /// The promise lookahead in rounds: ``promiseLookaheadRounds``, or two
    /// heartbeats' worth of rounds when that is 0, at most an eighth of the window.
    public var effectivePromiseLookaheadRounds: UInt64 {
        let period = max(schedule.roundPeriodNanos, 1)
        let derived =
            promiseLookaheadRounds > 0
            ? UInt64(promiseLookaheadRounds) : (2 * effectivePromiseHeartbeatNanos + period - 1) / period
        return max(1, min(derived, UInt64(windowRounds / 8)))
    }

    /// See ``promiseActiveLookaheadRounds``.
    public var effectivePromiseActiveLookaheadRounds: UInt64 {
        let period = max(schedule.roundPeriodNanos, 1)
        let derived = promiseActiveLookaheadRounds > 0 ? UInt64(promiseActiveLookaheadRounds) : max(1, 500_000 / period)
        return min(derived, effectivePromiseLookaheadRounds)
    }

    /// The heartbeat: ``promiseHeartbeatNanos``, but at most an eighth of the
    /// window's time. Positions travel with frames, and a sender keeps its
    /// data within half a window of the stability line: heartbeats rarer than
    /// that would hold an idle bus's first message back by the window.
    public var effectivePromiseHeartbeatNanos: UInt64 {
        let period = max(schedule.roundPeriodNanos, 1)
        return min(promiseHeartbeatNanos, max(period, UInt64(windowRounds / 8) * period))
    }

    /// Bytes of header and non-data sections a slot frame may need.
    var slotFrameOverheadBytes: Int { slotFrameOverheadBytes(memberCount: memberCount) }

    /// The same in a view of `memberCount` members.
    func slotFrameOverheadBytes(memberCount: Int) -> Int {
        Wire.headerBytes + Wire.sectionHeaderBytes  // data section header
            + Wire.sectionHeaderBytes + Wire.positionEntryBytes
            + Wire.sectionHeaderBytes + Wire.nakEntryBytes * maxNakRangesPerFrame
            + Wire.sectionHeaderBytes + Wire.silentEntryBytes * (mode == .promises ? 2 : 1)  // and a promise ahead
            + Wire.sectionHeaderBytes + Wire.clockEntryBytes * (memberCount - 1)  // clock samples
            + Wire.sectionHeaderBytes + Wire.suspicionEntryBytes * (memberCount - 1)  // suspicions
            + tagLength
    }

    /// Bytes of a repair frame around one embedded frame's batch.
    var repairFrameOverheadBytes: Int {
        Wire.headerBytes + Wire.sectionHeaderBytes + Wire.retransmissionEntryHeaderBytes
            + Wire.headerBytes + Wire.sectionHeaderBytes  // the embedded slot frame and its data section
            + Wire.sectionHeaderBytes + Wire.silentEntryBytes * maxSilentRangesPerRepair
            + tagLength
    }

    /// Bytes of message entries (12-byte headers included) one frame of this view carries.
    public var batchBudgetBytes: Int { maxFrameBytes - max(slotFrameOverheadBytes, repairFrameOverheadBytes) }

    /// Bytes of message entries one frame carries in the largest view
    /// (`maxMemberCount` members): at most ``batchBudgetBytes``.
    public var smallestBatchBudgetBytes: Int {
        maxFrameBytes - max(slotFrameOverheadBytes(memberCount: max(maxMemberCount, memberCount)), repairFrameOverheadBytes)
    }

    /// Largest payload `broadcast` accepts: one that fits a frame of every view
    /// of up to `maxMemberCount` members, so the same for all of them.
    public var maxPayloadBytes: Int { smallestBatchBudgetBytes - Wire.messageHeaderBytes }

    /// Checks the limits against each other.
    public func validate() throws(OrderingConfigurationError) {
        guard rank >= 0, rank < memberCount else { throw .rankOutOfRange(rank: rank, memberCount: memberCount) }
        guard maxMemberCount >= memberCount, maxMemberCount <= Int(UInt16.max) + 1 else {
            throw .maxMemberCountOutOfRange(maxMemberCount: maxMemberCount, memberCount: memberCount)
        }
        guard maxFrameBytes <= Wire.maxFrameBytes else { throw .frameTooLarge(maxFrameBytes) }
        guard tagLength >= 0, tagLength <= Wire.maxTagBytes else { throw .tagTooLong(tagLength) }
        guard maxNakRangesPerFrame >= 1, maxSilentRangesPerRepair >= 1, maxRepairFramesPerSlot >= 1,
            maxBatchMessages >= 1
        else { throw .limitBelowOne }
        guard smallestBatchBudgetBytes >= Wire.messageHeaderBytes + 1 else {
            throw .frameTooSmall(maxFrameBytes: maxFrameBytes, neededBytes: maxFrameBytes - smallestBatchBudgetBytes + Wire.messageHeaderBytes + 1)
        }
        guard windowRounds >= 4 else { throw .windowTooSmall(windowRounds) }
        guard suspicionSlots >= 0, suspicionGapFactor >= 0 else { throw .limitBelowOne }
        guard promiseLookaheadRounds >= 0, promiseLookaheadRounds <= windowRounds / 4, promiseActiveLookaheadRounds >= 0 else {
            throw .lookaheadTooLong(rounds: promiseLookaheadRounds, windowRounds: windowRounds)
        }
        guard mode == .slots || promiseHeartbeatNanos > 0 else { throw .limitBelowOne }
        guard sendBufferBytes >= batchBudgetBytes else {
            throw .sendBufferTooSmall(sendBufferBytes: sendBufferBytes, neededBytes: batchBudgetBytes)
        }
        if let linkBitsPerSecond {
            do { try schedule.validate(linkBitsPerSecond: linkBitsPerSecond, maxFrameBytes: maxFrameBytes) } catch {
                throw .schedule(error)
            }
        }
    }
}

/// What is wrong with an ``OrderingConfiguration``.
public enum OrderingConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    case rankOutOfRange(rank: Int, memberCount: Int)
    case maxMemberCountOutOfRange(maxMemberCount: Int, memberCount: Int)
    case frameTooLarge(Int)
    case frameTooSmall(maxFrameBytes: Int, neededBytes: Int)
    case tagTooLong(Int)
    case limitBelowOne
    case windowTooSmall(Int)
    case sendBufferTooSmall(sendBufferBytes: Int, neededBytes: Int)
    case lookaheadTooLong(rounds: Int, windowRounds: Int)
    case schedule(ScheduleError)

    public var description: String {
        switch self {
        case .rankOutOfRange(let rank, let n): return "rank \(rank) is not in a view of \(n) members (0...\(n - 1))"
        case .maxMemberCountOutOfRange(let m, let n):
            return "maxMemberCount \(m) must be at least the view's \(n) members and at most 65536"
        case .frameTooLarge(let b): return "maxFrameBytes \(b) exceeds the largest UDP payload (\(Wire.maxFrameBytes))"
        case .frameTooSmall(let b, let needed):
            return "maxFrameBytes \(b) leaves no room for a message; it must be at least \(needed) with these NAK, silent-range and tag limits"
        case .tagTooLong(let t): return "tagLength \(t) exceeds \(Wire.maxTagBytes)"
        case .limitBelowOne: return "batch, NAK, silent-range and repair limits must each be at least 1"
        case .windowTooSmall(let w): return "windowRounds \(w) is below 4; the window must cover a few round trips"
        case .sendBufferTooSmall(let b, let needed):
            return "sendBufferBytes \(b) cannot hold one full batch; it must be at least \(needed)"
        case .lookaheadTooLong(let rounds, let window):
            return "promiseLookaheadRounds \(rounds) must be in 0...\(window / 4) (a quarter of windowRounds \(window))"
        case .schedule(let error): return "schedule: \(error)"
        }
    }
}

/// Deliberately broken ordering variants. Each breaks one invariant so a test
/// can show the simulator's checkers catch it.
@_spi(Canary) public enum OrderingCanary: Sendable, CaseIterable {
    /// Deliver a frame's messages when it arrives, without waiting for earlier
    /// slots (breaks agreement under reordering or loss).
    case deliverOnArrival
    /// Deliver the messages of duplicate frames again (breaks integrity).
    case redeliverDuplicates
    /// Never answer NAKs (breaks validity under loss).
    case ignoreNaks
}
