import Testing
import CarillonSchedule

@Suite("TDMA schedule")
struct ScheduleTests {
    let schedule = try! TDMASchedule(
        memberCount: 4, roundPeriodNanos: 100_000, slotNanos: 10_000, guardNanos: 1_000, reservation: 0.5,
        originNanos: 1_000_000)

    @Test func slotWindows() {
        let window = schedule.slotWindow(round: 3, rank: 2)
        #expect(window.startNanos == 1_000_000 + 300_000 + 20_000)
        #expect(window.endNanos == window.startNanos + 10_000)
        #expect(window.sendDeadlineNanos == window.endNanos - 1_000)
        #expect(schedule.reservedFraction == 0.4)
    }

    @Test func openSlotAtAnInstant() {
        #expect(schedule.openSlot(atNanos: 999_999) == nil)  // before the origin
        #expect(schedule.openSlot(atNanos: 1_000_000)?.rank == 0)
        #expect(schedule.openSlot(atNanos: 1_008_999)?.rank == 0)
        #expect(schedule.openSlot(atNanos: 1_009_000) == nil)  // guard band
        #expect(schedule.openSlot(atNanos: 1_010_000)?.rank == 1)
        #expect(schedule.openSlot(atNanos: 1_040_000) == nil)  // unreserved part of the round
        let slot = schedule.openSlot(atNanos: 1_000_000 + 7 * 100_000 + 35_000)
        #expect(slot?.round == 7)
        #expect(slot?.rank == 3)
    }

    @Test func roundsOpenedAndEnded() {
        #expect(schedule.latestOpenedRound(rank: 1, atNanos: 1_009_999) == nil)
        #expect(schedule.latestOpenedRound(rank: 1, atNanos: 1_010_000) == 0)
        #expect(schedule.latestOpenedRound(rank: 1, atNanos: 1_110_000) == 1)
        #expect(schedule.roundsEnded(rank: 1, atNanos: 1_019_999) == 0)
        #expect(schedule.roundsEnded(rank: 1, atNanos: 1_020_000) == 1)
        #expect(schedule.roundsEnded(rank: 3, atNanos: 1_000_000 + 5 * 100_000 + 40_000) == 6)
    }

    @Test func capacityFollowsLinkRate() {
        // 9 µs of send window at 10 Gbit/s = 90,000 bits = 11,250 bytes.
        #expect(schedule.slotCapacityBytes(linkBitsPerSecond: 10_000_000_000) == 11_250)
        #expect(schedule.slotCapacityBytes(linkBitsPerSecond: 1_000_000_000) == 1_125)
        #expect(schedule.slotCapacityBytes(linkBitsPerSecond: .max) == 20_752_587_082_923)
        #expect(throws: ScheduleError.slotCapacityBelowFrame(capacityBytes: 1_125, maxFrameBytes: 1_472)) {
            try schedule.validate(linkBitsPerSecond: 1_000_000_000, maxFrameBytes: 1_472)
        }
        #expect(throws: Never.self) { try schedule.validate(linkBitsPerSecond: 10_000_000_000, maxFrameBytes: 1_472) }
        #expect(throws: ScheduleError.zeroLinkRate) { try schedule.validate(linkBitsPerSecond: 0, maxFrameBytes: 1) }
    }

    @Test func validationSaysWhatIsWrong() {
        #expect(throws: ScheduleError.slotShorterThanGuard(slotNanos: 1_000, guardNanos: 1_000)) {
            try TDMASchedule(memberCount: 3, roundPeriodNanos: 100_000, slotNanos: 1_000, guardNanos: 1_000, reservation: 0.5)
        }
        #expect(throws: ScheduleError.reservationOutOfRange(1.5)) {
            try TDMASchedule(memberCount: 3, roundPeriodNanos: 100_000, slotNanos: 10_000, guardNanos: 100, reservation: 1.5)
        }
        #expect(throws: ScheduleError.slotsExceedReservation(reservedNanos: 30_000, allowedNanos: 25_000, reservation: 0.25)) {
            try TDMASchedule(memberCount: 3, roundPeriodNanos: 100_000, slotNanos: 10_000, guardNanos: 100, reservation: 0.25)
        }
        #expect(throws: ScheduleError.memberCountOutOfRange(0)) {
            try TDMASchedule(memberCount: 0, roundPeriodNanos: 100_000, reservation: 0.5)
        }
        #expect(throws: ScheduleError.zeroRoundPeriod) {
            try TDMASchedule(memberCount: 2, roundPeriodNanos: 0, slotNanos: 10, guardNanos: 1, reservation: 0.5)
        }
        let message = ScheduleError.slotShorterThanGuard(slotNanos: 5, guardNanos: 9).description
        #expect(message.contains("lengthen the slot"))
    }

    @Test func equalSlotsFromAReservation() throws {
        let even = try TDMASchedule(memberCount: 5, roundPeriodNanos: 100_000, reservation: 0.5, guardFraction: 0.1)
        #expect(even.slotNanos == 10_000)
        #expect(even.guardNanos == 1_000)
        #expect(even.reservedFraction <= 0.5)
    }
}
