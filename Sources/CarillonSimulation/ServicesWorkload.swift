import CarillonMembership
import CarillonOrdering
@_spi(Canary) import CarillonServices

/// What the services simulator's clients do: drawn per seed (``swarm(seed:)``)
/// from a generator of its own, so the membership profile of a seed is the
/// membership swarm's.
public struct ServicesWorkloadProfile: Sendable, Hashable, CustomStringConvertible {
    /// Sessions at each member at once (each runs one client, a new session after one ends).
    public var clientsPerNode = 3
    /// Share of sessions that take locks; the others read and write objects.
    public var lockClientShare = 0.5
    /// A client waits up to this many rounds between requests.
    public var thinkRounds = 20
    /// A request not answered within about this many rounds is sent again (same session, same id).
    public var retryRounds = 80
    /// Share of answered requests sent once more anyway (a duplicate the host must answer from memory).
    public var duplicateShare = 0.1
    /// A granted lock is held for up to this many rounds.
    public var holdRounds = 40
    /// A waiting acquire is withdrawn (cancel) after up to this many rounds.
    public var waitTimeoutRounds = 100
    /// Share of releases and cancels replaced by ending the session.
    public var endSessionShare = 0.1
    /// Register keys (each takes at most `operationsPerKey` operations, two in use at a time).
    public var registerKeys = 8
    /// Bound on one key's history, so the linearizability search stays small.
    public var operationsPerKey = 12
    public var lockNames = 2
    public var counterKeys = 2
    /// Share of the object clients that use owned objects (create, write,
    /// read, migrate, grant, delete with capabilities) instead of the store.
    public var ownedClientShare = 0.4

    public init() {}

    public static func swarm(seed: UInt64) -> ServicesWorkloadProfile {
        var random = SimulationRandom(seed: seed ^ 0x5E52_7669_6365)
        var profile = ServicesWorkloadProfile()
        profile.clientsPerNode = random.int(in: 1...3)
        profile.lockClientShare = [0.3, 0.5, 0.7][random.int(in: 0...2)]
        profile.thinkRounds = [5, 20, 60][random.int(in: 0...2)]
        profile.retryRounds = [30, 80, 200][random.int(in: 0...2)]
        profile.duplicateShare = [0, 0.1, 0.3][random.int(in: 0...2)]
        profile.holdRounds = [5, 40, 150][random.int(in: 0...2)]
        profile.waitTimeoutRounds = [20, 100, 300][random.int(in: 0...2)]
        profile.endSessionShare = [0.05, 0.2][random.int(in: 0...1)]
        profile.lockNames = random.int(in: 1...3)
        profile.ownedClientShare = [0.2, 0.4, 0.7][random.int(in: 0...2)]
        return profile
    }

    public var description: String {
        "\(clientsPerNode) clients/node, \(Int(lockClientShare * 100))% locks (\(lockNames) names), think ≤\(thinkRounds), "
            + "retry ~\(retryRounds), duplicates \(Int(duplicateShare * 100))%, hold ≤\(holdRounds), wait ≤\(waitTimeoutRounds), "
            + "end session \(Int(endSessionShare * 100))%, owned objects \(Int(ownedClientShare * 100))% of object clients (rounds)"
    }
}

extension MembershipFaultProfile {
    /// The membership swarm's profile of `seed` (the same faults) with safe
    /// delivery, for the services. Their answers to clients must stand for
    /// the view's survivors, and agreed delivery is not uniform: a member
    /// that is then left out may deliver — and answer its clients from —
    /// messages the survivors trimmed (`carillon-sim --services --mode
    /// agreed` shows it). Safe delivery is uniform.
    public static func servicesSwarm(seed: UInt64) -> MembershipFaultProfile {
        var profile = MembershipFaultProfile.swarm(seed: seed)
        profile.deliveryMode = .safe
        return profile
    }
}

/// What the clients did in one run.
public struct ServicesStatistics: Sendable, Hashable, CustomStringConvertible {
    public var requests = 0
    public var answered = 0
    public var retries = 0
    public var duplicates = 0
    public var grants = 0
    public var cancels = 0
    public var sessionsEnded = 0
    public var registerOperations = 0
    public var adds = 0
    public var localReads = 0
    public var digestsCompared = 0
    public var ownedOperations = 0
    public var migrationsCommitted = 0
    public var migrationsAborted = 0

    public init() {}

    public var description: String {
        "\(requests) requests (\(answered) answered, \(retries) retries, \(duplicates) duplicates), \(grants) grants, "
            + "\(cancels) cancels, \(sessionsEnded) sessions ended, \(registerOperations) register operations, \(adds) adds, "
            + "\(digestsCompared) digests compared, \(ownedOperations) owned-object operations "
            + "(\(migrationsCommitted) migrations committed, \(migrationsAborted) aborted)"
    }
}

/// The services on top of the membership simulator: a ``ServiceHost`` with a
/// ``LockService`` and an ``ObjectStore`` at every member, fed the member's
/// bus stream, and clients (sessions of that member) that send commands
/// through it, retry, cancel and end sessions. It records what each member's
/// stream did and what each client saw, and checks at the end:
/// - **lock safety**, at each member's stream: no grant while a holder in a
///   conflicting mode still holds (released, or its session ended), tokens
///   increase per lock; members grant the same (lock, session, token) on
///   the part of each epoch they both delivered;
/// - **replica equality**: ``ServiceHost/digest`` is the same at every member
///   right after installing a view, and a joiner's right after it received
///   the state; every member's state is the same once the run settled;
/// - **linearizability** of each register key's history (Wing & Gong);
/// - **exactly once**: a request answered twice is answered the same; each
///   counter's sums come from applying every distinct `add` once.
///
/// Every command travels behind the simulator's 8-byte message id (so its
/// integrity, agreement and validity checks cover them); the host sees the
/// envelope only.
struct ServicesWorkload {
    let profile: ServicesWorkloadProfile
    let canary: ServiceCanary?
    let roundNanos: UInt64
    var random: SimulationRandom

    enum Operation: Hashable {
        case lock(LockCommand)
        case object(ObjectCommand)
        case owned(OwnedObjectCommand, capability: [UInt8])
        case endSession
    }

    struct Answer: Hashable, CustomStringConvertible {
        var status: ServiceStatus
        var body: [UInt8]
        var description: String { body.isEmpty ? "\(status)" : "\(status) [\(body.map { String($0) }.joined(separator: " "))]" }
    }

    struct RequestKey: Hashable {
        var session: SessionID
        var id: UInt64
    }

    struct Request {
        var session: SessionID
        var id: UInt64
        var operation: Operation
        var invokedNanos: UInt64
        var payload: [UInt8]
        var answer: Answer?
        var answeredNanos: UInt64?
    }

    struct Client {
        var session: SessionID?
        var locks = false
        var owned = false
        var nextRequest: UInt64 = 1
        /// Requests sent and not answered (an acquire and its cancel at most), with their retry times.
        var waiting: [(request: Int, retryAtNanos: UInt64)] = []
        /// A waiting acquire, when it is withdrawn, and the cancel sent for it.
        var acquire: (request: Int, name: String, cancelAtNanos: UInt64, cancel: Int?)?
        var held: (name: String, releaseAtNanos: UInt64)?
        var idleUntilNanos: UInt64 = 0
        /// Versions this client last saw, per key (for compare-and-set).
        var versions: [String: UInt64] = [:]
    }

    struct ShadowLock {
        var holders: [(session: SessionID, mode: LockMode)] = []
        var lastToken: UInt64 = 0
        /// Whether the last grant was shared: shared requests granted at one
        /// event (a release letting several in) share its token.
        var lastShared = false
    }

    struct Grant: Hashable, CustomStringConvertible {
        /// The delivery in the epoch that caused it (−1: the view's installation).
        var cause: Int
        var lock: String
        var session: SessionID
        var token: UInt64
        var mode: LockMode
        var description: String { "\(lock) \(mode) to \(session) token \(token)" }
    }

    struct EpochRecord {
        var ids: [UInt64] = []
        /// The latest round this stream delivered in the epoch.
        var lastRound: UInt64 = 0
        var grants: [Grant] = []
        var joined = false
        var installedNext = false
    }

    /// One member's stream: from a process start (or a rejoin) to its end.
    struct Stream {
        var node: Int
        var epochs: [UInt32: EpochRecord] = [:]
    }

    struct Node {
        var host: ServiceHost
        /// The member the stream runs as; `nil` after an exclusion until the state arrives.
        var owner: MemberID?
        var view: View?
        var stream: Int
        var epoch: UInt32 = 0
        var deliveries = 0
        var locks: [String: ShadowLock] = [:]
        var clients: [Client]
        var duplicates: [[UInt8]] = []
    }

    var nodes: [Node] = []
    /// The host's output for the event being applied (one node at a time).
    var output = ServiceOutput()
    /// Per node, the next session client number: never reused, also across restarts.
    var nextClient: [UInt32]
    var requests: [Request] = []
    var requestIndex: [RequestKey: Int] = [:]
    var keyOperations: [String: [Int]] = [:]
    var writes: UInt64 = 0
    var epochDigest: [UInt32: UInt64] = [:]
    /// Each view's first round.
    var epochStart: [UInt32: UInt64] = [:]
    var streams: [Stream] = []
    var violations: [ServiceViolation] = []
    var statistics = ServicesStatistics()
    var owned: OwnedObjectWorkload

    static let violationLimit = 20

    init(profile: ServicesWorkloadProfile, nodeCount: Int, roundNanos: UInt64, seed: UInt64, canary: ServiceCanary?) {
        self.profile = profile
        self.canary = canary
        self.roundNanos = roundNanos
        random = SimulationRandom(seed: seed ^ 0xC11E_7700)
        nextClient = Array(repeating: 1, count: nodeCount)
        owned = OwnedObjectWorkload(nodeCount: nodeCount, roundNanos: roundNanos, seed: seed)
    }

    func registerKey(_ k: Int) -> String { "r\(k)" }

    mutating func makeNode(_ node: Int) -> Node {
        var lockService = LockService()
        var objectStore = ObjectStore()
        if canary == .grantWhileHeld { lockService.canary = canary }
        // One replica that is not deterministic: the others are right.
        if canary == .divergentReplica, node == 0 { objectStore.canary = canary }
        if canary == .divergentTokens, node == 0 { lockService.canary = canary }
        var host = ServiceHost(machines: [lockService, objectStore, owned.machine(canary: canary)])
        if canary == .forgetSessions { host.canary = canary }
        streams.append(Stream(node: node))
        return Node(
            host: host, stream: streams.count - 1,
            clients: Array(repeating: Client(), count: profile.clientsPerNode))
    }

    mutating func record(_ violation: ServiceViolation) {
        if violations.count < Self.violationLimit, !violations.contains(violation) { violations.append(violation) }
    }

    // MARK: Processes

    /// `node`'s process starts (or starts again) as `me` with `view` as its
    /// first view (`nil`: it joins): a new host, new clients.
    mutating func started(node: Int, me: MemberID, view: View?) {
        if node < nodes.count { nodes[node] = makeNode(node) } else { nodes.append(makeNode(node)) }
        owned.started(node: node, me: me)
        guard let view else { return }
        nodes[node].owner = me
        nodes[node].view = view
        nodes[node].epoch = view.epoch
        // A first view is configured, not installed (as the runtime's service node begins).
        nodes[node].host.begin(in: view)
        // Its stream starts inside the view, as a joiner's: no installation event to compare.
        streams[nodes[node].stream].epochs[view.epoch] = EpochRecord(joined: true)
    }

    /// The state for this view's joiners, right after `node` applied its installation.
    func snapshot(node: Int) -> [UInt8] { nodes[node].host.snapshot() }

    // MARK: The stream

    /// One event of `node`'s stream; `id` is the simulator's message id of a
    /// delivery, `me` the member the instance runs as now.
    mutating func apply(node: Int, me: MemberID, event: BusEvent, id: UInt64, nowNanos: UInt64) {
        output.removeAll()
        let stream = nodes[node].stream
        switch event {
        case .delivered(let delivery, let payload):
            let epoch = nodes[node].epoch
            let cause = nodes[node].deliveries
            nodes[node].deliveries += 1
            streams[stream].epochs[epoch, default: EpochRecord()].ids.append(id)
            streams[stream].epochs[epoch]!.lastRound = max(streams[stream].epochs[epoch]!.lastRound, delivery.round)
            guard !payload.isEmpty else { return }  // the simulator's liveness probe
            // A session ends at every member where its own member sent the end.
            if let envelope = try? CommandEnvelope.decode(payload), envelope.kind == .endSession,
                let view = nodes[node].view, delivery.sender < view.members.count,
                view.members[delivery.sender] == envelope.session.member
            {
                endShadowSession { $0 == envelope.session }
            }
            try! nodes[node].host.apply(event, output: &output)
            takeOutput(node, cause: cause, nowNanos: nowNanos)
        case .view(let kind):
            switch kind {
            case .installed(let view, _):
                let previous = nodes[node].epoch
                if view.epoch == previous + 1 { streams[stream].epochs[previous]?.installedNext = true }
                nodes[node].view = view
                nodes[node].epoch = view.epoch
                nodes[node].deliveries = 0
                epochStart[view.epoch] = view.startRound
                streams[stream].epochs[view.epoch] = EpochRecord()
                // Sessions of members that left end at the view change.
                endShadowSession { !view.members.contains($0.member) }
                try! nodes[node].host.apply(event, output: &output)
                takeOutput(node, cause: -1, nowNanos: nowNanos)
                let digest = nodes[node].host.digest
                statistics.digestsCompared += 1
                if let expected = epochDigest[view.epoch] {
                    if expected != digest { record(.digestDiffers(epoch: view.epoch, node: node, expected: expected, found: digest)) }
                } else {
                    epochDigest[view.epoch] = digest
                }
            case .stateReceived(let view, _):
                do throws(ServiceStateError) {
                    try nodes[node].host.apply(event, output: &output)
                } catch {
                    record(.stateUnreadable(epoch: view.epoch, node: node, error: error.description))
                    return
                }
                nodes[node].owner = me
                nodes[node].view = view
                nodes[node].epoch = view.epoch
                nodes[node].deliveries = 0
                owned.started(node: node, me: me)
                streams[stream].epochs[view.epoch] = EpochRecord(joined: true)
                // The joiner's stream starts at the state: its locks are the ones it holds.
                nodes[node].locks = [:]
                if let service = nodes[node].host.machine(LockService.serviceID) as? LockService {
                    for (name, lock) in service.locks {
                        nodes[node].locks[name] = ShadowLock(
                            holders: lock.holders.map { ($0.session, lock.mode) },
                            lastToken: lock.holders.map(\.token).max() ?? 0)
                    }
                }
                let digest = nodes[node].host.digest
                statistics.digestsCompared += 1
                if let expected = epochDigest[view.epoch], expected != digest {
                    record(.joinerStateDiffers(epoch: view.epoch, node: node, expected: expected, found: digest))
                }
            case .excluded:
                try! nodes[node].host.apply(event, output: &output)
                // This incarnation's stream and sessions are over; the state comes with the rejoin.
                nodes[node].owner = nil
                nodes[node].view = nil
                nodes[node].locks = [:]
                owned.ended(node: node)
                streams.append(Stream(node: node))
                nodes[node].stream = streams.count - 1
            case .noPrimaryComponent:
                break
            }
        }

        func endShadowSession(_ ends: (SessionID) -> Bool) {
            for name in nodes[node].locks.keys {
                nodes[node].locks[name]!.holders.removeAll { ends($0.session) }
            }
        }
    }

    /// The completions of one event: lock grants and releases for the
    /// stream's checks, answers for this member's clients.
    mutating func takeOutput(_ node: Int, cause: Int, nowNanos: UInt64) {
        let appliedIndex = nodes[node].host.appliedIndex
        owned.effects(node: node, output: output, me: nodes[node].owner, nowNanos: nowNanos, random: &random)
        for c in output.completions {
            if c.service == OwnedObjectService.serviceID, c.index == appliedIndex {
                owned.compare(RequestKey(session: c.session, id: c.requestID), Answer(status: c.status, body: output.body(of: c)), node: node)
            }
            guard let r = requestIndex[RequestKey(session: c.session, id: c.requestID)] else { continue }
            // A retry answered from the session's memory carries the index it was first answered at.
            if c.index == appliedIndex, c.service == LockService.serviceID, case .lock(let command) = requests[r].operation {
                switch (command, c.status) {
                case (.acquire(let name, let mode, _), .granted):
                    let token = output.withBody(of: c) { $0.count == 8 ? $0.loadUnaligned(as: UInt64.self) : 0 }
                    grant(node, name: name, mode: mode, session: c.session, token: token, cause: cause)
                case (.release(let name), .ok):
                    let before = nodes[node].locks[name]?.holders.count ?? 0
                    nodes[node].locks[name]?.holders.removeAll { $0.session == c.session }
                    if (nodes[node].locks[name]?.holders.count ?? 0) == before {
                        record(.releaseOfUnheld(node: node, lock: name, session: c.session))
                    }
                default:
                    break
                }
            }
            if c.session.member == nodes[node].owner {
                answer(node, request: r, Answer(status: c.status, body: output.body(of: c)), nowNanos: nowNanos)
            }
        }
    }

    /// A grant at `node`'s stream: the lock's holders must allow it.
    mutating func grant(_ node: Int, name: String, mode: LockMode, session: SessionID, token: UInt64, cause: Int) {
        statistics.grants += 1
        // At a view change the host ends the leaving members' sessions one
        // by one: a waiter among them may be granted what another let go,
        // and let it go at once when its own session ends (same position).
        if cause < 0, let view = nodes[node].view, !view.members.contains(session.member) { return }
        var lock = nodes[node].locks[name] ?? ShadowLock()
        let conflicting = lock.holders.filter { mode == .exclusive || $0.mode == .exclusive || $0.session == session }
        if !conflicting.isEmpty {
            record(
                .grantWhileHeld(
                    node: node, lock: name, grantee: session, mode: mode, token: token,
                    holders: conflicting.map(\.session)))
        }
        if token < lock.lastToken || (token == lock.lastToken && !(mode == .shared && lock.lastShared)) {
            record(.tokenNotIncreasing(node: node, lock: name, token: token, previous: lock.lastToken))
        }
        lock.lastToken = max(lock.lastToken, token)
        lock.lastShared = mode == .shared
        lock.holders.append((session, mode))
        nodes[node].locks[name] = lock
        let grant = Grant(cause: cause, lock: name, session: session, token: token, mode: mode)
        streams[nodes[node].stream].epochs[nodes[node].epoch, default: EpochRecord()].grants.append(grant)
    }

    // MARK: Clients

    /// An answer at the member that owns the session.
    mutating func answer(_ node: Int, request r: Int, _ answer: Answer, nowNanos: UInt64) {
        if let first = requests[r].answer {
            if first != answer {
                record(
                    .answersDiffer(
                        session: requests[r].session, request: requests[r].id, first: first.description,
                        then: answer.description))
            }
            return
        }
        requests[r].answer = answer
        requests[r].answeredNanos = nowNanos
        statistics.answered += 1
        guard let k = nodes[node].clients.firstIndex(where: { $0.session == requests[r].session }) else { return }
        var client = nodes[node].clients[k]
        defer { nodes[node].clients[k] = client }
        guard let w = client.waiting.firstIndex(where: { $0.request == r }) else { return }
        client.waiting.remove(at: w)
        switch requests[r].operation {
        case .lock(.acquire(let name, _, _)):
            if client.acquire?.request == r, client.acquire?.cancel == nil { client.acquire = nil }
            if answer.status == .granted {
                client.held = (name, nowNanos + roundNanos * UInt64(random.int(in: 1...profile.holdRounds)))
            }
        case .lock(.release):
            client.held = nil
        case .lock(.cancel):
            if let acquire = client.acquire {
                if answer.status == .cancelled, requests[acquire.request].answer == nil {
                    record(.withdrawnWaitUnanswered(session: requests[acquire.request].session, request: requests[acquire.request].id))
                }
                // Withdrawn, or granted first (the session holds the lock: it releases it).
                client.waiting.removeAll { $0.request == acquire.request }
                client.acquire = nil
            }
        case .object(let command):
            switch (command, answer.status) {
            case (.get(let key), .ok):
                if let object = try? ObjectStore.object(from: answer.body) { client.versions[key] = object.version }
            case (.put(let key, _), .ok), (.compareAndSet(let key, _, _), .ok), (.compareAndSet(let key, _, _), .versionMismatch):
                client.versions[key] = try? ObjectStore.version(from: answer.body)
            case (.delete(let key), _), (.get(let key), .notFound):
                client.versions[key] = 0
            default:
                break
            }
            if random.chance(profile.duplicateShare) {
                nodes[node].duplicates.append(requests[r].payload)
                statistics.duplicates += 1
            }
        case .owned(let command, let capability):
            owned.answered(command, capability: capability, answer, session: requests[r].session, request: requests[r].id)
        case .lock, .endSession:
            break
        }
        if client.waiting.isEmpty, client.held == nil { think(&client, nowNanos) }
    }

    mutating func think(_ client: inout Client, _ nowNanos: UInt64) {
        client.idleUntilNanos = nowNanos + roundNanos * UInt64(random.int(in: 0...profile.thinkRounds))
    }

    /// Commands `node`'s clients send now; the member runs as `me` and has
    /// `backlog` messages not yet taken by the bus (backpressure).
    mutating func offer(node: Int, me: MemberID, backlog: Int, nowNanos: UInt64, into payloads: inout [[UInt8]]) {
        guard nodes[node].owner == me else { return }
        payloads.append(contentsOf: nodes[node].duplicates)
        nodes[node].duplicates.removeAll()
        owned.offer(
            node: node, me: me, nowNanos: nowNanos,
            machine: nodes[node].host.machine(OwnedObjectService.serviceID) as? OwnedObjectService, random: &random, into: &payloads)
        for k in nodes[node].clients.indices {
            var client = nodes[node].clients[k]
            step(node, &client, me: me, backlog: backlog, nowNanos: nowNanos, into: &payloads)
            nodes[node].clients[k] = client
        }
    }

    mutating func step(
        _ node: Int, _ client: inout Client, me: MemberID, backlog: Int, nowNanos: UInt64,
        into payloads: inout [[UInt8]]
    ) {
        if client.session?.member != me {
            // A new session (the old one's member is gone: its requests' outcomes are unknown).
            client = Client(session: SessionID(member: me, client: nextClient[node]), locks: random.chance(profile.lockClientShare))
            client.owned = !client.locks && random.chance(profile.ownedClientShare)
            nextClient[node] += 1
            think(&client, nowNanos)
            return
        }
        for i in client.waiting.indices where client.waiting[i].retryAtNanos <= nowNanos {
            // Retry, unless the bus still holds messages back (the last copy may not have left).
            if backlog == 0 {
                payloads.append(requests[client.waiting[i].request].payload)
                statistics.retries += 1
            }
            client.waiting[i].retryAtNanos = nowNanos + retryDelay()
        }
        if client.locks {
            if let acquire = client.acquire, acquire.cancel == nil, nowNanos >= acquire.cancelAtNanos {
                if random.chance(profile.endSessionShare) { return endSession(&client, nowNanos, into: &payloads) }
                statistics.cancels += 1
                let cancel = send(node, &client, .lock(.cancel(name: acquire.name)), nowNanos, into: &payloads)
                client.acquire?.cancel = cancel
            } else if let held = client.held, client.waiting.isEmpty, nowNanos >= held.releaseAtNanos {
                if random.chance(profile.endSessionShare) { return endSession(&client, nowNanos, into: &payloads) }
                _ = send(node, &client, .lock(.release(name: held.name)), nowNanos, into: &payloads)
            } else if client.waiting.isEmpty, client.held == nil, nowNanos >= client.idleUntilNanos {
                let name = "L\(random.int(in: 0...(profile.lockNames - 1)))"
                let mode: LockMode = random.chance(0.25) ? .shared : .exclusive
                let wait = random.chance(0.7)
                let r = send(node, &client, .lock(.acquire(name: name, mode: mode, wait: wait)), nowNanos, into: &payloads)
                if wait {
                    let timeout = roundNanos * UInt64(random.int(in: 10...max(10, profile.waitTimeoutRounds)))
                    client.acquire = (r, name, nowNanos + timeout, nil)
                }
            }
            return
        }
        guard client.waiting.isEmpty, nowNanos >= client.idleUntilNanos else { return }
        if random.chance(profile.endSessionShare / 4) { return endSession(&client, nowNanos, into: &payloads) }
        if client.owned {
            let (command, capability) = owned.nextCommand(node: node, nodeCount: nodes.count, writes: &writes, random: &random)
            statistics.ownedOperations += 1
            _ = send(node, &client, .owned(command, capability: capability?.encoded ?? []), nowNanos, into: &payloads)
            return
        }
        // Two register keys in use at a time, each for a bounded history.
        let open = (0..<profile.registerKeys).map(registerKey).filter { keyOperations[$0, default: []].count < profile.operationsPerKey }
        if !open.isEmpty, random.chance(0.6) {
            let key = open[random.int(in: 0...(min(open.count, 2) - 1))]
            let command: ObjectCommand
            let dice = random.unit()
            if dice < 0.35 {
                command = .get(key: key)
            } else if dice < 0.9 {
                writes += 1
                let value = withUnsafeBytes(of: writes.littleEndian) { Array($0) }
                if dice < 0.65 {
                    command = .put(key: key, value: value)
                } else {
                    // The version last seen, or a guess that may be stale.
                    let expected = random.chance(0.8) ? client.versions[key] ?? 0 : 0
                    command = .compareAndSet(key: key, expectedVersion: expected, value: value)
                }
            } else {
                command = .delete(key: key)
            }
            statistics.registerOperations += 1
            if canary == .staleLocalReads, case .get = command {
                // Answered from this member's state as it is now, not through the bus.
                let store = nodes[node].host.machine(ObjectStore.serviceID) as? ObjectStore
                let r = register(client.session!, client.nextRequest, .object(command), nowNanos, payload: [])
                client.nextRequest += 1
                keyOperations[key, default: []].append(r)
                statistics.localReads += 1
                var body = ByteWriter()
                if let object = store?.localValue(key) { body.u64(object.version); body.bytes32(object.value) }
                requests[r].answer = Answer(status: store?.localValue(key) == nil ? .notFound : .ok, body: body.bytes)
                requests[r].answeredNanos = nowNanos
                think(&client, nowNanos)
                return
            }
            keyOperations[key, default: []].append(send(node, &client, .object(command), nowNanos, into: &payloads))
        } else {
            statistics.adds += 1
            let key = "c\(random.int(in: 0...(profile.counterKeys - 1)))"
            _ = send(node, &client, .object(.add(key: key, delta: 1)), nowNanos, into: &payloads)
        }
    }

    func retryDelay() -> UInt64 {
        roundNanos * UInt64(profile.retryRounds)
    }

    mutating func register(_ session: SessionID, _ id: UInt64, _ operation: Operation, _ nowNanos: UInt64, payload: [UInt8]) -> Int {
        requests.append(Request(session: session, id: id, operation: operation, invokedNanos: nowNanos, payload: payload))
        requestIndex[RequestKey(session: session, id: id)] = requests.count - 1
        statistics.requests += 1
        return requests.count - 1
    }

    /// Sends a new request of `client`'s session; returns its index in ``requests``.
    mutating func send(
        _ node: Int, _ client: inout Client, _ operation: Operation, _ nowNanos: UInt64,
        into payloads: inout [[UInt8]]
    ) -> Int {
        let session = client.session!
        let id = client.nextRequest
        client.nextRequest += 1
        // The client has every answer below its oldest unanswered request.
        let acknowledged = client.waiting.map { requests[$0.request].id }.min() ?? id
        var w = ByteWriter(capacity: 96)
        switch operation {
        case .lock(let command):
            CommandEnvelope.writeHeader(
                kind: .command, service: LockService.serviceID, session: session, requestID: id,
                acknowledgedBelow: acknowledged, to: &w)
            command.encode(into: &w)
        case .object(let command):
            CommandEnvelope.writeHeader(
                kind: .command, service: ObjectStore.serviceID, session: session, requestID: id,
                acknowledgedBelow: acknowledged, to: &w)
            command.encode(into: &w)
        case .owned(let command, let capability):
            CommandEnvelope.writeHeader(
                kind: .command, service: OwnedObjectService.serviceID, session: session, requestID: id,
                acknowledgedBelow: acknowledged, capability: capability, to: &w)
            command.encode(into: &w)
        case .endSession:
            CommandEnvelope.writeHeader(
                kind: .endSession, service: 0, session: session, requestID: id,
                acknowledgedBelow: acknowledged, to: &w)
        }
        let r = register(session, id, operation, nowNanos, payload: w.bytes)
        payloads.append(w.bytes)
        if operation != .endSession {
            let jitter = UInt64(random.int(in: 0...profile.retryRounds / 2)) * roundNanos
            client.waiting.append((r, nowNanos + retryDelay() + jitter))
        }
        return r
    }

    /// The client ends its session (what it held is released where the end
    /// is delivered); a new session starts later.
    mutating func endSession(_ client: inout Client, _ nowNanos: UInt64, into payloads: inout [[UInt8]]) {
        statistics.sessionsEnded += 1
        guard let session = client.session else { return }
        let node = Int(session.member.node)
        _ = send(node, &client, .endSession, nowNanos, into: &payloads)
        client = Client(
            session: SessionID(member: session.member, client: nextClient[node]),
            locks: random.chance(profile.lockClientShare))
        client.owned = !client.locks && random.chance(profile.ownedClientShare)
        nextClient[node] += 1
        think(&client, nowNanos)
    }

    // MARK: Checks at the end

    /// The checks over the whole run. `settled`: the nodes (all in one view,
    /// every message delivered everywhere) whose final states must agree.
    mutating func finish(settled: [Int]?) -> [ServiceViolation] {
        for stream in streams {
            for (epoch, log) in stream.epochs.sorted(by: { $0.key < $1.key }) {
                if let next = epochStart[epoch + 1], !log.ids.isEmpty, log.lastRound >= next {
                    record(.deliveredAfterViewEnded(node: stream.node, epoch: epoch, round: log.lastRound, nextViewStart: next))
                }
            }
        }
        checkGrantLogs()
        checkRegisters()
        var finalHost: ServiceHost?
        if let settled {
            for node in settled {
                guard let first = settled.first, nodes[first].host.appliedIndex == nodes[node].host.appliedIndex else { continue }
                if nodes[first].host.digest != nodes[node].host.digest {
                    record(.finalStatesDiffer(nodes: [first, node], index: nodes[node].host.appliedIndex))
                }
            }
            finalHost = settled.first.map { nodes[$0].host }
        }
        checkCounters(final: finalHost)
        let finalNodes = self.nodes
        for v in owned.finish(
            nodesSettled: settled, machine: { finalNodes[$0].host.machine(OwnedObjectService.serviceID) as? OwnedObjectService },
            owner: { finalNodes[$0].owner })
        {
            record(v)
        }
        statistics.migrationsCommitted = owned.migrationsCommitted
        statistics.migrationsAborted = owned.migrationsAborted
        return violations
    }

    /// Members grant the same on the part of each epoch they both delivered:
    /// each record against the survivors' (or the longest), up to where their deliveries part.
    mutating func checkGrantLogs() {
        var byEpoch: [UInt32: [(node: Int, record: EpochRecord)]] = [:]
        for stream in streams {
            for (epoch, record) in stream.epochs { byEpoch[epoch, default: []].append((stream.node, record)) }
        }
        for epoch in byEpoch.keys.sorted() {
            let records = byEpoch[epoch]!
            let survivors = records.filter(\.record.installedNext)
            guard let reference = (survivors.isEmpty ? records : survivors).max(by: { $0.record.ids.count < $1.record.ids.count })
            else { continue }
            for other in records {
                var common = 0
                let a = reference.record.ids, b = other.record.ids
                while common < min(a.count, b.count), a[common] == b[common] { common += 1 }
                // A joiner's stream starts after the installation's grants.
                let skipInstall = reference.record.joined || other.record.joined
                func part(_ grants: [Grant]) -> [Grant] {
                    grants.filter { $0.cause < common && ($0.cause >= 0 || !skipInstall) }
                }
                let mine = part(reference.record.grants), theirs = part(other.record.grants)
                if mine != theirs {
                    let i = (0..<min(mine.count, theirs.count)).first { mine[$0] != theirs[$0] } ?? min(mine.count, theirs.count)
                    record(
                        .grantsDiffer(
                            epoch: epoch, nodes: [reference.node, other.node],
                            first: i < mine.count ? mine[i].description : nil,
                            second: i < theirs.count ? theirs[i].description : nil))
                    return
                }
            }
        }
    }

    func history(_ key: String) -> [RegisterOperation] {
        keyOperations[key, default: []].compactMap { r -> RegisterOperation? in
            let request = requests[r]
            guard case .object(let command) = request.operation else { return nil }
            let call: RegisterOperation.Call
            let write: (([UInt8]) -> UInt64) = { $0.count == 8 ? $0.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) } : 0 }
            switch command {
            case .get: call = .get
            case .put(_, let value): call = .put(write: write(value))
            case .compareAndSet(_, let expected, let value): call = .compareAndSet(expected: expected, write: write(value))
            case .delete: call = .delete
            default: return nil
            }
            var outcome: RegisterOperation.Outcome?
            if let answer = request.answer {
                switch (call, answer.status) {
                case (.get, .ok):
                    guard let object = try? ObjectStore.object(from: answer.body) else { return nil }
                    outcome = .value(write: write(object.value), version: object.version)
                case (_, .notFound): outcome = .absent
                case (_, .ok): outcome = (try? ObjectStore.version(from: answer.body)).map { .written(version: $0) }
                case (_, .versionMismatch): outcome = (try? ObjectStore.version(from: answer.body)).map { .mismatch(current: $0) }
                default: return nil  // not applied (a full window): it did not happen
                }
            }
            return RegisterOperation(
                call: call, outcome: outcome, invokedNanos: request.invokedNanos,
                respondedNanos: request.answeredNanos, label: "\(request.session) #\(request.id)")
        }
    }

    mutating func checkRegisters() {
        for key in keyOperations.keys.sorted() where key.hasPrefix("r") {
            let operations = history(key)
            if !RegisterLinearizability.isLinearizable(operations) { record(.notLinearizable(key: key, history: operations)) }
        }
    }

    /// With deltas of 1, the add answered k-th in version order returns
    /// k + (adds of unknown outcome applied before it): that number never
    /// decreases, never exceeds the unknown adds invoked before the answer,
    /// and the final value exceeds the answered adds by no more than all unknown ones.
    mutating func checkCounters(final: ServiceHost?) {
        var adds: [String: [Request]] = [:]
        for request in requests {
            if case .object(.add(let key, _)) = request.operation { adds[key, default: []].append(request) }
        }
        let store = final?.machine(ObjectStore.serviceID) as? ObjectStore
        for key in adds.keys.sorted() {
            let all = adds[key]!
            let answered = all.compactMap { request -> (sum: Int64, version: UInt64, at: UInt64)? in
                guard let answer = request.answer, answer.status == .ok, let sum = try? ObjectStore.sum(from: answer.body) else { return nil }
                return (sum.sum, sum.version, request.answeredNanos!)
            }.sorted { $0.version < $1.version }
            let unknownInvoked = all.filter { $0.answer == nil }.map(\.invokedNanos).sorted()
            var before: Int64 = 0
            for (k, add) in answered.enumerated() {
                let unknownBefore = add.sum - Int64(k) - 1
                let possible = Int64(unknownInvoked.prefix { $0 < add.at }.count)
                guard unknownBefore >= before, unknownBefore <= possible else {
                    record(
                        .counterMiscounted(
                            key: key,
                            detail: "the add answered \(k + 1)th (version \(add.version)) returned \(add.sum): "
                                + "\(unknownBefore) adds of unknown outcome before it, after \(before) before the last, and \(possible) could have been"
                        ))
                    break
                }
                before = unknownBefore
            }
            if let object = store?.localValue(key), object.value.count == 8 {
                let value = object.value.withUnsafeBytes { Int64(littleEndian: $0.loadUnaligned(as: Int64.self)) }
                let extra = value - Int64(answered.count)
                if extra < before || extra > Int64(unknownInvoked.count) {
                    record(
                        .counterMiscounted(
                            key: key,
                            detail: "ends at \(value) after \(answered.count) answered adds and "
                                + "\(unknownInvoked.count) of unknown outcome (at least \(before) of them applied)"))
                }
            }
        }
    }
}
