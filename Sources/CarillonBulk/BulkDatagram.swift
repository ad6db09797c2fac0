/// The bulk channel's datagram format, version 2 (docs/wire-format.md, "Bulk
/// datagrams"). Bulk datagrams travel on their own UDP port, never on the bus
/// port, and share only the authentication tag's placement with bus frames: a
/// fixed 56-byte little-endian header whose bytes 20–21 hold the tag length,
/// then the payload, then the tag, which covers everything before it. Version
/// 2 binds each datagram to its sender's and its receiver's incarnations
/// (the tag's key binds it to the run), so a datagram recorded before either
/// end restarted is refused after (docs/protocol.md §19, "Replays").
///
/// ```
///  0               4       5       6               8               10              12
///  | magic "CRLB"  | ver=1 | kind  | sender node   | receiver node | chunk bytes   |
/// 12                              16                              20              22              24
///  | chunk index (data) / received below (ack)     | chunk count   | tag length    | payload length|
/// 24                                                              32                              40
///  | transfer id                                   | total bytes (data) / SACK bitmap (ack)          |
/// 40                                                              48                              56
///  | sender incarnation                            | receiver incarnation                            |
/// ```
public enum BulkWire {
    /// `"CRLB"` read as a little-endian `UInt32`.
    public static let magic: UInt32 = 0x424C_5243
    public static let version: UInt8 = 2
    public static let headerBytes = 56
    /// Offset of the 16-bit tag length, the same as in a bus frame header, so one
    /// authenticator seals and verifies both.
    public static let tagLengthOffset = 20
}

/// What a bulk datagram carries.
public enum BulkDatagramKind: UInt8, Sendable {
    /// One chunk of a transfer.
    case data = 1
    /// The receiver's progress on a transfer: every chunk below `receivedBelow`,
    /// plus the 64 chunks after it as a bitmap (bit i: chunk receivedBelow + 1 + i).
    case ack = 2
}

/// A decoded bulk datagram header.
public struct BulkHeader: Sendable, Hashable {
    public var kind: BulkDatagramKind
    public var sender: UInt16
    public var receiver: UInt16
    /// Bytes in every chunk but the last (data) or 0 (ack).
    public var chunkBytes: UInt16
    /// Data: this chunk's index. Ack: chunks below this index have all arrived.
    public var chunkIndex: UInt32
    public var chunkCount: UInt32
    public var tagLength: UInt16
    public var payloadLength: UInt16
    public var transferID: UInt64
    /// Data: the transfer's length in bytes. Ack: the selective-acknowledgement bitmap.
    public var totalBytesOrBitmap: UInt64
    /// The incarnation of the member that sent the datagram (``sender``).
    public var senderIncarnation: UInt64
    /// The incarnation of ``receiver`` the datagram is addressed to: any other
    /// incarnation of that member (a restart) refuses it.
    public var receiverIncarnation: UInt64

    public init(
        kind: BulkDatagramKind, sender: UInt16, receiver: UInt16, chunkBytes: UInt16, chunkIndex: UInt32,
        chunkCount: UInt32, tagLength: UInt16, payloadLength: UInt16, transferID: UInt64, totalBytesOrBitmap: UInt64,
        senderIncarnation: UInt64 = 0, receiverIncarnation: UInt64 = 0
    ) {
        self.kind = kind
        self.sender = sender
        self.receiver = receiver
        self.chunkBytes = chunkBytes
        self.chunkIndex = chunkIndex
        self.chunkCount = chunkCount
        self.tagLength = tagLength
        self.payloadLength = payloadLength
        self.transferID = transferID
        self.totalBytesOrBitmap = totalBytesOrBitmap
        self.senderIncarnation = senderIncarnation
        self.receiverIncarnation = receiverIncarnation
    }

    /// Writes the header into the first ``BulkWire/headerBytes`` of `buffer`.
    public func encode(into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= BulkWire.headerBytes)
        buffer.storeBytes(of: BulkWire.magic.littleEndian, toByteOffset: 0, as: UInt32.self)
        buffer.storeBytes(of: BulkWire.version, toByteOffset: 4, as: UInt8.self)
        buffer.storeBytes(of: kind.rawValue, toByteOffset: 5, as: UInt8.self)
        buffer.storeBytes(of: sender.littleEndian, toByteOffset: 6, as: UInt16.self)
        buffer.storeBytes(of: receiver.littleEndian, toByteOffset: 8, as: UInt16.self)
        buffer.storeBytes(of: chunkBytes.littleEndian, toByteOffset: 10, as: UInt16.self)
        buffer.storeBytes(of: chunkIndex.littleEndian, toByteOffset: 12, as: UInt32.self)
        buffer.storeBytes(of: chunkCount.littleEndian, toByteOffset: 16, as: UInt32.self)
        buffer.storeBytes(of: tagLength.littleEndian, toByteOffset: 20, as: UInt16.self)
        buffer.storeBytes(of: payloadLength.littleEndian, toByteOffset: 22, as: UInt16.self)
        buffer.storeBytes(of: transferID.littleEndian, toByteOffset: 24, as: UInt64.self)
        buffer.storeBytes(of: totalBytesOrBitmap.littleEndian, toByteOffset: 32, as: UInt64.self)
        buffer.storeBytes(of: senderIncarnation.littleEndian, toByteOffset: 40, as: UInt64.self)
        buffer.storeBytes(of: receiverIncarnation.littleEndian, toByteOffset: 48, as: UInt64.self)
    }

    /// Decodes and checks a whole datagram: header, payload length against the
    /// datagram's length, and `expectedTagLength` (the tag itself is the
    /// authenticator's to check).
    public static func decode(_ datagram: UnsafeRawBufferPointer, expectedTagLength: Int) throws(BulkDatagramError) -> BulkHeader {
        guard datagram.count >= BulkWire.headerBytes else { throw .truncated(datagram.count) }
        guard UInt32(littleEndian: datagram.loadUnaligned(as: UInt32.self)) == BulkWire.magic else { throw .badMagic }
        let version = datagram.load(fromByteOffset: 4, as: UInt8.self)
        guard version == BulkWire.version else { throw .unsupportedVersion(version) }
        guard let kind = BulkDatagramKind(rawValue: datagram.load(fromByteOffset: 5, as: UInt8.self)) else {
            throw .unknownKind(datagram.load(fromByteOffset: 5, as: UInt8.self))
        }
        func u16(_ offset: Int) -> UInt16 { UInt16(littleEndian: datagram.loadUnaligned(fromByteOffset: offset, as: UInt16.self)) }
        func u32(_ offset: Int) -> UInt32 { UInt32(littleEndian: datagram.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }
        func u64(_ offset: Int) -> UInt64 { UInt64(littleEndian: datagram.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) }
        let header = BulkHeader(
            kind: kind, sender: u16(6), receiver: u16(8), chunkBytes: u16(10), chunkIndex: u32(12),
            chunkCount: u32(16), tagLength: u16(20), payloadLength: u16(22), transferID: u64(24),
            totalBytesOrBitmap: u64(32), senderIncarnation: u64(40), receiverIncarnation: u64(48))
        guard Int(header.tagLength) == expectedTagLength else {
            throw .tagLength(declared: Int(header.tagLength), expected: expectedTagLength)
        }
        let expectedLength = BulkWire.headerBytes + Int(header.payloadLength) + Int(header.tagLength)
        guard datagram.count == expectedLength else { throw .lengthMismatch(declared: expectedLength, actual: datagram.count) }
        switch kind {
        case .data:
            guard header.chunkCount > 0, header.chunkIndex < header.chunkCount, header.chunkBytes > 0 else {
                throw .inconsistentChunk("chunk \(header.chunkIndex) of \(header.chunkCount), \(header.chunkBytes) B chunks")
            }
            let (full, overflow) = UInt64(header.chunkBytes).multipliedReportingOverflow(by: UInt64(header.chunkCount - 1))
            let total = header.totalBytesOrBitmap
            guard !overflow, total > full, total - full <= UInt64(header.chunkBytes) else {
                throw .inconsistentChunk("\(total) B do not make \(header.chunkCount) chunks of \(header.chunkBytes) B")
            }
            let expectedPayload = header.chunkIndex == header.chunkCount - 1 ? total - full : UInt64(header.chunkBytes)
            guard UInt64(header.payloadLength) == expectedPayload else {
                throw .inconsistentChunk("chunk \(header.chunkIndex) carries \(header.payloadLength) B, expected \(expectedPayload)")
            }
        case .ack:
            guard header.payloadLength == 0, header.chunkBytes == 0, header.chunkIndex <= header.chunkCount else {
                throw .inconsistentChunk("ack of \(header.chunkIndex) of \(header.chunkCount) chunks with \(header.payloadLength) B payload")
            }
        }
        return header
    }
}

/// Why a bulk datagram was refused. Each description says what was wrong.
public enum BulkDatagramError: Error, Sendable, Hashable, CustomStringConvertible {
    case truncated(Int)
    case badMagic
    case unsupportedVersion(UInt8)
    case unknownKind(UInt8)
    case tagLength(declared: Int, expected: Int)
    case lengthMismatch(declared: Int, actual: Int)
    case inconsistentChunk(String)

    public var description: String {
        switch self {
        case .truncated(let n): return "bulk datagram of \(n) bytes is shorter than its \(BulkWire.headerBytes)-byte header"
        case .badMagic: return "not a bulk datagram (magic is not CRLB)"
        case .unsupportedVersion(let v): return "bulk datagram version \(v) is not supported (this build reads version \(BulkWire.version))"
        case .unknownKind(let k): return "unknown bulk datagram kind \(k) (1 data, 2 ack)"
        case .tagLength(let declared, let expected):
            return "bulk datagram declares a \(declared)-byte tag, the channel expects \(expected) (is the key configured on both ends?)"
        case .lengthMismatch(let declared, let actual): return "bulk datagram header says \(declared) bytes, \(actual) arrived"
        case .inconsistentChunk(let what): return "inconsistent bulk chunk: \(what)"
        }
    }
}
