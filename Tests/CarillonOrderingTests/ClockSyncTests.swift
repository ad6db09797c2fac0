@testable import CarillonOrdering
import CarillonSchedule
import CarillonSimulation
import Testing

@Suite("Clock offset estimation")
struct ClockSyncTests {
    /// Min-filtered two-way estimate: offset 300 µs, delays 20–200 µs each way.
    @Test func recoversAKnownOffsetFromNoisyDelays() {
        var random = SimulationRandom(seed: 9)
        var me = ClockSync(memberCount: 2)
        let offset: Int64 = 300_000  // my clock is ahead of the peer's by this
        var minToPeer = Int64.max
        for i in 0..<1_000 {
            let peerSend = UInt64(1_000_000 + i * 100_000)
            let delay = Int64(random.int(in: 20_000...200_000))
            me.observe(peer: 1, sentNanos: peerSend, receivedNanos: UInt64(Int64(peerSend) + offset + delay))
            // The peer's view of my frames: receive (its clock) − send (mine).
            minToPeer = min(minToPeer, -offset + Int64(random.int(in: 20_000...200_000)))
        }
        me.peerReported(1, minOneWayNanos: minToPeer)
        let estimate = try! #require(me.offset(from: 1))
        #expect(abs(estimate - offset) < 5_000, "estimate \(estimate)")
    }

    @Test func noEstimateBeforeBothDirections() {
        var sync = ClockSync(memberCount: 2)
        #expect(sync.offset(from: 1) == nil)
        sync.observe(peer: 1, sentNanos: 10, receivedNanos: 50)
        #expect(sync.minOneWay(from: 1) == 40)
        #expect(sync.offset(from: 1) == nil)
        sync.observe(peer: 1, sentNanos: 0, receivedNanos: 5)  // retransmissions carry no timestamp
        #expect(sync.minOneWay(from: 1) == 40)
    }

    /// Two real instances whose clocks differ by 500 µs estimate it through their frames.
    @Test func instancesEstimateEachOthersOffsetThroughFrames() throws {
        let schedule = try TDMASchedule(memberCount: 2, roundPeriodNanos: 100_000, reservation: 0.5)
        var a = try OrderingInstance(configuration: OrderingConfiguration(rank: 0, schedule: schedule))
        var b = try OrderingInstance(configuration: OrderingConfiguration(rank: 1, schedule: schedule))
        let skew: UInt64 = 500_000  // b's clock reads this much more than a's
        var effects = OrderingEffects()
        for round in UInt64(0)..<50 {
            let aSlot = schedule.slotWindow(round: round, rank: 0).startNanos
            effects.removeAll()
            a.onSlotOpen(round: round, nowNanos: aSlot, effects: &effects)
            for frame in effects.frames {
                let bytes = Array(effects.frameBytes[frame.offset..<(frame.offset + frame.length)])
                var sink = OrderingEffects()
                bytes.withUnsafeBytes { _ = b.onFrameReceived($0, nowNanos: aSlot + 30_000 + skew, effects: &sink) }
            }
            let bSlot = schedule.slotWindow(round: round, rank: 1).startNanos + skew
            effects.removeAll()
            b.onSlotOpen(round: round, nowNanos: bSlot, effects: &effects)
            for frame in effects.frames {
                let bytes = Array(effects.frameBytes[frame.offset..<(frame.offset + frame.length)])
                var sink = OrderingEffects()
                bytes.withUnsafeBytes { _ = a.onFrameReceived($0, nowNanos: bSlot - skew + 30_000, effects: &sink) }
            }
        }
        let bAhead = try #require(b.clockOffsetNanos(from: 0))
        let aAhead = try #require(a.clockOffsetNanos(from: 1))
        #expect(bAhead == Int64(skew))
        #expect(aAhead == -Int64(skew))
    }
}

@Suite("Arrival times for clock estimation")
struct ArrivalTimeClockTests {
    /// Two members on one clock (true offset 0), 5 µs apart on the wire. Member
    /// 0's agent is parked: it reads its clock 80 µs after member 1's frames
    /// arrive. Estimated from read times, member 1 seems 40 µs behind
    /// ((85 − 5) / 2); from arrival times (the kernel's), the offset is 0.
    @Test(arguments: [false, true])
    func anArrivalTimeReplacesTheReadTimeInTheEstimate(useArrival: Bool) throws {
        var cluster = TestCluster(memberCount: 2)
        let wire: UInt64 = 5_000, parked: UInt64 = 80_000
        for round in UInt64(1)...40 {
            for sender in 0..<2 {
                let frames = cluster.openSlot(sender, round: round)
                let sent = cluster.nowNanos
                for frame in frames {
                    var effects = OrderingEffects()
                    let receiver = 1 - sender
                    let read = sent + wire + (receiver == 0 ? parked : 0)
                    frame.withUnsafeBytes {
                        _ = cluster.members[receiver].onFrameReceived(
                            $0, nowNanos: read, arrivalNanos: useArrival ? sent + wire : nil,
                            effects: &effects)
                    }
                }
                cluster.outbox[sender].removeAll()
            }
        }
        let offset = try #require(cluster.members[0].clockOffsetNanos(from: 1))
        #expect(offset == (useArrival ? 0 : Int64(parked / 2)))
    }
}
