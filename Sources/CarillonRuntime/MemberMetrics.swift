import CarillonOrdering
import CarillonTransport
import Metrics

/// The member's counters published through swift-metrics, as `carillon_*`
/// counters with a `rank` dimension. The agent publishes differences every
/// `publishIntervalNanos`, never per message, so a metrics backend costs
/// nothing on the hot path.
struct MemberMetrics {
    static let publishIntervalNanos: UInt64 = 100_000_000

    private let counters: [(label: String, counter: Counter)]
    private var last: [Int]
    var nextPublishNanos: UInt64 = 0

    static let labels = [
        "carillon_slot_frames_sent", "carillon_repair_frames_sent", "carillon_frames_received",
        "carillon_frames_duplicate", "carillon_frames_malformed", "carillon_frames_beyond_window",
        "carillon_naks_sent", "carillon_naks_received", "carillon_frames_retransmitted",
        "carillon_messages_broadcast", "carillon_messages_delivered", "carillon_send_buffer_full",
        "carillon_frames_bad_tag", "carillon_frames_missing_tag", "carillon_late_slots",
        "carillon_datagrams_not_sent",
    ]

    init(rank: Int) {
        counters = Self.labels.map { ($0, Counter(label: $0, dimensions: [("rank", String(rank))])) }
        last = Array(repeating: 0, count: Self.labels.count)
    }

    static func values(_ o: OrderingCounters, _ t: TransportCounters, _ r: RuntimeCounters) -> [Int] {
        [o.slotFramesSent, o.repairFramesSent, o.framesReceived, o.duplicateFrames, o.malformedFrames, o.framesBeyondWindow,
         o.naksSent, o.naksReceived, o.framesRetransmitted, o.messagesBroadcast, o.messagesDelivered, o.sendBufferFull,
         r.badTag, r.missingTag, r.lateSlots, t.datagramsNotSent]
    }

    mutating func publish(_ values: [Int]) {
        for i in counters.indices where values[i] > last[i] {
            counters[i].counter.increment(by: Int64(values[i] - last[i]))
            last[i] = values[i]
        }
    }
}
