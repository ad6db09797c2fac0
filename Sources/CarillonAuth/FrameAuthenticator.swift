import CSodium
import CarillonWire

/// Authenticates frames under a cluster key: a 16-byte keyed BLAKE2b tag
/// (libsodium `crypto_generichash`) over the frame's header and body.
///
/// Why BLAKE2b from libsodium rather than HMAC from swift-crypto: one call per
/// frame, no allocation, ~100–300 ns for a full 1,472-byte frame, and a Debian
/// package instead of four minutes of BoringSSL compilation per build
/// configuration (docs/architecture.md). The tag length is fixed by the
/// configuration (`tagLength` in the frame header), so a frame without a tag or
/// with another length is refused before anything else looks at it.
public struct FrameAuthenticator: Sendable {
    /// Bytes of key (BLAKE2b's recommended key size).
    public static let keyBytes = 32
    /// Bytes of tag every frame carries.
    public static let tagBytes = 16

    let key: [UInt8]

    /// - Throws: ``AuthenticationError/badKeyLength(_:)`` unless `key` has 32 bytes.
    public init(key: [UInt8]) throws(AuthenticationError) {
        guard key.count == Self.keyBytes else { throw .badKeyLength(key.count) }
        guard sodium_init() >= 0 else { throw .libraryUnavailable }
        self.key = key
    }

    /// Parses a key written as 64 hexadecimal digits (surrounding whitespace ignored).
    public init(hexKey text: String) throws(AuthenticationError) {
        let digits = Array(text.filter { !$0.isWhitespace }.utf8)
        guard digits.count == 2 * Self.keyBytes else { throw .badKeyLength(digits.count / 2) }
        var key: [UInt8] = []
        key.reserveCapacity(Self.keyBytes)
        var i = 0
        while i < digits.count {
            guard let high = hexValue(digits[i]), let low = hexValue(digits[i + 1]) else { throw .badKeyText }
            key.append(high << 4 | low)
            i += 2
        }
        try self.init(key: key)
    }

    /// The key slot and repair frames of one run are sealed under:
    /// ``subkey(for:run:)`` with purpose `"bus"`. A frame recorded in an
    /// earlier run of the same cluster (same cluster key, another run
    /// identity) fails its tag in a later one. Derive it once per run.
    public func bound(toRun run: UInt64) -> FrameAuthenticator { subkey(for: "bus", run: run) }

    /// Fills in the tag of a frame built with `tagLength` = ``tagBytes``.
    public func seal(_ frame: UnsafeMutableRawBufferPointer) {
        precondition(frame.count >= Wire.headerBytes + Self.tagBytes, "frame too short to hold a tag")
        let covered = frame.count - Self.tagBytes
        key.withUnsafeBufferPointer { key in
            _ = crypto_generichash(
                frame.baseAddress!.advanced(by: covered).assumingMemoryBound(to: UInt8.self), Self.tagBytes,
                frame.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(covered),
                key.baseAddress, key.count)
        }
    }

    /// Checks a received frame's tag: the frame must declare a tag of
    /// ``tagBytes`` and the tag must match, compared in constant time.
    public func verify(_ frame: UnsafeRawBufferPointer) -> AuthenticationResult {
        guard frame.count >= Wire.headerBytes + Self.tagBytes else { return .malformed }
        let declared = Int(UInt16(littleEndian: frame.loadUnaligned(fromByteOffset: 20, as: UInt16.self)))
        guard declared == Self.tagBytes else { return .missingTag }
        let covered = frame.count - Self.tagBytes
        var expected: (UInt64, UInt64) = (0, 0)
        return withUnsafeMutableBytes(of: &expected) { tag in
            key.withUnsafeBufferPointer { key in
                _ = crypto_generichash(
                    tag.baseAddress!.assumingMemoryBound(to: UInt8.self), Self.tagBytes,
                    frame.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(covered),
                    key.baseAddress, key.count)
            }
            let same =
                crypto_verify_16(
                    tag.baseAddress!.assumingMemoryBound(to: UInt8.self),
                    frame.baseAddress!.advanced(by: covered).assumingMemoryBound(to: UInt8.self)) == 0
            return same ? .authentic : .badTag
        }
    }

    /// A fresh random key, as 64 hexadecimal digits.
    public static func generateHexKey() -> String {
        _ = sodium_init()
        var key = [UInt8](repeating: 0, count: keyBytes)
        randombytes_buf(&key, keyBytes)
        return key.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
}

/// The verdict on one received frame.
public enum AuthenticationResult: Sendable, Hashable {
    case authentic
    /// Too short to be a frame with a tag.
    case malformed
    /// The frame carries no tag, or a tag of another length.
    case missingTag
    /// The tag does not match: wrong key, or altered in transit.
    case badTag
}

/// Why a key cannot be used.
public enum AuthenticationError: Error, Sendable, Hashable, CustomStringConvertible {
    case badKeyLength(Int)
    case badKeyText
    case libraryUnavailable

    public var description: String {
        switch self {
        case .badKeyLength(let n):
            return "the cluster key has \(n) bytes; it must have \(FrameAuthenticator.keyBytes) (64 hex digits; `carillon keygen` makes one)"
        case .badKeyText: return "the cluster key must be 64 hexadecimal digits"
        case .libraryUnavailable: return "libsodium failed to initialise"
        }
    }
}

private func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
    default: return nil
    }
}
