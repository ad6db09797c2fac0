/// The TDMA schedule of one view: when each member may send.
///
/// A round lasts `roundPeriodNanos`. Its first `memberCount · slotNanos`
/// nanoseconds are the reserved window, cut into one slot per member in rank
/// order; the rest of the round belongs to other traffic (bulk). Inside each
/// slot the last `guardNanos` are a guard band in which nothing starts, so a
/// frame finishes before the next member's slot opens even with some clock error.
///
/// ```
/// round r:  | slot 0 | slot 1 | … | slot n-1 |      unreserved       |
///           ^ originNanos + r·P               ^ + n·S                  ^ + P
/// slot i:   | send window (S − G) | guard G |
/// ```
///
/// All times are nanoseconds on the view's timebase; the schedule never reads a
/// clock.
public struct TDMASchedule: Sendable, Hashable {
    /// Members in the view, one slot each.
    public let memberCount: Int
    /// Length of one round.
    public let roundPeriodNanos: UInt64
    /// Length of one slot, guard band included.
    public let slotNanos: UInt64
    /// Tail of each slot in which no frame may start.
    public let guardNanos: UInt64
    /// Largest share of each round (and so of each link) the slots may reserve, in (0, 1].
    public let reservation: Double
    /// Start of round 0 on the view's timebase.
    public let originNanos: UInt64

    /// Builds and validates a schedule.
    ///
    /// - Throws: ``ScheduleError`` saying which constraint fails and by how much.
    public init(
        memberCount: Int, roundPeriodNanos: UInt64, slotNanos: UInt64, guardNanos: UInt64,
        reservation: Double, originNanos: UInt64 = 0
    ) throws(ScheduleError) {
        guard memberCount >= 1, memberCount <= Int(UInt16.max) else { throw .memberCountOutOfRange(memberCount) }
        guard roundPeriodNanos > 0 else { throw .zeroRoundPeriod }
        guard slotNanos > guardNanos else { throw .slotShorterThanGuard(slotNanos: slotNanos, guardNanos: guardNanos) }
        guard reservation > 0, reservation <= 1 else { throw .reservationOutOfRange(reservation) }
        let (reservedNanos, overflow) = UInt64(memberCount).multipliedReportingOverflow(by: slotNanos)
        let allowedNanos = Double(roundPeriodNanos) * reservation
        guard !overflow, Double(reservedNanos) <= allowedNanos + 0.5 else {
            throw .slotsExceedReservation(
                reservedNanos: overflow ? .max : reservedNanos, allowedNanos: UInt64(allowedNanos),
                reservation: reservation)
        }
        self.memberCount = memberCount
        self.roundPeriodNanos = roundPeriodNanos
        self.slotNanos = slotNanos
        self.guardNanos = guardNanos
        self.reservation = reservation
        self.originNanos = originNanos
    }

    /// A schedule whose slots fill `reservation` of a round equally, with a guard
    /// band of `guardFraction` of each slot.
    public init(
        memberCount: Int, roundPeriodNanos: UInt64, reservation: Double, guardFraction: Double = 0.1,
        originNanos: UInt64 = 0
    ) throws(ScheduleError) {
        guard memberCount >= 1, memberCount <= Int(UInt16.max) else { throw .memberCountOutOfRange(memberCount) }
        guard reservation > 0, reservation <= 1 else { throw .reservationOutOfRange(reservation) }
        let slot = UInt64(Double(roundPeriodNanos) * reservation / Double(memberCount))
        let guardBand = UInt64(Double(slot) * max(0, min(guardFraction, 1)))
        try self.init(
            memberCount: memberCount, roundPeriodNanos: roundPeriodNanos, slotNanos: slot, guardNanos: guardBand,
            reservation: reservation, originNanos: originNanos)
    }

    /// Share of each round the slots actually occupy (≤ ``reservation``).
    public var reservedFraction: Double { Double(UInt64(memberCount) * slotNanos) / Double(roundPeriodNanos) }

    /// The window of slot `rank` in `round`.
    public func slotWindow(round: UInt64, rank: Int) -> SlotWindow {
        let start = originNanos &+ round &* roundPeriodNanos &+ UInt64(rank) &* slotNanos
        return SlotWindow(round: round, rank: rank, startNanos: start, endNanos: start &+ slotNanos, guardNanos: guardNanos)
    }

    /// The round in progress at `nanos` (round 0 before the origin).
    public func round(atNanos nanos: UInt64) -> UInt64 {
        nanos <= originNanos ? 0 : (nanos - originNanos) / roundPeriodNanos
    }

    /// The slot whose send window (guard band excluded) contains `nanos`, or
    /// `nil` in a guard band, in the unreserved part of a round, or before the origin.
    public func openSlot(atNanos nanos: UInt64) -> SlotWindow? {
        guard nanos >= originNanos else { return nil }
        let sinceOrigin = nanos - originNanos
        let round = sinceOrigin / roundPeriodNanos
        let intoRound = sinceOrigin % roundPeriodNanos
        let rank = intoRound / slotNanos
        guard rank < UInt64(memberCount), intoRound % slotNanos < slotNanos - guardNanos else { return nil }
        return slotWindow(round: round, rank: Int(rank))
    }

    /// The latest round whose slot `rank` has opened at or before `nanos`
    /// (`nil` before that member's first slot).
    public func latestOpenedRound(rank: Int, atNanos nanos: UInt64) -> UInt64? {
        let offset = originNanos &+ UInt64(rank) &* slotNanos
        guard nanos >= offset else { return nil }
        return (nanos - offset) / roundPeriodNanos
    }

    /// Number of rounds of `rank` whose slot has ended (guard band included) at or
    /// before `nanos`: rounds below the result are over for that member.
    public func roundsEnded(rank: Int, atNanos nanos: UInt64) -> UInt64 {
        let firstEnd = originNanos &+ UInt64(rank + 1) &* slotNanos
        guard nanos >= firstEnd else { return 0 }
        return (nanos - firstEnd) / roundPeriodNanos + 1
    }

    /// Bytes one slot's send window carries at `linkBitsPerSecond`.
    public func slotCapacityBytes(linkBitsPerSecond: UInt64) -> Int {
        let windowNanos = slotNanos - guardNanos
        let bits = linkBitsPerSecond.multipliedFullWidth(by: windowNanos)
        // The quotient fits in 64 bits exactly when the high word is below the divisor.
        guard bits.high < 1_000_000_000 else { return Int.max }
        let (quotient, _) = UInt64(1_000_000_000).dividingFullWidth(bits)
        return Int(min(quotient / 8, UInt64(Int.max)))
    }

    /// Checks that a frame of `maxFrameBytes` fits a slot at `linkBitsPerSecond`.
    public func validate(linkBitsPerSecond: UInt64, maxFrameBytes: Int) throws(ScheduleError) {
        guard linkBitsPerSecond > 0 else { throw .zeroLinkRate }
        let capacity = slotCapacityBytes(linkBitsPerSecond: linkBitsPerSecond)
        guard capacity >= maxFrameBytes else {
            throw .slotCapacityBelowFrame(capacityBytes: capacity, maxFrameBytes: maxFrameBytes)
        }
    }
}

/// One member's slot in one round.
public struct SlotWindow: Sendable, Hashable {
    public let round: UInt64
    public let rank: Int
    /// When the slot opens.
    public let startNanos: UInt64
    /// When the next slot opens (guard band included).
    public let endNanos: UInt64
    let guardNanos: UInt64
    /// Last instant a frame may start: the guard band begins here.
    public var sendDeadlineNanos: UInt64 { endNanos - guardNanos }
}

/// What is wrong with a schedule. Each case's description says what to change.
public enum ScheduleError: Error, Sendable, Hashable, CustomStringConvertible {
    case memberCountOutOfRange(Int)
    case zeroRoundPeriod
    case slotShorterThanGuard(slotNanos: UInt64, guardNanos: UInt64)
    case reservationOutOfRange(Double)
    case slotsExceedReservation(reservedNanos: UInt64, allowedNanos: UInt64, reservation: Double)
    case zeroLinkRate
    case slotCapacityBelowFrame(capacityBytes: Int, maxFrameBytes: Int)

    public var description: String {
        switch self {
        case .memberCountOutOfRange(let n):
            return "member count \(n) is out of range: a view has 1...65535 members"
        case .zeroRoundPeriod:
            return "round period is zero: give it a positive number of nanoseconds"
        case .slotShorterThanGuard(let slot, let guardBand):
            return "slot (\(slot) ns) is not longer than its guard band (\(guardBand) ns): lengthen the slot or shorten the guard"
        case .reservationOutOfRange(let r):
            return "reservation \(r) is outside (0, 1]: it is the share of the link the bus reserves, at most 100%"
        case .slotsExceedReservation(let reserved, let allowed, let r):
            return
                "slots need \(reserved) ns per round but a reservation of \(r) allows \(allowed) ns: shorten the slots, lengthen the round or raise the reservation"
        case .zeroLinkRate:
            return "link rate is zero: give the link's rate in bits per second"
        case .slotCapacityBelowFrame(let capacity, let frame):
            return
                "a slot carries \(capacity) bytes at this link rate, less than one maximum-size frame (\(frame) bytes): lengthen the slot, shorten the guard or lower the maximum frame size"
        }
    }
}
