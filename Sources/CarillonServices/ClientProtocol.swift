import CarillonMembership

/// A response to one request, as a client sees it.
public struct ServiceResponse: Sendable, Hashable {
    public var status: ServiceStatus
    /// The service log index where it was decided (0 for local reads and shell errors).
    public var index: UInt64
    public var position: BusPosition
    public var body: [UInt8]

    public init(
        status: ServiceStatus, index: UInt64 = 0, position: BusPosition = BusPosition(epoch: 0, round: 0, slot: 0, index: 0),
        body: [UInt8] = []
    ) {
        self.status = status
        self.index = index
        self.position = position
        self.body = body
    }
}

/// A change of a watched key, in bus order.
public struct WatchEvent: Sendable, Hashable {
    public var kind: ServiceOutput.Change.Kind
    public var key: String
    public var version: UInt64
    public var position: BusPosition
    public var value: [UInt8]

    public init(kind: ServiceOutput.Change.Kind, key: String, version: UInt64, position: BusPosition, value: [UInt8]) {
        self.kind = kind
        self.key = key
        self.version = version
        self.position = position
        self.value = value
    }
}

/// When a command's caller is answered.
public enum Consistency: UInt8, Sendable, Hashable {
    /// When the caller's own member delivers (applies) it.
    case agreed = 0
    /// When it is stable: every member of the view has received it.
    case safe = 1
}

/// The local client protocol spoken on a node's Unix socket
/// (docs/services.md, "Client protocol"): each message is a 32-bit
/// little-endian length and that many bytes, the first of which is the
/// message type. One connection is one session.
public enum ClientMessage: Sendable, Hashable {
    /// Client → node: a command for `service` (its body encoded as in the
    /// service's command enum). `requestID`s increase per connection.
    case request(requestID: UInt64, consistency: Consistency, service: UInt16, body: [UInt8])
    /// Client → node: a command presenting a capability (``Capability/encoded``)
    /// that the service checks inside its state machine (the owned objects).
    case capabilityRequest(requestID: UInt64, consistency: Consistency, service: UInt16, capability: [UInt8], body: [UInt8])
    /// Client → node: this replica's value of `key`, not ordered (stale by up to
    /// the delivery latency). Answered like an object store `get`.
    case localRead(requestID: UInt64, key: String)
    /// Client → node: report changes of `key` (or every key starting with it
    /// when `prefix`), in bus order, as ``ClientMessage/watchEvent(requestID:kind:key:version:position:value:)`` messages tagged `requestID`.
    case watch(requestID: UInt64, key: String, prefix: Bool)
    /// Node → client, first message: who serves this session.
    case hello(node: UInt16, incarnation: UInt64, client: UInt32, inPrimary: Bool)
    /// Node → client: the answer to `requestID`.
    case response(requestID: UInt64, ServiceResponse)
    /// Node → client: a watched key changed.
    case watchEvent(requestID: UInt64, kind: ServiceOutput.Change.Kind, key: String, version: UInt64, position: BusPosition, value: [UInt8])

    /// Largest message either side accepts.
    public static let maxBytes = 16 << 20
    public static let protocolVersion: UInt8 = 1

    /// Appends the length-prefixed message.
    public func encode(into w: inout ByteWriter) {
        let lengthAt = w.count
        w.u32(0)
        let start = w.count
        switch self {
        case .request(let id, let consistency, let service, let body):
            w.u8(1); w.u64(id); w.u8(consistency.rawValue); w.u16(service); w.raw(body)
        case .capabilityRequest(let id, let consistency, let service, let capability, let body):
            w.u8(4); w.u64(id); w.u8(consistency.rawValue); w.u16(service);
            // A capability is a few hundred bytes; a longer one cannot verify, so it is cut, never trapped on.
            let presented = capability.prefix(Int(UInt16.max))
            w.u16(UInt16(presented.count)); w.raw(presented); w.raw(body)
        case .localRead(let id, let key):
            w.u8(2); w.u64(id); w.string16(key)
        case .watch(let id, let key, let prefix):
            w.u8(3); w.u64(id); w.u8(prefix ? 1 : 0); w.string16(key)
        case .hello(let node, let incarnation, let client, let inPrimary):
            w.u8(0x81); w.u8(Self.protocolVersion); w.u16(node); w.u64(incarnation); w.u32(client); w.u8(inPrimary ? 1 : 0)
        case .response(let id, let r):
            w.u8(0x82); w.u64(id); w.u8(r.status.rawValue); w.u64(r.index)
            Self.write(r.position, to: &w)
            w.raw(r.body)
        case .watchEvent(let id, let kind, let key, let version, let position, let value):
            w.u8(0x83); w.u64(id); w.u8(kind.rawValue); w.u64(version)
            Self.write(position, to: &w)
            w.string16(key); w.raw(value)
        }
        w.patchU32(UInt32(w.count - start), at: lengthAt)
    }

    public func encoded() -> [UInt8] {
        var w = ByteWriter()
        encode(into: &w)
        return w.bytes
    }

    static func write(_ p: BusPosition, to w: inout ByteWriter) {
        w.u32(p.epoch); w.u64(p.round); w.u32(UInt32(truncatingIfNeeded: p.slot)); w.u32(UInt32(truncatingIfNeeded: p.index))
    }

    static func readPosition(_ r: inout ByteReader) throws(ServiceDecodeError) -> BusPosition {
        BusPosition(epoch: try r.u32(), round: try r.u64(), slot: Int(try r.u32()), index: Int(try r.u32()))
    }

    /// Decodes one message body (without its length prefix).
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(ServiceDecodeError) -> ClientMessage {
        var r = ByteReader(bytes)
        let type = try r.u8()
        switch type {
        case 1:
            let id = try r.u64()
            let raw = try r.u8()
            guard let consistency = Consistency(rawValue: raw) else { throw .invalidField("consistency \(raw)") }
            let service = try r.u16()
            return .request(requestID: id, consistency: consistency, service: service, body: Array(r.rest()))
        case 4:
            let id = try r.u64()
            let raw = try r.u8()
            guard let consistency = Consistency(rawValue: raw) else { throw .invalidField("consistency \(raw)") }
            let service = try r.u16()
            let capabilityLength = Int(try r.u16())
            let capability = Array(try r.raw(capabilityLength))
            return .capabilityRequest(requestID: id, consistency: consistency, service: service, capability: capability, body: Array(r.rest()))
        case 2:
            let id = try r.u64()
            let key = try r.string16()
            try r.expectEnd()
            return .localRead(requestID: id, key: key)
        case 3:
            let id = try r.u64()
            let prefix = try r.u8()
            guard prefix <= 1 else { throw .invalidField("prefix flag \(prefix)") }
            let key = try r.string16()
            try r.expectEnd()
            return .watch(requestID: id, key: key, prefix: prefix == 1)
        case 0x81:
            let version = try r.u8()
            guard version == protocolVersion else { throw .unsupportedVersion(version) }
            let node = try r.u16(), incarnation = try r.u64(), client = try r.u32(), primary = try r.u8()
            try r.expectEnd()
            return .hello(node: node, incarnation: incarnation, client: client, inPrimary: primary == 1)
        case 0x82:
            let id = try r.u64()
            let raw = try r.u8()
            guard let status = ServiceStatus(rawValue: raw) else { throw .invalidField("status \(raw)") }
            let index = try r.u64()
            let position = try readPosition(&r)
            return .response(requestID: id, ServiceResponse(status: status, index: index, position: position, body: Array(r.rest())))
        case 0x83:
            let id = try r.u64()
            let raw = try r.u8()
            guard let kind = ServiceOutput.Change.Kind(rawValue: raw) else { throw .invalidField("change kind \(raw)") }
            let version = try r.u64()
            let position = try readPosition(&r)
            let key = try r.string16()
            return .watchEvent(requestID: id, kind: kind, key: key, version: version, position: position, value: Array(r.rest()))
        default:
            throw .unknownKind(type)
        }
    }
}

/// Splits a byte stream into client messages.
public struct ClientMessageReader: Sendable {
    var buffer: [UInt8] = []
    var start = 0

    public init() {}

    public mutating func append(_ bytes: UnsafeRawBufferPointer) { buffer.append(contentsOf: bytes) }

    /// The next whole message, `nil` when more bytes are needed. A length above
    /// ``ClientMessage/maxBytes`` or an undecodable message is an error: the
    /// connection cannot be resynchronised and should be closed.
    public mutating func next() throws(ServiceDecodeError) -> ClientMessage? {
        guard buffer.count - start >= 4 else { compact(); return nil }
        let length = buffer.withUnsafeBytes { Int(UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: start, as: UInt32.self))) }
        guard length <= ClientMessage.maxBytes else { throw .invalidField("message length \(length) above \(ClientMessage.maxBytes)") }
        guard buffer.count - start - 4 >= length else { compact(); return nil }
        let from = start + 4
        start = from + length
        let result: Result<ClientMessage, ServiceDecodeError> = buffer.withUnsafeBytes { all in
            do throws(ServiceDecodeError) {
                return .success(try ClientMessage.decode(UnsafeRawBufferPointer(rebasing: all[from..<(from + length)])))
            } catch { return .failure(error) }
        }
        return try result.get()
    }

    mutating func compact() {
        if start > 0 {
            buffer.removeFirst(start)
            start = 0
        }
    }
}

/// Anything that carries a service request and brings its response: a
/// session in the node's process (`ServiceNode`) or a connection to a node's
/// Unix socket (`CarillonClient`). The typed calls below are built on it.
public protocol ServiceCalls: Sendable {
    func request(service: UInt16, body: [UInt8], consistency: Consistency) async throws -> ServiceResponse
    /// A request presenting `capability` (``Capability/encoded``; empty: none).
    func request(service: UInt16, body: [UInt8], consistency: Consistency, capability: [UInt8]) async throws -> ServiceResponse
}

extension ServiceCalls {
    public func request(service: UInt16, body: [UInt8], consistency: Consistency) async throws -> ServiceResponse {
        try await request(service: service, body: body, consistency: consistency, capability: [])
    }
}

/// A request that did not succeed, with what to do.
public struct ServiceCallError: Error, Sendable, Hashable, CustomStringConvertible {
    public var status: ServiceStatus
    public var detail: String

    public init(_ status: ServiceStatus, _ detail: String = "") {
        self.status = status
        self.detail = detail
    }

    /// The error for a response that did not succeed; a shell's explanation
    /// (the body of badRequest, sessionEnded, …) is kept in the detail.
    public static func failure(_ r: ServiceResponse, _ what: String) -> ServiceCallError {
        // The owned objects and protected locks explain a refusal as a length-prefixed string.
        if [.forbidden, .exists, .objectLost, .aborted].contains(r.status),
            let why = try? ByteReader.reading(r.body, { (r) throws(ServiceDecodeError) -> String in try r.string16() }), !why.isEmpty
        {
            return ServiceCallError(r.status, "\(what): \(why)")
        }
        let explanation = String(decoding: r.body, as: UTF8.self)
        let textual =
            [.badRequest, .sessionEnded, .noPrimary, .outcomeUnknown, .timedOut].contains(r.status) && !r.body.isEmpty
            && explanation.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value < 0x7f || $0.value >= 0xa0 }
        return ServiceCallError(r.status, textual ? "\(what): \(explanation)" : what)
    }

    public var description: String {
        switch status {
        case .noPrimary:
            "no primary component: this node is not in a view with a majority (is the rest of the cluster running?)\(detail.isEmpty ? "" : ": " + detail)"
        case .outcomeUnknown:
            "outcome unknown: the node was left out of a view before the request was delivered; reconnect and check\(detail.isEmpty ? "" : ": " + detail)"
        default: "\(status)\(detail.isEmpty ? "" : ": " + detail)"
        }
    }
}

/// A lock grant.
public struct LockGrant: Sendable, Hashable {
    public var name: String
    public var mode: LockMode
    /// Fencing token: larger for every later grant of this lock.
    public var token: UInt64
}

extension ServiceCalls {
    func call(
        _ service: UInt16, _ consistency: Consistency, capability: Capability? = nil, _ encode: (inout ByteWriter) -> Void
    ) async throws -> ServiceResponse {
        var w = ByteWriter()
        encode(&w)
        return try await request(service: service, body: w.bytes, consistency: consistency, capability: capability?.encoded ?? [])
    }

    /// Takes `name`, waiting at most `timeoutNanos`: when the time is up a
    /// cancel is ordered, and whichever the bus ordered first wins — the
    /// grant (returned) or the cancel (`nil`). Never leaves a grant behind.
    public func acquire(
        _ name: String, mode: LockMode = .exclusive, timeoutNanos: UInt64,
        consistency: Consistency = .agreed, capability: Capability? = nil
    ) async throws -> LockGrant? {
        try await withThrowingTaskGroup(of: LockGrant?.self) { group in
            group.addTask {
                do { return try await self.acquire(name, mode: mode, wait: true, consistency: consistency, capability: capability) } catch let e
                    as ServiceCallError
                    where e.status == .cancelled
                {
                    return nil
                }
            }
            group.addTask {
                try? await Task.sleep(nanoseconds: timeoutNanos)
                if !Task.isCancelled { _ = try? await self.cancel(name, capability: capability) }
                return nil
            }
            // The acquire's outcome decides; the timer only orders the cancel
            // (a cancel that comes after the grant withdraws nothing).
            var grant: LockGrant?
            while let result = try await group.next() {
                if let result { grant = result; group.cancelAll() }
            }
            return grant
        }
    }

    /// Takes `name`, waiting (FIFO) while it is held. Returns `nil` if
    /// `wait` is false and the lock is busy.
    public func acquire(
        _ name: String, mode: LockMode = .exclusive, wait: Bool = true,
        consistency: Consistency = .agreed, capability: Capability? = nil
    ) async throws -> LockGrant? {
        let r = try await call(LockService.serviceID, consistency, capability: capability) {
            LockCommand.acquire(name: name, mode: mode, wait: wait).encode(into: &$0)
        }
        switch r.status {
        case .granted: return LockGrant(name: name, mode: mode, token: try LockService.token(fromGrant: r.body))
        case .busy where !wait: return nil
        default: throw ServiceCallError.failure(r, "acquire \(name)")
        }
    }

    /// Lets go of `name`.
    public func release(_ name: String, consistency: Consistency = .agreed, capability: Capability? = nil) async throws {
        let r = try await call(LockService.serviceID, consistency, capability: capability) { LockCommand.release(name: name).encode(into: &$0) }
        guard r.status == .ok else { throw ServiceCallError.failure(r, "release \(name)") }
    }

    /// Withdraws this session's wait for `name`: `true` if a wait was
    /// withdrawn, `false` if the grant came first (the session holds the lock).
    public func cancel(_ name: String, capability: Capability? = nil) async throws -> Bool {
        let r = try await call(LockService.serviceID, .agreed, capability: capability) { LockCommand.cancel(name: name).encode(into: &$0) }
        switch r.status {
        case .cancelled: return true
        case .notWaiting: return false
        default: throw ServiceCallError.failure(r, "cancel \(name)")
        }
    }

    /// The lock table (ordered: every member answers the same at this point).
    public func locks() async throws -> [LockState] {
        let r = try await call(LockService.serviceID, .agreed) { LockCommand.list.encode(into: &$0) }
        guard r.status == .ok else { throw ServiceCallError.failure(r, "list locks") }
        return try LockService.table(from: r.body)
    }

    /// A linearizable read of `key`: `nil` when absent.
    public func get(_ key: String, consistency: Consistency = .agreed) async throws -> StoredObject? {
        let r = try await call(ObjectStore.serviceID, consistency) { ObjectCommand.get(key: key).encode(into: &$0) }
        switch r.status {
        case .ok: return try ObjectStore.object(from: r.body)
        case .notFound: return nil
        default: throw ServiceCallError.failure(r, "get \(key)")
        }
    }

    /// Sets `key`; returns the new version.
    @discardableResult
    public func put(_ key: String, _ value: [UInt8], consistency: Consistency = .agreed) async throws -> UInt64 {
        let r = try await call(ObjectStore.serviceID, consistency) { ObjectCommand.put(key: key, value: value).encode(into: &$0) }
        guard r.status == .ok else { throw ServiceCallError.failure(r, "put \(key)") }
        return try ObjectStore.version(from: r.body)
    }

    /// Removes `key`; `false` when it was absent.
    @discardableResult
    public func delete(_ key: String, consistency: Consistency = .agreed) async throws -> Bool {
        let r = try await call(ObjectStore.serviceID, consistency) { ObjectCommand.delete(key: key).encode(into: &$0) }
        switch r.status {
        case .ok: return true
        case .notFound: return false
        default: throw ServiceCallError.failure(r, "delete \(key)")
        }
    }

    /// Sets `key` if its version is `expected` (0: if absent). Returns the new
    /// version, or the current one as `.failure`-like `nil` plus version.
    public func compareAndSet(
        _ key: String, expected: UInt64, _ value: [UInt8],
        consistency: Consistency = .agreed
    ) async throws -> (swapped: Bool, version: UInt64) {
        let r = try await call(ObjectStore.serviceID, consistency) {
            ObjectCommand.compareAndSet(key: key, expectedVersion: expected, value: value).encode(into: &$0)
        }
        switch r.status {
        case .ok: return (true, try ObjectStore.version(from: r.body))
        case .versionMismatch: return (false, try ObjectStore.version(from: r.body))
        default: throw ServiceCallError.failure(r, "cas \(key)")
        }
    }

    /// Adds `delta` to the counter at `key`; returns the sum.
    @discardableResult
    public func add(_ key: String, _ delta: Int64, consistency: Consistency = .agreed) async throws -> Int64 {
        let r = try await call(ObjectStore.serviceID, consistency) { ObjectCommand.add(key: key, delta: delta).encode(into: &$0) }
        guard r.status == .ok else { throw ServiceCallError.failure(r, "add \(key)") }
        return try ObjectStore.sum(from: r.body).sum
    }

    /// Keys starting with `prefix`, with versions and sizes (ordered).
    public func list(prefix: String = "") async throws -> [(key: String, version: UInt64, bytes: Int)] {
        let r = try await call(ObjectStore.serviceID, .agreed) { ObjectCommand.list(prefix: prefix).encode(into: &$0) }
        guard r.status == .ok else { throw ServiceCallError.failure(r, "list \(prefix)") }
        return try ObjectStore.listing(from: r.body)
    }
}
