import CarillonOrdering

/// Everything a simulation run varies: cluster shape, network faults, clocks
/// and workload. ``standard`` is a fixed, moderately hostile profile;
/// ``swarm(seed:)`` draws every parameter from the seed, so that a sweep covers
/// combinations no one thought to write down (TigerBeetle's swarm testing).
public struct FaultProfile: Sendable, Hashable, CustomStringConvertible {
    public var memberCount = 3
    public var deliveryMode: DeliveryMode = .agreed
    /// Slot by slot, or at once with promises.
    public var orderingMode: OrderingMode = .slots
    public var roundPeriodNanos: UInt64 = 100_000
    public var windowRounds = 64
    public var maxFrameBytes = 1472
    /// Rounds of the safety phase (faults on, workload on).
    public var faultRounds = 400
    /// Bound on the liveness phase: with faults off, everything broadcast must be
    /// delivered everywhere within this many rounds.
    public var livenessBoundRounds = 600

    // Network, per frame and link. Each directed link draws its own base
    // latency and jitter between 0.5× and 1.5× these.
    public var baseLatencyNanos: UInt64 = 30_000
    public var jitterNanos: UInt64 = 40_000
    public var lossProbability = 0.05
    public var duplicateProbability = 0.02
    public var spikeProbability = 0.01
    public var spikeNanos: UInt64 = 2_000_000
    /// Chance per round that a partition starts (when none is active).
    public var partitionProbability = 0.005
    /// Length of a partition, in rounds.
    public var partitionRounds = 30

    // Clocks, per member.
    public var maxClockOffsetNanos: UInt64 = 50_000
    public var maxDriftPPM: Int = 200
    /// Chance per round that a member pauses (a GC or scheduler stall) and how long.
    public var pauseProbability = 0.002
    public var pauseNanos: UInt64 = 1_000_000
    /// Pauses at fixed times, on top of the random ones (regression scenarios).
    public var scriptedPauses: [ScriptedPause] = []

    // Hosts, per member. These stay on in the liveness phase: they are the
    // machine, not a fault that heals.
    /// Frames a member's receive queue holds (a socket buffer); a frame that
    /// arrives to a full queue is dropped. 0: unbounded.
    public var receiveQueueFrames = 0
    /// CPU time a member spends on each received frame; frames wait in the
    /// receive queue meanwhile, and so does the member's next slot.
    public var frameCostNanos: UInt64 = 0

    // The replaying adversary.
    /// Chance per transmitted frame that an old frame of this run (one sent
    /// earlier, kept by the adversary) is injected again to a random member,
    /// up to `replayDelayRounds` rounds later.
    public var replayProbability = 0.0
    public var replayDelayRounds = 50

    // Workload, per member and round.
    public var broadcastProbability = 0.3
    public var maxMessagesPerRound = 8
    public var maxPayloadBytes = 200

    public init() {}

    /// The heartbeat of promise-mode members in the simulator (the runtime's default).
    public static let promiseHeartbeatNanos: UInt64 = 3_000_000

    /// The fixed profile used by `carillon-sim --seed N` without `--swarm`.
    public static let standard = FaultProfile()

    /// A profile drawn from `seed`: each fault is off, mild or harsh.
    public static func swarm(seed: UInt64) -> FaultProfile {
        var random = SimulationRandom(seed: seed ^ 0x5157_4152_4D00_0000)
        var p = FaultProfile()
        p.memberCount = random.int(in: 2...6)
        p.deliveryMode = random.chance(0.3) ? .safe : .agreed
        p.roundPeriodNanos = [50_000, 100_000, 250_000, 1_000_000][random.int(in: 0...3)]
        p.windowRounds = [8, 16, 64, 256][random.int(in: 0...3)]
        p.maxFrameBytes = [600, 1472, 9000][random.int(in: 0...2)]
        p.faultRounds = random.int(in: 100...500)
        p.baseLatencyNanos = UInt64(random.int(in: 5_000...200_000))
        p.jitterNanos = random.chance(0.2) ? 0 : UInt64(random.int(in: 0...3 * Int(p.roundPeriodNanos)))
        p.lossProbability = [0, 0.01, 0.05, 0.2, 0.4][random.int(in: 0...4)]
        p.duplicateProbability = [0, 0.01, 0.1, 0.3][random.int(in: 0...3)]
        p.spikeProbability = [0, 0.001, 0.02][random.int(in: 0...2)]
        p.spikeNanos = UInt64(random.int(in: 1...50)) * p.roundPeriodNanos
        p.partitionProbability = [0, 0.002, 0.02][random.int(in: 0...2)]
        p.partitionRounds = random.int(in: 1...120)
        p.maxClockOffsetNanos = UInt64(random.int(in: 0...2 * Int(p.roundPeriodNanos)))
        p.maxDriftPPM = [0, 50, 500][random.int(in: 0...2)]
        p.pauseProbability = [0, 0.001, 0.01][random.int(in: 0...2)]
        // Short stalls of up to 100 rounds, or a descheduled process: 1–50 ms.
        p.pauseNanos =
            random.chance(0.5)
            ? UInt64(random.int(in: 1...100)) * p.roundPeriodNanos : UInt64(random.int(in: 1...50)) * 1_000_000
        p.broadcastProbability = [0.05, 0.3, 0.9][random.int(in: 0...2)]
        p.maxMessagesPerRound = [1, 4, 32][random.int(in: 0...2)]
        p.maxPayloadBytes = [16, 200, 1000][random.int(in: 0...2)]
        // A socket buffer of a few frames per peer up to a roomy one, and a CPU
        // cost per frame of up to a fifth of a member's share of the round
        // (slot frames alone then use at most 20% of it; repair storms show).
        p.receiveQueueFrames = [0, 4 * p.memberCount, 32 * p.memberCount, 256][random.int(in: 0...3)]
        p.frameCostNanos =
            [
                0, p.roundPeriodNanos / UInt64(20 * p.memberCount),
                p.roundPeriodNanos / UInt64(5 * p.memberCount)
            ][random.int(in: 0...2)]
        p.replayProbability = [0, 0.01, 0.05][random.int(in: 0...2)]
        p.replayDelayRounds = random.int(in: 1...200)
        // The window must cover the stability lag — about two one-way latencies
        // plus a round for agreed delivery, twice that for safe — or buffering
        // ahead throttles the bus below its own catch-up rate (docs/protocol.md).
        let oneWayRounds = Int((p.baseLatencyNanos + p.jitterNanos) * 3 / 2 / p.roundPeriodNanos) + 1
        let lagRounds = (p.deliveryMode == .safe ? 4 : 2) * oneWayRounds + 2
        // A sender keeps its data within half a window of its stability line
        // (docs/protocol.md §10), so the window covers twice that lag.
        p.windowRounds = max(p.windowRounds, 4 * lagRounds)
        // Liveness: long enough to drain a full window per member several times over.
        // A pause that starts just before the faults stop runs on into the liveness phase.
        p.livenessBoundRounds =
            200 + 8 * p.windowRounds + 4 * Int(p.spikeNanos / p.roundPeriodNanos)
            + Int(p.pauseNanos / p.roundPeriodNanos)
        // Drawn last, so the other parameters of a seed stay what they were.
        p.orderingMode = random.chance(0.5) ? .promises : .slots
        if p.orderingMode == .promises {
            // A lost promise waits for the next heartbeat at worst.
            p.livenessBoundRounds += 4 * Int(FaultProfile.promiseHeartbeatNanos / p.roundPeriodNanos)
        }
        return p
    }

    public var description: String {
        "members=\(memberCount) mode=\(deliveryMode.rawValue)/\(orderingMode.rawValue) period=\(roundPeriodNanos)ns window=\(windowRounds) "
            + "frame=\(maxFrameBytes)B rounds=\(faultRounds) latency=\(baseLatencyNanos)+\(jitterNanos)ns "
            + "loss=\(lossProbability) dup=\(duplicateProbability) spike=\(spikeProbability)x\(spikeNanos)ns "
            + "partition=\(partitionProbability)x\(partitionRounds)r clock=±\(maxClockOffsetNanos)ns/\(maxDriftPPM)ppm "
            + "pause=\(pauseProbability)x\(pauseNanos)ns\(scriptedPauses.isEmpty ? "" : "+\(scriptedPauses)") "
            + "queue=\(receiveQueueFrames == 0 ? "∞" : String(receiveQueueFrames))x\(frameCostNanos)ns "
            + "replay=\(replayProbability)x≤\(replayDelayRounds)r load=\(broadcastProbability)x\(maxMessagesPerRound)x≤\(maxPayloadBytes)B"
    }
}

/// A stall of one member at a fixed time: the member neither sends nor takes
/// frames in, which wait in (and overflow) its receive queue.
public struct ScriptedPause: Sendable, Hashable, CustomStringConvertible {
    public var member: Int
    public var atRound: UInt64
    public var nanos: UInt64
    public init(member: Int, atRound: UInt64, nanos: UInt64) {
        self.member = member
        self.atRound = atRound
        self.nanos = nanos
    }
    public var description: String { "member \(member) at round \(atRound) for \(nanos)ns" }
}
