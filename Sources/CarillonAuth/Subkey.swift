import CSodium

extension FrameAuthenticator {
    /// A key for one use in one run, derived from the cluster key: keyed
    /// BLAKE2b-256 under the cluster key over `"carillon/" + purpose`, a zero
    /// byte and `run` (little-endian). Tags under it are valid only for that
    /// purpose in that run, so a datagram recorded in an earlier run — or a
    /// bus frame offered to the bulk port — fails the tag check.
    ///
    /// Derive once and keep the result: a derivation costs one hash, a tag under
    /// the subkey costs what one under the cluster key does.
    public func subkey(for purpose: String, run: UInt64) -> FrameAuthenticator {
        var input = Array("carillon/\(purpose)".utf8)
        input.append(0)
        withUnsafeBytes(of: run.littleEndian) { input.append(contentsOf: $0) }
        var derived = [UInt8](repeating: 0, count: Self.keyBytes)
        key.withUnsafeBufferPointer { key in
            _ = crypto_generichash(&derived, derived.count, input, UInt64(input.count), key.baseAddress, key.count)
        }
        // 32 bytes and libsodium already initialised by this key: cannot throw.
        return try! FrameAuthenticator(key: derived)
    }

    /// The first 16 bytes of ``subkey(for:run:)``'s key as two little-endian
    /// words: the key of a keyed 64-bit-word hash (the services' capability
    /// tags, SipHash) that must be bound to the cluster key and the run.
    public func subkeyWords(for purpose: String, run: UInt64) -> (UInt64, UInt64) {
        let derived = subkey(for: purpose, run: run).key
        return derived.withUnsafeBytes {
            ($0.loadUnaligned(as: UInt64.self).littleEndian, $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self).littleEndian)
        }
    }
}
