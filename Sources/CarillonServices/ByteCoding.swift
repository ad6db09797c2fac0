/// Why bytes could not be read as a service envelope, command, response or
/// snapshot. Every decoder in this module throws this and nothing else; no
/// input makes it trap.
public enum ServiceDecodeError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Fewer bytes than the field at `offset` needs.
    case truncated(offset: Int, needed: Int, available: Int)
    /// An envelope or snapshot of a version this code does not read.
    case unsupportedVersion(UInt8)
    /// An envelope kind this code does not know.
    case unknownKind(UInt8)
    /// A command for a service no state machine is registered for.
    case unknownService(UInt16)
    /// An operation code the service does not know.
    case unknownOperation(service: UInt16, operation: UInt8)
    /// A field's value is out of its range (a mode, a length, a flag).
    case invalidField(String)
    /// Bytes left over after the last field.
    case trailingBytes(Int)

    public var description: String {
        switch self {
        case .truncated(let offset, let needed, let available):
            "truncated: a field at byte \(offset) needs \(needed) bytes, \(available) are left"
        case .unsupportedVersion(let v): "unsupported version \(v) (this build reads version 1)"
        case .unknownKind(let k): "unknown envelope kind \(k)"
        case .unknownService(let s): "no service with id \(s) is registered"
        case .unknownOperation(let s, let o): "service \(s) has no operation \(o)"
        case .invalidField(let what): "invalid field: \(what)"
        case .trailingBytes(let n): "\(n) bytes after the last field"
        }
    }
}

/// Appends little-endian fields to a byte array that is reused between
/// messages (``removeAll()`` keeps its capacity), so encoding allocates only
/// while the array grows to its working size.
public struct ByteWriter: Sendable {
    public var bytes: [UInt8]

    public init(capacity: Int = 0) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public init(bytes: [UInt8]) { self.bytes = bytes }

    public var count: Int { bytes.count }

    public mutating func removeAll() { bytes.removeAll(keepingCapacity: true) }

    @inline(__always) public mutating func u8(_ v: UInt8) { bytes.append(v) }
    @inline(__always) public mutating func u16(_ v: UInt16) {
        bytes.append(UInt8(truncatingIfNeeded: v)); bytes.append(UInt8(truncatingIfNeeded: v >> 8))
    }
    @inline(__always) public mutating func u32(_ v: UInt32) {
        for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt32(shift))) }
    }
    @inline(__always) public mutating func u64(_ v: UInt64) {
        for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt64(shift))) }
    }
    @inline(__always) public mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }

    /// Raw bytes, no length.
    public mutating func raw<C: Collection>(_ c: C) where C.Element == UInt8 { bytes.append(contentsOf: c) }
    public mutating func raw(_ c: UnsafeRawBufferPointer) { bytes.append(contentsOf: c) }

    /// A string as a 16-bit length and UTF-8 bytes (at most 65,535 bytes; longer is cut).
    public mutating func string16(_ s: String) {
        var s = s
        s.withUTF8 { utf8 in
            let n = min(utf8.count, Int(UInt16.max))
            u16(UInt16(n))
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[0..<n]))
        }
    }

    /// Bytes as a 32-bit length and the bytes.
    public mutating func bytes32<C: Collection>(_ c: C) where C.Element == UInt8 {
        u32(UInt32(truncatingIfNeeded: c.count))
        bytes.append(contentsOf: c)
    }
    public mutating func bytes32(_ c: UnsafeRawBufferPointer) {
        u32(UInt32(truncatingIfNeeded: c.count))
        bytes.append(contentsOf: c)
    }

    /// Overwrites a 32-bit field written earlier at `offset` (a length known only at the end).
    public mutating func patchU32(_ v: UInt32, at offset: Int) {
        for i in 0..<4 { bytes[offset + i] = UInt8(truncatingIfNeeded: v >> UInt32(8 * i)) }
    }
}

/// Reads little-endian fields from borrowed bytes; every read checks the
/// length first and throws ``ServiceDecodeError`` instead of trapping.
public struct ByteReader {
    public let buffer: UnsafeRawBufferPointer
    public private(set) var offset: Int

    public init(_ buffer: UnsafeRawBufferPointer, offset: Int = 0) {
        self.buffer = buffer
        self.offset = offset
    }

    public var remaining: Int { buffer.count - offset }
    public var isAtEnd: Bool { offset >= buffer.count }

    @inline(__always) mutating func need(_ n: Int) throws(ServiceDecodeError) {
        guard n >= 0, remaining >= n else { throw .truncated(offset: offset, needed: n, available: max(remaining, 0)) }
    }

    public mutating func u8() throws(ServiceDecodeError) -> UInt8 {
        try need(1)
        defer { offset += 1 }
        return buffer[offset]
    }
    public mutating func u16() throws(ServiceDecodeError) -> UInt16 {
        try need(2)
        defer { offset += 2 }
        return UInt16(littleEndian: buffer.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }
    public mutating func u32() throws(ServiceDecodeError) -> UInt32 {
        try need(4)
        defer { offset += 4 }
        return UInt32(littleEndian: buffer.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }
    public mutating func u64() throws(ServiceDecodeError) -> UInt64 {
        try need(8)
        defer { offset += 8 }
        return UInt64(littleEndian: buffer.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }
    public mutating func i64() throws(ServiceDecodeError) -> Int64 { Int64(bitPattern: try u64()) }

    /// `n` bytes, borrowed.
    public mutating func raw(_ n: Int) throws(ServiceDecodeError) -> UnsafeRawBufferPointer {
        try need(n)
        defer { offset += n }
        return UnsafeRawBufferPointer(rebasing: buffer[offset..<(offset + n)])
    }

    /// Everything left, borrowed.
    public mutating func rest() -> UnsafeRawBufferPointer {
        defer { offset = buffer.count }
        return UnsafeRawBufferPointer(rebasing: buffer[offset...])
    }

    /// A string written by ``ByteWriter/string16(_:)``. Strings of up to 15
    /// UTF-8 bytes are stored inline and allocate nothing.
    public mutating func string16() throws(ServiceDecodeError) -> String {
        let n = Int(try u16())
        let bytes = try raw(n)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Bytes written by ``ByteWriter/bytes32(_:)-(UnsafeRawBufferPointer)``, borrowed.
    public mutating func bytes32() throws(ServiceDecodeError) -> UnsafeRawBufferPointer {
        let n = Int(try u32())
        return try raw(n)
    }

    /// Throws unless every byte was read.
    public func expectEnd() throws(ServiceDecodeError) {
        if remaining > 0 { throw .trailingBytes(remaining) }
    }
}

/// The replicas' state digest and an object transfer's check: FNV-1a's
/// step over 64-bit little-endian words (a byte at a time only for the last
/// few), each step followed by a shift-xor that carries a word's high bits
/// down, and the length folded in at the end. Standard library only,
/// identical on every platform, and the same however the bytes are split
/// over ``add(_:)`` calls.
///
/// Not FNV-1a itself: that multiplies once per byte, a dependent multiply
/// (three cycles or more) for every byte — over a second of CPU for a
/// 512 MiB object on each side of its migration, on the cores the bus's
/// members need. A word at a time is several times faster. It guards
/// against accidents (a transfer assembled wrongly, replicas that went
/// apart), not against an adversary: the bus's frames and the bulk
/// channel's datagrams are authenticated.
public struct Digest64: Sendable {
    private var state: UInt64 = 0xcbf2_9ce4_8422_2325
    /// Bytes not yet a whole word (little-endian, `pendingCount` of them).
    private var pending: UInt64 = 0
    private var pendingCount = 0
    private var length: UInt64 = 0

    public init() {}

    @inline(__always)
    private static func step(_ h: UInt64, _ word: UInt64) -> UInt64 {
        let m = (h ^ word) &* 0x100_0000_01b3
        return m ^ (m >> 29)
    }

    /// The digest of the bytes added so far.
    public var value: UInt64 {
        var h = state
        if pendingCount > 0 { h = Self.step(h, pending) }
        return Self.step(h, length)
    }

    public mutating func add(_ bytes: UnsafeRawBufferPointer) {
        let n = bytes.count
        guard n > 0 else { return }
        length &+= UInt64(n)
        var i = 0
        var h = state
        if pendingCount > 0 {
            while pendingCount < 8, i < n {
                pending |= UInt64(bytes[i]) << UInt64(8 * pendingCount)
                pendingCount += 1
                i += 1
            }
            guard pendingCount == 8 else { return }
            h = Self.step(h, pending)
            pending = 0
            pendingCount = 0
        }
        while i + 8 <= n {
            h = Self.step(h, UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self)))
            i += 8
        }
        state = h
        while i < n {
            pending |= UInt64(bytes[i]) << UInt64(8 * pendingCount)
            pendingCount += 1
            i += 1
        }
    }

    public mutating func add(_ bytes: [UInt8]) { bytes.withUnsafeBytes { add($0) } }

    public static func of(_ bytes: [UInt8]) -> UInt64 {
        var d = Digest64()
        d.add(bytes)
        return d.value
    }
}

extension ByteReader {
    /// Calls `body` with a reader over `bytes`, keeping its error typed.
    public static func reading<R, E: Error>(_ bytes: [UInt8], _ body: (inout ByteReader) throws(E) -> R) throws(E) -> R {
        let result: Result<R, E> = bytes.withUnsafeBytes { b in
            var r = ByteReader(b)
            do throws(E) { return .success(try body(&r)) } catch { return .failure(error) }
        }
        return try result.get()
    }
}
