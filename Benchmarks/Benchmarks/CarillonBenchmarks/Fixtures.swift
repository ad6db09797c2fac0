import CarillonOrdering
import CarillonSchedule
import CarillonSimulation
import CarillonWire

/// A busy member's slot frame: a 32-message data batch of 64-byte payloads,
/// its received-below position and one NAK range, in a buffer allocated once.
final class WireFixture {
    static let messageCount = 32
    static let payloadBytes = 64

    let buffer: UnsafeMutableRawBufferPointer
    let payload: UnsafeMutableRawBufferPointer
    private(set) var round: UInt64 = 16
    private(set) var frameLength = 0

    init() {
        buffer = .allocate(byteCount: 4096, alignment: 16)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        payload = .allocate(byteCount: Self.payloadBytes, alignment: 16)
        for i in 0..<Self.payloadBytes { payload[i] = UInt8(truncatingIfNeeded: i &* 7 &+ 1) }
        frameLength = encode()
    }

    deinit {
        buffer.deallocate()
        payload.deallocate()
    }

    /// Encodes the next round's frame into `buffer`; returns its length.
    func encode() -> Int {
        round &+= 1
        let round = round
        let payload = UnsafeRawBufferPointer(payload)
        do throws(WireError) {
            var encoder = try FrameEncoder(
                buffer: buffer,
                header: FrameHeader(
                    kind: .slot, senderRank: 0, epoch: 1, round: round,
                    senderTimestampNanos: round &* 100_000))
            try encoder.beginSection(.data)
            let firstSequence = round &* UInt64(Self.messageCount)
            for i in 0..<Self.messageCount {
                try encoder.appendMessage(sequence: firstSequence &+ UInt64(i), payload: payload)
            }
            try encoder.endSection()
            try encoder.beginSection(.positions)
            try encoder.appendPosition(PositionEntry(rank: 0, receivedBelowRound: round &- 1))
            try encoder.endSection()
            try encoder.beginSection(.naks)
            try encoder.appendNak(NakRange(rank: 2, firstRound: round &- 5, lastRound: round &- 3))
            try encoder.endSection()
            return try encoder.finish()
        } catch {
            fatalError("encoding the benchmark frame failed: \(error)")
        }
    }

    /// The frame last encoded.
    var frame: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: buffer[0..<frameLength]) }

    /// Decodes the frame and reads every message, position and NAK; returns a checksum.
    func decodeAndRead() -> Int {
        let view: FrameView
        do { view = try FrameView.decode(frame) } catch { fatalError("decoding the benchmark frame failed: \(error)") }
        var sum = 0
        for message in view.messages {
            sum &+= message.payload.count &+ Int(message.payload[0]) &+ Int(truncatingIfNeeded: message.sequence)
        }
        for position in view.positionEntries { sum &+= Int(truncatingIfNeeded: position.receivedBelowRound) }
        for nak in view.nakRanges { sum &+= Int(truncatingIfNeeded: nak.lastRound &- nak.firstRound) }
        return sum
    }
}

/// Three ordering instances wired to each other with no loss: every round
/// member 0 broadcasts `batch` 64-byte messages, then each member in rank
/// order opens its slot at the slot's start time and its frames reach the
/// other two at once. Each member keeps one `OrderingEffects` for all inputs
/// and clears it after carrying it out, as a shell does.
struct Cluster {
    static let memberCount = 3
    static let payloadBytes = 64

    let batch: Int
    let schedule: TDMASchedule
    var nodes: [OrderingInstance]
    var effects: [OrderingEffects]
    let payload: UnsafeMutableRawBufferPointer
    /// The round `runRound()` plays next.
    private(set) var round: UInt64 = 0
    /// Deliveries summed over members (each message is delivered once per member).
    private(set) var delivered = 0
    /// Payload bytes summed over deliveries.
    private(set) var deliveredBytes = 0

    init(batch: Int) {
        self.batch = batch
        let schedule: TDMASchedule
        do { schedule = try TDMASchedule(memberCount: Self.memberCount, roundPeriodNanos: 100_000, reservation: 0.5) } catch {
            fatalError("schedule: \(error)")
        }
        self.schedule = schedule
        nodes = (0..<Self.memberCount).map { rank in
            var configuration = OrderingConfiguration(rank: rank, schedule: schedule)
            // A 1472-byte frame carries at most 15 messages of 64 bytes (batch
            // budget 1212 bytes); a 32-message batch needs a jumbo frame.
            configuration.maxFrameBytes = 9000
            do { return try OrderingInstance(configuration: configuration) } catch { fatalError("configuration: \(error)") }
        }
        effects = Array(repeating: OrderingEffects(), count: Self.memberCount)
        payload = .allocate(byteCount: Self.payloadBytes, alignment: 16)
        for i in 0..<Self.payloadBytes { payload[i] = UInt8(truncatingIfNeeded: i &+ 1) }
    }

    /// Plays one round.
    mutating func runRound() {
        let payload = UnsafeRawBufferPointer(payload)
        for _ in 0..<batch {
            guard case .queued = nodes[0].broadcast(payload) else { fatalError("broadcast refused in round \(round)") }
        }
        for sender in 0..<Self.memberCount {
            let now = schedule.slotWindow(round: round, rank: sender).startNanos
            nodes[sender].onSlotOpen(round: round, nowNanos: now, effects: &effects[sender])
            // Move the sender's effects out so its frame bytes can be read while
            // the receivers' instances and effects are written.
            var out = OrderingEffects()
            swap(&out, &effects[sender])
            tally(out)
            out.frameBytes.withUnsafeBytes { all in
                for frame in out.frames {
                    let bytes = UnsafeRawBufferPointer(rebasing: all[frame.offset..<(frame.offset + frame.length)])
                    for receiver in 0..<Self.memberCount where receiver != sender {
                        nodes[receiver].onFrameReceived(bytes, nowNanos: now, effects: &effects[receiver])
                        let received = Self.deliveries(in: effects[receiver])
                        delivered += received.count
                        deliveredBytes &+= received.bytes
                        effects[receiver].removeAll()
                    }
                }
            }
            out.removeAll()
            swap(&out, &effects[sender])
        }
        round += 1
    }

    private mutating func tally(_ effects: OrderingEffects) {
        let received = Self.deliveries(in: effects)
        delivered += received.count
        deliveredBytes &+= received.bytes
    }

    /// What "handing deliveries to the application" costs here: reading each one.
    private static func deliveries(in effects: OrderingEffects) -> (count: Int, bytes: Int) {
        var bytes = 0
        for delivery in effects.deliveries { bytes &+= delivery.payloadLength }
        return (effects.deliveries.count, bytes)
    }

    /// Stops the benchmark if the cluster is not in the loss-free steady state
    /// it is meant to measure (no NAKs, no repairs, nothing held back, stability keeping up).
    func checkSteadyState() {
        for (rank, node) in nodes.enumerated() {
            let c = node.counters
            guard c.naksSent == 0, c.repairFramesSent == 0, c.duplicateFrames == 0, c.framesBeyondWindow == 0,
                c.dataHeldByWindow == 0, c.sendBufferFull == 0, c.sequenceGaps == 0,
                node.pendingMessageCount == 0, round - node.stableBelowRound <= 3,
                node.deliveryCursor.round + 1 >= round
            else { fatalError("member \(rank) is not in steady state after round \(round): \(node.debugDescription) \(c)") }
        }
    }
}

/// Holds state that a benchmark builds on its first iteration and reuses.
final class Lazy<Value> {
    var value: Value?
}

// MARK: - Real sockets

import CarillonAuth
import CarillonRuntime
import CarillonTransport
import Glibc
import Synchronization

/// Counts deliveries at one member, from its agent thread.
final class Tally: Sendable {
    let count = Atomic<Int>(0)
}

/// Two `Member`s on 127.0.0.1 in this process (idle strategy `blocking`,
/// authenticated, 8,972-byte frames). Used to count allocations on the
/// runtime's send and delivery paths: the interposer counts every thread's
/// mallocs, so the agent threads' work is included.
final class RuntimeCluster {
    let members: [Member]
    let tally = Tally()
    let payload = [UInt8](repeating: 0x42, count: 64)
    var target = 0

    init() throws {
        let holders = try (0..<2).map { _ in try UDPTransport(options: UDPTransportOptions(bind: UDPEndpoint("127.0.0.1:0")!, peers: [])) }
        let endpoints = holders.map(\.localEndpoint)
        let key = try FrameAuthenticator(hexKey: String(repeating: "3c", count: 32))
        let start = MemberClock.viewNanos()
        let tally = self.tally
        members = try (0..<2).map { rank in
            var configuration = try MemberConfiguration(
                node: rank, nodes: endpoints, roundPeriodNanos: 100_000,
                startNanos: start, authentication: .clusterKey(key))
            configuration.idleStrategy = .blocking
            configuration.ordering.maxFrameBytes = 8972
            return try Member(configuration: configuration) { _, _ in
                if rank == 1 { tally.count.add(1, ordering: .relaxed) }
            }
        }
        for member in members { try member.start() }
    }

    /// Member 0 broadcasts `count` messages; returns once member 1 delivered them all.
    func send(_ count: Int) {
        target += count
        var sent = 0
        while sent < count {
            switch members[0].broadcast(payload) {
            case .queued: sent += 1
            default: sched_yield()
            }
        }
        while tally.count.load(ordering: .relaxed) < target { sched_yield() }
    }
}
