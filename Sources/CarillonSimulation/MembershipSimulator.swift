import CarillonMembership
import CarillonOrdering
import CarillonSchedule

/// Faults for the membership simulator: crashes, restarts, partitions (with a
/// majority and a minority side), loss, duplicates, joins of restarted nodes.
public struct MembershipFaultProfile: Sendable, Hashable {
    public var nodeCount = 5
    public var roundPeriodNanos: UInt64 = 100_000
    public var faultRounds = 1_500
    /// Per round: chance that a live node crashes (at most a minority is down at once).
    public var crashProbability = 0.002
    /// Per round: chance that a crashed node restarts (as a new incarnation that joins).
    public var restartProbability = 0.01
    /// Per round: chance that a partition starts, and how long it lasts.
    public var partitionProbability = 0.001
    public var partitionRounds = 300
    public var lossProbability = 0.02
    public var duplicateProbability = 0.01
    public var baseLatencyNanos: UInt64 = 20_000
    public var jitterNanos: UInt64 = 20_000
    public var broadcastProbability = 0.3
    public var suspicionSlots = 10
    /// Agreed delivery is non-uniform: a member that is then left out may have
    /// delivered messages the survivors trimmed. Safe delivery is uniform.
    public var deliveryMode: DeliveryMode = .agreed
    /// After faults stop: rounds within which every node must be in one view and deliver a probe from each.
    public var livenessBoundRounds = 3_000

    /// Faults at stated rounds, on top of the random ones (for scenario tests).
    public var script: [ScriptedFault] = []

    public init() {}

    /// A profile with no random faults: only `script` happens.
    public static func scripted(_ script: [ScriptedFault], nodeCount: Int = 5, faultRounds: Int = 1_000) -> MembershipFaultProfile {
        var profile = MembershipFaultProfile()
        profile.nodeCount = nodeCount
        profile.crashProbability = 0
        profile.restartProbability = 0
        profile.partitionProbability = 0
        profile.lossProbability = 0.01
        profile.faultRounds = faultRounds
        profile.script = script
        return profile
    }

    /// Draws a profile from `seed`: node count 3–5 and fault rates vary.
    public static func swarm(seed: UInt64) -> MembershipFaultProfile {
        var random = SimulationRandom(seed: seed ^ 0x6D65_6D62_6572)
        var profile = MembershipFaultProfile()
        profile.nodeCount = random.int(in: 3...5)
        profile.crashProbability = [0, 0.001, 0.003, 0.006][random.int(in: 0...3)]
        profile.restartProbability = [0.005, 0.02, 0.05][random.int(in: 0...2)]
        profile.partitionProbability = [0, 0.001, 0.003][random.int(in: 0...2)]
        profile.partitionRounds = random.int(in: 50...400)
        profile.lossProbability = [0, 0.01, 0.05, 0.1][random.int(in: 0...3)]
        profile.duplicateProbability = [0, 0.01, 0.05][random.int(in: 0...2)]
        profile.broadcastProbability = [0.1, 0.3, 0.8][random.int(in: 0...2)]
        profile.faultRounds = random.int(in: 300...1_200)
        profile.deliveryMode = random.chance(0.5) ? .agreed : .safe
        return profile
    }
}

/// A fault at a stated round.
public struct ScriptedFault: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        /// The node's process stops (kill -9).
        case crash(node: Int)
        /// The node starts again as a new incarnation and joins.
        case restart(node: Int)
        /// Nodes on the `true` side cannot reach the others for `rounds` rounds.
        case partition(side: [Bool], rounds: Int)
    }
    public var round: Int
    public var kind: Kind
    public init(round: Int, _ kind: Kind) {
        self.round = round
        self.kind = kind
    }
}

/// The outcome of one membership simulation.
public struct MembershipSimulationResult: Sendable, CustomStringConvertible {
    public var seed: UInt64
    public var profile: MembershipFaultProfile
    public var violations: [String]
    public var viewsInstalled: Int
    public var highestEpoch: UInt32
    public var crashes: Int
    public var restarts: Int
    public var partitions: Int
    public var messagesBroadcast: Int
    public var deliveries: Int
    public var livenessRounds: Int?
    public var log: [String]
    /// Every installed view, by epoch.
    public var views: [UInt32: [MemberID]]

    public var passed: Bool { violations.isEmpty }

    public var description: String {
        let status = passed ? "ok" : "FAILED (\(violations.count) violation\(violations.count == 1 ? "" : "s"))"
        return "seed \(seed): \(status) — \(profile.nodeCount) nodes, \(crashes) crashes, \(restarts) restarts, "
            + "\(partitions) partitions, \(viewsInstalled) views installed (epoch \(highestEpoch)), "
            + "\(messagesBroadcast) broadcast, \(deliveries) deliveries, "
            + "liveness \(livenessRounds.map { "\($0) rounds" } ?? "not reached")"
    }
}

/// A seeded whole-cluster simulation of the membership layer: real
/// ``MembershipInstance``s exchanging frames over a simulated network that
/// loses, duplicates, delays and partitions, with nodes crashing and
/// restarting. After every delivery it checks:
/// - **integrity**: no process delivers a message twice or one never sent;
/// - **agreement / virtual synchrony**: within an epoch, two processes'
///   deliveries are prefixes of one another, and two processes that both
///   installed the next view delivered the same messages in this one;
/// - **single primary component**: every process that installs epoch `e`
///   installs the same member list;
/// - **replica equality**: every member's state digest (a hash over delivered
///   messages, handed to joiners by state transfer) is equal at each view;
/// - **validity**: a process that is never excluded delivers everything it queued;
/// - **liveness**: once faults stop and crashed nodes restart, every node is in
///   one view and delivers a probe from every other within a bound.
public struct MembershipSimulator {
    public let seed: UInt64
    public let profile: MembershipFaultProfile
    var random: SimulationRandom
    var queue = EventQueue()
    var nowNanos: UInt64 = 0
    let origin: UInt64 = 1_000_000
    var effects = MembershipEffects()

    struct Process {
        var instance: MembershipInstance
        var alive = true
        /// Deliveries per epoch, as message ids.
        var epochLog: [UInt32: [UInt64]] = [:]
        var epoch: UInt32 = 0
        var installed: [UInt32] = []
        var delivered: Set<UInt64> = []
        var digest: UInt64 = 0
        var queued: [UInt64] = []
        var excluded = false
        var backlog: [[UInt8]] = []
        var counter: UInt32 = 0
    }
    var processes: [Process] = []
    var side: [Bool]
    var partitionEndsNanos: UInt64 = 0
    var faultsOn = true
    var broadcastIDs: Set<UInt64> = []
    var viewMembers: [UInt32: [MemberID]] = [:]
    var viewDigest: [UInt32: UInt64] = [:]
    var violations: [String] = []
    var log: [String] = []
    var crashes = 0, restarts = 0, partitions = 0, viewsInstalled = 0, deliveries = 0
    var probeIDs: Set<UInt64> = []
    var probeView: View?
    var wakeAt: [UInt64] = []
    var archivedLogs: [[UInt32: [UInt64]]] = []

    public init(seed: UInt64, profile: MembershipFaultProfile) {
        self.seed = seed
        self.profile = profile
        random = SimulationRandom(seed: seed)
        side = Array(repeating: false, count: profile.nodeCount)
        let members = (0..<profile.nodeCount).map { MemberID(node: UInt16($0), incarnation: 1) }
        let view = View(epoch: 1, members: members, startRound: 0)
        for node in 0..<profile.nodeCount {
            processes.append(Process(instance: makeInstance(MemberID(node: UInt16(node), incarnation: 1), view: view)))
            processes[node].epoch = 1
            processes[node].installed = [1]
        }
        wakeAt = Array(repeating: 0, count: profile.nodeCount)
        viewMembers[1] = members
        viewDigest[1] = 0
    }

    func makeInstance(_ me: MemberID, view: View?) -> MembershipInstance {
        let schedule = try! TDMASchedule(memberCount: profile.nodeCount, roundPeriodNanos: profile.roundPeriodNanos,
                                         reservation: 0.9, guardFraction: 0.1, originNanos: origin)
        var ordering = OrderingConfiguration(rank: Int(me.node), schedule: schedule)
        ordering.windowRounds = 512
        ordering.deliveryMode = profile.deliveryMode
        ordering.suspicionSlots = profile.suspicionSlots
        ordering.sendBufferBytes = 16_384
        var configuration = MembershipConfiguration(me: me, initialView: view, ordering: ordering)
        configuration.proposalTimeoutRounds = 3 * profile.suspicionSlots
        configuration.retireRounds = 400
        return try! MembershipInstance(configuration: configuration)
    }

    var round: UInt64 { nowNanos > origin ? (nowNanos - origin) / profile.roundPeriodNanos : 0 }

    mutating func record(_ line: String) {
        if log.count < 400 { log.append("r\(round): \(line)") }
    }

    public mutating func run() -> MembershipSimulationResult {
        for node in processes.indices { scheduleWake(node, at: processes[node].instance.nextDeadlineNanos) }
        let faultEnd = origin + UInt64(profile.faultRounds) * profile.roundPeriodNanos
        var livenessEnd = UInt64.max
        var settledRound: Int?
        var nextFaultRound: UInt64 = 0
        while let event = queue.pop() {
            nowNanos = event.atNanos
            if !violations.isEmpty || nowNanos > livenessEnd { break }
            if faultsOn, nowNanos >= faultEnd {
                faultsOn = false
                partitionEndsNanos = 0
                livenessEnd = faultEnd + UInt64(profile.livenessBoundRounds) * profile.roundPeriodNanos
                for node in processes.indices where !processes[node].alive { restart(node) }
                record("faults stop")
            }
            if round >= nextFaultRound {
                nextFaultRound = round + 1
                if faultsOn { injectFaults() } else if settled() {
                    settledRound = Int((nowNanos - faultEnd) / profile.roundPeriodNanos)
                    break
                }
            }
            switch event.kind {
            case .wake(let node): wake(node)
            case .arrive(let node, let frame): arrive(node, frame)
            }
        }
        if violations.isEmpty { checkCommonOrder() }
        if violations.isEmpty, settledRound == nil {
            violations.append("liveness: not settled \(profile.livenessBoundRounds) rounds after faults stopped; "
                + processes.enumerated().map { "node \($0.offset): \($0.element.instance.view?.description ?? "joining")" }
                    .joined(separator: "; "))
            for process in processes {
                log.append("missing probes: \(probeIDs.subtracting(process.delivered).count), backlog \(process.backlog.count), excluded \(process.excluded)")
                log.append("state \(process.instance.me): member \(process.instance.isMember), changing \(process.instance.isChangingView), "
                    + (process.instance.ordering?.debugDescription ?? "no ordering"))
            }
        }
        return MembershipSimulationResult(
            seed: seed, profile: profile, violations: violations, viewsInstalled: viewsInstalled,
            highestEpoch: viewMembers.keys.max() ?? 1, crashes: crashes, restarts: restarts, partitions: partitions,
            messagesBroadcast: broadcastIDs.count, deliveries: deliveries, livenessRounds: settledRound, log: log, views: viewMembers)
    }

    // MARK: Faults

    mutating func injectFaults() {
        for fault in profile.script where UInt64(fault.round) == round {
            switch fault.kind {
            case .crash(let node):
                processes[node].alive = false
                crashes += 1
                record("crash node \(node) (scripted)")
            case .restart(let node):
                restart(node)
            case .partition(let split, let rounds):
                side = split
                partitionEndsNanos = nowNanos + UInt64(rounds) * profile.roundPeriodNanos
                partitions += 1
                record("partition \(side.map { $0 ? "A" : "B" }.joined()) (scripted)")
            }
        }
        let n = profile.nodeCount
        // A crash never takes a view below a majority of live members — the
        // latest installed view, or a next view some live member has accepted
        // and may install: past that no view change can succeed, by design,
        // and nothing recovers.
        let latest = viewMembers[viewMembers.keys.max()!]!
        // Live in the latest view means running it: installed it and, for a joiner, holding its state.
        let runningLatest = processes.filter {
            $0.alive && $0.instance.isMember && $0.instance.view?.members == latest && latest.contains($0.instance.me)
        }.map(\.instance.me)
        var pending: [[MemberID]] = []
        for process in processes where process.alive {
            if let members = process.instance.pendingViewMembers, !pending.contains(members) { pending.append(members) }
        }
        let alive = processes.filter(\.alive).map(\.instance.me)
        func crashAllowed(_ victim: MemberID) -> Bool {
            guard runningLatest.filter({ $0 != victim }).count >= latest.count / 2 + 1 else { return false }
            return pending.allSatisfy { members in
                members.filter { $0 != victim && alive.contains($0) }.count >= members.count / 2 + 1
            }
        }
        for node in 0..<n {
            if processes[node].alive {
                if random.chance(profile.crashProbability), crashAllowed(processes[node].instance.me) {
                    processes[node].alive = false
                    crashes += 1
                    record("crash node \(node)")
                    return
                }
            } else if random.chance(profile.restartProbability) {
                restart(node)
            }
        }
        if partitionEndsNanos <= nowNanos, random.chance(profile.partitionProbability) {
            repeat {
                for node in side.indices { side[node] = random.chance(0.5) }
            } while side.allSatisfy({ $0 }) || side.allSatisfy({ !$0 })
            partitionEndsNanos = nowNanos + UInt64(profile.partitionRounds) * profile.roundPeriodNanos
            partitions += 1
            record("partition \(side.map { $0 ? "A" : "B" }.joined())")
        }
    }

    mutating func restart(_ node: Int) {
        let old = processes[node].instance.me
        let me = MemberID(node: UInt16(node), incarnation: old.incarnation + 1_000)
        archivedLogs.append(processes[node].epochLog)
        processes[node] = Process(instance: makeInstance(me, view: nil))
        restarts += 1
        record("restart node \(node) as \(me)")
        scheduleWake(node, at: nowNanos + 1)
    }

    mutating func scheduleWake(_ node: Int, at nanos: UInt64) {
        wakeAt[node] = nanos
        queue.push(at: nanos, .wake(node))
    }

    /// Every node alive, one view with all of them, and every probe delivered everywhere.
    mutating func settled() -> Bool {
        guard let first = processes[0].instance.view,
              processes.allSatisfy({ $0.instance.isMember && $0.instance.view == first }),
              first.members.count == profile.nodeCount
        else { return false }
        // Probes are sent in one view; a view change since then (a member that
        // missed the end of the faults) starts over with fresh probes.
        if probeView != first {
            probeView = first
            probeIDs = []
            for node in processes.indices {
                let id = nextID(node)
                probeIDs.insert(id)
                processes[node].backlog.append(payload(id))
            }
            return false
        }
        guard processes.allSatisfy({ probeIDs.isSubset(of: $0.delivered) }) else { return false }
        // Validity: a process never excluded delivered everything it queued.
        for (node, process) in processes.enumerated() where !process.excluded {
            if let lost = process.queued.first(where: { !process.delivered.contains($0) }) {
                violations.append("validity: node \(node) queued \(lost) and never delivered it")
            }
        }
        return true
    }

    // MARK: Nodes

    mutating func nextID(_ node: Int) -> UInt64 {
        processes[node].counter += 1
        return UInt64(node) << 48 | (processes[node].instance.me.incarnation & 0xFFFF) << 32 | UInt64(processes[node].counter)
    }

    func payload(_ id: UInt64) -> [UInt8] { withUnsafeBytes(of: id.littleEndian) { Array($0) } }

    mutating func wake(_ node: Int) {
        guard processes[node].alive, nowNanos == wakeAt[node] else { return }
        if faultsOn, processes[node].instance.isMember, random.chance(profile.broadcastProbability) {
            processes[node].backlog.append(payload(nextID(node)))
        }
        while let next = processes[node].backlog.first {
            let result = processes[node].instance.broadcast(next)
            guard case .queued = result else { break }
            let id = next.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
            broadcastIDs.insert(id)
            processes[node].queued.append(id)
            processes[node].backlog.removeFirst()
        }
        effects.removeAll()
        processes[node].instance.onTimeout(nowNanos: nowNanos, effects: &effects)
        carryOut(node)
        scheduleWake(node, at: max(processes[node].instance.nextDeadlineNanos, nowNanos + 1))
    }

    mutating func arrive(_ node: Int, _ frame: [UInt8]) {
        guard processes[node].alive else { return }
        effects.removeAll()
        frame.withUnsafeBytes { _ = processes[node].instance.onFrameReceived($0, nowNanos: nowNanos, effects: &effects) }
        carryOut(node)
        // A frame can move the deadline earlier (a joiner that just got its view).
        let deadline = max(processes[node].instance.nextDeadlineNanos, nowNanos + 1)
        if processes[node].alive, deadline < wakeAt[node] { scheduleWake(node, at: deadline) }
    }

    mutating func carryOut(_ node: Int) {
        for frame in effects.ordering.frames {
            let bytes = Array(effects.ordering.frameBytes[frame.offset..<(frame.offset + frame.length)])
            for peer in processes.indices where peer != node { transmit(bytes, from: node, to: peer) }
        }
        var next = 0
        let deliveries = effects.ordering.deliveries
        for event in effects.events {
            while next < event.deliveriesBefore { deliver(node, deliveries[next]); next += 1 }
            handle(node, event)
        }
        while next < deliveries.count { deliver(node, deliveries[next]); next += 1 }
    }

    mutating func deliver(_ node: Int, _ delivery: OrderingEffects.Delivery) {
        let bytes = effects.ordering.payload(of: delivery)
        guard bytes.count == 8 else { violations.append("node \(node) delivered a payload of \(bytes.count) bytes"); return }
        let id = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        var process = processes[node]
        deliveries += 1
        if !broadcastIDs.contains(id) { violations.append("integrity: node \(node) delivered \(id), never sent") }
        if !process.delivered.insert(id).inserted { violations.append("integrity: node \(node) delivered \(id) twice") }
        process.epochLog[process.epoch, default: []].append(id)
        process.digest = (process.digest ^ id) &* 0x100_0000_01B3 &+ 7
        processes[node] = process
        // Safe delivery is uniform: every member's sequence is a prefix of every other's.
        if profile.deliveryMode == .safe { checkPrefix(node, epoch: process.epoch) }
    }

    /// Every pair of processes delivered the messages they have in common in
    /// the same order, in every epoch (agreed delivery's guarantee for a member
    /// that was then left out: its extra messages were trimmed, never reordered).
    mutating func checkCommonOrder() {
        let logs = archivedLogs + processes.map(\.epochLog)
        for epoch in viewMembers.keys {
            for a in logs.indices {
                guard let mine = logs[a][epoch] else { continue }
                for b in logs.indices where b > a {
                    guard let theirs = logs[b][epoch] else { continue }
                    let shared = Set(mine).intersection(theirs)
                    if mine.filter(shared.contains) != theirs.filter(shared.contains) {
                        violations.append("order: nodes \(a) and \(b) delivered common messages of epoch \(epoch) in different orders")
                        return
                    }
                }
            }
        }
    }

    mutating func handle(_ node: Int, _ event: ViewEvent) {
        switch event.kind {
        case .installed(let view, let joined):
            viewsInstalled += 1
            let previous = processes[node].epoch
            record("node \(node) installs \(view)")
            installView(node, view)
            if let digest = viewDigest[view.epoch], digest != processes[node].digest {
                violations.append("replica equality: node \(node) digest at epoch \(view.epoch) differs")
            }
            viewDigest[view.epoch] = processes[node].digest
            checkSurvivors(node, epoch: previous)
            if !joined.isEmpty { processes[node].instance.provideSnapshot(payload(processes[node].digest), forEpoch: view.epoch) }
        case .stateReceived(let view, let state):
            record("node \(node) joins \(view)")
            let digest = state.count == 8 ? state.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) } : 0
            processes[node].digest = digest
            installView(node, view)
            if let expected = viewDigest[view.epoch], expected != digest {
                violations.append("state transfer: node \(node) received a digest at epoch \(view.epoch) that differs")
            }
            viewDigest[view.epoch] = digest
        case .excluded(let epoch, _):
            record("node \(node) excluded at epoch \(epoch)")
            processes[node].excluded = true
            processes[node].queued = []
            processes[node].backlog = []
        case .noPrimaryComponent(let epoch, let rounds):
            record("node \(node): no primary component at epoch \(epoch) for \(rounds) rounds")
        }
    }

    mutating func installView(_ node: Int, _ view: View) {
        if let members = viewMembers[view.epoch], members != view.members {
            violations.append("single primary: epoch \(view.epoch) installed as \(members) and as \(view.members)")
        }
        viewMembers[view.epoch] = view.members
        processes[node].epoch = view.epoch
        processes[node].installed.append(view.epoch)
    }

    /// Agreement within an epoch: this node's log and every other's are prefixes of one another.
    mutating func checkPrefix(_ node: Int, epoch: UInt32) {
        let mine = processes[node].epochLog[epoch] ?? []
        for other in processes.indices where other != node {
            guard let theirs = processes[other].epochLog[epoch] else { continue }
            let common = min(mine.count, theirs.count)
            if mine[common - 1] != theirs[common - 1] || (common > 1 && mine[0] != theirs[0]) {
                violations.append("agreement: nodes \(node) and \(other) delivered different sequences in epoch \(epoch)")
                return
            }
        }
    }

    /// Virtual synchrony: processes that installed the view after `epoch` delivered the same messages in it.
    mutating func checkSurvivors(_ node: Int, epoch: UInt32) {
        let mine = processes[node].epochLog[epoch] ?? []
        for other in processes.indices where other != node && processes[other].installed.contains(epoch + 1)
            && processes[other].installed.contains(epoch) {
            let theirs = processes[other].epochLog[epoch] ?? []
            if theirs != mine {
                violations.append("virtual synchrony: nodes \(node) and \(other) delivered \(mine.count) and \(theirs.count) messages in epoch \(epoch)")
                return
            }
        }
        // Validity: what this process queued and is not delivered by now is still queued or re-queued.
        _ = mine
    }

    // MARK: Network

    mutating func transmit(_ frame: [UInt8], from sender: Int, to receiver: Int) {
        if faultsOn {
            if partitionEndsNanos > nowNanos, side[sender] != side[receiver] { return }
            if random.chance(profile.lossProbability) { return }
        }
        let latency = profile.baseLatencyNanos + random.below(profile.jitterNanos + 1)
        queue.push(at: nowNanos + latency, .arrive(receiver, frame))
        if faultsOn, random.chance(profile.duplicateProbability) {
            queue.push(at: nowNanos + latency + random.below(profile.jitterNanos + 1), .arrive(receiver, frame))
        }
    }
}
