/// An object store command (service id 2). Encoded as the envelope's body.
public enum ObjectCommand: Sendable, Hashable {
    /// The value and version of `key` (a linearizable read: it is ordered).
    case get(key: String)
    /// Sets `key`; answers the new version.
    case put(key: String, value: [UInt8])
    /// Removes `key`; answers `.notFound` if it was absent.
    case delete(key: String)
    /// Sets `key` only if its version is `expectedVersion` (0: only if absent).
    case compareAndSet(key: String, expectedVersion: UInt64, value: [UInt8])
    /// Keys starting with `prefix`, in order, with versions and sizes.
    case list(prefix: String)
    /// Adds `delta` to the counter at `key` (an absent key counts as 0); answers the sum.
    case add(key: String, delta: Int64)

    public func encode(into w: inout ByteWriter) {
        switch self {
        case .get(let key): w.u8(1); w.string16(key)
        case .put(let key, let value): w.u8(2); w.string16(key); w.bytes32(value)
        case .delete(let key): w.u8(3); w.string16(key)
        case .compareAndSet(let key, let expected, let value): w.u8(4); w.string16(key); w.u64(expected); w.bytes32(value)
        case .list(let prefix): w.u8(5); w.string16(prefix)
        case .add(let key, let delta): w.u8(6); w.string16(key); w.i64(delta)
        }
    }
}

/// A stored object.
public struct StoredObject: Sendable, Hashable {
    public var value: [UInt8]
    /// The service log index of the write that made this value: larger for
    /// every later write of any key.
    public var version: UInt64
}

/// A keyed object store with counters, as a replicated state machine. Every
/// write is ordered; a `get` through the bus is linearizable, and
/// ``localValue(_:)`` reads this replica's state as of the last applied
/// event (stale by up to the delivery latency; never a value no member had).
public struct ObjectStore: ReplicatedStateMachine, Sendable {
    public static let serviceID: UInt16 = 2
    public var serviceID: UInt16 { Self.serviceID }

    public private(set) var objects: [String: StoredObject] = [:]
    /// A deliberately broken variant (tests only); not part of the state.
    @_spi(Canary) public var canary: ServiceCanary?

    public init() {}

    /// A stale local read.
    public func localValue(_ key: String) -> StoredObject? { objects[key] }

    public mutating func apply(_ command: inout ByteReader, context: ApplyContext, output: inout ServiceOutput) throws(ServiceDecodeError) {
        let op = try command.u8()
        let s = context.session, id = context.requestID
        let version = context.index + (canary == .divergentReplica && op == 2 ? 1 : 0)
        switch op {
        case 1:
            let key = try command.string16()
            try command.expectEnd()
            if let object = objects[key] {
                output.complete(s, id, status: .ok) { w in
                    w.u64(object.version); w.bytes32(object.value)
                }
            } else {
                output.complete(s, id, status: .notFound)
            }
        case 2, 4:
            let key = try command.string16()
            let expected: UInt64? = op == 4 ? try command.u64() : nil
            let value = try command.bytes32()
            try command.expectEnd()
            if let expected {
                let current = objects[key]?.version ?? 0
                guard current == expected else {
                    output.complete(s, id, status: .versionMismatch) { $0.u64(current) }
                    return
                }
            }
            write(key, value, version: version)
            output.changed(.put, key: key, version: version, value: value)
            output.complete(s, id, status: .ok) { $0.u64(version) }
        case 3:
            let key = try command.string16()
            try command.expectEnd()
            guard objects.removeValue(forKey: key) != nil else {
                output.complete(s, id, status: .notFound)
                return
            }
            output.changed(.delete, key: key, version: version, value: UnsafeRawBufferPointer(start: nil, count: 0))
            output.complete(s, id, status: .ok) { $0.u64(version) }
        case 5:
            let prefix = try command.string16()
            try command.expectEnd()
            output.complete(s, id, status: .ok) { w in
                let keys = objects.keys.filter { $0.hasPrefix(prefix) }.sorted()
                w.u32(UInt32(keys.count))
                for k in keys {
                    w.string16(k)
                    w.u64(objects[k]!.version)
                    w.u32(UInt32(objects[k]!.value.count))
                }
            }
        case 6:
            let key = try command.string16()
            let delta = try command.i64()
            try command.expectEnd()
            var sum = delta
            if let object = objects[key] {
                guard object.value.count == 8 else {
                    output.complete(s, id, status: .notACounter)
                    return
                }
                let current = object.value.withUnsafeBytes { Int64(littleEndian: $0.loadUnaligned(as: Int64.self)) }
                sum = current &+ delta
            }
            withUnsafeBytes(of: sum.littleEndian) { write(key, $0, version: version) }
            withUnsafeBytes(of: sum.littleEndian) { output.changed(.put, key: key, version: version, value: $0) }
            output.complete(s, id, status: .ok) { w in
                w.i64(sum); w.u64(version)
            }
        default:
            throw .unknownOperation(service: serviceID, operation: op)
        }
    }

    /// Writes in place when the key exists (its storage is reused: no
    /// allocation when the new value fits the old one's capacity).
    mutating func write(_ key: String, _ value: UnsafeRawBufferPointer, version: UInt64) {
        if let i = objects.index(forKey: key) {
            objects.values[i].value.removeAll(keepingCapacity: true)
            objects.values[i].value.append(contentsOf: value)
            objects.values[i].version = version
        } else {
            objects[key] = StoredObject(value: Array(value), version: version)
        }
    }

    public mutating func endSession(_ session: SessionID, index: UInt64, output: inout ServiceOutput) {}

    public func snapshot(into w: inout ByteWriter) {
        let keys = objects.keys.sorted()
        w.u64(UInt64(keys.count))
        for k in keys {
            let o = objects[k]!
            w.string16(k)
            w.u64(o.version)
            w.bytes32(o.value)
        }
    }

    public mutating func restore(from r: inout ByteReader) throws(ServiceDecodeError) {
        var next: [String: StoredObject] = [:]
        let count = try r.u64()
        guard count <= UInt64(r.remaining) else { throw .invalidField("object count \(count)") }
        next.reserveCapacity(Int(count))
        for _ in 0..<count {
            let key = try r.string16()
            let version = try r.u64()
            next[key] = StoredObject(value: Array(try r.bytes32()), version: version)
        }
        objects = next
    }

    // MARK: - Responses, for clients

    /// Version and value of a `.get` response.
    public static func object(from body: [UInt8]) throws(ServiceDecodeError) -> StoredObject {
        try ByteReader.reading(body) { (r) throws(ServiceDecodeError) in
            let version = try r.u64()
            return StoredObject(value: Array(try r.bytes32()), version: version)
        }
    }

    /// The version of a `.put`, `.delete` or `.compareAndSet` response (the
    /// current version for `.versionMismatch`).
    public static func version(from body: [UInt8]) throws(ServiceDecodeError) -> UInt64 {
        try ByteReader.reading(body) { (r) throws(ServiceDecodeError) in return try r.u64() }
    }

    /// The sum and version of an `.add` response.
    public static func sum(from body: [UInt8]) throws(ServiceDecodeError) -> (sum: Int64, version: UInt64) {
        try ByteReader.reading(body) { (r) throws(ServiceDecodeError) in return (try r.i64(), try r.u64()) }
    }

    /// Keys, versions and sizes of a `.list` response.
    public static func listing(from body: [UInt8]) throws(ServiceDecodeError) -> [(key: String, version: UInt64, bytes: Int)] {
        try ByteReader.reading(body) { (r) throws(ServiceDecodeError) in
            var out: [(key: String, version: UInt64, bytes: Int)] = []
            for _ in 0..<Int(try r.u32()) { out.append((try r.string16(), try r.u64(), Int(try r.u32()))) }
            return out
        }
    }
}
