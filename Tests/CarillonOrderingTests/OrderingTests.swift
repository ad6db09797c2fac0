import CarillonOrdering
import CarillonSchedule
import CarillonSimulation
import CarillonWire
import Testing

@Suite("Ordering instance")
struct OrderingTests {
    @Test func emptyFrameEveryRound() {
        var cluster = TestCluster(memberCount: 2)
        let frames = cluster.openSlot(0, round: 0)
        #expect(frames.count == 1)
        frames[0].withUnsafeBytes { raw in
            let view = try! FrameView.decode(raw)
            #expect(view.header.kind == .slot)
            #expect(view.messageCount == 0)
            #expect(Array(view.positionEntries).count == 1)
        }
        // The same round again sends nothing: one frame per slot.
        #expect(cluster.openSlot(0, round: 0).isEmpty)
    }

    @Test func everyMemberDeliversTheSameOrder() {
        var cluster = TestCluster(memberCount: 3)
        for round in UInt64(0)..<20 {
            for member in 0..<3 where (Int(round) + member) % 2 == 0 {
                _ = cluster.broadcast(member, "m\(member)r\(round)")
            }
            cluster.runRounds(round...round)
        }
        cluster.runRounds(20...22)
        let reference = cluster.delivered[0].map { "\($0.sender):\($0.sequence)" }
        #expect(reference.count == 30)
        for member in 1..<3 { #expect(cluster.delivered[member].map { "\($0.sender):\($0.sequence)" } == reference) }
        // Keys strictly increase.
        let keys = cluster.delivered[0].map { [Int($0.round), $0.sender, $0.index] }
        #expect(keys == keys.sorted { $0.lexicographicallyPrecedes($1) })
    }

    @Test func safeDeliveryWaitsForTheStabilityLine() {
        var agreed = TestCluster(memberCount: 3, mode: .agreed)
        var safe = TestCluster(memberCount: 3, mode: .safe)
        _ = agreed.broadcast(0, "x")
        _ = safe.broadcast(0, "x")
        agreed.runRounds(0...0)
        safe.runRounds(0...0)
        #expect(agreed.delivered[2].count == 1)
        #expect(safe.delivered[2].isEmpty)  // not yet known to be received everywhere
        safe.runRounds(1...2)
        #expect(safe.delivered.allSatisfy { $0.count == 1 })
        #expect(safe.members[2].stableBelowRound >= 1)
    }

    @Test func backpressureIsReportedNeverDropped() {
        var cluster = TestCluster(memberCount: 2, sendBufferBytes: 1472)
        let limit = cluster.members[0].configuration.maxPayloadBytes
        #expect(cluster.members[0].broadcast([UInt8](repeating: 1, count: limit + 1)) == .payloadTooLarge(maxPayloadBytes: limit))
        var queued = 0
        while case .queued = cluster.broadcast(0, String(repeating: "p", count: 100)) { queued += 1 }
        #expect(queued > 0)
        // The loop ended on the first refusal; a second one is refused too and counted.
        #expect(cluster.broadcast(0, String(repeating: "q", count: 100)) == .sendBufferFull)
        #expect(cluster.members[0].counters.sendBufferFull == 2)
        // Everything queued is delivered once slots pass.
        cluster.runRounds(0...4)
        #expect(cluster.delivered[1].count == queued)
        #expect(cluster.delivered[1].map(\.sequence) == Array(1...UInt64(queued)))
    }

    @Test func malformedAndForeignFramesAreCountedNotDelivered() {
        var cluster = TestCluster(memberCount: 2)
        _ = cluster.broadcast(0, "x")
        var frame = cluster.openSlot(0, round: 0)[0]
        var garbled = frame
        garbled[0] ^= 0xFF
        #expect(cluster.receive(1, garbled).0 == .malformed(.badMagic(0x4E4C_52BC)))
        frame[16] = 9  // another epoch
        #expect(cluster.receive(1, frame).0 == .ignored)
        #expect(cluster.members[1].counters.malformedFrames == 1)
        #expect(cluster.members[1].counters.wrongEpochFrames == 1)
        #expect(cluster.delivered[1].isEmpty)
    }

    @Test func aLostFrameIsNakedRepairedAndDeliveredInOrder() {
        var cluster = TestCluster(memberCount: 3)
        cluster.runRounds(0...0)
        _ = cluster.broadcast(1, "lost")
        _ = cluster.broadcast(2, "after")
        cluster.openSlot(0, round: 1); cluster.flush(0, to: [1, 2])
        cluster.openSlot(1, round: 1); cluster.flush(1, to: [0])  // member 2 misses it
        cluster.openSlot(2, round: 1); cluster.flush(2, to: [0, 1])
        #expect(cluster.delivered[2].isEmpty)  // its own "after" waits behind the gap
        cluster.runRounds(2...4)
        #expect(cluster.delivered[2].map { String(decoding: $0.payload, as: UTF8.self) } == ["lost", "after"])
        #expect(cluster.members[2].counters.naksSent >= 1)
        #expect(cluster.members[1].counters.framesRetransmitted >= 1)
    }

    @Test func configurationErrorsSayWhatIsWrong() throws {
        let schedule = try TDMASchedule(memberCount: 3, roundPeriodNanos: 100_000, reservation: 0.5)
        var configuration = OrderingConfiguration(rank: 3, schedule: schedule)
        #expect(throws: OrderingConfigurationError.rankOutOfRange(rank: 3, memberCount: 3)) {
            try OrderingInstance(configuration: configuration)
        }
        configuration.rank = 0
        configuration.maxFrameBytes = 200
        #expect(throws: OrderingConfigurationError.self) { try OrderingInstance(configuration: configuration) }
        configuration.maxFrameBytes = 1472
        configuration.sendBufferBytes = 10
        #expect(throws: OrderingConfigurationError.sendBufferTooSmall(sendBufferBytes: 10, neededBytes: configuration.batchBudgetBytes)) {
            try OrderingInstance(configuration: configuration)
        }
    }
}

/// Property: whatever order, duplication and timing frames arrive in, every
/// member's deliveries equal a deliberately simple reference — collect every
/// message that was sent, sort by (round, slot, index).
@Suite("Ordering against a reference")
struct ReferenceOrderingTests {
    @Test(arguments: 1...60)
    func anyArrivalOrderGivesTheReferenceOrder(seed: Int) {
        var random = SimulationRandom(seed: UInt64(seed))
        let memberCount = random.int(in: 2...5)
        let rounds = UInt64(random.int(in: 3...12))
        var cluster = TestCluster(memberCount: memberCount, windowRounds: 32)
        // Everyone sends every round; frames are held back and delivered later in a random order.
        var reference: [(UInt64, Int, Int, String)] = []
        var inFlight: [(to: Int, frame: [UInt8])] = []
        for round in 0..<rounds {
            for member in 0..<memberCount {
                var index = 0
                for _ in 0..<random.int(in: 0...3) {
                    let text = "s\(seed)m\(member)r\(round)i\(index)"
                    if case .queued = cluster.broadcast(member, text) {
                        reference.append((round, member, index, text))
                        index += 1
                    }
                }
                for frame in cluster.openSlot(member, round: round) {
                    for target in 0..<memberCount where target != member {
                        inFlight.append((target, frame))
                        if random.chance(0.3) { inFlight.append((target, frame)) }  // duplicate
                    }
                }
                cluster.outbox[member].removeAll()
            }
        }
        inFlight.shuffle(using: &random)
        for (target, frame) in inFlight { cluster.receive(target, frame) }
        reference.sort { ($0.0, $0.1, $0.2) < ($1.0, $1.1, $1.2) }
        let expected = reference.map(\.3)
        for member in 0..<memberCount {
            #expect(
                cluster.delivered[member].map { String(decoding: $0.payload, as: UTF8.self) } == expected,
                "seed \(seed) member \(member)")
        }
    }
}
