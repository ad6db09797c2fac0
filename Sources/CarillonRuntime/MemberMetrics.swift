import CarillonMembership
import CarillonOrdering
import CarillonTransport
import Metrics

/// The member's counters published through swift-metrics, as `carillon_*`
/// counters with a `node` dimension. The agent publishes differences every
/// `publishIntervalNanos`, never per message, so a metrics backend costs
/// nothing on the hot path.
struct MemberMetrics {
    static let publishIntervalNanos: UInt64 = 100_000_000

    private let counters: [(label: String, counter: Counter)]
    private var last: [Int]
    private var current: [Int]
    var nextPublishNanos: UInt64 = 0

    static let labels = [
        "carillon_slot_frames_sent", "carillon_repair_frames_sent", "carillon_frames_received",
        "carillon_frames_duplicate", "carillon_frames_malformed", "carillon_frames_beyond_window",
        "carillon_naks_sent", "carillon_naks_received", "carillon_frames_retransmitted",
        "carillon_messages_broadcast", "carillon_messages_delivered", "carillon_send_buffer_full",
        "carillon_frames_bad_tag", "carillon_frames_missing_tag", "carillon_late_slots",
        "carillon_datagrams_not_sent", "carillon_suspicions_raised", "carillon_suspicions_cleared",
        "carillon_views_installed", "carillon_view_ballots_started", "carillon_exclusions",
        "carillon_state_bytes_sent", "carillon_state_bytes_received",
    ]

    init(node: Int) {
        counters = Self.labels.map { ($0, Counter(label: $0, dimensions: [("node", String(node))])) }
        last = Array(repeating: 0, count: Self.labels.count)
        current = last
    }

    /// Publishes what grew since the last call; allocates nothing (a metrics backend may).
    mutating func publish(_ o: OrderingCounters, _ m: MembershipCounters, _ t: TransportCounters, _ r: RuntimeCounters) {
        current[0] = o.slotFramesSent; current[1] = o.repairFramesSent; current[2] = o.framesReceived
        current[3] = o.duplicateFrames; current[4] = o.malformedFrames; current[5] = o.framesBeyondWindow
        current[6] = o.naksSent; current[7] = o.naksReceived; current[8] = o.framesRetransmitted
        current[9] = o.messagesBroadcast; current[10] = o.messagesDelivered; current[11] = o.sendBufferFull
        current[12] = r.badTag; current[13] = r.missingTag; current[14] = r.lateSlots; current[15] = t.datagramsNotSent
        current[16] = o.suspicionsRaised; current[17] = o.suspicionsCleared
        current[18] = m.viewsInstalled; current[19] = m.ballotsStarted; current[20] = m.exclusions
        current[21] = m.stateBytesSent; current[22] = m.stateBytesReceived
        for i in counters.indices where current[i] > last[i] {
            counters[i].counter.increment(by: Int64(current[i] - last[i]))
            last[i] = current[i]
        }
    }
}
