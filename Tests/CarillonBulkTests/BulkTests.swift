import CarillonBulk
import CarillonSchedule
import Testing

/// A seeded generator, so every failing case replays.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite struct BulkPacerTests {
    let schedule = try! TDMASchedule(memberCount: 3, roundPeriodNanos: 500_000, reservation: 0.5)

    @Test func gatedDatagramsAreHandedOverOnlyInTheUnreservedWindowAndLeaveBeforeTheSlots() throws {
        var pacer = BulkPacer(pacing: .gated, linkBitsPerSecond: 200_000_000, reservation: 0.5, marginNanos: 20_000)
        try pacer.validate(datagramBytes: 1_456, schedule: schedule)
        let transmit = BulkPacer.transmissionNanos(bytes: 1_456, bitsPerSecond: 200e6)
        let reserved = UInt64(schedule.memberCount) * schedule.slotNanos
        var random = SplitMix(state: 7)
        var now: UInt64 = 123_457
        var sent = 0
        let end: UInt64 = 100_000_000  // 100 ms
        while now < end {
            let release = pacer.releaseTime(bytes: 1_456, atNanos: now, schedule: schedule)
            if release > now {
                now = release + UInt64.random(in: 0...30_000, using: &random)  // the shell wakes up late
                continue
            }
            let start = pacer.scheduledStart(bytes: 1_456, atNanos: now, schedule: schedule)
            // Handed over while the unreserved window is open, in the round it is scheduled in …
            #expect((now - schedule.originNanos) % schedule.roundPeriodNanos >= reserved)
            #expect(schedule.round(atNanos: now) == schedule.round(atNanos: start))
            // … and scheduled to be off the link a margin before the next round's slots.
            let intoRound = (start - schedule.originNanos) % schedule.roundPeriodNanos
            #expect(intoRound >= reserved)
            #expect(intoRound + transmit + pacer.marginNanos <= schedule.roundPeriodNanos)
            pacer.didSend(bytes: 1_456, atNanos: now, schedule: schedule)
            sent += 1
        }
        // Late wake-ups cost nothing: every round's unreserved part carries whole datagrams back to back.
        let perRound = (schedule.roundPeriodNanos - reserved - pacer.marginNanos) / transmit
        let rounds = end / schedule.roundPeriodNanos
        #expect(abs(sent - Int(perRound * rounds)) <= Int(perRound) + 2, "\(sent) sent, \(perRound) per round over \(rounds) rounds")
    }

    @Test func gatedRefusesDatagramsThatCannotFitTheWindow() {
        let pacer = BulkPacer(pacing: .gated, linkBitsPerSecond: 10_000_000, reservation: 0.5)
        #expect(throws: BulkPacingError.self) { try pacer.validate(datagramBytes: 1_456, schedule: schedule) }
        #expect(pacer.releaseTime(bytes: 1_456, atNanos: 0, schedule: schedule) == .max)
    }

    @Test func pacedTakesTheUnreservedShareOfTheLink() {
        var pacer = BulkPacer(pacing: .paced, linkBitsPerSecond: 100_000_000, reservation: 0.25)
        var now: UInt64 = 0
        var bytes = 0
        while now < 1_000_000_000 {
            now = max(now, pacer.releaseTime(bytes: 1_000, atNanos: now, schedule: nil))
            pacer.didSend(bytes: 1_000, atNanos: now, schedule: nil)
            bytes += 1_000 + BulkPacer.overheadBytes
        }
        // 75 Mbit/s, plus at most one burst allowance.
        let burstBits = Double(BulkPacer.pacedBurstNanos) * 75e6 / 1e9
        #expect(abs(Double(bytes * 8) - 75e6) <= 0.01 * 75e6 + burstBits)
    }

    @Test func unpacedNeverWaits() {
        var pacer = BulkPacer(pacing: .unpaced, linkBitsPerSecond: 1, reservation: 0.5)
        pacer.didSend(bytes: 60_000, atNanos: 5, schedule: schedule)
        #expect(pacer.releaseTime(bytes: 60_000, atNanos: 6, schedule: schedule) == 6)
    }
}

@Suite struct BulkDatagramTests {
    func datagram(index: UInt32 = 1, count: UInt32 = 3, total: UInt64 = 250, chunk: UInt16 = 100, payload: Int = 100, tag: Int = 16) -> [UInt8] {
        var bytes = [UInt8](repeating: 0x5A, count: BulkWire.headerBytes + payload + tag)
        let header = BulkHeader(
            kind: .data, sender: 1, receiver: 2, chunkBytes: chunk, chunkIndex: index, chunkCount: count,
            tagLength: UInt16(tag), payloadLength: UInt16(payload), transferID: 9, totalBytesOrBitmap: total,
            senderIncarnation: 0x1122_3344_5566_7788, receiverIncarnation: 0x99AA_BBCC_DDEE_FF00)
        bytes.withUnsafeMutableBytes { header.encode(into: $0) }
        return bytes
    }

    @Test func roundTrip() throws {
        let bytes = datagram()
        let header = try bytes.withUnsafeBytes { try BulkHeader.decode($0, expectedTagLength: 16) }
        #expect(header.chunkIndex == 1 && header.chunkCount == 3 && header.totalBytesOrBitmap == 250 && header.transferID == 9)
        #expect(header.senderIncarnation == 0x1122_3344_5566_7788 && header.receiverIncarnation == 0x99AA_BBCC_DDEE_FF00)
        #expect(bytes.count == 56 + 100 + 16 && bytes[4] == 2, "version 2: a 56-byte header")
    }

    @Test func everyPrefixIsRefusedWithAReason() {
        let bytes = datagram()
        for length in 0..<bytes.count {
            #expect(throws: BulkDatagramError.self) {
                try bytes.withUnsafeBytes { try BulkHeader.decode(UnsafeRawBufferPointer(rebasing: $0[0..<length]), expectedTagLength: 16) }
            }
        }
    }

    @Test func inconsistentChunksAreRefused() {
        let cases: [[UInt8]] = [
            datagram(index: 3),  // index past the count
            datagram(total: 400),  // 400 B are not 3 chunks of 100
            datagram(index: 2, payload: 100),  // the last chunk carries 50
            datagram(tag: 0)  // no tag where one is expected
        ]
        for bytes in cases {
            #expect(throws: BulkDatagramError.self) { try bytes.withUnsafeBytes { try BulkHeader.decode($0, expectedTagLength: 16) } }
        }
        var badMagic = datagram()
        badMagic[0] ^= 0xFF
        #expect(throws: BulkDatagramError.badMagic) { try badMagic.withUnsafeBytes { try BulkHeader.decode($0, expectedTagLength: 16) } }
    }
}

@Suite struct BulkTransferTests {
    /// Runs senders and receivers over a network that loses, duplicates and
    /// reorders datagrams (seeded), until every transfer is acknowledged.
    static let small: BulkTransferConfiguration = {
        var configuration = BulkTransferConfiguration()
        configuration.chunkBytes = 300
        configuration.windowChunks = 16
        configuration.retransmitTimeoutNanos = 2_000_000
        return configuration
    }()

    func exchange(
        seed: UInt64, loss: Double, transfers: Int, configuration: BulkTransferConfiguration = small,
        maxBytes: Int = 5_000, ackEvery: UInt32 = 4
    ) -> (delivered: [(UInt16, UInt64, [UInt8], UInt16)], sent: [(UInt16, UInt16, [UInt8])], steps: Int) {
        var random = SplitMix(state: seed)
        var senders = (0..<3).map { BulkSender(node: UInt16($0), configuration: configuration, firstTransferID: 1_000) }
        var receivers = (0..<3).map { BulkReceiver(node: UInt16($0), incarnation: 0, chunkBytes: configuration.chunkBytes, ackEveryChunks: ackEvery) }
        var sent: [(UInt16, UInt16, [UInt8])] = []
        for i in 0..<transfers {
            let from = UInt16(i % 3), to = UInt16((i % 3 + 1 + (i / 3) % 2) % 3)
            let bytes = (0..<Int.random(in: 1...maxBytes, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            guard case .queued = senders[Int(from)].enqueue(bytes, to: to) else { Issue.record("not queued"); continue }
            sent.append((from, to, bytes))
        }
        // In flight: (deliver at, datagram kind, from, header, payload).
        var network: [(at: UInt64, header: BulkHeader, payload: [UInt8])] = []
        var delivered: [(UInt16, UInt64, [UInt8], UInt16)] = []
        var now: UInt64 = 0
        func transmit(_ header: BulkHeader, _ payload: [UInt8]) {
            if Double.random(in: 0..<1, using: &random) < loss { return }
            let copies = Double.random(in: 0..<1, using: &random) < 0.05 ? 2 : 1
            for _ in 0..<copies { network.append((now + UInt64.random(in: 10_000...400_000, using: &random), header, payload)) }
        }
        var steps = 0
        while senders.contains(where: { $0.pendingTransfers > 0 }), steps < 200_000 {
            steps += 1
            now += 50_000
            for s in senders.indices {
                while let chunk = senders[s].nextChunk(atNanos: now) {
                    let payload = senders[s].withBytes(of: chunk) { Array($0) }
                    senders[s].didSend(chunk, atNanos: now)
                    transmit(
                        BulkHeader(
                            kind: .data, sender: UInt16(s), receiver: chunk.destination, chunkBytes: UInt16(configuration.chunkBytes),
                            chunkIndex: chunk.index, chunkCount: chunk.count, tagLength: 0,
                            payloadLength: UInt16(chunk.length), transferID: chunk.transferID,
                            totalBytesOrBitmap: chunk.totalBytes), payload)
                }
            }
            network.shuffle(using: &random)
            let due = network.filter { $0.at <= now }
            network.removeAll { $0.at <= now }
            for d in due {
                let r = Int(d.header.receiver)
                switch d.header.kind {
                case .data:
                    var ack = false
                    switch d.payload.withUnsafeBytes({ receivers[r].receive(d.header, payload: $0, atNanos: now) }) {
                    case .stored(let due): ack = due
                    case .completed(let id, let bytes): delivered.append((d.header.sender, id, bytes, d.header.receiver)); ack = true
                    case .duplicate: ack = true
                    case .stale: break
                    case .refused(let why): Issue.record("refused: \(why)")
                    }
                    if ack {
                        let (below, bitmap) = receivers[r].acknowledgement(
                            for: d.header.sender, transferID: d.header.transferID,
                            chunkCount: d.header.chunkCount)
                        transmit(
                            BulkHeader(
                                kind: .ack, sender: UInt16(r), receiver: d.header.sender, chunkBytes: 0,
                                chunkIndex: below, chunkCount: d.header.chunkCount, tagLength: 0, payloadLength: 0,
                                transferID: d.header.transferID, totalBytesOrBitmap: bitmap), [])
                    }
                case .ack:
                    _ = senders[r].handleAck(
                        from: d.header.sender, transferID: d.header.transferID,
                        receivedBelow: d.header.chunkIndex, bitmap: d.header.totalBytesOrBitmap, atNanos: now)
                }
            }
        }
        return (delivered, sent, steps)
    }

    @Test(arguments: [(UInt64(1), 0.0), (2, 0.1), (3, 0.3), (4, 0.05), (5, 0.2)])
    func everyTransferArrivesOnceAndIntactDespiteLossDuplicationAndReordering(seed: UInt64, loss: Double) {
        check(exchange(seed: seed, loss: loss, transfers: 24), seed: seed)
    }

    /// The defaults (a 512-chunk window, wider than the 64-chunk selective
    /// acknowledgement; an acknowledgement every 16 chunks), with transfers of
    /// up to 300 chunks under heavy loss.
    /// A lost retransmission of a hole must not stall the transfer (one
    /// timeout at a time, fast retransmission again after a resend).
    @Test(arguments: [UInt64(11), 12, 13])
    func defaultWindowBeyondTheSelectiveAcknowledgementDoesNotStall(seed: UInt64) {
        let result = exchange(
            seed: seed, loss: 0.2, transfers: 9, configuration: BulkTransferConfiguration(), maxBytes: 420_000,
            ackEvery: 16)
        check(result, seed: seed)
        // Simulated time, not a speed: 9 transfers of ≤ 300 chunks over 20 % loss finish well inside 10 s.
        #expect(result.steps < 200_000, "seed \(seed): not finished after \(result.steps) steps of 50 µs")
    }

    func check(_ result: (delivered: [(UInt16, UInt64, [UInt8], UInt16)], sent: [(UInt16, UInt16, [UInt8])], steps: Int), seed: UInt64) {
        let (delivered, sent, _) = result
        #expect(delivered.count == sent.count, "seed \(seed): \(delivered.count) of \(sent.count) transfers delivered")
        // Per (source, destination) the transfers arrive in the order they were queued, each once, byte for byte.
        for from in 0..<3 {
            for to in 0..<3 where to != from {
                let expected = sent.filter { $0.0 == from && $0.1 == to }.map(\.2)
                let got = delivered.filter { Int($0.0) == from && $0.3 == UInt16(to) }.map(\.2)
                // Compared whole; reported by length, so a failure stays readable.
                #expect(got == expected, "seed \(seed): \(from)→\(to): got lengths \(got.map(\.count)), sent \(expected.map(\.count))")
            }
        }
    }

    @Test func aFullQueueRefusesInsteadOfDropping() {
        var configuration = BulkTransferConfiguration()
        configuration.maxQueuedBytes = 10_000
        var sender = BulkSender(node: 0, configuration: configuration, firstTransferID: 1)
        #expect(sender.enqueue([UInt8](repeating: 1, count: 6_000), to: 1) == .queued(transferID: 1))
        #expect(sender.enqueue([UInt8](repeating: 2, count: 6_000), to: 1) == .queueFull)
        #expect(sender.enqueue([], to: 1) == .invalidLength(0))
        // Acknowledge the first transfer completely: room again.
        while let chunk = sender.nextChunk(atNanos: 0) { sender.didSend(chunk, atNanos: 0) }
        #expect(sender.handleAck(from: 1, transferID: 1, receivedBelow: 5, bitmap: 0, atNanos: 1) == 1)
        #expect(sender.enqueue([UInt8](repeating: 2, count: 6_000), to: 1) == .queued(transferID: 2))
    }

    @Test func aReplayedChunkOfADeliveredTransferIsNotDeliveredAgain() {
        var receiver = BulkReceiver(node: 2, incarnation: 0, chunkBytes: 100)
        let header = BulkHeader(
            kind: .data, sender: 1, receiver: 2, chunkBytes: 100, chunkIndex: 0, chunkCount: 1, tagLength: 0,
            payloadLength: 10, transferID: 7, totalBytesOrBitmap: 10)
        let payload = [UInt8](repeating: 3, count: 10)
        guard case .completed(7, payload) = payload.withUnsafeBytes({ receiver.receive(header, payload: $0, atNanos: 1) }) else {
            Issue.record("first copy not delivered")
            return
        }
        guard case .duplicate = payload.withUnsafeBytes({ receiver.receive(header, payload: $0, atNanos: 1) }) else {
            Issue.record("replay not recognised")
            return
        }
        #expect(receiver.acknowledgement(for: 1, transferID: 7, chunkCount: 1) == (1, 0))
        var tooLong = header
        tooLong.transferID = 8
        tooLong.totalBytesOrBitmap = 1 << 40
        guard case .refused = payload.withUnsafeBytes({ receiver.receive(tooLong, payload: $0, atNanos: 2) }) else {
            Issue.record("over-long transfer accepted")
            return
        }
    }
}

@Suite struct BulkRecoveryTests {
    /// One transfer of 600 chunks whose first copies of chunks 100–299 (a run
    /// far wider than the 64-chunk bitmap) and of the last five are lost; every
    /// other datagram and every resend arrives after 200 µs. Recovery must take
    /// a few timeouts, not one timeout per lost chunk (205 × 20 ms).
    @Test func aLongBurstAndALostTailRecoverInAFewTimeouts() {
        let configuration = BulkTransferConfiguration()
        var sender = BulkSender(node: 0, configuration: configuration, firstTransferID: 1)
        var receiver = BulkReceiver(node: 1, incarnation: 0, chunkBytes: configuration.chunkBytes)
        let bytes = (0..<(600 * configuration.chunkBytes)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        guard case .queued(let id) = sender.enqueue(bytes, to: 1) else { Issue.record("not queued"); return }
        var firstCopy = Set<UInt32>()
        var inFlight: [(at: UInt64, header: BulkHeader, payload: [UInt8])] = []
        var delivered: [UInt8]?
        var now: UInt64 = 1_000
        while delivered == nil || sender.pendingTransfers > 0, now < 10_000_000_000 {
            now += 50_000
            while let chunk = sender.nextChunk(atNanos: now) {
                let payload = sender.withBytes(of: chunk) { Array($0) }
                sender.didSend(chunk, atNanos: now)
                let lost = firstCopy.insert(chunk.index).inserted && ((100..<300).contains(chunk.index) || chunk.index >= 595)
                if !lost {
                    inFlight.append(
                        (
                            now + 200_000,
                            BulkHeader(
                                kind: .data, sender: 0, receiver: 1, chunkBytes: UInt16(configuration.chunkBytes),
                                chunkIndex: chunk.index, chunkCount: chunk.count, tagLength: 0,
                                payloadLength: UInt16(chunk.length), transferID: chunk.transferID,
                                totalBytesOrBitmap: chunk.totalBytes), payload
                        ))
                }
            }
            let due = inFlight.filter { $0.at <= now }
            inFlight.removeAll { $0.at <= now }
            for d in due {
                var ack = false
                switch d.payload.withUnsafeBytes({ receiver.receive(d.header, payload: $0, atNanos: now) }) {
                case .stored(let due): ack = due
                case .completed(_, let data): delivered = data; ack = true
                case .duplicate: ack = true
                case .stale, .refused: break
                }
                if ack {
                    let (below, bitmap) = receiver.acknowledgement(for: 0, transferID: id, chunkCount: 600)
                    _ = sender.handleAck(from: 1, transferID: id, receivedBelow: below, bitmap: bitmap, atNanos: now)
                }
            }
        }
        #expect(delivered == bytes)
        // Simulated time: a handful of 20 ms timeouts (doubling), not 205 of them.
        #expect(now < 400_000_000, "took \(now / 1_000_000) ms of simulated time")
        #expect(sender.counters.chunksRetransmitted < 400, "\(sender.counters.chunksRetransmitted) chunks resent for 205 lost")
    }
}

/// Issue 12, defect 9 (bulk replays): datagrams are bound to the sender's and
/// the receiver's incarnations, and within one sender incarnation transfer ids
/// only grow, so a recorded transfer is never handed over twice — not to a
/// restarted receiver, not after the completed-id ring has forgotten it.
@Suite struct BulkReplayTests {
    /// One whole transfer of `bytes` as the datagrams `sender` would send.
    func datagrams(
        id: UInt64, bytes: Int, chunk: Int = 100, from: UInt16 = 1, fromIncarnation: UInt64,
        to: UInt16 = 2, toIncarnation: UInt64
    ) -> [(BulkHeader, [UInt8])] {
        let count = (bytes + chunk - 1) / chunk
        return (0..<count).map { index in
            let length = min(chunk, bytes - index * chunk)
            let header = BulkHeader(
                kind: .data, sender: from, receiver: to, chunkBytes: UInt16(chunk), chunkIndex: UInt32(index),
                chunkCount: UInt32(count), tagLength: 0, payloadLength: UInt16(length), transferID: id,
                totalBytesOrBitmap: UInt64(bytes), senderIncarnation: fromIncarnation, receiverIncarnation: toIncarnation)
            return (header, [UInt8](repeating: UInt8(truncatingIfNeeded: id), count: length))
        }
    }

    /// Feeds datagrams; returns the ids handed over.
    func feed(_ receiver: inout BulkReceiver, _ datagrams: [(BulkHeader, [UInt8])], at now: UInt64, floor: UInt64 = 0) -> [UInt64] {
        var completed: [UInt64] = []
        for (header, payload) in datagrams {
            if case .completed(let id, _) = payload.withUnsafeBytes({
                receiver.receive(header, payload: $0, atNanos: now, senderIncarnationAtLeast: floor)
            }) {
                completed.append(id)
            }
        }
        return completed
    }

    @Test func transfersRecordedBeforeTheReceiverRestartedAreRefusedAndCounted() {
        var before = BulkReceiver(node: 2, incarnation: 1_000, chunkBytes: 100)
        var recorded: [(BulkHeader, [UInt8])] = []
        for id in UInt64(1)...81 { recorded += datagrams(id: id, bytes: 250, fromIncarnation: 500, toIncarnation: 1_000) }
        #expect(feed(&before, recorded, at: 1_000).count == 81)
        // The receiver restarts (a new incarnation, no memory); all 81 transfers are replayed.
        var after = BulkReceiver(node: 2, incarnation: 2_000, chunkBytes: 100)
        #expect(feed(&after, recorded, at: 2_000) == [], "a restarted receiver delivered replayed transfers")
        #expect(after.counters.wrongIncarnation == recorded.count)
        #expect(after.counters.transfersCompleted == 0)
        // The sender's genuine next transfer, addressed to the new incarnation, arrives.
        #expect(feed(&after, datagrams(id: 82, bytes: 250, fromIncarnation: 500, toIncarnation: 2_000), at: 2_001) == [82])
    }

    @Test func anOldTransferReplayedAfterTheCompletedRingForgotItIsADuplicate() {
        let abandon = BulkTransferConfiguration().abandonAfterNanos
        var receiver = BulkReceiver(node: 2, incarnation: 7, chunkBytes: 100)
        var now: UInt64 = 1_000
        var recorded: [(BulkHeader, [UInt8])] = []
        for id in UInt64(1)...100 {
            let transfer = datagrams(id: id, bytes: 150, fromIncarnation: 3, toIncarnation: 7)
            recorded += transfer
            #expect(feed(&receiver, transfer, at: now) == [id])
            now += 1_000_000
        }
        // 31 s of silence, then every recorded transfer again: none is handed over.
        now += abandon + 1_000_000_000
        #expect(feed(&receiver, recorded, at: now) == [], "old transfers delivered again after the silence")
        #expect(receiver.counters.transfersCompleted == 100)
        // And each is acknowledged as complete (the sender may have missed the acknowledgement).
        #expect(receiver.acknowledgement(for: 1, transferID: 1, chunkCount: 2) == (2, 0))
        #expect(feed(&receiver, datagrams(id: 101, bytes: 150, fromIncarnation: 3, toIncarnation: 7), at: now) == [101])
    }

    @Test func transfersFromAnOlderIncarnationOfTheSenderAreRefused() {
        var receiver = BulkReceiver(node: 2, incarnation: 7, chunkBytes: 100)
        let old = datagrams(id: 50, bytes: 150, fromIncarnation: 3, toIncarnation: 7)
        #expect(feed(&receiver, old, at: 1) == [50])
        // The sender restarts: a new incarnation whose ids start lower (its clock stepped back) is new.
        #expect(feed(&receiver, datagrams(id: 10, bytes: 150, fromIncarnation: 4, toIncarnation: 7), at: 2) == [10])
        // The old incarnation's datagrams are refused now, whatever their ids.
        #expect(feed(&receiver, datagrams(id: 60, bytes: 150, fromIncarnation: 3, toIncarnation: 7), at: 3) == [])
        #expect(receiver.counters.staleIncarnation == 2)
        // A receiver that has not heard from the new incarnation yet refuses the old one when the view says it is gone.
        var fresh = BulkReceiver(node: 2, incarnation: 7, chunkBytes: 100)
        #expect(feed(&fresh, old, at: 1, floor: 4) == [])
        #expect(fresh.counters.staleIncarnation == 2)
    }
}
