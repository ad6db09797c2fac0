import CarillonMembership

/// Exclusive or shared.
public enum LockMode: UInt8, Sendable, Hashable, CustomStringConvertible {
    case exclusive = 0
    case shared = 1
    public var description: String { self == .exclusive ? "exclusive" : "shared" }
}

/// A lock service command (service id 1). Encoded as the envelope's body.
public enum LockCommand: Sendable, Hashable {
    /// Take `name` in `mode`. With `wait`, a lock that cannot be granted now
    /// queues the request (FIFO) and answers when granted; without, answers
    /// `.busy` at once.
    case acquire(name: String, mode: LockMode, wait: Bool)
    /// Let go of `name`; the next waiters are granted at this position.
    case release(name: String)
    /// Withdraw this session's wait for `name` (a client's timeout). Answers
    /// `.cancelled`, or `.notWaiting` when the grant came first — the session
    /// then holds the lock and should release it.
    case cancel(name: String)
    /// The state of one lock.
    case inspect(name: String)
    /// Every lock with a holder or a waiter, in name order.
    case list
    /// Puts `name` behind capabilities: from this position on, acquire,
    /// release and cancel of `name` need a lock capability with the write
    /// right. Answers the capability with every right (once: `exists` after).
    case protect(name: String)
    /// A capability for a protected lock with `rights` (at most the presented one's; needs grant).
    case grant(name: String, rights: CapabilityRights)
    /// Revokes lock capability `id` and what was delegated from it (needs grant and an ancestor).
    case revoke(name: String, id: UInt64)

    public func encode(into w: inout ByteWriter) {
        switch self {
        case .acquire(let name, let mode, let wait): w.u8(1); w.string16(name); w.u8(mode.rawValue); w.u8(wait ? 1 : 0)
        case .release(let name): w.u8(2); w.string16(name)
        case .cancel(let name): w.u8(3); w.string16(name)
        case .inspect(let name): w.u8(4); w.string16(name)
        case .list: w.u8(5)
        case .protect(let name): w.u8(6); w.string16(name)
        case .grant(let name, let rights): w.u8(7); w.string16(name); w.u8(rights.rawValue)
        case .revoke(let name, let id): w.u8(8); w.string16(name); w.u64(id)
        }
    }
}

/// One lock as the table shows it.
public struct LockState: Sendable, Hashable {
    public struct Holder: Sendable, Hashable {
        public var session: SessionID
        /// The fencing token of the grant: larger for every later grant of this
        /// lock (it is the service log index of the grant). A resource guarded
        /// by the lock refuses requests carrying a token below the largest it has seen.
        public var token: UInt64
    }
    public struct Waiter: Sendable, Hashable {
        public var session: SessionID
        public var requestID: UInt64
        public var mode: LockMode
    }
    public var name: String
    public var mode: LockMode
    public var holders: [Holder]
    public var waiters: [Waiter]

    func write(to w: inout ByteWriter) {
        w.string16(name)
        w.u8(mode.rawValue)
        w.u16(UInt16(holders.count))
        for h in holders { h.session.write(to: &w); w.u64(h.token) }
        w.u32(UInt32(waiters.count))
        for x in waiters { x.session.write(to: &w); w.u64(x.requestID); w.u8(x.mode.rawValue) }
    }

    static func read(from r: inout ByteReader) throws(ServiceDecodeError) -> LockState {
        let name = try r.string16()
        let mode = try LockService.mode(try r.u8())
        var holders: [Holder] = []
        for _ in 0..<Int(try r.u16()) { holders.append(Holder(session: try SessionID.read(from: &r), token: try r.u64())) }
        var waiters: [Waiter] = []
        for _ in 0..<Int(try r.u32()) {
            waiters.append(Waiter(session: try SessionID.read(from: &r), requestID: try r.u64(), mode: try LockService.mode(try r.u8())))
        }
        return LockState(name: name, mode: mode, holders: holders, waiters: waiters)
    }
}

/// Named locks as a replicated state machine: exclusive and shared modes,
/// FIFO-fair (a request never overtakes an earlier waiter), try-acquire, a
/// fencing token on every grant, and release at the position where the
/// holder's session ends (its client went away, or its member left the view).
public struct LockService: ReplicatedStateMachine, Sendable {
    public static let serviceID: UInt16 = 1
    public var serviceID: UInt16 { Self.serviceID }

    /// Locks by name; a free lock may stay listed with no holder and no
    /// waiter (see `grantWaiters(_:output:)`).
    public private(set) var locks: [String: LockState] = [:]
    /// The capabilities of protected locks (``LockCommand/protect(name:)``).
    public private(set) var capabilities = CapabilityTable()
    /// The protected locks, each with its first capability's id.
    public private(set) var protected: [String: UInt64] = [:]
    /// The key of lock capabilities; nil: locks cannot be protected (`protect` answers `badRequest`).
    let authority: (any CapabilityAuthority)?
    /// A deliberately broken variant (tests only); not part of the state.
    @_spi(Canary) public var canary: ServiceCanary?

    public init(authority: (any CapabilityAuthority)? = nil) { self.authority = authority }

    /// Whether the envelope's capability lets the session use lock `name`
    /// with `needed`: `.some(nil)` for an unprotected lock (none needed),
    /// `.some(cap)` for a protected one it may use, nil (refusal answered) else.
    func allowed(_ name: String, _ needed: CapabilityRights, _ context: ApplyContext, _ output: inout ServiceOutput) -> Capability?? {
        guard protected[name] != nil else { return .some(nil) }
        guard let authority else {
            output.complete(context.session, context.requestID, status: .forbidden) {
                $0.string16("\(name) is protected and this node has no capability key")
            }
            return nil
        }
        switch capabilities.check(context.capability, name: name, needed: needed, authority: authority, kind: .lock) {
        case .success(let cap): return .some(cap)
        case .failure(let refusal):
            output.complete(context.session, context.requestID, status: .forbidden) { $0.string16("lock \(name): \(refusal)") }
            return nil
        }
    }

    static func mode(_ raw: UInt8) throws(ServiceDecodeError) -> LockMode {
        guard let m = LockMode(rawValue: raw) else { throw .invalidField("lock mode \(raw)") }
        return m
    }

    public mutating func apply(_ command: inout ByteReader, context: ApplyContext, output: inout ServiceOutput) throws(ServiceDecodeError) {
        let op = try command.u8()
        switch op {
        case 1:
            let name = try command.string16()
            let mode = try Self.mode(try command.u8())
            let wait = try command.u8()
            guard wait <= 1 else { throw .invalidField("wait flag \(wait)") }
            try command.expectEnd()
            guard allowed(name, .write, context, &output) != nil else { return }
            acquire(name, mode: mode, wait: wait == 1, context: context, output: &output)
        case 2:
            let name = try command.string16()
            try command.expectEnd()
            guard allowed(name, .write, context, &output) != nil else { return }
            release(name, context: context, output: &output)
        case 3:
            let name = try command.string16()
            try command.expectEnd()
            guard allowed(name, .write, context, &output) != nil else { return }
            let withdrawn = locks[name]?.waiters.filter { $0.session == context.session } ?? []
            locks[name]?.waiters.removeAll { $0.session == context.session }
            // The withdrawn requests are answered too: their callers stop
            // waiting, and their sessions stop holding them as pending.
            for waiter in withdrawn { output.complete(waiter.session, waiter.requestID, status: .cancelled) }
            output.complete(context.session, context.requestID, status: withdrawn.isEmpty ? .notWaiting : .cancelled)
            if !withdrawn.isEmpty { grantWaiters(name, output: &output) }
        case 4:
            let name = try command.string16()
            try command.expectEnd()
            let live = locks[name].map { !$0.holders.isEmpty || !$0.waiters.isEmpty } ?? false
            output.complete(context.session, context.requestID, status: live ? .ok : .notFound) { w in
                if live { locks[name]!.write(to: &w) }
            }
        case 5:
            try command.expectEnd()
            output.complete(context.session, context.requestID, status: .ok) { w in writeTable(into: &w) }
        case 6:
            let name = try command.string16()
            try command.expectEnd()
            guard let authority else {
                return output.complete(context.session, context.requestID, status: .badRequest) {
                    $0.string16("this node runs locks without a capability key")
                }
            }
            guard !name.isEmpty, name.utf8.count <= OwnedObjectService.maximumNameBytes else {
                return output.complete(context.session, context.requestID, status: .badRequest) {
                    $0.string16("a lock's name is 1 to \(OwnedObjectService.maximumNameBytes) bytes")
                }
            }
            guard protected[name] == nil else {
                return output.complete(context.session, context.requestID, status: .exists) { $0.string16("\(name) is protected already") }
            }
            protected[name] = context.index
            capabilities.issue(context.index, parent: 0, name: name, rights: .all)
            let cap = Capability(kind: .lock, id: context.index, rights: .all, name: name, authority: authority)
            output.complete(context.session, context.requestID, status: .ok) { w in
                w.u64(context.index)
                w.bytes32(cap.encoded)
            }
        case 7:
            let name = try command.string16()
            let rights = CapabilityRights(rawValue: try command.u8())
            try command.expectEnd()
            guard CapabilityRights.all.isSuperset(of: rights) else { throw .invalidField("rights \(rights.rawValue)") }
            guard protected[name] != nil, let authority else {
                return output.complete(context.session, context.requestID, status: .notFound) { $0.string16("lock \(name) is not protected") }
            }
            guard let allowedCap = allowed(name, .grant, context, &output), let presented = allowedCap else { return }
            guard presented.rights.isSuperset(of: rights) else {
                return output.complete(context.session, context.requestID, status: .forbidden) {
                    $0.string16("a capability can delegate only rights it has (\(presented.rights)), not \(rights)")
                }
            }
            capabilities.issue(context.index, parent: presented.id, name: name, rights: rights)
            let cap = Capability(kind: .lock, id: context.index, rights: rights, name: name, authority: authority)
            output.complete(context.session, context.requestID, status: .ok) { w in
                w.u64(context.index)
                w.bytes32(cap.encoded)
            }
        case 8:
            let name = try command.string16()
            let revoked = try command.u64()
            try command.expectEnd()
            guard protected[name] != nil else {
                return output.complete(context.session, context.requestID, status: .notFound) { $0.string16("lock \(name) is not protected") }
            }
            guard let allowedCap = allowed(name, .grant, context, &output), let presented = allowedCap else { return }
            guard capabilities.issued[revoked]?.name == name else {
                return output.complete(context.session, context.requestID, status: .notFound) {
                    $0.string16("no capability \(revoked) for lock \(name)")
                }
            }
            guard capabilities.isAncestor(presented.id, of: revoked) else {
                return output.complete(context.session, context.requestID, status: .forbidden) {
                    $0.string16("capability \(presented.id) did not delegate \(revoked)")
                }
            }
            capabilities.revoke(revoked)
            output.complete(context.session, context.requestID, status: .ok)
        default:
            throw .unknownOperation(service: serviceID, operation: op)
        }
    }

    mutating func acquire(_ name: String, mode: LockMode, wait: Bool, context: ApplyContext, output: inout ServiceOutput) {
        let token = context.index + (canary == .divergentTokens ? 1 : 0)
        // Locks are changed in place (through their index), never copied out
        // and back, and a lock nobody holds keeps its entry while it is
        // reused: a steady acquire/release cycle allocates nothing.
        if locks[name] == nil { locks[name] = LockState(name: name, mode: mode, holders: [], waiters: []) }
        let i = locks.index(forKey: name)!
        if locks.values[i].holders.contains(where: { $0.session == context.session })
            || locks.values[i].waiters.contains(where: { $0.session == context.session })
        {
            output.complete(context.session, context.requestID, status: .alreadyHeld)
            return
        }
        // Shared joins shared holders only when nobody waits (FIFO: no overtaking).
        let lock = locks.values[i]
        let canaryGrants = canary == .grantWhileHeld && mode == .exclusive && !wait && lock.mode == .exclusive
        if lock.holders.isEmpty || (mode == .shared && lock.mode == .shared && lock.waiters.isEmpty) || canaryGrants {
            locks.values[i].mode = mode
            locks.values[i].holders.append(.init(session: context.session, token: token))
            Self.granted(context.session, context.requestID, token: token, output: &output)
        } else if wait {
            locks.values[i].waiters.append(.init(session: context.session, requestID: context.requestID, mode: mode))
        } else {
            output.complete(context.session, context.requestID, status: .busy) { w in lock.write(to: &w) }
        }
    }

    mutating func release(_ name: String, context: ApplyContext, output: inout ServiceOutput) {
        guard let i = locks.index(forKey: name), let held = locks.values[i].holders.firstIndex(where: { $0.session == context.session }) else {
            output.complete(context.session, context.requestID, status: .notHeld)
            return
        }
        locks.values[i].holders.remove(at: held)
        output.complete(context.session, context.requestID, status: .ok)
        grantWaiters(name, output: &output)
    }

    /// Grants the head of the queue (and the shared requests right behind a
    /// shared head) when the lock allows. A lock nobody holds or wants stays
    /// (empty) while the table has at most ``locksKept`` entries, so a busy
    /// lock reuses its storage; beyond that it is forgotten.
    mutating func grantWaiters(_ name: String, output: inout ServiceOutput) {
        guard let i = locks.index(forKey: name) else { return }
        while let head = locks.values[i].waiters.first {
            let fits = locks.values[i].holders.isEmpty || (head.mode == .shared && locks.values[i].mode == .shared)
            guard fits else { break }
            locks.values[i].waiters.removeFirst()
            locks.values[i].mode = head.mode
            locks.values[i].holders.append(.init(session: head.session, token: output.index))
            Self.granted(head.session, head.requestID, token: output.index, output: &output)
            if head.mode == .exclusive { break }
        }
        if locks.values[i].holders.isEmpty, locks.values[i].waiters.isEmpty, locks.count > Self.locksKept { forgetFreeLocks() }
    }

    /// Entries (held, awaited or free) the table may hold before free ones are forgotten.
    public static let locksKept = 1024

    /// Forgets every free lock. When it happens differs between replicas
    /// (a restored one starts without free locks), which is harmless: a free
    /// lock answers and snapshots exactly as an absent one.
    mutating func forgetFreeLocks() {
        locks = locks.filter { !$0.value.holders.isEmpty || !$0.value.waiters.isEmpty }
    }

    static func granted(_ session: SessionID, _ requestID: UInt64, token: UInt64, output: inout ServiceOutput) {
        output.complete(session, requestID, status: .granted) { $0.u64(token) }
    }

    public mutating func endSession(_ session: SessionID, index: UInt64, output: inout ServiceOutput) {
        for name in locks.keys.sorted() {
            guard let i = locks.index(forKey: name) else { continue }
            let before = (locks.values[i].holders.count, locks.values[i].waiters.count)
            locks.values[i].holders.removeAll { $0.session == session }
            locks.values[i].waiters.removeAll { $0.session == session }
            guard (locks.values[i].holders.count, locks.values[i].waiters.count) != before else { continue }
            grantWaiters(name, output: &output)
        }
    }

    /// The lock table as `list` answers it: held or awaited locks.
    func writeTable(into w: inout ByteWriter) {
        // Free locks are not state: two replicas that forgot them at different
        // times would still be equal. Only held or awaited locks are written.
        let names = locks.keys.filter { !locks[$0]!.holders.isEmpty || !locks[$0]!.waiters.isEmpty }.sorted()
        w.u32(UInt32(names.count))
        for n in names { locks[n]!.write(to: &w) }
    }

    /// The table, then (when any lock is protected) the protected locks and their capabilities.
    public func snapshot(into w: inout ByteWriter) {
        writeTable(into: &w)
        guard !protected.isEmpty else { return }
        let names = protected.keys.sorted()
        w.u32(UInt32(names.count))
        for n in names {
            w.string16(n)
            w.u64(protected[n]!)
        }
        capabilities.snapshot(into: &w)
    }

    public mutating func restore(from r: inout ByteReader) throws(ServiceDecodeError) {
        var next: [String: LockState] = [:]
        for _ in 0..<Int(try r.u32()) {
            let lock = try LockState.read(from: &r)
            next[lock.name] = lock
        }
        locks = next
        protected = [:]
        capabilities = CapabilityTable()
        guard r.remaining > 0 else { return }
        for _ in 0..<Int(try r.u32()) {
            let name = try r.string16()
            protected[name] = try r.u64()
        }
        capabilities = try CapabilityTable.restore(from: &r)
    }

    // MARK: - Responses, for clients

    /// The fencing token of a `.granted` response.
    public static func token(fromGrant body: [UInt8]) throws(ServiceDecodeError) -> UInt64 {
        try ByteReader.reading(body) { (r) throws(ServiceDecodeError) in return try r.u64() }
    }

    /// The lock of an `.inspect` (or `.busy`) response.
    public static func lockState(from body: [UInt8]) throws(ServiceDecodeError) -> LockState {
        try ByteReader.reading(body) { (r) throws(ServiceDecodeError) in return try LockState.read(from: &r) }
    }

    /// The table of a `.list` response.
    public static func table(from body: [UInt8]) throws(ServiceDecodeError) -> [LockState] {
        try ByteReader.reading(body) { (r) throws(ServiceDecodeError) in
            var out: [LockState] = []
            for _ in 0..<Int(try r.u32()) { out.append(try LockState.read(from: &r)) }
            return out
        }
    }
}
