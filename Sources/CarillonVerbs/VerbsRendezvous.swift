/// The address exchange: each member announces its queue pair's address to
/// every other over UDP (the bus's own endpoints) at start, again while any
/// peer's is unknown, and answers an announcement from a peer whose address
/// changed (a restarted member joining a later view has a new queue pair).
///
/// `CVH1` · rank u16 · member count u16 · flags u8 (1: answer me) · start
/// u64 (tells one start of a member from the next) · address (GID 16, LID
/// u16, QPN u32, QKey u32). Little-endian.
public struct VerbsHello: Sendable, Hashable {
    public static let magic: [UInt8] = Array("CVH1".utf8)
    public static let encodedBytes = 4 + 2 + 2 + 1 + 8 + VerbsAddress.encodedBytes

    public var rank: Int
    public var memberCount: Int
    public var answerMe: Bool
    public var start: UInt64
    public var address: VerbsAddress

    public init(rank: Int, memberCount: Int, answerMe: Bool, start: UInt64, address: VerbsAddress) {
        self.rank = rank
        self.memberCount = memberCount
        self.answerMe = answerMe
        self.start = start
        self.address = address
    }

    public var encoded: [UInt8] {
        var out = Self.magic
        out.reserveCapacity(Self.encodedBytes)
        func append<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        append(UInt16(rank))
        append(UInt16(memberCount))
        out.append(answerMe ? 1 : 0)
        append(start)
        out.append(contentsOf: address.gid)
        append(address.lid)
        append(address.queuePair)
        append(address.queueKey)
        return out
    }

    /// Reads a hello; nil for anything else (a stray datagram is ignored, never trusted).
    public init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count == Self.encodedBytes, bytes.prefix(4).elementsEqual(Self.magic) else { return nil }
        func read<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> T { T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self)) }
        let flags = bytes[8]
        guard flags <= 1 else { return nil }
        self.init(
            rank: Int(read(4, UInt16.self)), memberCount: Int(read(6, UInt16.self)), answerMe: flags == 1, start: read(9, UInt64.self),
            address: VerbsAddress(
                gid: Array(bytes[17..<33]), lid: read(33, UInt16.self), queuePair: read(35, UInt32.self), queueKey: read(39, UInt32.self)))
    }
}

/// Every peer's address as learnt from hellos, by rank. Pure: the transport
/// feeds it what arrived and does what it says.
public struct VerbsPeerTable: Sendable {
    public struct Peer: Sendable, Hashable {
        public var address: VerbsAddress
        public var start: UInt64
    }

    public let rank: Int
    public let memberCount: Int
    public private(set) var peers: [Peer?]

    public init(rank: Int, memberCount: Int) {
        self.rank = rank
        self.memberCount = memberCount
        peers = Array(repeating: nil, count: memberCount)
    }

    /// What to do about a hello.
    public enum Outcome: Sendable, Hashable {
        /// Not for this bus (another member count, an out-of-range rank, our own rank): ignored.
        case ignored
        /// Known already; answer if asked.
        case unchanged(answer: Bool)
        /// A new or changed address for `rank` (rebuild its address handle); answer it.
        case learnt(rank: Int, replaced: VerbsAddress?)
    }

    public mutating func learn(_ hello: VerbsHello) -> Outcome {
        guard hello.memberCount == memberCount, (0..<memberCount).contains(hello.rank), hello.rank != rank else { return .ignored }
        let old = peers[hello.rank]
        if let old, old.address == hello.address {
            if hello.start > old.start { peers[hello.rank]!.start = hello.start }
            return .unchanged(answer: hello.answerMe)
        }
        // A hello from an earlier start (a late, reordered datagram) never replaces a later one.
        if let old, hello.start < old.start { return .ignored }
        peers[hello.rank] = Peer(address: hello.address, start: hello.start)
        return .learnt(rank: hello.rank, replaced: old?.address)
    }

    /// Forgets `rank`'s address (its address handle could not be made): its next hello is learnt again.
    public mutating func forget(_ rank: Int) {
        if peers.indices.contains(rank) { peers[rank] = nil }
    }

    /// Whether every other member's address is known.
    public var complete: Bool { peers.enumerated().allSatisfy { $0.offset == rank || $0.element != nil } }

    /// The rank whose queue pair is `queuePair` (nil: unknown).
    public func rank(ofQueuePair queuePair: UInt32) -> Int? {
        for (rank, peer) in peers.enumerated() where peer?.address.queuePair == queuePair { return rank }
        return nil
    }
}
