/// What a capability allows on the object (or lock) it names.
public struct CapabilityRights: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Read the object's bytes and ask where it lives.
    public static let read = CapabilityRights(rawValue: 1)
    /// Write and delete the object.
    public static let write = CapabilityRights(rawValue: 2)
    /// Move the object to another member.
    public static let migrate = CapabilityRights(rawValue: 4)
    /// Delegate (with the same or fewer rights) and revoke what was delegated.
    public static let grant = CapabilityRights(rawValue: 8)
    /// Every right: what the creator of an object receives.
    public static let all: CapabilityRights = [.read, .write, .migrate, .grant]

    /// The letters `r`, `w`, `m`, `g` (the command line's spelling).
    public var description: String {
        var s = ""
        if contains(.read) { s += "r" }
        if contains(.write) { s += "w" }
        if contains(.migrate) { s += "m" }
        if contains(.grant) { s += "g" }
        return s.isEmpty ? "-" : s
    }

    /// Parses `rwmg` letters (any subset, any order); nil on another letter.
    public init?(letters: String) {
        var rights: CapabilityRights = []
        for c in letters {
            switch c {
            case "r": rights.insert(.read)
            case "w": rights.insert(.write)
            case "m": rights.insert(.migrate)
            case "g": rights.insert(.grant)
            default: return nil
            }
        }
        self = rights
    }
}

/// Computes and checks capability tags with the cluster's key. Every member
/// holds the same key, so every member computes the same tag for the same
/// capability: the check inside the state machine is deterministic. The
/// runtime's authority is keyed BLAKE2b under a subkey of the cluster key
/// (``CarillonAuth``); the simulator uses a keyed test function.
public protocol CapabilityAuthority: Sendable {
    /// The 16-byte tag of `message` under the cluster key.
    func tag(_ message: UnsafeRawBufferPointer) -> (UInt64, UInt64)
}

/// An unforgeable reference to one object (or lock): its name, the rights it
/// carries, the log index that issued it, and a tag only a holder of the
/// cluster key can compute. A process that holds the bytes holds the rights;
/// a process without them cannot make them.
///
/// Wire form (``encoded``, 31 + name bytes): version 1 (u8), kind (u8: 1 an
/// owned object, 2 a lock), id (u64), rights (u8), name (u16 length + UTF-8),
/// tag (16 bytes). The tag covers everything before it.
public struct Capability: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: UInt8, Sendable, Hashable { case object = 1, lock = 2 }

    public static let version: UInt8 = 1
    public var kind: Kind
    /// The service log index that issued it (unique per capability).
    public var id: UInt64
    public var rights: CapabilityRights
    public var name: String
    public var tag: (UInt64, UInt64)

    public init(kind: Kind, id: UInt64, rights: CapabilityRights, name: String, authority: any CapabilityAuthority) {
        self.kind = kind
        self.id = id
        self.rights = rights
        self.name = name
        self.tag = (0, 0)
        let signed = Self.signedBytes(kind: kind, id: id, rights: rights, name: name)
        self.tag = signed.withUnsafeBytes { authority.tag($0) }
    }

    init(kind: Kind, id: UInt64, rights: CapabilityRights, name: String, tag: (UInt64, UInt64)) {
        self.kind = kind
        self.id = id
        self.rights = rights
        self.name = name
        self.tag = tag
    }

    public static func == (a: Capability, b: Capability) -> Bool {
        a.kind == b.kind && a.id == b.id && a.rights == b.rights && a.name == b.name && a.tag == b.tag
    }

    public func hash(into h: inout Hasher) {
        h.combine(kind)
        h.combine(id)
        h.combine(rights)
        h.combine(name)
        h.combine(tag.0)
        h.combine(tag.1)
    }

    static func signedBytes(kind: Kind, id: UInt64, rights: CapabilityRights, name: String) -> [UInt8] {
        var w = ByteWriter(capacity: 16 + name.utf8.count)
        w.u8(version)
        w.u8(kind.rawValue)
        w.u64(id)
        w.u8(rights.rawValue)
        w.string16(name)
        return w.bytes
    }

    /// Whether `authority` (the cluster key) made this capability's tag.
    public func isAuthentic(under authority: any CapabilityAuthority) -> Bool {
        let expected = Self.signedBytes(kind: kind, id: id, rights: rights, name: name).withUnsafeBytes { authority.tag($0) }
        // Both halves compared without an early exit.
        return ((expected.0 ^ tag.0) | (expected.1 ^ tag.1)) == 0
    }

    public var encoded: [UInt8] {
        var w = ByteWriter(bytes: Self.signedBytes(kind: kind, id: id, rights: rights, name: name))
        w.u64(tag.0)
        w.u64(tag.1)
        return w.bytes
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(ServiceDecodeError) -> Capability {
        var r = ByteReader(bytes)
        let v = try r.u8()
        guard v == version else { throw .unsupportedVersion(v) }
        let rawKind = try r.u8()
        guard let kind = Kind(rawValue: rawKind) else { throw .invalidField("capability kind \(rawKind)") }
        let id = try r.u64()
        let rights = CapabilityRights(rawValue: try r.u8())
        guard CapabilityRights.all.isSuperset(of: rights) else { throw .invalidField("capability rights \(rights.rawValue)") }
        let name = try r.string16()
        let tag = (try r.u64(), try r.u64())
        try r.expectEnd()
        return Capability(kind: kind, id: id, rights: rights, name: name, tag: tag)
    }

    public static func decode(_ bytes: [UInt8]) throws(ServiceDecodeError) -> Capability {
        try ByteReader.reading(bytes) { (r) throws(ServiceDecodeError) -> Capability in try decode(r.rest()) }
    }

    /// The text form the command line prints and reads: `cap1-` and the
    /// encoded bytes in lowercase hexadecimal.
    public var text: String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = Array("cap1-".utf8)
        for b in encoded {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Reads ``text``; throws a decode error naming what is wrong.
    public init(text: String) throws(ServiceDecodeError) {
        guard text.hasPrefix("cap1-") else { throw .invalidField("a capability starts with cap1-") }
        let hex = Array(text.utf8.dropFirst(5))
        guard hex.count % 2 == 0 else { throw .invalidField("a capability has an even number of hexadecimal digits") }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(hex.count / 2)
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            default: nil
            }
        }
        var i = 0
        while i < hex.count {
            guard let hi = nibble(hex[i]), let lo = nibble(hex[i + 1]) else {
                throw .invalidField("a capability is lowercase hexadecimal after cap1-")
            }
            bytes.append(hi << 4 | lo)
            i += 2
        }
        self = try Self.decode(bytes)
    }

    public var description: String { "\(kind == .object ? "object" : "lock") \(name) rights=\(rights) id=\(id)" }
}

/// The capabilities issued so far and the revoked ones: replicated (part of
/// the state machine's snapshot), so every member decides every check alike.
public struct CapabilityTable: Sendable, Hashable {
    struct Issued: Sendable, Hashable {
        var parent: UInt64
        var name: String
        var rights: CapabilityRights
        var revoked: Bool
    }

    var issued: [UInt64: Issued] = [:]

    public init() {}

    /// How many capabilities are issued (revoked ones included).
    public var count: Int { issued.count }

    /// Why a capability was refused.
    public enum Refusal: Error, Sendable, Hashable, CustomStringConvertible {
        case missing
        case unreadable
        case forged
        case otherObject(String)
        case revoked(UInt64)
        case lacks(CapabilityRights)

        public var description: String {
            switch self {
            case .missing: "no capability was presented"
            case .unreadable: "the capability cannot be read"
            case .forged: "the capability's tag is not the cluster's (forged or altered)"
            case .otherObject(let name): "the capability is for \(name)"
            case .revoked(let id): "the capability was revoked (id \(id))"
            case .lacks(let rights): "the capability lacks the rights \(rights)"
            }
        }
    }

    mutating func issue(_ id: UInt64, parent: UInt64, name: String, rights: CapabilityRights) {
        issued[id] = Issued(parent: parent, name: name, rights: rights, revoked: false)
    }

    /// Checks `bytes` (an envelope's capability) for `name` and `needed`.
    /// Deterministic: reads only the bytes, the table and the key.
    public func check(
        _ bytes: UnsafeRawBufferPointer, name: String, needed: CapabilityRights, authority: any CapabilityAuthority,
        kind: Capability.Kind = .object
    ) -> Result<Capability, Refusal> {
        guard bytes.count > 0 else { return .failure(.missing) }
        guard let cap = try? Capability.decode(bytes) else { return .failure(.unreadable) }
        guard cap.isAuthentic(under: authority) else { return .failure(.forged) }
        guard cap.name == name, cap.kind == kind else { return .failure(.otherObject(cap.name)) }
        guard let entry = issued[cap.id], entry.name == name, entry.rights == cap.rights else { return .failure(.forged) }
        var id = cap.id
        while id != 0, let e = issued[id] {
            if e.revoked { return .failure(.revoked(id)) }
            id = e.parent
        }
        guard cap.rights.isSuperset(of: needed) else { return .failure(.lacks(needed.subtracting(cap.rights))) }
        return .success(cap)
    }

    /// Whether `ancestor` is `id` or one of its parents.
    func isAncestor(_ ancestor: UInt64, of id: UInt64) -> Bool {
        var id = id
        while id != 0 {
            if id == ancestor { return true }
            guard let e = issued[id] else { return false }
            id = e.parent
        }
        return false
    }

    mutating func revoke(_ id: UInt64) { issued[id]?.revoked = true }

    /// Forgets every capability of `name` (the object was deleted).
    mutating func forget(_ name: String) {
        for (id, e) in issued where e.name == name { issued[id] = nil }
    }

    func snapshot(into w: inout ByteWriter) {
        let ids = issued.keys.sorted()
        w.u32(UInt32(ids.count))
        for id in ids {
            let e = issued[id]!
            w.u64(id)
            w.u64(e.parent)
            w.string16(e.name)
            w.u8(e.rights.rawValue)
            w.u8(e.revoked ? 1 : 0)
        }
    }

    static func restore(from r: inout ByteReader) throws(ServiceDecodeError) -> CapabilityTable {
        var t = CapabilityTable()
        let n = Int(try r.u32())
        for _ in 0..<n {
            let id = try r.u64()
            let parent = try r.u64()
            let name = try r.string16()
            let rights = CapabilityRights(rawValue: try r.u8())
            let revoked = try r.u8() == 1
            t.issued[id] = Issued(parent: parent, name: name, rights: rights, revoked: revoked)
        }
        return t
    }
}

/// A capability authority keyed with 128 bits, computing SipHash-2-4 with
/// 128-bit output (Aumasson and Bernstein) in the standard library alone:
/// the simulator's and the tests' authority. The runtime keys its authority
/// from the cluster key (``CapabilityAuthority``).
public struct SipHashAuthority: CapabilityAuthority {
    public let key: (UInt64, UInt64)

    public init(key0: UInt64, key1: UInt64) { key = (key0, key1) }

    public func tag(_ message: UnsafeRawBufferPointer) -> (UInt64, UInt64) { Self.sipHash128(key, message) }

    @inline(__always) static func rotl(_ x: UInt64, _ b: UInt64) -> UInt64 { (x << b) | (x >> (64 - b)) }

    static func sipHash128(_ key: (UInt64, UInt64), _ m: UnsafeRawBufferPointer) -> (UInt64, UInt64) {
        var v0: UInt64 = key.0 ^ 0x736f_6d65_7073_6575
        var v1: UInt64 = key.1 ^ 0x646f_7261_6e64_6f6d ^ 0xee
        var v2: UInt64 = key.0 ^ 0x6c79_6765_6e65_7261
        var v3: UInt64 = key.1 ^ 0x7465_6462_7974_6573
        @inline(__always) func round() {
            v0 &+= v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32)
            v2 &+= v3; v3 = rotl(v3, 16); v3 ^= v2
            v0 &+= v3; v3 = rotl(v3, 21); v3 ^= v0
            v2 &+= v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32)
        }
        @inline(__always) func compress(_ word: UInt64) {
            v3 ^= word
            round(); round()
            v0 ^= word
        }
        let blocks = m.count / 8
        for i in 0..<blocks { compress(UInt64(littleEndian: m.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))) }
        var last = UInt64(truncatingIfNeeded: m.count) << 56
        for i in 0..<(m.count % 8) { last |= UInt64(m[8 * blocks + i]) << UInt64(8 * i) }
        compress(last)
        v2 ^= 0xee
        round(); round(); round(); round()
        let first = v0 ^ v1 ^ v2 ^ v3
        v1 ^= 0xdd
        round(); round(); round(); round()
        return (first, v0 ^ v1 ^ v2 ^ v3)
    }
}
