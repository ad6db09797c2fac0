import CarillonSchedule

/// How the bulk channel shares a link with the bus.
public enum BulkPacing: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// Send only outside the slots' reserved window of each round, at no more
    /// than the link rate, and finish each datagram `marginNanos` before the next
    /// reserved window opens: the bus's slot frames never find bulk bytes queued
    /// ahead of them on the sender's link.
    case gated
    /// A token bucket at (1 − reservation) × link rate, with no regard for slot
    /// timing: the bulk channel never takes more than its share on average, but a
    /// slot frame may still wait behind one bulk datagram.
    case paced
    /// As fast as the socket takes datagrams: the comparison case, in which bulk
    /// traffic queues ahead of the bus on a bottleneck link.
    case unpaced

    public var description: String { rawValue }
}

/// When the bulk channel may start its next datagram. Pure: time is an argument.
///
/// The pacer models the sender's link as busy for a datagram's transmission
/// time at `linkBitsPerSecond` (wire bytes: the datagram plus
/// ``overheadBytes`` of UDP, IPv4 and Ethernet headers), so back-to-back
/// datagrams are spaced as the link would space them and never build a queue.
public struct BulkPacer: Sendable, Hashable {
    /// UDP (8), IPv4 (20) and Ethernet (14 + 4 FCS) bytes a datagram adds on the wire.
    public static let overheadBytes = 46

    public let pacing: BulkPacing
    public let linkBitsPerSecond: UInt64
    /// The bus's reserved share of the link, in (0, 1]; ``BulkPacing/paced`` takes the rest.
    public let reservation: Double
    /// How long before the next reserved window a gated datagram must have left
    /// the link: covers the sender's wake-up jitter and clock error.
    public let marginNanos: UInt64
    /// The modelled link is busy until this time.
    public private(set) var linkFreeAtNanos: UInt64 = 0

    public init(pacing: BulkPacing, linkBitsPerSecond: UInt64, reservation: Double, marginNanos: UInt64 = 20_000) {
        precondition(linkBitsPerSecond > 0, "link rate must be positive")
        precondition(reservation > 0 && reservation <= 1, "reservation must be in (0, 1]")
        self.pacing = pacing
        self.linkBitsPerSecond = linkBitsPerSecond
        self.reservation = reservation
        self.marginNanos = marginNanos
    }

    /// Nanoseconds the link needs for a datagram of `bytes` (headers added) at `bitsPerSecond`.
    public static func transmissionNanos(bytes: Int, bitsPerSecond: Double) -> UInt64 {
        UInt64((Double(bytes + overheadBytes) * 8 * 1e9 / bitsPerSecond).rounded(.up))
    }

    /// The unreserved part of a round in which a gated datagram may start and
    /// finish: checks that a datagram of `bytes` fits it at all.
    public func validate(datagramBytes bytes: Int, schedule: TDMASchedule) throws(BulkPacingError) {
        guard pacing == .gated else { return }
        let reservedNanos = UInt64(schedule.memberCount) * schedule.slotNanos
        let freeNanos = schedule.roundPeriodNanos > reservedNanos ? schedule.roundPeriodNanos - reservedNanos : 0
        let needed = Self.transmissionNanos(bytes: bytes, bitsPerSecond: Double(linkBitsPerSecond)) + marginNanos
        guard needed <= freeNanos else {
            throw .datagramExceedsUnreservedWindow(
                neededNanos: needed, windowNanos: freeNanos, datagramBytes: bytes,
                linkBitsPerSecond: linkBitsPerSecond)
        }
    }

    /// Nanoseconds a paced channel may run ahead of its rate (a burst of a few
    /// datagrams, so that one late wake-up does not cost bandwidth).
    public static let pacedBurstNanos: UInt64 = 250_000

    /// When the modelled link would start a datagram of `bytes` queued at `now`:
    /// after everything already handed over (``linkFreeAtNanos``) and, when
    /// gated, inside the unreserved part of a round of `schedule` (on the same
    /// timebase as `now`) with its transmission over `marginNanos` before the
    /// next round's slots. `UInt64.max` when it can never fit a gated window.
    /// Without a schedule (not in a view) a gated pacer paces like ``BulkPacing/paced``.
    public func scheduledStart(bytes: Int, atNanos now: UInt64, schedule: TDMASchedule?) -> UInt64 {
        let start = max(now, linkFreeAtNanos)
        guard pacing == .gated, let schedule else { return pacing == .unpaced ? now : start }
        let transmit = Self.transmissionNanos(bytes: bytes, bitsPerSecond: Double(linkBitsPerSecond))
        let reservedNanos = UInt64(schedule.memberCount) * schedule.slotNanos
        let period = schedule.roundPeriodNanos
        guard reservedNanos + transmit + marginNanos <= period else { return .max }
        var round = schedule.round(atNanos: start)
        // This round's unreserved window, or else the next round's.
        for _ in 0..<2 {
            let roundStart = schedule.originNanos &+ round &* period
            let open = roundStart &+ reservedNanos
            let close = roundStart &+ period &- marginNanos
            let candidate = max(start, open)
            if candidate &+ transmit <= close { return candidate }
            round += 1
        }
        return .max
    }

    /// When a datagram of `bytes` may be handed to the socket (at or before
    /// `now`: at once). Gated: as soon as the unreserved window holding its
    /// scheduled start is open — a burst handed over at the window's start
    /// leaves the link back to back and is off it before the next slots,
    /// because the schedule counted each datagram's transmission time; never
    /// while the slots' reserved window is open. Paced: when its scheduled
    /// start is at most ``pacedBurstNanos`` ahead. Unpaced: now.
    public func releaseTime(bytes: Int, atNanos now: UInt64, schedule: TDMASchedule?) -> UInt64 {
        switch pacing {
        case .unpaced:
            return now
        case .paced:
            let start = max(now, linkFreeAtNanos)
            return start > now &+ Self.pacedBurstNanos ? start - Self.pacedBurstNanos : now
        case .gated:
            let start = scheduledStart(bytes: bytes, atNanos: now, schedule: schedule)
            guard start != .max else { return .max }
            guard let schedule else { return start > now &+ Self.pacedBurstNanos ? start - Self.pacedBurstNanos : now }
            let round = schedule.round(atNanos: start)
            let open = schedule.originNanos &+ round &* schedule.roundPeriodNanos &+ UInt64(schedule.memberCount) * schedule.slotNanos
            return max(now, open)
        }
    }

    /// Records that a datagram of `bytes` was handed to the socket at `nanos`:
    /// the modelled link is busy from its scheduled start for its transmission
    /// time (at the link rate when gated, at (1 − reservation) of it when paced).
    public mutating func didSend(bytes: Int, atNanos nanos: UInt64, schedule: TDMASchedule?) {
        switch pacing {
        case .unpaced:
            return
        case .gated:
            let start = scheduledStart(bytes: bytes, atNanos: nanos, schedule: schedule)
            let rate = schedule == nil ? Double(linkBitsPerSecond) * max(1 - reservation, 0.01) : Double(linkBitsPerSecond)
            linkFreeAtNanos =
                (start == .max ? max(nanos, linkFreeAtNanos) : start)
                &+ Self.transmissionNanos(bytes: bytes, bitsPerSecond: rate)
        case .paced:
            let share = Double(linkBitsPerSecond) * max(1 - reservation, 0.01)
            linkFreeAtNanos = max(nanos, linkFreeAtNanos) &+ Self.transmissionNanos(bytes: bytes, bitsPerSecond: share)
        }
    }
}

/// A bulk pacing setting that cannot work.
public enum BulkPacingError: Error, Sendable, Hashable, CustomStringConvertible {
    case datagramExceedsUnreservedWindow(neededNanos: UInt64, windowNanos: UInt64, datagramBytes: Int, linkBitsPerSecond: UInt64)

    public var description: String {
        switch self {
        case .datagramExceedsUnreservedWindow(let needed, let window, let bytes, let rate):
            return
                "a \(bytes)-byte bulk datagram needs \(needed / 1000) µs (with margin) at \(rate / 1_000_000) Mbit/s, but a round leaves only \(window / 1000) µs outside the reserved slots: use smaller chunks, a longer round period, a lower reservation or a faster link"
        }
    }
}
