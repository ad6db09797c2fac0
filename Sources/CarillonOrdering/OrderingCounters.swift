/// Counters for every anomaly and every unit of work of one ordering instance,
/// for operators. What each counts, its unit and its metric name are in
/// ``descriptors``, the one place a counter is defined (see ``CounterSet``).
public struct OrderingCounters: CounterSet, Hashable {
    public var slotFramesSent = 0
    public var repairFramesSent = 0
    public var messagesBroadcast = 0
    public var sendBufferFull = 0
    public var payloadsTooLarge = 0
    public var framesReceived = 0
    public var framesAccepted = 0
    public var duplicateFrames = 0
    public var framesBeyondWindow = 0
    public var malformedFrames = 0
    public var wrongEpochFrames = 0
    public var unknownSenderFrames = 0
    public var oversizedBatches = 0
    public var conflictingFrames = 0
    public var invalidSilentRanges = 0
    public var naksSent = 0
    public var naksReceived = 0
    public var naksSuppressed = 0
    public var staleNaks = 0
    public var framesRetransmitted = 0
    public var silentRangesSent = 0
    public var roundsCaughtUp = 0
    public var dataHeldByWindow = 0
    public var messagesDelivered = 0
    public var duplicateMessages = 0
    public var sequenceGaps = 0
    public var implausiblePositions = 0
    public var foreignEmbeddedFrames = 0
    public var suspicionsRaised = 0
    public var suspicionsCleared = 0
    public var framesRelayed = 0
    public var naksClipped = 0
    public var repairsSuppressed = 0
    public var implausibleRounds = 0
    public var lateFrames = 0
    public var promiseFramesSent = 0
    public var promisesOwed = 0
    public init() {}

    /// Every ordering counter. The names exported before this table existed are kept as they were
    /// (`carillon_frames_duplicate`, not `carillon_duplicate_frames`).
    public static let descriptors: [CounterDescriptor<OrderingCounters>] = [
        .init("carillon_slot_frames_sent", .frames, \.slotFramesSent, "this member's own frames sent (slot frames: data, promises or an empty slot)"),
        .init(
            "carillon_repair_frames_sent", .frames, \.repairFramesSent,
            "repair frames sent (answers to NAKs, and relays of other members' frames during a view change)"),
        .init("carillon_messages_broadcast", .messages, \.messagesBroadcast, "messages accepted by `broadcast`"),
        .init("carillon_send_buffer_full", .calls, \.sendBufferFull, "`broadcast` calls pushed back (send buffer full)"),
        .init("carillon_payloads_too_large", .calls, \.payloadsTooLarge, "`broadcast` calls refused: the payload can never fit one frame"),
        .init("carillon_frames_received", .frames, \.framesReceived, "frames received for the ordering layer"),
        .init("carillon_frames_accepted", .frames, \.framesAccepted, "received frames taken in (new, of this view, inside the receive window)"),
        .init("carillon_frames_duplicate", .frames, \.duplicateFrames, "received frames already held"),
        .init(
            "carillon_frames_beyond_window", .frames, \.framesBeyondWindow,
            "received frames too far ahead of the receive window (the sender repeats them on NAK)"),
        .init("carillon_frames_malformed", .frames, \.malformedFrames, "received frames that did not decode"),
        .init("carillon_wrong_epoch_frames", .frames, \.wrongEpochFrames, "received frames of another view's epoch: ignored"),
        .init("carillon_unknown_sender_frames", .frames, \.unknownSenderFrames, "received frames from a rank outside the view: ignored"),
        .init("carillon_oversized_batches", .frames, \.oversizedBatches, "received frames whose batch exceeds the slot's byte budget: ignored"),
        .init(
            "carillon_conflicting_frames", .frames, \.conflictingFrames,
            "frames or silent ranges that contradict what is held for a round (data against silence): the first kept"),
        .init(
            "carillon_invalid_silent_ranges", .frames, \.invalidSilentRanges,
            "silent ranges a frame cannot declare (not before its round, nor a plausible promise after it): ignored"),
        .init("carillon_naks_sent", .naks, \.naksSent, "NAKs this member sent (it missed frames)"),
        .init("carillon_naks_received", .naks, \.naksReceived, "NAK ranges received that ask this member for its frames"),
        .init(
            "carillon_naks_suppressed", .naks, \.naksSuppressed,
            "own NAKs held back one retry interval because another member asked for the same rounds"),
        .init(
            "carillon_stale_naks", .naks, \.staleNaks,
            "NAK ranges received for no round this member can repeat (not sent yet, or already stable and freed): ignored"),
        .init("carillon_frames_retransmitted", .frames, \.framesRetransmitted, "frames carried again inside repair frames"),
        .init(
            "carillon_silent_ranges_sent", .rounds, \.silentRangesSent,
            "silent-round ranges sent in repair frames (rounds this member sent nothing in)"),
        .init("carillon_rounds_caught_up", .rounds, \.roundsCaughtUp, "own slots skipped because the member woke after them (a late agent thread)"),
        .init(
            "carillon_data_held_by_window", .slots, \.dataHeldByWindow,
            "slots sent without data although messages waited: the receivers' windows or the stability line held them back"),
        .init("carillon_messages_delivered", .messages, \.messagesDelivered, "messages delivered here, in the total order"),
        .init("carillon_duplicate_messages", .messages, \.duplicateMessages, "messages whose (sender, sequence) was already delivered: dropped"),
        .init("carillon_sequence_gaps", .messages, \.sequenceGaps, "messages delivered after a gap in their sender's sequence numbers"),
        .init(
            "carillon_implausible_positions", .frames, \.implausiblePositions,
            "received-below positions past what this member has sent: ignored"),
        .init(
            "carillon_foreign_embedded_frames", .frames, \.foreignEmbeddedFrames,
            "frames embedded in a repair frame whose sender or epoch differ from the repair frame's: ignored"),
        .init("carillon_suspicions_raised", .events, \.suspicionsRaised, "times a member of the view became suspected"),
        .init("carillon_suspicions_cleared", .events, \.suspicionsCleared, "times a suspected member was heard again"),
        .init("carillon_frames_relayed", .frames, \.framesRelayed, "repair frames carrying other members' rounds, sent during a view change"),
        .init(
            "carillon_naks_clipped", .frames, \.naksClipped,
            "slot frames whose NAKs for a sender stopped at the receive window's end with more missing beyond (asked for once the window moves)"),
        .init(
            "carillon_repairs_suppressed", .events, \.repairsSuppressed,
            "repairs not sent: the rounds asked for lie beyond every receiver's window, or the frame was retransmitted moments before"),
        .init(
            "carillon_implausible_rounds", .frames, \.implausibleRounds,
            "frames, silent ranges and NAKs for rounds more than a window past the current round (beyond what the sender can know): ignored"),
        .init(
            "carillon_late_frames", .frames, \.lateFrames,
            "slot frames that arrived after their slot plus the loss grace (slot mode): late, not lost"),
        .init(
            "carillon_promise_frames_sent", .frames, \.promiseFramesSent,
            "promise mode: frames sent only to promise silence (heartbeats, and answers to data)"),
        .init(
            "carillon_promises_owed", .frames, \.promisesOwed,
            "promise mode: frames sent at once because another member's data waited for this member's promise")
    ]
}
