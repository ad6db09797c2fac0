import CarillonOrdering
import CarillonSchedule
import CarillonWire

/// A few ordering instances wired by hand: tests decide which frame reaches whom, when.
struct TestCluster {
    var members: [OrderingInstance]
    var effects = OrderingEffects()
    /// Frames each member has sent and not yet handed to anyone.
    var outbox: [[[UInt8]]]
    /// Every frame each member has sent.
    var history: [[[UInt8]]]
    /// Deliveries per member: (sender, sequence, payload, round, index).
    var delivered: [[Delivered]]
    var nowNanos: UInt64 = 0
    var lastDeliveries: [Delivered] = []

    struct Delivered: Hashable, CustomStringConvertible {
        var sender: Int
        var sequence: UInt64
        var payload: [UInt8]
        var round: UInt64
        var index: Int
        var description: String {
            "(\(sender),\(sequence)) \"\(String(decoding: payload, as: UTF8.self))\" at (\(round),\(sender),\(index))"
        }
    }

    init(
        memberCount: Int, mode: DeliveryMode = .agreed, windowRounds: Int = 16, sendBufferBytes: Int = 4096,
        maxFrameBytes: Int = 1472, configure: (inout OrderingConfiguration) -> Void = { _ in }
    ) {
        let schedule = try! TDMASchedule(memberCount: memberCount, roundPeriodNanos: 100_000, reservation: 0.5)
        members = (0..<memberCount).map { rank in
            var configuration = OrderingConfiguration(rank: rank, schedule: schedule)
            configuration.deliveryMode = mode
            configuration.windowRounds = windowRounds
            configuration.sendBufferBytes = sendBufferBytes
            configuration.maxFrameBytes = maxFrameBytes
            configure(&configuration)
            return try! OrderingInstance(configuration: configuration)
        }
        outbox = Array(repeating: [], count: memberCount)
        history = Array(repeating: [], count: memberCount)
        delivered = Array(repeating: [], count: memberCount)
    }

    var schedule: TDMASchedule { members[0].configuration.schedule }

    mutating func broadcast(_ member: Int, _ text: String) -> BroadcastResult {
        members[member].broadcast(Array(text.utf8))
    }

    /// Opens `member`'s slot of `round` at its start time; returns the frames it sent
    /// (its deliveries, if any, are in ``lastDeliveries``).
    @discardableResult
    mutating func openSlot(_ member: Int, round: UInt64) -> [[UInt8]] {
        nowNanos = max(nowNanos, schedule.slotWindow(round: round, rank: member).startNanos)
        effects.removeAll()
        members[member].onSlotOpen(round: round, nowNanos: nowNanos, effects: &effects)
        let frames = effects.frames.map { Array(effects.frameBytes[$0.offset..<($0.offset + $0.length)]) }
        outbox[member].append(contentsOf: frames)
        history[member].append(contentsOf: frames)
        lastDeliveries = collect(member)
        return frames
    }

    /// Hands `frame` to `member`.
    @discardableResult
    mutating func receive(_ member: Int, _ frame: [UInt8]) -> (FrameDisposition, [Delivered]) {
        effects.removeAll()
        let disposition = frame.withUnsafeBytes { members[member].onFrameReceived($0, nowNanos: nowNanos, effects: &effects) }
        return (disposition, collect(member))
    }

    /// Hands all of `from`'s outbox to each of `to`, then empties it.
    mutating func flush(_ from: Int, to targets: [Int]) {
        for frame in outbox[from] { for target in targets { receive(target, frame) } }
        outbox[from].removeAll()
    }

    /// Runs `rounds` full rounds with every frame reaching every member at once.
    mutating func runRounds(_ rounds: ClosedRange<UInt64>) {
        runRounds(rounds, among: Array(members.indices))
    }

    /// Runs `rounds` with only `alive` sending, each frame reaching the other alive members at once.
    mutating func runRounds(_ rounds: ClosedRange<UInt64>, among alive: [Int]) {
        for round in rounds {
            for member in alive {
                openSlot(member, round: round)
                flush(member, to: alive.filter { $0 != member })
            }
        }
    }

    @discardableResult
    mutating func collect(_ member: Int) -> [Delivered] {
        let new = effects.deliveries.map {
            Delivered(sender: $0.sender, sequence: $0.sequence, payload: Array(effects.payload(of: $0)), round: $0.round, index: $0.index)
        }
        delivered[member].append(contentsOf: new)
        return new
    }
}

/// A one-line description of a frame, for transcripts.
func describeFrame(_ bytes: [UInt8]) -> String {
    bytes.withUnsafeBytes { raw in
        guard let view = try? FrameView.decode(raw) else { return "malformed" }
        return describe(view)
    }
}

private func describe(_ view: FrameView) -> String {
    var parts = ["\(view.header.kind) from \(view.header.senderRank) r=\(view.header.round)"]
    if view.messageCount > 0 {
        parts.append("data=[" + view.messages.map { "\($0.sequence):\(String(decoding: $0.payload, as: UTF8.self))" }.joined(separator: " ") + "]")
    }
    let positions = view.positionEntries.map { "\($0.rank)<\($0.receivedBelowRound)" }
    if !positions.isEmpty { parts.append("pos=[" + positions.joined(separator: " ") + "]") }
    let naks = view.nakRanges.map { "\($0.rank):\($0.firstRound)-\($0.lastRound)" }
    if !naks.isEmpty { parts.append("naks=[" + naks.joined(separator: " ") + "]") }
    let silent = view.silentRanges.map { "\($0.firstRound)-\($0.lastRound)" }
    if !silent.isEmpty { parts.append("silent=[" + silent.joined(separator: " ") + "]") }
    let embedded = view.embeddedFrames.compactMap { try? FrameView.decode($0) }.map { "{" + describe($0) + "}" }
    if !embedded.isEmpty { parts.append("frames=[" + embedded.joined(separator: " ") + "]") }
    return parts.joined(separator: " ")
}
