import CarillonMembership

/// Where a migration goes: a named member, or where a placement policy says.
public enum MigrationTarget: Sendable, Hashable, CustomStringConvertible {
    case node(UInt16)
    case leastLoaded
    case mostUsed

    public var description: String {
        switch self {
        case .node(let n): "node \(n)"
        case .leastLoaded: "auto (least loaded)"
        case .mostUsed: "auto (where it is used most)"
        }
    }
}

/// An owned-object command (service id 3). Commands that touch an existing
/// object need a capability for it in the envelope (``Capability``); the
/// rights each needs are in docs/services.md.
public enum OwnedObjectCommand: Sendable, Hashable {
    /// Creates `name` of `size` zero bytes, owned by the sender's member (or
    /// `owner`'s node) with `backups` copies on the next members in rank
    /// order. Answers the creator's capability (every right). No capability needed.
    case create(name: String, size: UInt64, backups: UInt8, owner: UInt16?)
    /// Reads `length` bytes at `offset` (read right): answered by the owner
    /// with the bytes as of the read's position (or later, if the owner failed
    /// and a backup answers).
    case read(name: String, offset: UInt64, length: UInt32)
    /// Writes `bytes` at `offset` (write right); the object's size does not change.
    case write(name: String, offset: UInt64, bytes: [UInt8])
    /// Deletes the object and every capability for it (write right); a lost
    /// object can be deleted too (nothing else applies to it).
    case delete(name: String)
    /// Moves the object (migrate right); answered when the move commits or aborts.
    case migrate(name: String, to: MigrationTarget)
    /// Where the object lives: owner, backups, version, size, state. No capability needed.
    case locate(name: String)
    /// Objects whose name starts with `prefix`, with owners. No capability needed.
    case list(prefix: String)
    /// A capability for `name` with `rights` (grant right; at most the presented rights).
    case grant(name: String, rights: CapabilityRights)
    /// Revokes capability `id` and everything delegated from it (grant right
    /// on a capability it was delegated from, or on itself).
    case revoke(name: String, id: UInt64)
    // Sent by members' shells from their own session (client ``OwnedObjectService/memberClient``), never by clients:
    /// The migration's target holds the object's bytes (digest checked): it owns it from here.
    case commitMigration(name: String, migration: UInt64, digest: UInt64)
    /// The migration cannot finish (the target did not get the bytes, or the source gave up).
    case abortMigration(name: String, migration: UInt64)
    /// The owner's answer to a read.
    case readReply(name: String, session: SessionID, requestID: UInt64, version: UInt64, bytes: [UInt8])
    /// A member's load (any unit the placement policy compares; smaller is less loaded).
    case publishLoad(UInt32)

    public func encode(into w: inout ByteWriter) {
        switch self {
        case .create(let name, let size, let backups, let owner):
            w.u8(1); w.string16(name); w.u64(size); w.u8(backups); w.u16(owner ?? 0xFFFF)
        case .read(let name, let offset, let length): w.u8(2); w.string16(name); w.u64(offset); w.u32(length)
        case .write(let name, let offset, let bytes): w.u8(3); w.string16(name); w.u64(offset); w.bytes32(bytes)
        case .delete(let name): w.u8(4); w.string16(name)
        case .migrate(let name, let to):
            w.u8(5); w.string16(name)
            switch to {
            case .node(let n): w.u8(0); w.u16(n)
            case .leastLoaded: w.u8(1); w.u16(0)
            case .mostUsed: w.u8(2); w.u16(0)
            }
        case .locate(let name): w.u8(6); w.string16(name)
        case .list(let prefix): w.u8(7); w.string16(prefix)
        case .grant(let name, let rights): w.u8(8); w.string16(name); w.u8(rights.rawValue)
        case .revoke(let name, let id): w.u8(9); w.string16(name); w.u64(id)
        case .commitMigration(let name, let migration, let digest): w.u8(10); w.string16(name); w.u64(migration); w.u64(digest)
        case .abortMigration(let name, let migration): w.u8(11); w.string16(name); w.u64(migration)
        case .readReply(let name, let session, let requestID, let version, let bytes):
            w.u8(12); w.string16(name); session.write(to: &w); w.u64(requestID); w.u64(version); w.bytes32(bytes)
        case .publishLoad(let load): w.u8(13); w.u32(load)
        }
    }

    /// Whether the command is one a member's shell sends for itself (never a client's).
    public var isMemberCommand: Bool {
        switch self {
        case .commitMigration, .abortMigration, .readReply, .publishLoad: true
        default: false
        }
    }
}

/// One owned object as every member knows it (its bytes live only at its
/// holders: the owner and the backups).
public struct OwnedObject: Sendable, Hashable {
    public enum State: Sendable, Hashable, CustomStringConvertible {
        /// Operations apply at once.
        case active
        /// Frozen for a migration: writes and deletes queue in bus order.
        case migrating(Migration)
        /// Every copy was lost (the owner and every backup failed). Only a
        /// delete applies (it frees the name); everything else is `objectLost`.
        case lost

        public var description: String {
            switch self {
            case .active: "active"
            case .migrating(let m): "migrating to \(m.target) (migration \(m.id))"
            case .lost: "lost"
            }
        }
    }

    public struct Migration: Sendable, Hashable {
        /// The log index of the migrate command (names the transfer).
        public var id: UInt64
        public var source: MemberID
        public var target: MemberID
        /// The version frozen and sent.
        public var version: UInt64
        /// The migrate request, answered at the commit or abort.
        public var session: SessionID
        public var requestID: UInt64
        /// The source left the view before the commit: only the target can finish it.
        public var sourceGone: Bool
    }

    /// A write or delete ordered while the object was frozen.
    public struct Queued: Sendable, Hashable {
        public var session: SessionID
        public var requestID: UInt64
        public var node: UInt16
        /// A write's offset and bytes; nil for a delete.
        public var offset: UInt64
        public var bytes: [UInt8]?
    }

    /// A read waiting for its owner's reply.
    public struct PendingRead: Sendable, Hashable {
        public var session: SessionID
        public var requestID: UInt64
        public var offset: UInt64
        public var length: UInt32
    }

    public var owner: MemberID
    public var backups: [MemberID]
    /// The log index of the last write (or of the creation).
    public var version: UInt64
    public var size: UInt64
    public var state: State
    public var queued: [Queued] = []
    public var pendingReads: [PendingRead] = []
    /// Operations per node (reads and writes), for the "used most" placement.
    public var usage: [UInt16: UInt64] = [:]

    /// The members that hold the bytes.
    public var holders: [MemberID] { state == .lost ? [] : [owner] + backups }
}

/// What the members holding an object's bytes must do, in bus order. Every
/// member computes the same effects; each applies those naming it
/// (``ObjectHolding``).
public enum ObjectEffect: Sendable, Hashable {
    /// The holders make the object: `size` zero bytes.
    case allocate(name: String, size: UInt64, version: UInt64, holders: [MemberID])
    /// The holders write `bytes` at `offset`; the object's version is `version`.
    case write(name: String, offset: UInt64, bytes: [UInt8], version: UInt64, holders: [MemberID])
    /// These members drop their copy (and anything received for it).
    case drop(name: String, members: [MemberID])
    /// The owner answers a read with a ``OwnedObjectCommand/readReply(name:session:requestID:version:bytes:)``.
    case serveRead(name: String, owner: MemberID, session: SessionID, requestID: UInt64, offset: UInt64, length: UInt32, version: UInt64)
    /// The source sends its copy (frozen at `version`) to the target over the
    /// bulk channel; the target checks the digest and orders a commit.
    case transfer(name: String, migration: UInt64, source: MemberID, target: MemberID, version: UInt64)
    /// The migration committed: the target keeps what it received as the
    /// object; `dropAt` (the source, unless it stays as a backup) drops its copy.
    case committed(name: String, migration: UInt64, target: MemberID, dropAt: [MemberID])
    /// The migration aborted: the target drops what it received.
    case aborted(name: String, migration: UInt64, target: MemberID)
    /// The source left before the commit and no backup survives: the target
    /// commits if it holds the bytes, else aborts (whichever is ordered first wins).
    case finishWithoutSource(name: String, migration: UInt64, target: MemberID)
}

/// How `migrate(to: auto)` chooses a member. Must be deterministic: it reads
/// only its arguments (replicated state), never the clock or the machine.
public protocol PlacementPolicy: Sendable {
    func place(_ name: String, object: OwnedObject, members: [MemberID], loads: [UInt16: UInt32]) -> MemberID?
}

/// The member with the smallest published load (ties: lowest rank); never the owner.
public struct LeastLoadedPlacement: PlacementPolicy {
    public init() {}
    public func place(_ name: String, object: OwnedObject, members: [MemberID], loads: [UInt16: UInt32]) -> MemberID? {
        members.filter { $0 != object.owner }.min { (loads[$0.node] ?? 0) < (loads[$1.node] ?? 0) }
    }
}

/// The member whose clients used the object most (ties: lowest rank; the
/// owner itself when it is that member, and then nothing moves); nil when no
/// member of the view has used it.
public struct MostUsedPlacement: PlacementPolicy {
    public init() {}
    public func place(_ name: String, object: OwnedObject, members: [MemberID], loads: [UInt16: UInt32]) -> MemberID? {
        let top = members.map { object.usage[$0.node] ?? 0 }.max() ?? 0
        guard top > 0 else { return nil }
        return members.first { (object.usage[$0.node] ?? 0) == top }
    }
}

/// Objects that live on one member and move in bus order (service id 3).
///
/// Every member runs this machine on the bus's order and holds the same
/// directory: who owns each object, its backups, version and state, the
/// queue of operations ordered while it is frozen, and the capability table.
/// Only the holders keep the bytes (``ObjectHolding``, driven by
/// ``ServiceOutput/objectEffects``). A migration freezes the object at the
/// migrate command's position, the source sends the frozen bytes to the
/// target over the bulk channel, and the target's ordered commit moves the
/// ownership; failures before the commit abort (the source keeps it) or
/// promote a backup — decided at the view change's position, the same at
/// every member. docs/services.md, "Owned objects and migration".
public struct OwnedObjectService: ReplicatedStateMachine, Sendable {
    public static let serviceID: UInt16 = 3
    /// The longest object name (its capability travels in every command's envelope).
    public static let maximumNameBytes = 256
    public var serviceID: UInt16 { Self.serviceID }
    /// The client id of a member's own session: member commands
    /// (``OwnedObjectCommand/isMemberCommand``) from any other session are
    /// refused (`forbidden`), so a client of the owner or the target cannot
    /// answer reads, commit or abort migrations, or publish loads. Clients'
    /// sessions are numbered from 1.
    public static let memberClient: UInt32 = 0

    public private(set) var objects: [String: OwnedObject] = [:]
    public private(set) var capabilities = CapabilityTable()
    /// The members' last published loads.
    public private(set) var loads: [UInt16: UInt32] = [:]
    /// Migrations admitted but waiting for a slot (``maximumConcurrentMigrations``).
    public private(set) var waitingMigrations: [WaitingMigration] = []
    /// The view the last event was applied in.
    public private(set) var members: [MemberID] = []

    public struct WaitingMigration: Sendable, Hashable {
        public var name: String
        public var target: MigrationTarget
        public var session: SessionID
        public var requestID: UInt64
    }

    /// At most this many objects migrate at once; more wait in bus order.
    public let maximumConcurrentMigrations: Int
    /// The largest read answered in one reply (it travels as one bus message).
    public let maximumReadBytes: UInt32
    /// The largest object.
    public let maximumObjectBytes: UInt64
    let authority: any CapabilityAuthority
    /// A deliberately broken variant (tests only); not part of the state.
    @_spi(Canary) public var canary: ServiceCanary?

    /// The default largest object: 1 GiB.
    public static let defaultMaximumObjectBytes: UInt64 = 1 << 30

    public init(
        authority: any CapabilityAuthority, maximumConcurrentMigrations: Int = 2, maximumReadBytes: UInt32 = 1024,
        maximumObjectBytes: UInt64 = defaultMaximumObjectBytes
    ) {
        self.authority = authority
        self.maximumConcurrentMigrations = maximumConcurrentMigrations
        self.maximumReadBytes = maximumReadBytes
        self.maximumObjectBytes = maximumObjectBytes
    }

    /// How many objects are frozen for a migration now.
    public var migrationsInFlight: Int {
        objects.values.reduce(0) { n, o in if case .migrating = o.state { n + 1 } else { n } }
    }

    // MARK: - Applying commands

    public mutating func apply(_ command: inout ByteReader, context: ApplyContext, output: inout ServiceOutput) throws(ServiceDecodeError) {
        members = context.view.members
        let op = try command.u8()
        let s = context.session, id = context.requestID
        if (10...13).contains(op), s.client != Self.memberClient {
            return refuse(s, id, .forbidden, "commits, aborts, read replies and loads come from a member's own session", &output)
        }
        switch op {
        case 1:
            let name = try command.string16()
            let size = try command.u64()
            let backupCount = Int(try command.u8())
            let ownerNode = try command.u16()
            try command.expectEnd()
            guard !name.isEmpty else { return refuse(s, id, .badRequest, "an object needs a name", &output) }
            guard name.utf8.count <= Self.maximumNameBytes else {
                return refuse(s, id, .badRequest, "an object's name is at most \(Self.maximumNameBytes) bytes", &output)
            }
            guard objects[name] == nil else { return refuse(s, id, .exists, "\(name) exists", &output) }
            guard size <= maximumObjectBytes else {
                return refuse(s, id, .badRequest, "\(size) bytes is more than the largest object, \(maximumObjectBytes)", &output)
            }
            let owner: MemberID
            if ownerNode == 0xFFFF {
                owner = s.member
            } else {
                guard let m = members.first(where: { $0.node == ownerNode }) else {
                    return refuse(s, id, .notFound, "node \(ownerNode) is not in the view", &output)
                }
                owner = m
            }
            guard backupCount < members.count else {
                return refuse(s, id, .badRequest, "\(backupCount) backups need \(backupCount + 1) members; the view has \(members.count)", &output)
            }
            let rank = members.firstIndex(of: owner)!
            let backups = (1...max(1, backupCount)).prefix(backupCount).map { members[(rank + $0) % members.count] }
            objects[name] = OwnedObject(owner: owner, backups: backups, version: context.index, size: size, state: .active)
            capabilities.issue(context.index, parent: 0, name: name, rights: .all)
            let cap = Capability(kind: .object, id: context.index, rights: .all, name: name, authority: authority)
            output.objectEffect(.allocate(name: name, size: size, version: context.index, holders: [owner] + backups))
            output.complete(s, id, status: .ok) { w in
                w.u64(context.index)
                w.bytes32(cap.encoded)
            }
        case 2:
            let name = try command.string16()
            let offset = try command.u64()
            let length = try command.u32()
            try command.expectEnd()
            guard let o = checked(name, .read, context, &output) else { return }
            guard length <= maximumReadBytes else {
                return refuse(s, id, .badRequest, "a read returns at most \(maximumReadBytes) bytes; read \(name) in parts", &output)
            }
            guard offset <= o.size, UInt64(length) <= o.size - offset else {
                return refuse(s, id, .badRequest, "bytes \(offset)..<\(offset + UInt64(length)) are outside \(name) (\(o.size) bytes)", &output)
            }
            objects[name]!.usage[s.member.node, default: 0] += 1
            // The owner serves reads while frozen too: the bytes do not change until the commit.
            objects[name]!.pendingReads.append(.init(session: s, requestID: id, offset: offset, length: length))
            output.objectEffect(
                .serveRead(name: name, owner: o.owner, session: s, requestID: id, offset: offset, length: length, version: o.version))
        case 3:
            let name = try command.string16()
            let offset = try command.u64()
            let bytes = try command.bytes32()
            try command.expectEnd()
            guard let o = checked(name, .write, context, &output) else { return }
            guard offset <= o.size, UInt64(bytes.count) <= o.size - offset else {
                return refuse(s, id, .badRequest, "bytes \(offset)..<\(offset + UInt64(bytes.count)) are outside \(name) (\(o.size) bytes)", &output)
            }
            objects[name]!.usage[s.member.node, default: 0] += 1
            let queued = OwnedObject.Queued(session: s, requestID: id, node: s.member.node, offset: offset, bytes: Array(bytes))
            if case .migrating = o.state, canary != .unfrozenMigration {
                objects[name]!.queued.append(queued)
            } else {
                applyQueued(name, queued, index: context.index, output: &output)
            }
        case 4:
            let name = try command.string16()
            try command.expectEnd()
            guard let o = checked(name, .write, context, &output, allowLost: true) else { return }
            let queued = OwnedObject.Queued(session: s, requestID: id, node: s.member.node, offset: 0, bytes: nil)
            if case .migrating = o.state {
                objects[name]!.queued.append(queued)
            } else {
                applyQueued(name, queued, index: context.index, output: &output)
            }
        case 5:
            let name = try command.string16()
            let kind = try command.u8()
            let node = try command.u16()
            try command.expectEnd()
            let target: MigrationTarget
            switch kind {
            case 0: target = .node(node)
            case 1: target = .leastLoaded
            case 2: target = .mostUsed
            default: throw .invalidField("migration target kind \(kind)")
            }
            guard let o = checked(name, .migrate, context, &output) else { return }
            if case .migrating = o.state { return refuse(s, id, .busy, "\(name) is migrating; try again when it has moved", &output) }
            if waitingMigrations.contains(where: { $0.name == name }) {
                return refuse(s, id, .busy, "\(name) is waiting to migrate", &output)
            }
            let waiting = WaitingMigration(name: name, target: target, session: s, requestID: id)
            if migrationsInFlight < maximumConcurrentMigrations {
                start(waiting, index: context.index, output: &output)
            } else {
                waitingMigrations.append(waiting)
            }
        case 6:
            let name = try command.string16()
            try command.expectEnd()
            guard let o = objects[name] else { return refuse(s, id, .notFound, "no object \(name)", &output) }
            output.complete(s, id, status: .ok) { w in Self.writeLocation(name, o, into: &w) }
        case 7:
            let prefix = try command.string16()
            try command.expectEnd()
            output.complete(s, id, status: .ok) { w in
                let names = objects.keys.filter { $0.hasPrefix(prefix) }.sorted()
                w.u32(UInt32(names.count))
                for n in names { Self.writeLocation(n, objects[n]!, into: &w) }
            }
        case 8:
            let name = try command.string16()
            let rights = CapabilityRights(rawValue: try command.u8())
            try command.expectEnd()
            guard CapabilityRights.all.isSuperset(of: rights) else { throw .invalidField("rights \(rights.rawValue)") }
            guard let presented = checkedCapability(name, .grant, context, &output) else { return }
            guard presented.rights.isSuperset(of: rights) else {
                return refuse(s, id, .forbidden, "a capability can delegate only rights it has (\(presented.rights)), not \(rights)", &output)
            }
            capabilities.issue(context.index, parent: presented.id, name: name, rights: rights)
            let cap = Capability(kind: .object, id: context.index, rights: rights, name: name, authority: authority)
            output.complete(s, id, status: .ok) { w in
                w.u64(context.index)
                w.bytes32(cap.encoded)
            }
        case 9:
            let name = try command.string16()
            let revoked = try command.u64()
            try command.expectEnd()
            guard let presented = checkedCapability(name, .grant, context, &output) else { return }
            guard capabilities.issued[revoked]?.name == name else {
                return refuse(s, id, .notFound, "no capability \(revoked) for \(name)", &output)
            }
            guard capabilities.isAncestor(presented.id, of: revoked) else {
                return refuse(s, id, .forbidden, "capability \(presented.id) did not delegate \(revoked)", &output)
            }
            capabilities.revoke(revoked)
            output.complete(s, id, status: .ok)
        case 10:
            let name = try command.string16()
            let migration = try command.u64()
            _ = try command.u64()
            try command.expectEnd()
            guard let o = objects[name], case .migrating(let m) = o.state, m.id == migration, s.member == m.target else {
                // A commit that lost the race with an abort (or a stale one): nothing to do.
                return output.complete(s, id, status: .notFound)
            }
            commit(name, m, index: context.index, output: &output)
            output.complete(s, id, status: .ok)
        case 11:
            let name = try command.string16()
            let migration = try command.u64()
            try command.expectEnd()
            guard let o = objects[name], case .migrating(let m) = o.state, m.id == migration,
                s.member == m.target || s.member == m.source
            else { return output.complete(s, id, status: .notFound) }
            abort(name, m, index: context.index, output: &output)
            output.complete(s, id, status: .ok)
        case 12:
            let name = try command.string16()
            let session = try SessionID.read(from: &command)
            let requestID = try command.u64()
            let version = try command.u64()
            let bytes = try command.bytes32()
            try command.expectEnd()
            output.complete(s, id, status: .ok)
            // Only the owner's reply counts; a reply from an earlier owner is ignored.
            guard let o = objects[name], o.owner == s.member,
                let r = o.pendingReads.firstIndex(where: { $0.session == session && $0.requestID == requestID })
            else { return }
            objects[name]!.pendingReads.remove(at: r)
            output.complete(session, requestID, status: .ok) { w in
                w.u64(version)
                w.bytes32(bytes)
            }
        case 13:
            let load = try command.u32()
            try command.expectEnd()
            loads[s.member.node] = load
            output.complete(s, id, status: .ok)
        default:
            throw .unknownOperation(service: Self.serviceID, operation: op)
        }
    }

    static func writeLocation(_ name: String, _ o: OwnedObject, into w: inout ByteWriter) {
        w.string16(name)
        w.u16(o.owner.node); w.u64(o.owner.incarnation)
        w.u16(UInt16(o.backups.count))
        for b in o.backups { w.u16(b.node); w.u64(b.incarnation) }
        w.u64(o.version)
        w.u64(o.size)
        switch o.state {
        case .active: w.u8(0); w.u16(0); w.u64(0)
        case .migrating(let m): w.u8(1); w.u16(m.target.node); w.u64(m.target.incarnation)
        case .lost: w.u8(2); w.u16(0); w.u64(0)
        }
    }

    func refuse(_ s: SessionID, _ id: UInt64, _ status: ServiceStatus, _ why: String, _ output: inout ServiceOutput) {
        output.complete(s, id, status: status) { $0.string16(why) }
    }

    /// The object, if it exists, is not lost (unless `allowLost`), and the
    /// envelope's capability allows `needed`; else answers the request and returns nil.
    func checked(
        _ name: String, _ needed: CapabilityRights, _ context: ApplyContext, _ output: inout ServiceOutput, allowLost: Bool = false
    ) -> OwnedObject? {
        guard let o = objects[name] else {
            refuse(context.session, context.requestID, .notFound, "no object \(name)", &output)
            return nil
        }
        guard checkedCapability(name, needed, context, &output) != nil else { return nil }
        guard allowLost || o.state != .lost else {
            refuse(context.session, context.requestID, .objectLost, "every copy of \(name) was lost (its owner and backups failed)", &output)
            return nil
        }
        return o
    }

    func checkedCapability(_ name: String, _ needed: CapabilityRights, _ context: ApplyContext, _ output: inout ServiceOutput) -> Capability? {
        switch capabilities.check(context.capability, name: name, needed: canary == .ignoreRights ? [] : needed, authority: authority) {
        case .success(let cap): return cap
        case .failure(let refusal):
            refuse(context.session, context.requestID, .forbidden, "\(name): \(refusal)", &output)
            return nil
        }
    }

    // MARK: - Writes, migrations, failures

    /// Applies a write or delete now (at `index`) and answers it. A write to
    /// a lost object is refused; a delete removes it.
    mutating func applyQueued(_ name: String, _ q: OwnedObject.Queued, index: UInt64, output: inout ServiceOutput) {
        guard let o = objects[name] else {
            refuse(q.session, q.requestID, .notFound, "\(name) was deleted before this operation applied", &output)
            return
        }
        if o.state == .lost, q.bytes != nil {
            refuse(q.session, q.requestID, .objectLost, "every copy of \(name) was lost (its owner and backups failed)", &output)
            return
        }
        if let bytes = q.bytes {
            objects[name]!.version = index
            output.objectEffect(.write(name: name, offset: q.offset, bytes: bytes, version: index, holders: o.holders))
            output.complete(q.session, q.requestID, status: .ok) { $0.u64(index) }
        } else {
            objects[name] = nil
            capabilities.forget(name)
            for w in waitingMigrations where w.name == name {
                refuse(w.session, w.requestID, .notFound, "\(name) was deleted before its migration started", &output)
            }
            waitingMigrations.removeAll { $0.name == name }
            for r in o.pendingReads { refuse(r.session, r.requestID, .notFound, "\(name) was deleted", &output) }
            output.objectEffect(.drop(name: name, members: o.holders))
            output.complete(q.session, q.requestID, status: .ok) { $0.u64(index) }
        }
    }

    mutating func start(_ w: WaitingMigration, index: UInt64, output: inout ServiceOutput) {
        guard let o = objects[w.name] else {
            refuse(w.session, w.requestID, .notFound, "no object \(w.name)", &output)
            return
        }
        if o.state == .lost {
            refuse(w.session, w.requestID, .objectLost, "every copy of \(w.name) was lost (its owner and backups failed)", &output)
            return
        }
        guard o.state == .active else {
            refuse(w.session, w.requestID, .busy, "\(w.name) is migrating; try again when it has moved", &output)
            return
        }
        let target: MemberID?
        switch w.target {
        case .node(let n): target = members.first { $0.node == n }
        case .leastLoaded: target = LeastLoadedPlacement().place(w.name, object: o, members: members, loads: loads)
        case .mostUsed: target = MostUsedPlacement().place(w.name, object: o, members: members, loads: loads)
        }
        guard let target else {
            let why = w.target == .mostUsed ? "no member of the view has used \(w.name) yet" : "no member in the view for \(w.target)"
            return refuse(w.session, w.requestID, .notFound, "\(w.name) cannot move to \(w.target): \(why)", &output)
        }
        if target == o.owner {
            output.complete(w.session, w.requestID, status: .ok) { Self.writeOwner(target, o.version, into: &$0) }
            return
        }
        let m = OwnedObject.Migration(
            id: index, source: o.owner, target: target, version: o.version, session: w.session, requestID: w.requestID, sourceGone: false)
        objects[w.name]!.state = .migrating(m)
        output.objectEffect(.transfer(name: w.name, migration: index, source: o.owner, target: target, version: o.version))
    }

    static func writeOwner(_ owner: MemberID, _ version: UInt64, into w: inout ByteWriter) {
        w.u16(owner.node); w.u64(owner.incarnation); w.u64(version)
    }

    mutating func commit(_ name: String, _ m: OwnedObject.Migration, index: UInt64, output: inout ServiceOutput) {
        var o = objects[name]!
        o.state = .active
        o.owner = m.target
        var dropAt: [MemberID] = []
        if let b = o.backups.firstIndex(of: m.target) {
            // The target was a backup: the source takes its place as one.
            if m.sourceGone { o.backups.remove(at: b) } else { o.backups[b] = m.source }
        } else if !m.sourceGone {
            dropAt = [m.source]
        }
        let queued = o.queued
        o.queued = []
        objects[name] = o
        output.objectEffect(.committed(name: name, migration: m.id, target: m.target, dropAt: dropAt))
        output.complete(m.session, m.requestID, status: .ok) { Self.writeOwner(m.target, o.version, into: &$0) }
        finish(name, queued: queued, index: index, output: &output)
    }

    mutating func abort(_ name: String, _ m: OwnedObject.Migration, index: UInt64, output: inout ServiceOutput) {
        objects[name]!.state = .active
        output.objectEffect(.aborted(name: name, migration: m.id, target: m.target))
        if m.sourceGone { promote(name, output: &output) }
        let o = objects[name]!
        let queued = o.queued
        objects[name]!.queued = []
        let outcome = o.state == .lost ? "every copy of \(name) was lost" : "\(name) stays at \(o.owner)"
        refuse(m.session, m.requestID, .aborted, "the migration of \(name) to \(m.target) aborted; \(outcome)", &output)
        finish(name, queued: queued, index: index, output: &output)
    }

    /// After a commit or an abort: the queued operations apply in bus order,
    /// unanswered reads go to the (new) owner, and a waiting migration starts.
    mutating func finish(_ name: String, queued: [OwnedObject.Queued], index: UInt64, output: inout ServiceOutput) {
        for q in queued { applyQueued(name, q, index: index, output: &output) }
        reserveReads(name, output: &output)
        startWaiting(index: index, output: &output)
    }

    mutating func startWaiting(index: UInt64, output: inout ServiceOutput) {
        while migrationsInFlight < maximumConcurrentMigrations, !waitingMigrations.isEmpty {
            start(waitingMigrations.removeFirst(), index: index, output: &output)
        }
    }

    /// Reads not answered yet go to the current owner again (or fail if the object is lost).
    mutating func reserveReads(_ name: String, output: inout ServiceOutput) {
        guard let o = objects[name], !o.pendingReads.isEmpty else { return }
        if o.state == .lost {
            for r in o.pendingReads {
                refuse(r.session, r.requestID, .objectLost, "every copy of \(name) was lost (its owner and backups failed)", &output)
            }
            objects[name]!.pendingReads = []
            return
        }
        for r in o.pendingReads {
            output.objectEffect(
                .serveRead(
                    name: name, owner: o.owner, session: r.session, requestID: r.requestID, offset: r.offset,
                    length: r.length, version: o.version))
        }
    }

    /// The owner is gone: the first surviving backup owns the object, or it is lost.
    mutating func promote(_ name: String, output: inout ServiceOutput) {
        if objects[name]!.backups.isEmpty {
            objects[name]!.state = .lost
        } else {
            objects[name]!.owner = objects[name]!.backups.removeFirst()
        }
    }

    public mutating func applyViewChange(_ view: View, removed: [MemberID], index: UInt64, output: inout ServiceOutput) {
        members = view.members
        guard !removed.isEmpty else { return }
        for name in objects.keys.sorted() {
            var o = objects[name]!
            o.backups.removeAll { removed.contains($0) }
            objects[name] = o
            switch o.state {
            case .lost:
                continue
            case .active:
                if removed.contains(o.owner) {
                    promote(name, output: &output)
                    reserveReads(name, output: &output)
                }
            case .migrating(var m):
                let sourceGone = removed.contains(m.source), targetGone = removed.contains(m.target)
                if targetGone {
                    // The source keeps it, or (if it went too, in this view or an
                    // earlier one) a backup, or it is lost.
                    m.sourceGone = m.sourceGone || sourceGone
                    abort(name, m, index: index, output: &output)
                } else if sourceGone {
                    m.sourceGone = true
                    if objects[name]!.backups.isEmpty {
                        // Only the target may hold a copy now: it commits or aborts.
                        objects[name]!.state = .migrating(m)
                        output.objectEffect(.finishWithoutSource(name: name, migration: m.id, target: m.target))
                    } else {
                        abort(name, m, index: index, output: &output)
                    }
                }
            }
        }
        // Migrations waiting for a slot whose asker's member left still run;
        // those naming a member that left fail when they start.
        startWaiting(index: index, output: &output)
    }

    public mutating func endSession(_ session: SessionID, index: UInt64, output: inout ServiceOutput) {
        // Nothing is held by a session: objects outlive their creators' sessions.
        // Reads and waits of the session are dropped (nobody is left to answer).
        for name in objects.keys.sorted() where objects[name]!.pendingReads.contains(where: { $0.session == session }) {
            objects[name]!.pendingReads.removeAll { $0.session == session }
        }
        waitingMigrations.removeAll { $0.session == session }
    }

    // MARK: - Snapshots

    public func snapshot(into w: inout ByteWriter) {
        w.u16(UInt16(members.count))
        for m in members { w.u16(m.node); w.u64(m.incarnation) }
        let names = objects.keys.sorted()
        w.u32(UInt32(names.count))
        for name in names {
            let o = objects[name]!
            w.string16(name)
            writeMember(o.owner, &w)
            w.u16(UInt16(o.backups.count))
            for b in o.backups { writeMember(b, &w) }
            w.u64(o.version)
            w.u64(o.size)
            switch o.state {
            case .active: w.u8(0)
            case .lost: w.u8(2)
            case .migrating(let m):
                w.u8(1)
                w.u64(m.id); writeMember(m.source, &w); writeMember(m.target, &w); w.u64(m.version)
                m.session.write(to: &w); w.u64(m.requestID); w.u8(m.sourceGone ? 1 : 0)
            }
            w.u32(UInt32(o.queued.count))
            for q in o.queued {
                q.session.write(to: &w); w.u64(q.requestID); w.u16(q.node); w.u64(q.offset)
                if let b = q.bytes { w.u8(1); w.bytes32(b) } else { w.u8(0) }
            }
            w.u32(UInt32(o.pendingReads.count))
            for r in o.pendingReads { r.session.write(to: &w); w.u64(r.requestID); w.u64(r.offset); w.u32(r.length) }
            let used = o.usage.keys.sorted()
            w.u16(UInt16(used.count))
            for n in used { w.u16(n); w.u64(o.usage[n]!) }
        }
        capabilities.snapshot(into: &w)
        let loaded = loads.keys.sorted()
        w.u16(UInt16(loaded.count))
        for n in loaded { w.u16(n); w.u32(loads[n]!) }
        w.u32(UInt32(waitingMigrations.count))
        for m in waitingMigrations {
            w.string16(m.name)
            switch m.target {
            case .node(let n): w.u8(0); w.u16(n)
            case .leastLoaded: w.u8(1); w.u16(0)
            case .mostUsed: w.u8(2); w.u16(0)
            }
            m.session.write(to: &w); w.u64(m.requestID)
        }
    }

    func writeMember(_ m: MemberID, _ w: inout ByteWriter) { w.u16(m.node); w.u64(m.incarnation) }

    public mutating func restore(from r: inout ByteReader) throws(ServiceDecodeError) {
        func member() throws(ServiceDecodeError) -> MemberID { MemberID(node: try r.u16(), incarnation: try r.u64()) }
        var restoredMembers: [MemberID] = []
        for _ in 0..<Int(try r.u16()) { restoredMembers.append(try member()) }
        var restored: [String: OwnedObject] = [:]
        for _ in 0..<Int(try r.u32()) {
            let name = try r.string16()
            let owner = try member()
            var backups: [MemberID] = []
            for _ in 0..<Int(try r.u16()) { backups.append(try member()) }
            let version = try r.u64()
            let size = try r.u64()
            let state: OwnedObject.State
            switch try r.u8() {
            case 0: state = .active
            case 2: state = .lost
            case 1:
                let id = try r.u64(), source = try member(), target = try member(), version = try r.u64()
                let session = try SessionID.read(from: &r), requestID = try r.u64(), gone = try r.u8() == 1
                state = .migrating(
                    .init(id: id, source: source, target: target, version: version, session: session, requestID: requestID, sourceGone: gone))
            case let s: throw .invalidField("object state \(s)")
            }
            var o = OwnedObject(owner: owner, backups: backups, version: version, size: size, state: state)
            for _ in 0..<Int(try r.u32()) {
                let session = try SessionID.read(from: &r), requestID = try r.u64(), node = try r.u16(), offset = try r.u64()
                let bytes: [UInt8]? = try r.u8() == 1 ? Array(try r.bytes32()) : nil
                o.queued.append(.init(session: session, requestID: requestID, node: node, offset: offset, bytes: bytes))
            }
            for _ in 0..<Int(try r.u32()) {
                o.pendingReads.append(.init(session: try SessionID.read(from: &r), requestID: try r.u64(), offset: try r.u64(), length: try r.u32()))
            }
            for _ in 0..<Int(try r.u16()) { o.usage[try r.u16()] = try r.u64() }
            restored[name] = o
        }
        let table = try CapabilityTable.restore(from: &r)
        var restoredLoads: [UInt16: UInt32] = [:]
        for _ in 0..<Int(try r.u16()) { restoredLoads[try r.u16()] = try r.u32() }
        var waiting: [WaitingMigration] = []
        for _ in 0..<Int(try r.u32()) {
            let name = try r.string16()
            let kind = try r.u8(), node = try r.u16()
            let target: MigrationTarget
            switch kind {
            case 0: target = .node(node)
            case 1: target = .leastLoaded
            case 2: target = .mostUsed
            default: throw .invalidField("migration target kind \(kind)")
            }
            waiting.append(.init(name: name, target: target, session: try SessionID.read(from: &r), requestID: try r.u64()))
        }
        members = restoredMembers
        objects = restored
        capabilities = table
        loads = restoredLoads
        waitingMigrations = waiting
    }

    // MARK: - Reading answers

    /// An object's location as ``locate`` answers it.
    public struct Location: Sendable, Hashable {
        public var name: String
        public var owner: MemberID
        public var backups: [MemberID]
        public var version: UInt64
        public var size: UInt64
        /// 0 active, 1 migrating (to ``migratingTo``), 2 lost.
        public var state: UInt8
        public var migratingTo: MemberID?
    }

    static func readLocation(_ r: inout ByteReader) throws(ServiceDecodeError) -> Location {
        let name = try r.string16()
        let owner = MemberID(node: try r.u16(), incarnation: try r.u64())
        var backups: [MemberID] = []
        for _ in 0..<Int(try r.u16()) { backups.append(MemberID(node: try r.u16(), incarnation: try r.u64())) }
        let version = try r.u64(), size = try r.u64(), state = try r.u8()
        let to = MemberID(node: try r.u16(), incarnation: try r.u64())
        return Location(name: name, owner: owner, backups: backups, version: version, size: size, state: state, migratingTo: state == 1 ? to : nil)
    }

    public static func location(from body: [UInt8]) throws(ServiceDecodeError) -> Location {
        try ByteReader.reading(body) { (r) throws(ServiceDecodeError) -> Location in
            let l = try readLocation(&r)
            try r.expectEnd()
            return l
        }
    }

    public static func locations(from body: [UInt8]) throws(ServiceDecodeError) -> [Location] {
        try ByteReader.reading(body) { (r) throws(ServiceDecodeError) -> [Location] in
            var out: [Location] = []
            for _ in 0..<Int(try r.u32()) { out.append(try readLocation(&r)) }
            try r.expectEnd()
            return out
        }
    }

    /// A create's or grant's answer: the capability's id and the capability.
    public static func capability(from body: [UInt8]) throws(ServiceDecodeError) -> Capability {
        try ByteReader.reading(body) { (r) throws(ServiceDecodeError) -> Capability in
            _ = try r.u64()
            let cap = try Capability.decode(try r.bytes32())
            try r.expectEnd()
            return cap
        }
    }

    /// A read's answer: the version and the bytes.
    public static func readAnswer(from body: [UInt8]) throws(ServiceDecodeError) -> (version: UInt64, bytes: [UInt8]) {
        try ByteReader.reading(body) { (r) throws(ServiceDecodeError) -> (version: UInt64, bytes: [UInt8]) in
            let v = try r.u64()
            let b = Array(try r.bytes32())
            try r.expectEnd()
            return (v, b)
        }
    }

    /// A refusal's reason (the body of `forbidden`, `badRequest`, … answers).
    public static func reason(from body: [UInt8]) -> String? {
        try? ByteReader.reading(body) { (r) throws(ServiceDecodeError) -> String in try r.string16() }
    }
}
