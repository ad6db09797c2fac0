import CarillonOrdering
import CarillonTransport

/// Counters of the member's shell: what it refused before the protocol saw it,
/// slot timing, and two gauges, the clock's correction and drift. Every field
/// is described in ``descriptors``.
public struct RuntimeCounters: Sendable, Hashable {
    public var badTag = 0
    public var missingTag = 0
    public var lateSlots = 0
    /// The correction applied to this member's clock to follow the view's
    /// timebase (rank 0's clock), nanoseconds; 0 for rank 0. A gauge.
    public var clockCorrectionNanos = 0
    /// Estimated drift against the timebase, parts per billion; 0 until two
    /// estimates are ten seconds apart (and for rank 0). A gauge.
    public var clockDriftPPB = 0

    public init() {}

    init(badTag: Int, missingTag: Int, lateSlots: Int, clockCorrectionNanos: Int, clockDriftPPB: Int) {
        (self.badTag, self.missingTag, self.lateSlots) = (badTag, missingTag, lateSlots)
        (self.clockCorrectionNanos, self.clockDriftPPB) = (clockCorrectionNanos, clockDriftPPB)
    }
}

extension RuntimeCounters: CounterSet {

    public static let descriptors: [CounterDescriptor<RuntimeCounters>] = [
        .init("carillon_frames_bad_tag", .frames, \.badTag, "frames refused: tag did not match the cluster key (wrong key, forged or altered)"),
        .init("carillon_frames_missing_tag", .frames, \.missingTag, "frames refused: no tag of the configured length while authentication is on"),
        .init("carillon_late_slots", .slots, \.lateSlots, "slots whose frame left after the slot's send deadline"),
        .init(
            "carillon_clock_correction_nanos", .nanoseconds, \.clockCorrectionNanos,
            "correction applied to this member's clock to follow the view's timebase (rank 0's clock); 0 at rank 0", kind: .gauge),
        .init(
            "carillon_clock_drift_ppb", .partsPerBillion, \.clockDriftPPB,
            "estimated drift of this member's clock against the timebase; 0 until two estimates are ten seconds apart", kind: .gauge)
    ]
}

// The transport cannot see the descriptor table (it depends on no pure module):
// the member, which exports its counters, describes them.
extension TransportCounters: CounterSet {
    public static let descriptors: [CounterDescriptor<TransportCounters>] = [
        .init("carillon_datagrams_sent", .datagrams, \.datagramsSent, "datagrams sent on the bus socket (one per frame and destination)"),
        .init("carillon_send_calls", .calls, \.sendCalls, "`sendmmsg` (or `sendto`) calls on the bus socket"),
        .init("carillon_datagrams_not_sent", .datagrams, \.datagramsNotSent, "datagrams the kernel refused (EAGAIN/ENOBUFS); repaired like loss"),
        .init("carillon_datagrams_received", .datagrams, \.datagramsReceived, "datagrams received on the bus socket"),
        .init("carillon_receive_calls", .calls, \.receiveCalls, "`recvmmsg` calls on the bus socket (including those that found nothing)"),
        .init("carillon_datagrams_truncated", .datagrams, \.datagramsTruncated, "datagrams longer than the receive buffer: dropped"),
        .init(
            "carillon_datagrams_dropped_by_injection", .datagrams, \.datagramsDroppedByInjection,
            "datagrams dropped on purpose by loss injection (tests only)")
    ]
}
