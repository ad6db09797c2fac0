import CarillonMembership

/// Where an owned object lives, as the bus says at one position.
public struct ObjectLocation: Sendable, Hashable, CustomStringConvertible {
    public var name: String
    /// The member that holds its bytes and serves its operations.
    public var owner: MemberID
    /// Members holding copies (promoted in order if the owner fails).
    public var backups: [MemberID]
    /// The log index of its last write (or its creation).
    public var version: UInt64
    public var size: UInt64
    /// Active, migrating (frozen: operations queue until the commit), or lost.
    public var state: String

    public var description: String {
        let copies = backups.isEmpty ? "no backups" : "backups \(backups.map(\.description).joined(separator: ","))"
        return "\(name)\towner \(owner)\t\(copies)\tversion \(version)\t\(size) B\t\(state)"
    }

    static func read(_ r: inout ByteReader) throws(ServiceDecodeError) -> ObjectLocation {
        let name = try r.string16()
        let owner = MemberID(node: try r.u16(), incarnation: try r.u64())
        let count = Int(try r.u16())
        var backups: [MemberID] = []
        for _ in 0..<count { backups.append(MemberID(node: try r.u16(), incarnation: try r.u64())) }
        let version = try r.u64(), size = try r.u64()
        let state = try r.u8(), node = try r.u16(), incarnation = try r.u64()
        let text: String
        switch state {
        case 0: text = "active"
        case 1: text = "migrating to \(MemberID(node: node, incarnation: incarnation))"
        case 2: text = "lost"
        default: throw .invalidField("object state \(state)")
        }
        return ObjectLocation(name: name, owner: owner, backups: backups, version: version, size: size, state: text)
    }
}

/// The bytes of a read and the version they are of.
public struct ObjectRead: Sendable, Hashable {
    public var version: UInt64
    public var bytes: [UInt8]
}

/// The typed calls of the owned objects (``OwnedObjectService``): every call
/// but ``createObject(_:size:backups:owner:consistency:)``, ``locateObject(_:consistency:)`` and
/// ``listObjects(prefix:consistency:)`` presents a capability, checked inside
/// the state machine at the command's position. A call that is refused
/// throws ``ServiceCallError`` with the service's explanation
/// (``ServiceStatus/forbidden``: the capability does not allow it).
///
/// ```swift
/// let cap = try await session.createObject("cache/users", size: 1 << 20, backups: 1)
/// _ = try await session.writeObject(cap, at: 0, Array("hello".utf8))
/// let moved = try await session.migrateObject(cap, to: .node(2))
/// let reader = try await session.grant(cap, rights: .read)   // hand this to a reader
/// ```
extension ServiceCalls {
    func ownedCall(_ capability: Capability?, _ consistency: Consistency, _ command: OwnedObjectCommand, _ what: String) async throws
        -> ServiceResponse
    {
        var w = ByteWriter()
        command.encode(into: &w)
        let r = try await request(
            service: OwnedObjectService.serviceID, body: w.bytes, consistency: consistency, capability: capability?.encoded ?? [])
        guard r.status == .ok else {
            let why = try? ByteReader.reading(r.body) { (r) throws(ServiceDecodeError) -> String in try r.string16() }
            if let why, !why.isEmpty { throw ServiceCallError(r.status, "\(what): \(why)") }
            throw ServiceCallError.failure(r, what)
        }
        return r
    }

    /// Creates an object of `size` zero bytes owned by `owner` (nil: this
    /// session's member) with `backups` copies on the next members of the
    /// view; returns the capability with every right (keep it: it is the
    /// only way to reach the object).
    public func createObject(
        _ name: String, size: UInt64, backups: UInt8 = 0, owner: UInt16? = nil, consistency: Consistency = .agreed
    ) async throws -> Capability {
        let r = try await ownedCall(nil, consistency, .create(name: name, size: size, backups: backups, owner: owner), "create \(name)")
        return try Self.capability(in: r.body)
    }

    /// Reads `length` bytes at `offset` (at most ``OwnedObjectService/maximumReadBytes`` per call), served by the owner.
    public func readObject(_ capability: Capability, at offset: UInt64, length: UInt32, consistency: Consistency = .agreed) async throws
        -> ObjectRead
    {
        let r = try await ownedCall(capability, consistency, .read(name: capability.name, offset: offset, length: length), "read \(capability.name)")
        return try ByteReader.reading(r.body) { (r) throws(ServiceDecodeError) -> ObjectRead in
            ObjectRead(version: try r.u64(), bytes: Array(try r.bytes32()))
        }
    }

    /// Writes `bytes` at `offset` (one bus message: about a kilobyte per call);
    /// returns the object's new version. Queued in bus order while the object migrates.
    public func writeObject(_ capability: Capability, at offset: UInt64, _ bytes: [UInt8], consistency: Consistency = .agreed) async throws
        -> UInt64
    {
        let r = try await ownedCall(capability, consistency, .write(name: capability.name, offset: offset, bytes: bytes), "write \(capability.name)")
        return try ByteReader.reading(r.body) { (r) throws(ServiceDecodeError) -> UInt64 in try r.u64() }
    }

    /// Deletes the object (every copy; its capabilities stop working).
    public func deleteObject(_ capability: Capability, consistency: Consistency = .agreed) async throws {
        _ = try await ownedCall(capability, consistency, .delete(name: capability.name), "delete \(capability.name)")
    }

    /// Moves the object to `target`; returns when its migration committed
    /// (the new owner and the version moved), or throws ``ServiceStatus/aborted``.
    public func migrateObject(_ capability: Capability, to target: MigrationTarget, consistency: Consistency = .agreed) async throws
        -> (owner: MemberID, version: UInt64)
    {
        let r = try await ownedCall(capability, consistency, .migrate(name: capability.name, to: target), "migrate \(capability.name)")
        return try ByteReader.reading(r.body) { (r) throws(ServiceDecodeError) -> (owner: MemberID, version: UInt64) in
            (MemberID(node: try r.u16(), incarnation: try r.u64()), try r.u64())
        }
    }

    /// Where `name` lives now (ordered; no capability needed: names and owners are not secret).
    public func locateObject(_ name: String, consistency: Consistency = .agreed) async throws -> ObjectLocation {
        let r = try await ownedCall(nil, consistency, .locate(name: name), "where \(name)")
        return try ByteReader.reading(r.body) { (r) throws(ServiceDecodeError) -> ObjectLocation in try ObjectLocation.read(&r) }
    }

    /// Every object whose name starts with `prefix`, in name order.
    public func listObjects(prefix: String = "", consistency: Consistency = .agreed) async throws -> [ObjectLocation] {
        let r = try await ownedCall(nil, consistency, .list(prefix: prefix), "list \(prefix)")
        return try ByteReader.reading(r.body) { (r) throws(ServiceDecodeError) -> [ObjectLocation] in
            let count = Int(try r.u32())
            var out: [ObjectLocation] = []
            for _ in 0..<count { out.append(try ObjectLocation.read(&r)) }
            return out
        }
    }

    /// Delegates `capability` (an object's or a lock's) with `rights` (a subset of its own); needs the grant right.
    public func grant(_ capability: Capability, rights: CapabilityRights, consistency: Consistency = .agreed) async throws -> Capability {
        let what = "grant \(capability.name)"
        let r =
            capability.kind == .lock
            ? try await lockCall(capability, consistency, .grant(name: capability.name, rights: rights), what)
            : try await ownedCall(capability, consistency, .grant(name: capability.name, rights: rights), what)
        return try Self.capability(in: r.body)
    }

    /// Revokes capability `id` (and everything delegated from it) at this
    /// command's position; `capability` must be an ancestor of it with the grant right.
    public func revoke(_ id: UInt64, using capability: Capability, consistency: Consistency = .agreed) async throws {
        let what = "revoke \(id) of \(capability.name)"
        if capability.kind == .lock {
            _ = try await lockCall(capability, consistency, .revoke(name: capability.name, id: id), what)
        } else {
            _ = try await ownedCall(capability, consistency, .revoke(name: capability.name, id: id), what)
        }
    }

    /// Puts lock `name` behind capabilities (``LockCommand/protect(name:)``):
    /// from then on acquiring, releasing or cancelling it needs a capability
    /// for it with the write right. Returns the capability with every right.
    public func protectLock(_ name: String, consistency: Consistency = .agreed) async throws -> Capability {
        let r = try await lockCall(nil, consistency, .protect(name: name), "protect lock \(name)")
        return try Self.capability(in: r.body)
    }

    func lockCall(_ capability: Capability?, _ consistency: Consistency, _ command: LockCommand, _ what: String) async throws
        -> ServiceResponse
    {
        let r = try await call(LockService.serviceID, consistency, capability: capability) { command.encode(into: &$0) }
        guard r.status == .ok else {
            let why = try? ByteReader.reading(r.body) { (r) throws(ServiceDecodeError) -> String in try r.string16() }
            if let why, !why.isEmpty { throw ServiceCallError(r.status, "\(what): \(why)") }
            throw ServiceCallError.failure(r, what)
        }
        return r
    }

    static func capability(in body: [UInt8]) throws -> Capability {
        try ByteReader.reading(body) { (r) throws(ServiceDecodeError) -> Capability in
            _ = try r.u64()
            return try Capability.decode(try r.bytes32())
        }
    }
}
