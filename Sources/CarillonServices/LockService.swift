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

    public func encode(into w: inout ByteWriter) {
        switch self {
        case .acquire(let name, let mode, let wait): w.u8(1); w.string16(name); w.u8(mode.rawValue); w.u8(wait ? 1 : 0)
        case .release(let name): w.u8(2); w.string16(name)
        case .cancel(let name): w.u8(3); w.string16(name)
        case .inspect(let name): w.u8(4); w.string16(name)
        case .list: w.u8(5)
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

    /// Locks with a holder or a waiter (a free lock with no waiters is forgotten).
    public private(set) var locks: [String: LockState] = [:]

    public init() {}

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
            acquire(name, mode: mode, wait: wait == 1, context: context, output: &output)
        case 2:
            let name = try command.string16()
            try command.expectEnd()
            release(name, context: context, output: &output)
        case 3:
            let name = try command.string16()
            try command.expectEnd()
            let before = locks[name]?.waiters.count ?? 0
            locks[name]?.waiters.removeAll { $0.session == context.session }
            let withdrawn = before - (locks[name]?.waiters.count ?? 0)
            // The withdrawn requests are answered too: their callers stop waiting.
            output.complete(context.session, context.requestID, status: withdrawn > 0 ? .cancelled : .notWaiting)
            if withdrawn > 0 { grantWaiters(name, output: &output) }
        case 4:
            let name = try command.string16()
            try command.expectEnd()
            output.complete(context.session, context.requestID, status: locks[name] == nil ? .notFound : .ok) { w in
                locks[name]?.write(to: &w)
            }
        case 5:
            try command.expectEnd()
            output.complete(context.session, context.requestID, status: .ok) { w in
                let names = locks.keys.sorted()
                w.u32(UInt32(names.count))
                for n in names { locks[n]!.write(to: &w) }
            }
        default:
            throw .unknownOperation(service: serviceID, operation: op)
        }
    }

    mutating func acquire(_ name: String, mode: LockMode, wait: Bool, context: ApplyContext, output: inout ServiceOutput) {
        let token = context.index
        guard var lock = locks[name] else {
            locks[name] = LockState(name: name, mode: mode, holders: [.init(session: context.session, token: token)], waiters: [])
            Self.granted(context.session, context.requestID, token: token, output: &output)
            return
        }
        if lock.holders.contains(where: { $0.session == context.session }) || lock.waiters.contains(where: { $0.session == context.session }) {
            output.complete(context.session, context.requestID, status: .alreadyHeld)
            return
        }
        // Shared joins shared holders only when nobody waits (FIFO: no overtaking).
        if lock.holders.isEmpty || (mode == .shared && lock.mode == .shared && lock.waiters.isEmpty) {
            lock.mode = mode
            lock.holders.append(.init(session: context.session, token: token))
            locks[name] = lock
            Self.granted(context.session, context.requestID, token: token, output: &output)
        } else if wait {
            lock.waiters.append(.init(session: context.session, requestID: context.requestID, mode: mode))
            locks[name] = lock
        } else {
            output.complete(context.session, context.requestID, status: .busy) { w in lock.write(to: &w) }
        }
    }

    mutating func release(_ name: String, context: ApplyContext, output: inout ServiceOutput) {
        guard let held = locks[name]?.holders.firstIndex(where: { $0.session == context.session }) else {
            output.complete(context.session, context.requestID, status: .notHeld)
            return
        }
        locks[name]!.holders.remove(at: held)
        output.complete(context.session, context.requestID, status: .ok)
        grantWaiters(name, output: &output)
    }

    /// Grants the head of the queue (and the shared requests right behind a
    /// shared head) when the lock allows; forgets a lock nobody holds or wants.
    mutating func grantWaiters(_ name: String, output: inout ServiceOutput) {
        guard var lock = locks[name] else { return }
        while let head = lock.waiters.first {
            let fits = lock.holders.isEmpty || (head.mode == .shared && lock.mode == .shared)
            guard fits else { break }
            lock.waiters.removeFirst()
            lock.mode = head.mode
            lock.holders.append(.init(session: head.session, token: output.index))
            Self.granted(head.session, head.requestID, token: output.index, output: &output)
            if head.mode == .exclusive { break }
        }
        locks[name] = lock.holders.isEmpty && lock.waiters.isEmpty ? nil : lock
    }

    static func granted(_ session: SessionID, _ requestID: UInt64, token: UInt64, output: inout ServiceOutput) {
        output.complete(session, requestID, status: .granted) { $0.u64(token) }
    }

    public mutating func endSession(_ session: SessionID, index: UInt64, output: inout ServiceOutput) {
        for name in locks.keys.sorted() {
            guard var lock = locks[name] else { continue }
            let before = (lock.holders.count, lock.waiters.count)
            lock.holders.removeAll { $0.session == session }
            lock.waiters.removeAll { $0.session == session }
            guard (lock.holders.count, lock.waiters.count) != before else { continue }
            locks[name] = lock
            grantWaiters(name, output: &output)
        }
    }

    public func snapshot(into w: inout ByteWriter) {
        let names = locks.keys.sorted()
        w.u32(UInt32(names.count))
        for n in names { locks[n]!.write(to: &w) }
    }

    public mutating func restore(from r: inout ByteReader) throws(ServiceDecodeError) {
        var next: [String: LockState] = [:]
        for _ in 0..<Int(try r.u32()) {
            let lock = try LockState.read(from: &r)
            next[lock.name] = lock
        }
        locks = next
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
