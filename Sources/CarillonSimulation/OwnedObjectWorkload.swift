import CarillonMembership
import CarillonOrdering
@_spi(Canary) import CarillonServices

/// The owned objects in the services simulator: each member's
/// ``ObjectHolding`` (its copies), the bulk channel between members
/// (transfers that arrive after a delay, only while both ends still run the
/// incarnations that sent and expect them), the members' own commands (read
/// replies, commits, aborts, loads), and the checks:
/// - **one owner**: every member computes the same directory (the replica
///   digests cover it) and every effect naming a copy finds it
///   (``ObjectHolding/Counters/missingCopies`` stays 0);
/// - **no committed write lost while a copy survives**: after a settled run,
///   every holder's copy of every object that is not lost equals the object
///   replayed from its creation and every write applied (the writes every
///   member ordered, in version order), at the directory's version;
/// - **reads in bus order**: a read answered with version `v` returns the
///   object as replayed up to `v`;
/// - **capabilities**: every member answers every owned-object request the
///   same (capability checks are deterministic); a write with a read-only
///   capability is refused.
struct OwnedObjectWorkload {
    struct Transfer {
        var from: Int
        var fromMember: MemberID
        var to: Int
        var toMember: MemberID
        var arriveNanos: UInt64
        var bytes: [UInt8]
    }

    struct NodeState {
        var holding: ObjectHolding?
        var orders: [OwnedObjectCommand] = []
        var nextRequest: UInt64 = 1
        var nextLoadNanos: UInt64 = 0
        /// Migrations this member sends, with the time it gives up (orders an abort).
        var sending: [(name: String, migration: UInt64, giveUpNanos: UInt64)] = []
    }

    /// One object's history as every member orders it.
    struct History {
        var creates: [(version: UInt64, size: UInt64)] = []
        var writes: [UInt64: [(offset: UInt64, bytes: [UInt8])]] = [:]

        /// The object's bytes at `version` (the last creation at or before it, and its writes up to it).
        func bytes(at version: UInt64) -> [UInt8]? {
            guard let create = creates.last(where: { $0.version <= version }) else { return nil }
            var bytes = [UInt8](repeating: 0, count: Int(create.size))
            for v in writes.keys.sorted() where v > create.version && v <= version {
                for w in writes[v]! { bytes.replaceSubrange(Int(w.offset)..<(Int(w.offset) + w.bytes.count), with: w.bytes) }
            }
            return bytes
        }
    }

    static let names = ["m0", "m1", "m2"]
    static let objectBytes: UInt64 = 32
    let authority: SipHashAuthority
    let roundNanos: UInt64
    var nodes: [NodeState]
    var transfers: [Transfer] = []
    var histories: [String: History] = [:]
    /// The log indices whose effects are in ``histories``.
    var recordedVersions: Set<UInt64> = []
    /// The root capability of each live object (the one its creation answered), and a read-only one.
    var capabilities: [String: Capability] = [:]
    var readOnly: [String: Capability] = [:]
    /// Every member's answer to each owned-object request, first seen.
    var answersSeen: [ServicesWorkload.RequestKey: ServicesWorkload.Answer] = [:]
    var violations: [ServiceViolation] = []
    var migrationsStarted = 0
    var migrationsCommitted = 0
    var migrationsAborted = 0

    init(nodeCount: Int, roundNanos: UInt64, seed: UInt64) {
        authority = SipHashAuthority(key0: seed ^ 0x6361_7073, key1: ~seed)
        self.roundNanos = roundNanos
        nodes = Array(repeating: NodeState(), count: nodeCount)
    }

    func machine(canary: ServiceCanary?) -> OwnedObjectService {
        var m = OwnedObjectService(authority: authority, maximumConcurrentMigrations: 2, maximumReadBytes: 64)
        if canary == .unfrozenMigration || canary == .ignoreRights { m.canary = canary }
        return m
    }

    mutating func started(node: Int, me: MemberID) {
        nodes[node] = NodeState(holding: ObjectHolding(me: me))
    }

    /// The incarnation is over (excluded, or a new process): its copies and orders go with it.
    mutating func ended(node: Int) {
        nodes[node] = NodeState()
    }

    /// The effects of one event at `node` (its host's output), after it applied it.
    mutating func effects(
        node: Int, output: ServiceOutput, me: MemberID?, nowNanos: UInt64, random: inout SimulationRandom
    ) {
        record(output.objectEffects, version: output.index)
        for effect in output.objectEffects {
            guard nodes[node].holding != nil else { continue }
            for action in nodes[node].holding!.apply(effect) {
                switch action {
                case .order(let command):
                    nodes[node].orders.append(command)
                case .send(let transfer, let to):
                    guard let me else { continue }
                    migrationsStarted += 1
                    nodes[node].sending.append((transfer.name, transfer.migration, nowNanos + roundNanos * 400))
                    // The bulk channel: a delay; 5% of transfers stall (the source gives up later).
                    guard !random.chance(0.05) else { continue }
                    transfers.append(
                        Transfer(
                            from: node, fromMember: me, to: Int(to.node), toMember: to,
                            arriveNanos: nowNanos + roundNanos * UInt64(random.int(in: 1...60)), bytes: transfer.encoded))
                }
            }
        }
    }

    /// The histories every member computes alike, recorded from the first
    /// member to apply each event: the queued writes a commit applies share
    /// the commit's log index as their version, in their bus order.
    mutating func record(_ effects: [ObjectEffect], version: UInt64) {
        let seen = recordedVersions
        for effect in effects {
            switch effect {
            case .allocate(let name, let size, let version, _):
                guard !seen.contains(version) else { continue }
                histories[name, default: History()].creates.append((version, size))
            case .write(let name, let offset, let bytes, let version, _):
                guard !seen.contains(version) else { continue }
                histories[name, default: History()].writes[version, default: []].append((offset, bytes))
            case .committed:
                if !seen.contains(version) { migrationsCommitted += 1 }
            case .aborted:
                if !seen.contains(version) { migrationsAborted += 1 }
            default:
                break
            }
        }
        recordedVersions.insert(version)
    }

    /// Every member's answer to a request must be the same (the capability checks included).
    mutating func compare(_ key: ServicesWorkload.RequestKey, _ answer: ServicesWorkload.Answer, node: Int) {
        if let first = answersSeen[key] {
            if first != answer {
                record(.answersDiffer(session: key.session, request: key.id, first: first.description, then: "\(answer) at node \(node)"))
            }
        } else {
            answersSeen[key] = answer
        }
    }

    mutating func record(_ v: ServiceViolation) {
        if violations.count < ServicesWorkload.violationLimit, !violations.contains(v) { violations.append(v) }
    }

    /// The member's own commands (from its session 0) and the transfers that arrived.
    mutating func offer(
        node: Int, me: MemberID, nowNanos: UInt64, machine: OwnedObjectService?, random: inout SimulationRandom, into payloads: inout [[UInt8]]
    ) {
        guard nodes[node].holding?.me == me else { return }
        // Transfers that arrived at this member, from a source still running the incarnation that sent them.
        var kept: [Transfer] = []
        for t in transfers {
            if t.to == node, t.arriveNanos <= nowNanos {
                if t.toMember == me, nodes[t.from].holding?.me == t.fromMember,
                    case .success(let actions) = nodes[node].holding!.received(t.bytes)
                {
                    for case .order(let command) in actions { nodes[node].orders.append(command) }
                }
            } else {
                kept.append(t)
            }
        }
        transfers = kept
        // A source gives up on a migration that did not finish in time.
        for (i, s) in nodes[node].sending.enumerated().reversed() where s.giveUpNanos <= nowNanos {
            nodes[node].sending.remove(at: i)
            if case .migrating(let m)? = machine?.objects[s.name]?.state, m.id == s.migration {
                nodes[node].orders.append(.abortMigration(name: s.name, migration: s.migration))
            }
        }
        if nowNanos >= nodes[node].nextLoadNanos {
            nodes[node].nextLoadNanos = nowNanos + roundNanos * 300
            nodes[node].orders.append(.publishLoad(UInt32(random.int(in: 0...100))))
        }
        for command in nodes[node].orders {
            let id = nodes[node].nextRequest
            nodes[node].nextRequest += 1
            var w = ByteWriter(capacity: 96)
            CommandEnvelope.writeHeader(
                kind: .command, service: OwnedObjectService.serviceID, session: SessionID(member: me, client: 0), requestID: id,
                acknowledgedBelow: id, to: &w)
            command.encode(into: &w)
            payloads.append(w.bytes)
        }
        nodes[node].orders.removeAll()
    }

    /// A client's next owned-object command (and the capability it presents).
    mutating func nextCommand(node: Int, nodeCount: Int, writes: inout UInt64, random: inout SimulationRandom) -> (OwnedObjectCommand, Capability?) {
        let name = Self.names[random.int(in: 0...(Self.names.count - 1))]
        guard let cap = capabilities[name] else {
            return (.create(name: name, size: Self.objectBytes, backups: UInt8(random.int(in: 0...1)), owner: nil), nil)
        }
        let dice = random.unit()
        if dice < 0.4 {
            writes += 1
            let value = withUnsafeBytes(of: writes.littleEndian) { Array($0) }
            return (.write(name: name, offset: UInt64(random.int(in: 0...24)), bytes: value), cap)
        } else if dice < 0.65 {
            return (.read(name: name, offset: UInt64(random.int(in: 0...24)), length: 8), random.chance(0.5) ? readOnly[name] ?? cap : cap)
        } else if dice < 0.8 {
            let target: MigrationTarget =
                random.chance(0.8) ? .node(UInt16(random.int(in: 0...(nodeCount - 1)))) : (random.chance(0.5) ? .leastLoaded : .mostUsed)
            return (.migrate(name: name, to: target), cap)
        } else if dice < 0.85 {
            return (.grant(name: name, rights: [.read]), cap)
        } else if dice < 0.9, let ro = readOnly[name] {
            writes += 1
            return (.write(name: name, offset: 0, bytes: withUnsafeBytes(of: writes.littleEndian) { Array($0) }), ro)
        } else if dice < 0.92 {
            return (.delete(name: name), cap)
        } else {
            return (.locate(name: name), nil)
        }
    }

    /// A client got its answer.
    mutating func answered(_ command: OwnedObjectCommand, capability: [UInt8], _ answer: ServicesWorkload.Answer, session: SessionID, request: UInt64)
    {
        switch (command, answer.status) {
        case (.create(let name, _, _, _), .ok):
            if let cap = try? OwnedObjectService.capability(from: answer.body) {
                capabilities[name] = cap
                readOnly[name] = nil
            }
        case (.grant(let name, _), .ok):
            if let cap = try? OwnedObjectService.capability(from: answer.body), cap.name == name, capabilities[name].map({ $0.id < cap.id }) ?? false
            {
                readOnly[name] = cap
            }
        case (.delete(let name), .ok):
            capabilities[name] = nil
            readOnly[name] = nil
        case (.write, .ok):
            if let cap = try? Capability.decode(capability), !cap.rights.contains(.write) {
                record(.rightIgnored(session: session, request: request, rights: cap.rights.description))
            }
        case (.read(let name, let offset, let length), .ok):
            guard let read = try? OwnedObjectService.readAnswer(from: answer.body) else { return }
            if let expected = histories[name]?.bytes(at: read.version) {
                let slice = Array(expected[Int(offset)..<min(expected.count, Int(offset) + Int(length))])
                if slice != read.bytes {
                    record(.readDiffers(object: name, version: read.version, expected: slice, found: read.bytes))
                }
            }
        default:
            break
        }
    }

    /// After a settled run: every holder's copy is the object as ordered.
    mutating func finish(nodesSettled: [Int]?, machine: (Int) -> OwnedObjectService?, owner: (Int) -> MemberID?) -> [ServiceViolation] {
        for (node, state) in nodes.enumerated() where (state.holding?.counters.missingCopies ?? 0) > 0 {
            record(.copyMissing(node: node, count: state.holding!.counters.missingCopies))
        }
        guard let settled = nodesSettled, let reference = settled.first, let directory = machine(reference) else { return violations }
        for name in directory.objects.keys.sorted() {
            let o = directory.objects[name]!
            guard o.state != .lost, let expected = histories[name]?.bytes(at: o.version) else { continue }
            for node in settled {
                guard let me = owner(node), o.holders.contains(me) else { continue }
                // The owner of a frozen object is the source: it still holds the frozen version.
                guard let copy = nodes[node].holding?.copy(of: name) else {
                    record(.copyMissing(node: node, count: 1))
                    continue
                }
                if !copy.bytes.elementsEqual(expected) || copy.version != o.version {
                    record(.objectCopyDiffers(object: name, node: node, version: o.version, found: copy.version))
                }
            }
        }
        return violations
    }
}
