import CarillonSchedule
import CarillonWire
@_spi(Canary) import CarillonOrdering

/// What one seeded run did and found.
public struct SimulationResult: Sendable, CustomStringConvertible {
    public var seed: UInt64
    public var profile: FaultProfile
    public var violations: [Violation]
    /// Messages accepted by `broadcast` over the run.
    public var messagesBroadcast: Int
    /// Deliveries summed over members.
    public var deliveries: Int
    /// Virtual time at which every member had delivered everything (nil if never).
    public var settledAtNanos: UInt64?
    /// Rounds the liveness phase took to deliver everything everywhere.
    public var livenessRounds: Int?
    public var framesSent: Int
    /// Frames lost: by the network, or to a full receive queue.
    public var framesDropped: Int
    /// Of those, frames that arrived to a full receive queue.
    public var framesDroppedByQueue: Int
    /// Old frames the replaying adversary injected again.
    public var framesReplayed: Int
    /// Repair frames sent in the last quarter of the liveness phase's bound
    /// (or of the run, once settled), summed over members: a storm that does
    /// not end shows here.
    public var repairFramesAtEnd: Int
    /// Per round of the run (from the schedule's origin): repair frames sent,
    /// summed over members, and frames dropped by full receive queues.
    public var repairFramesPerRound: [Int]
    public var queueDropsPerRound: [Int]
    public var events: Int
    /// Counters summed over members.
    public var counters: OrderingCounters
    /// Each member's final positions (see `OrderingInstance.debugDescription`).
    public var memberStates: [String]
    /// Virtual time from broadcast to delivery at every member, per message.
    public var latency: LatencySummary
    /// The first messages in the agreed delivery order.
    public var deliveryOrderPrefix: [MessageID]

    public var passed: Bool { violations.isEmpty }

    public var description: String {
        let status = passed ? "ok" : "FAILED (\(violations.count) violation\(violations.count == 1 ? "" : "s"))"
        return "seed \(seed): \(status) — \(messagesBroadcast) broadcast, \(deliveries) deliveries, "
            + "\(framesSent) frames (\(framesDropped) dropped, \(framesDroppedByQueue) by full queues, \(framesReplayed) replayed), liveness \(livenessRounds.map { "\($0) rounds" } ?? "not reached"), "
            + "\(counters.naksSent) NAKs, \(counters.framesRetransmitted) retransmitted"
    }
}

/// A whole cluster of ordering instances on a simulated network, in virtual
/// time, driven by one seed.
///
/// The run has two phases. **Safety**: for `faultRounds` rounds members
/// broadcast while the network loses, duplicates, reorders and delays frames,
/// partitions split and heal, members pause, and every clock has its own offset
/// and drift. **Liveness**: faults stop, broadcasting stops, and within
/// `livenessBoundRounds` every broadcast message must be delivered at every
/// member. The ``InvariantChecker`` runs on every delivery of both phases.
public struct ClusterSimulator {
    public let seed: UInt64
    public let profile: FaultProfile
    let canary: OrderingCanary?

    var random: SimulationRandom
    var members: [OrderingInstance]
    var effects = OrderingEffects()
    var checker: InvariantChecker
    var queue = TimedQueue<ClusterEvent>()
    var nowNanos: UInt64 = 0

    var clockOffsetNanos: [UInt64]
    /// Per directed link (sender · n + receiver): its base latency and jitter,
    /// each between half and one and a half times the profile's.
    var linkBaseNanos: [UInt64]
    var linkJitterNanos: [UInt64]
    var driftPPM: [Int]
    var pausedUntilNanos: [UInt64]
    /// Per member: frames arrived and not yet taken in (the socket buffer),
    /// from `receiveHead` on; whether a drain is scheduled; when the frame being
    /// taken in is done.
    var receiveQueue: [[[UInt8]]]
    var receiveHead: [Int]
    var drainScheduled: [Bool]
    var busyUntilNanos: [UInt64]
    /// Old frames of this run kept by the replaying adversary.
    var replayPool: [[UInt8]] = []
    var framesDroppedByQueue = 0
    var framesReplayed = 0
    var repairFramesPerRound: [Int] = []
    var queueDropsPerRound: [Int] = []
    /// Payloads refused with backpressure, retried at the member's next wake.
    var backlog: [[[UInt8]]]
    var partitionSide: [Bool]
    var partitionEndsNanos: UInt64 = 0
    var faultsOn = true
    var framesSent = 0
    var framesDropped = 0
    var events = 0
    var payloadScratch: [UInt8] = []

    /// Prepares a run; nothing happens until ``run()``.
    public init(seed: UInt64, profile: FaultProfile) {
        self.init(seed: seed, profile: profile, canary: nil)
    }

    /// Prepares a run whose members use a deliberately broken ordering variant.
    @_spi(Canary) public init(seed: UInt64, profile: FaultProfile, canary: OrderingCanary?) {
        self.seed = seed
        self.profile = profile
        self.canary = canary
        random = SimulationRandom(seed: seed)
        let n = profile.memberCount
        let slot = profile.roundPeriodNanos / UInt64(n) * 9 / 10
        // A schedule that always validates: slots fill 90% of the round, 10% guard.
        let schedule = try! TDMASchedule(
            memberCount: n, roundPeriodNanos: profile.roundPeriodNanos, slotNanos: slot, guardNanos: slot / 10,
            reservation: 0.9, originNanos: 1_000_000)
        members = (0..<n).map { rank in
            var configuration = OrderingConfiguration(rank: rank, schedule: schedule)
            configuration.deliveryMode = profile.deliveryMode
            configuration.mode = profile.orderingMode
            configuration.promiseHeartbeatNanos = FaultProfile.promiseHeartbeatNanos
            configuration.windowRounds = profile.windowRounds
            configuration.maxFrameBytes = profile.maxFrameBytes
            configuration.sendBufferBytes = max(configuration.batchBudgetBytes * 4, 4096)
            configuration.canary = canary
            return try! OrderingInstance(configuration: configuration)
        }
        checker = InvariantChecker(memberCount: n)
        clockOffsetNanos = []
        driftPPM = []
        for _ in 0..<n {
            clockOffsetNanos.append(profile.maxClockOffsetNanos == 0 ? 0 : random.below(profile.maxClockOffsetNanos + 1))
            driftPPM.append(profile.maxDriftPPM == 0 ? 0 : random.int(in: -profile.maxDriftPPM...profile.maxDriftPPM))
        }
        linkBaseNanos = []
        linkJitterNanos = []
        for _ in 0..<(n * n) {
            linkBaseNanos.append(profile.baseLatencyNanos / 2 + random.below(profile.baseLatencyNanos + 1))
            linkJitterNanos.append(profile.jitterNanos / 2 + random.below(profile.jitterNanos + 1))
        }
        pausedUntilNanos = Array(repeating: 0, count: n)
        receiveQueue = Array(repeating: [], count: n)
        receiveHead = Array(repeating: 0, count: n)
        drainScheduled = Array(repeating: false, count: n)
        busyUntilNanos = Array(repeating: 0, count: n)
        backlog = Array(repeating: [], count: n)
        partitionSide = Array(repeating: false, count: n)
    }

    /// Runs both phases and returns what the checkers found.
    public mutating func run() -> SimulationResult {
        let n = profile.memberCount
        for member in 0..<n { scheduleWake(member) }
        let origin = members[0].configuration.schedule.originNanos
        for pause in profile.scriptedPauses where pause.member < n {
            queue.push(at: origin + pause.atRound * profile.roundPeriodNanos, .pause(pause.member, pause.nanos))
        }
        let safetyEnd = origin + UInt64(profile.faultRounds) * profile.roundPeriodNanos
        var livenessEnd = UInt64.max
        var settledAt: UInt64?
        var repairCountFrom: Int?

        while let event = queue.pop() {
            nowNanos = event.atNanos
            events += 1
            if faultsOn, nowNanos >= safetyEnd {
                faultsOn = false
                partitionEndsNanos = 0
                livenessEnd = safetyEnd + UInt64(livenessBoundRounds()) * profile.roundPeriodNanos
            }
            if !faultsOn, checker.allDelivered, backlog.allSatisfy(\.isEmpty),
                members.allSatisfy({ $0.pendingMessageCount == 0 })
            {
                settledAt = nowNanos
                break
            }
            if nowNanos > livenessEnd || !checker.violations.isEmpty { break }
            if livenessEnd != .max, repairCountFrom == nil,
                nowNanos >= livenessEnd - (livenessEnd - safetyEnd) / 4
            {
                repairCountFrom = members.reduce(0) { $0 + $1.counters.repairFramesSent }
            }
            switch event.payload {
            case .wake(let member): wake(member)
            case .react(let member): react(member)
            case .arrive(let member, let frame): arrive(member, frame)
            case .drain(let member): drain(member)
            case .pause(let member, let nanos):
                pausedUntilNanos[member] = max(pausedUntilNanos[member], nowNanos + nanos)
            }
        }
        if checker.violations.isEmpty, settledAt == nil { checker.checkAllDelivered(nowNanos: nowNanos) }
        var total = OrderingCounters()
        for member in members { total.add(member.counters) }
        let repairFramesAtEnd = settledAt == nil ? total.repairFramesSent - (repairCountFrom ?? 0) : 0
        return SimulationResult(
            seed: seed, profile: profile, violations: checker.violations, messagesBroadcast: checker.broadcastCount,
            deliveries: (0..<n).reduce(0) { $0 + checker.delivered(at: $1) }, settledAtNanos: settledAt,
            livenessRounds: settledAt.map { $0 <= safetyEnd ? 0 : Int(($0 - safetyEnd) / profile.roundPeriodNanos) },
            framesSent: framesSent, framesDropped: framesDropped, framesDroppedByQueue: framesDroppedByQueue,
            framesReplayed: framesReplayed, repairFramesAtEnd: repairFramesAtEnd,
            repairFramesPerRound: repairFramesPerRound, queueDropsPerRound: queueDropsPerRound, events: events, counters: total,
            memberStates: members.map(\.debugDescription), latency: LatencySummary(checker.latenciesNanos),
            deliveryOrderPrefix: Array(checker.canonicalPrefix))
    }

    /// The liveness bound in rounds: the profile's fixed allowance plus the
    /// rounds the largest backlog (queued and pushed-back messages) needs to
    /// drain one frame per round, so an overloaded run is judged on what it
    /// could deliver, not on what it was offered.
    func livenessBoundRounds() -> Int {
        // Every frame carries at least one queued message.
        let drain = members.indices.map { members[$0].pendingMessageCount + backlog[$0].count }.max() ?? 0
        return profile.livenessBoundRounds + drain
    }

    // MARK: Clocks

    /// Member `m`'s clock at virtual time `t`: offset plus drift.
    func localNanos(_ member: Int, _ t: UInt64) -> UInt64 {
        let drift = Int64(t / 1000) * Int64(driftPPM[member]) / 1000
        return UInt64(max(0, Int64(t) + drift)) + clockOffsetNanos[member]
    }

    /// The earliest virtual time at which member `m`'s clock reads at least `local`.
    func virtualNanos(_ member: Int, reaching local: UInt64) -> UInt64 {
        guard local > clockOffsetNanos[member] else { return nowNanos }
        let target = local - clockOffsetNanos[member]
        var t = UInt64(Double(target) * 1e6 / (1e6 + Double(driftPPM[member])))
        t = t > 2_000 ? t - 2_000 : 0
        while localNanos(member, t) < local { t += max(1, (local - localNanos(member, t)) / 2) }
        return max(t, nowNanos)
    }

    mutating func scheduleWake(_ member: Int) {
        var deadline = members[member].nextDeadlineNanos
        if profile.orderingMode == .promises {
            // The workload is offered once a round: wake at the next round too.
            let schedule = members[member].configuration.schedule
            let local = localNanos(member, nowNanos)
            deadline = min(deadline, schedule.slotWindow(round: schedule.round(atNanos: local) + 1, rank: 0).startNanos)
        }
        let at = max(virtualNanos(member, reaching: deadline), pausedUntilNanos[member])
        queue.push(at: at, .wake(member))
    }

    // MARK: Members

    mutating func wake(_ member: Int) {
        if faultsOn, random.chance(profile.pauseProbability) {
            pausedUntilNanos[member] = nowNanos + profile.pauseNanos
        }
        // Paused, or busy taking in a frame: the slot waits.
        let readyAt = max(pausedUntilNanos[member], busyUntilNanos[member])
        if readyAt > nowNanos {
            queue.push(at: readyAt, .wake(member))
            return
        }
        updatePartition()
        let local = localNanos(member, nowNanos)
        offerWorkload(member, local)
        effects.removeAll()
        members[member].onTimeout(nowNanos: local, effects: &effects)
        carryOut(member)
        scheduleWake(member)
    }

    /// A frame reached `member`'s host: into its receive queue, or dropped when the queue is full.
    mutating func arrive(_ member: Int, _ frame: [UInt8]) {
        let waiting = receiveQueue[member].count - receiveHead[member]
        if profile.receiveQueueFrames > 0, waiting >= profile.receiveQueueFrames {
            framesDropped += 1
            framesDroppedByQueue += 1
            countInRound(&queueDropsPerRound)
            return
        }
        receiveQueue[member].append(frame)
        if !drainScheduled[member] {
            drainScheduled[member] = true
            queue.push(at: max(nowNanos, pausedUntilNanos[member], busyUntilNanos[member]), .drain(member))
        }
    }

    /// `member` takes the next frame from its receive queue, unless paused or still busy.
    mutating func drain(_ member: Int) {
        let readyAt = max(pausedUntilNanos[member], busyUntilNanos[member])
        if readyAt > nowNanos {
            queue.push(at: readyAt, .drain(member))
            return
        }
        let frame = receiveQueue[member][receiveHead[member]]
        receiveHead[member] += 1
        if receiveHead[member] == receiveQueue[member].count {
            receiveQueue[member].removeAll(keepingCapacity: true)
            receiveHead[member] = 0
        } else if receiveHead[member] >= 1024 {
            receiveQueue[member].removeFirst(receiveHead[member])
            receiveHead[member] = 0
        }
        busyUntilNanos[member] = nowNanos + profile.frameCostNanos
        if receiveHead[member] < receiveQueue[member].count {
            queue.push(at: busyUntilNanos[member], .drain(member))
        } else {
            drainScheduled[member] = false
        }
        takeIn(member, frame)
    }

    mutating func takeIn(_ member: Int, _ frame: [UInt8]) {
        effects.removeAll()
        let local = localNanos(member, nowNanos)
        frame.withUnsafeBytes { _ = members[member].onFrameReceived($0, nowNanos: local, effects: &effects) }
        carryOut(member)
        // Promise mode answers data at once: a deadline now due is met now.
        if profile.orderingMode == .promises, members[member].nextDeadlineNanos <= local {
            queue.push(at: nowNanos, .react(member))
        }
    }

    /// Promise mode: the member's deadline came due on a frame's arrival.
    mutating func react(_ member: Int) {
        let readyAt = max(pausedUntilNanos[member], busyUntilNanos[member])
        if readyAt > nowNanos {
            queue.push(at: readyAt, .react(member))
            return
        }
        effects.removeAll()
        members[member].onTimeout(nowNanos: localNanos(member, nowNanos), effects: &effects)
        carryOut(member)
    }

    mutating func offerWorkload(_ member: Int, _ local: UInt64) {
        // Retry what was pushed back first, in order: backpressure never drops.
        while let payload = backlog[member].first {
            guard offer(member, payload, local) else { break }
            backlog[member].removeFirst()
        }
        // A producer pushed back blocks until its backlog is taken, as an
        // application awaiting room would.
        guard backlog[member].isEmpty, faultsOn, random.chance(profile.broadcastProbability) else { return }
        let maxPayload = min(profile.maxPayloadBytes, members[member].configuration.maxPayloadBytes)
        for _ in 0..<random.int(in: 1...profile.maxMessagesPerRound) {
            let length = random.int(in: 0...maxPayload)
            var payload = [UInt8](repeating: 0, count: length)
            for i in payload.indices { payload[i] = UInt8(truncatingIfNeeded: random.next()) }
            if backlog[member].isEmpty, offer(member, payload, local) { continue }
            // Pushed back: keep the rest of this burst for later, in order.
            backlog[member].append(payload)
        }
    }

    /// Offers one payload; returns false on backpressure.
    mutating func offer(_ member: Int, _ payload: [UInt8], _ local: UInt64) -> Bool {
        switch members[member].broadcast(payload) {
        case .queued(let sequence):
            checker.recordBroadcast(sender: member, sequence: sequence, payload: payload, nowNanos: nowNanos)
            return true
        case .sendBufferFull, .notInView:
            return false
        case .payloadTooLarge:
            preconditionFailure("workload sized payloads to the instance's limit")
        }
    }

    /// Adds one to the current round's entry of a per-round series.
    func countInRound(_ series: inout [Int]) {
        let origin = members[0].configuration.schedule.originNanos
        guard nowNanos >= origin else { return }
        let round = Int(min((nowNanos - origin) / profile.roundPeriodNanos, 1 << 20))
        if series.count <= round { series.append(contentsOf: repeatElement(0, count: round + 1 - series.count)) }
        series[round] += 1
    }

    mutating func carryOut(_ member: Int) {
        for frame in effects.frames {
            if frame.kind == .repair { countInRound(&repairFramesPerRound) }
            let bytes = Array(effects.frameBytes[frame.offset..<(frame.offset + frame.length)])
            for peer in 0..<profile.memberCount where peer != member { transmit(bytes, from: member, to: peer) }
        }
        for delivery in effects.deliveries {
            checker.recordDelivery(
                member: member, id: MessageID(sender: delivery.sender, sequence: delivery.sequence),
                round: delivery.round, slot: delivery.sender, index: delivery.index,
                payload: effects.payload(of: delivery), nowNanos: nowNanos)
        }
    }

    // MARK: Network

    mutating func transmit(_ frame: [UInt8], from sender: Int, to receiver: Int) {
        framesSent += 1
        if faultsOn {
            if partitionEndsNanos > nowNanos, partitionSide[sender] != partitionSide[receiver] {
                framesDropped += 1
                return
            }
            if random.chance(profile.lossProbability) { framesDropped += 1; return }
        }
        let link = sender * profile.memberCount + receiver
        queue.push(at: nowNanos + latencyNanos(link), .arrive(receiver, frame))
        if faultsOn, random.chance(profile.duplicateProbability) {
            queue.push(at: nowNanos + latencyNanos(link), .arrive(receiver, frame))
        }
        if faultsOn, profile.replayProbability > 0 { replay(frame) }
    }

    /// The replaying adversary: keeps some frames it saw and now and then
    /// injects an old one again, to a random member, some rounds later.
    mutating func replay(_ frame: [UInt8]) {
        let poolSize = 256
        if replayPool.count < poolSize {
            replayPool.append(frame)
        } else if random.chance(0.05) {
            replayPool[Int(random.below(UInt64(poolSize)))] = frame
        }
        guard random.chance(profile.replayProbability) else { return }
        let old = replayPool[Int(random.below(UInt64(replayPool.count)))]
        let target = Int(random.below(UInt64(profile.memberCount)))
        let delay = random.below(UInt64(profile.replayDelayRounds) * profile.roundPeriodNanos + 1)
        framesReplayed += 1
        queue.push(at: nowNanos + delay, .arrive(target, old))
    }

    /// One frame's latency on `link`: the link's base, uniform jitter, and now and then a spike.
    mutating func latencyNanos(_ link: Int) -> UInt64 {
        var latency = linkBaseNanos[link]
        if linkJitterNanos[link] > 0 { latency += random.below(linkJitterNanos[link] + 1) }
        if faultsOn, random.chance(profile.spikeProbability) { latency += profile.spikeNanos }
        return latency
    }

    mutating func updatePartition() {
        guard faultsOn, partitionEndsNanos <= nowNanos, profile.memberCount > 1 else { return }
        // Per wake, scaled so the chance is per round.
        guard random.chance(profile.partitionProbability / Double(profile.memberCount)) else { return }
        repeat {
            for member in partitionSide.indices { partitionSide[member] = random.chance(0.5) }
        } while partitionSide.allSatisfy({ $0 }) || partitionSide.allSatisfy({ !$0 })
        partitionEndsNanos = nowNanos + UInt64(profile.partitionRounds) * profile.roundPeriodNanos
    }
}

/// The membership simulator's events: wakes and arrivals.
/// The cluster simulator's events.
enum ClusterEvent {
    case wake(Int)
    /// Promise mode: a member's deadline came due on an arrival.
    case react(Int)
    /// A frame reaches a member's host.
    case arrive(Int, [UInt8])
    /// A member takes the next frame from its receive queue.
    case drain(Int)
    /// A member stops for this long (a scripted pause).
    case pause(Int, UInt64)
}

/// Percentiles of a set of latencies.
public struct LatencySummary: Sendable, CustomStringConvertible {
    public var count: Int
    public var p50Nanos: UInt64
    public var p99Nanos: UInt64
    public var p999Nanos: UInt64
    public var maxNanos: UInt64

    public init(_ samples: [UInt64]) {
        let sorted = samples.sorted()
        func at(_ q: Double) -> UInt64 {
            sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))]
        }
        count = sorted.count
        p50Nanos = at(0.5)
        p99Nanos = at(0.99)
        p999Nanos = at(0.999)
        maxNanos = sorted.last ?? 0
    }

    public var description: String {
        func us(_ n: UInt64) -> String { String(Double(n / 100) / 10) }
        return "p50 \(us(p50Nanos)) µs, p99 \(us(p99Nanos)) µs, p99.9 \(us(p999Nanos)) µs, max \(us(maxNanos)) µs over \(count) messages"
    }
}
