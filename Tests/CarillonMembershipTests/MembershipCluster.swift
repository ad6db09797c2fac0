@testable import CarillonMembership
import CarillonOrdering
import CarillonSchedule

/// A few ``MembershipInstance``s on a perfect network with a fixed latency and
/// one clock, driven deterministically for the scenario transcripts: every
/// frame reaches every running node on the sender's side of a partition
/// `latencyNanos` after it was sent. Prints, per input, what changed: phases,
/// ballots promised and accepted, decisions, view events and deliveries.
struct MembershipCluster {
    static let roundNanos: UInt64 = 100_000
    static let latencyNanos: UInt64 = 10_000
    /// The run's origin (its identity, and the first view's incarnations).
    static let origin: UInt64 = 1_000_000_000

    struct Node {
        var instance: MembershipInstance
        var running = true
        var wakeNanos: UInt64 = 0
        /// The application's state: payloads delivered (or received as state), in order.
        var state: [String] = []
        var shown = Shown()
    }

    /// What was last printed of a node's agreement.
    struct Shown: Equatable {
        var phase: MembershipPhase = .joining
        var promised: UInt64 = 0
        var accepted: UInt64 = 0
        var decided: UInt64 = 0
    }

    struct Arrival {
        var atNanos: UInt64
        var sequence: Int
        var to: Int
        var bytes: [UInt8]
    }

    let schedule: TDMASchedule
    var nodes: [Node] = []
    var nowNanos: UInt64
    var arrivals: [Arrival] = []
    var arrivalSequence = 0
    /// Per node, the partition side it is on (all 0: no partition).
    var side: [Int]
    var effects = MembershipEffects()
    /// Per node, its incarnations in the order they appeared (printed as `node.k`).
    var incarnations: [UInt16: [UInt64]] = [:]
    var output: [String] = []

    /// `nodeCount` nodes, the first `memberCount` of them members of the first view
    /// (the others start later with ``start(_:)``).
    init(nodeCount: Int, memberCount: Int) {
        schedule = try! TDMASchedule(
            memberCount: nodeCount, roundPeriodNanos: Self.roundNanos, reservation: 0.9,
            guardFraction: 0.1, originNanos: Self.origin)
        nowNanos = Self.origin
        side = Array(repeating: 0, count: nodeCount)
        let members = (0..<memberCount).map { MemberID(node: UInt16($0), incarnation: Self.origin) }
        let first = View(epoch: 1, members: members, startRound: 0)
        for node in 0..<nodeCount {
            var created = Node(
                instance: makeInstance(
                    MemberID(node: UInt16(node), incarnation: Self.origin),
                    view: node < memberCount ? first : nil))
            created.running = node < memberCount
            created.wakeNanos = nowNanos
            created.shown.phase = created.instance.phase
            nodes.append(created)
        }
    }

    func makeInstance(_ me: MemberID, view: View?) -> MembershipInstance {
        var ordering = OrderingConfiguration(rank: Int(me.node), schedule: schedule)
        ordering.windowRounds = 256
        ordering.suspicionSlots = 10
        ordering.suspicionFloorNanos = Self.roundNanos
        // A member never heard in a view is suspected after this many slots (200 by default).
        ordering.unheardSuspicionSlots = 60
        ordering.sendBufferBytes = 16_384
        var configuration = MembershipConfiguration(me: me, initialView: view, ordering: ordering)
        configuration.runIdentity = view == nil ? 0 : Self.origin
        configuration.proposalTimeoutRounds = 30
        configuration.retireRounds = 100
        configuration.joinRetryRounds = 10
        return try! MembershipInstance(configuration: configuration)
    }

    var round: UInt64 { schedule.round(atNanos: nowNanos) }

    // MARK: Commands

    /// Runs every node for `rounds` rounds, or until `stop` holds after an input;
    /// returns what happened.
    mutating func run(rounds: UInt64, until stop: (MembershipCluster) -> Bool = { _ in false }) -> [String] {
        output = []
        let end = schedule.slotWindow(round: round + rounds, rank: 0).startNanos
        while !stop(self) {
            let arrival = arrivals.indices.min { (arrivals[$0].atNanos, arrivals[$0].sequence) < (arrivals[$1].atNanos, arrivals[$1].sequence) }
            let waking = nodes.indices.filter { nodes[$0].running }.min { (nodes[$0].wakeNanos, $0) < (nodes[$1].wakeNanos, $1) }
            let arrivalNanos = arrival.map { arrivals[$0].atNanos } ?? .max
            let wakeNanos = waking.map { nodes[$0].wakeNanos } ?? .max
            guard min(arrivalNanos, wakeNanos) < end else { break }
            if let arrival, arrivalNanos <= wakeNanos {
                let frame = arrivals.remove(at: arrival)
                nowNanos = max(nowNanos, frame.atNanos)
                guard nodes[frame.to].running else { continue }
                effects.removeAll()
                frame.bytes.withUnsafeBytes { _ = nodes[frame.to].instance.onFrameReceived($0, nowNanos: nowNanos, effects: &effects) }
                carryOut(frame.to)
            } else if let node = waking {
                nowNanos = max(nowNanos, wakeNanos)
                effects.removeAll()
                nodes[node].instance.onTimeout(nowNanos: nowNanos, effects: &effects)
                carryOut(node)
            }
        }
        if !stop(self) { nowNanos = end }
        return output
    }

    mutating func broadcast(_ node: Int, _ text: String) -> String {
        "\(nodes[node].instance.broadcast(Array(text.utf8)))"
    }

    /// kill -9: the node stops; frames to it are lost.
    mutating func crash(_ node: Int) { nodes[node].running = false }

    /// Starts a new process on `node`: a joiner with a fresh incarnation.
    mutating func start(_ node: Int) -> String {
        let me = MemberID(node: UInt16(node), incarnation: nowNanos)
        nodes[node] = Node(instance: makeInstance(me, view: nil), wakeNanos: nowNanos)
        return "n\(node) starts as \(name(me))"
    }

    mutating func leave(_ node: Int) { nodes[node].instance.leave() }

    /// Nodes of different groups hear nothing from each other; nodes in no group form one more.
    mutating func partition(_ groups: [[Int]]) {
        side = Array(repeating: groups.count, count: nodes.count)
        for (index, group) in groups.enumerated() { for node in group { side[node] = index } }
    }

    mutating func heal() { side = Array(repeating: 0, count: nodes.count) }

    /// One line per node: phase, view, the application's state.
    mutating func status() -> [String] {
        nodes.indices.map { node in
            let instance = nodes[node].instance
            guard nodes[node].running || instance.hasLeft else { return "n\(node) down" }
            let view = instance.view.map { "epoch \($0.epoch) \(members($0.members))" } ?? "no view"
            return "n\(node) \(name(instance.me)) \(instance.phase), \(view), state [\(nodes[node].state.joined(separator: " "))]"
        }
    }

    // MARK: Effects

    mutating func carryOut(_ node: Int) {
        let frames = effects.ordering.frames.map { Array(effects.ordering.frameBytes[$0.offset..<($0.offset + $0.length)]) }
        for bytes in frames {
            for target in nodes.indices where target != node && side[target] == side[node] {
                arrivals.append(Arrival(atNanos: nowNanos + Self.latencyNanos, sequence: arrivalSequence, to: target, bytes: bytes))
                arrivalSequence += 1
            }
        }
        // Deliveries and view events in one stream.
        let deliveries = effects.ordering.deliveries
        var events = effects.events[...]
        for index in 0...deliveries.count {
            while let event = events.first, event.deliveriesBefore == index {
                events.removeFirst()
                apply(event, at: node)
            }
            guard index < deliveries.count else { break }
            let text = String(decoding: effects.ordering.payload(of: deliveries[index]), as: UTF8.self)
            nodes[node].state.append(text)
            say(node, "delivers \"\(text)\" (rank \(deliveries[index].sender) #\(deliveries[index].sequence))")
        }
        let instance = nodes[node].instance
        let now = Shown(
            phase: instance.phase, promised: instance.agreement.promised,
            accepted: instance.agreement.accepted?.ballot ?? 0, decided: instance.agreement.decided?.ballot ?? 0)
        let was = nodes[node].shown
        if now.promised != was.promised, now.promised != 0 { say(node, "promises \(ballot(now.promised))") }
        if now.accepted != was.accepted, let accepted = instance.agreement.accepted {
            let proposal = accepted.proposal
            say(node, "accepts \(ballot(accepted.ballot)): \(members(proposal.members)) cut \(proposal.cut) from round \(proposal.startRound)")
        }
        if now.decided != was.decided, now.decided != 0 { say(node, "knows \(ballot(now.decided)) decided") }
        if now.phase != was.phase { say(node, "phase \(was.phase) -> \(now.phase)") }
        nodes[node].shown = now
        if instance.hasLeft { nodes[node].running = false }
        nodes[node].wakeNanos = max(instance.nextDeadlineNanos, nowNanos + 1)
    }

    mutating func apply(_ event: ViewEvent, at node: Int) {
        switch event.kind {
        case .installed(let view, let joined):
            let decided = nodes[node].instance.announcement.map { ballot($0.ballot) } ?? "?"
            say(
                node,
                "knows \(decided) decided, installs epoch \(view.epoch) from round \(view.startRound): \(members(view.members))"
                    + (joined.isEmpty ? "" : " joined \(members(joined))"))
            if !joined.isEmpty {
                nodes[node].instance.provideSnapshot(Array(nodes[node].state.joined(separator: " ").utf8), forEpoch: view.epoch)
            }
        case .excluded(let epoch, let unsent):
            say(node, "excluded from epoch \(epoch) (\(unsent) unsent): rejoins as \(name(nodes[node].instance.me))")
            nodes[node].state = []
        case .noPrimaryComponent(let epoch, let waitingRounds):
            say(node, "no primary component in epoch \(epoch) (waiting \(waitingRounds) rounds)")
        case .stateReceived(let view, let state):
            let text = String(decoding: state, as: UTF8.self)
            nodes[node].state = text.isEmpty ? [] : text.split(separator: " ").map(String.init)
            say(node, "receives the state of epoch \(view.epoch): [\(text)]")
        }
    }

    mutating func say(_ node: Int, _ text: String) { output.append("r\(round) n\(node) \(text)") }

    func ballot(_ ballot: UInt64) -> String { "\(ballot >> 16).\(ballot & 0xffff)" }

    mutating func name(_ member: MemberID) -> String {
        var list = incarnations[member.node] ?? []
        if !list.contains(member.incarnation) { list.append(member.incarnation); incarnations[member.node] = list }
        return "\(member.node).\(list.firstIndex(of: member.incarnation)! + 1)"
    }

    mutating func members(_ list: [MemberID]) -> String { "[" + list.map { name($0) }.joined(separator: ", ") + "]" }
}
