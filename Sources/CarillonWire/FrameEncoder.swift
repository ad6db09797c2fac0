/// Writes one frame into a caller-owned buffer, section by section.
///
/// The encoder never allocates: it checks room before every write and throws
/// ``WireError/bufferTooSmall(needed:available:)`` instead of writing past the
/// buffer. Use it as: `init` → for each section `beginSection`, entries,
/// `endSection` → `finish`. `finish` writes the header and returns the frame's
/// length; when a tag length is given, that many zero bytes follow the body for
/// the authentication layer to fill in (see ``FrameView/authenticatedBytes``).
public struct FrameEncoder {
    public let buffer: UnsafeMutableRawBufferPointer
    var header: FrameHeader
    /// Next free byte.
    public private(set) var offset: Int
    var openSection: (start: Int, count: Int)?
    var sectionCount = 0
    /// Known section kinds written so far (bit = raw value), to refuse duplicates.
    var sectionsWritten: UInt64 = 0

    /// Starts a frame. `header.bodyLength`, `sectionCount` and `tagLength` are
    /// filled in by ``finish(tagLength:)``.
    public init(buffer: UnsafeMutableRawBufferPointer, header: FrameHeader) throws(WireError) {
        guard buffer.count >= Wire.headerBytes else {
            throw .bufferTooSmall(needed: Wire.headerBytes, available: buffer.count)
        }
        self.buffer = buffer
        self.header = header
        self.offset = Wire.headerBytes
    }

    /// Bytes still free in the buffer.
    public var remainingBytes: Int { buffer.count - offset }

    /// Opens a section; entries follow until ``endSection()``.
    ///
    /// Throws ``WireError/duplicateSection(_:)`` or ``WireError/sectionNotAllowed(section:kind:)``
    /// for a section the decoder would refuse in this frame.
    public mutating func beginSection(_ kind: SectionKind) throws(WireError) {
        let bit: UInt64 = 1 << (kind.rawValue & 0x3F)  // unique for every defined kind
        guard sectionsWritten & bit == 0 else { throw .duplicateSection(kind.rawValue) }
        guard FrameView.isAllowed(kind, in: header.kind) else {
            throw .sectionNotAllowed(section: kind.rawValue, kind: header.kind.rawValue)
        }
        try beginSection(code: kind.rawValue)
        sectionsWritten |= bit
    }

    /// Opens a section by raw kind code (for layers that define their own kinds).
    public mutating func beginSection(code: UInt16) throws(WireError) {
        guard openSection == nil else { throw .encoderMisuse }
        try reserve(Wire.sectionHeaderBytes)
        put16(code, at: offset)
        openSection = (offset, 0)
        offset += Wire.sectionHeaderBytes
    }

    /// Closes the open section, writing its entry count and length.
    public mutating func endSection() throws(WireError) {
        guard let section = openSection else { throw .encoderMisuse }
        guard section.count <= Int(UInt16.max) else { throw .lengthOverflow }
        put16(UInt16(section.count), at: section.start + 2)
        put32(UInt32(offset - section.start - Wire.sectionHeaderBytes), at: section.start + 4)
        openSection = nil
        sectionCount += 1
    }

    /// Appends a message to the open data section.
    public mutating func appendMessage(sequence: UInt64, payload: UnsafeRawBufferPointer) throws(WireError) {
        guard openSection != nil else { throw .encoderMisuse }
        try reserve(Wire.messageHeaderBytes + payload.count)
        put64(sequence, at: offset)
        put32(UInt32(payload.count), at: offset + 8)
        if payload.count > 0, let base = payload.baseAddress {
            (buffer.baseAddress! + offset + Wire.messageHeaderBytes).copyMemory(from: base, byteCount: payload.count)
        }
        offset += Wire.messageHeaderBytes + payload.count
        openSection!.count += 1
    }

    /// Appends already-encoded data-batch entries (as kept from
    /// ``FrameView/dataBatchBytes``) holding `count` messages.
    public mutating func appendEncodedMessages(_ entries: UnsafeRawBufferPointer, count: Int) throws(WireError) {
        try appendRaw(entries, entries: count)
    }

    /// Appends a received-below position to the open positions section.
    public mutating func appendPosition(_ entry: PositionEntry) throws(WireError) {
        try appendRankEntry(rank: entry.rank, value: entry.receivedBelowRound)
    }

    /// Appends a NAK range to the open NAK section.
    public mutating func appendNak(_ nak: NakRange) throws(WireError) {
        guard openSection != nil else { throw .encoderMisuse }
        try reserve(Wire.nakEntryBytes)
        put16(nak.rank, at: offset)
        put16(0, at: offset + 2)
        put64(nak.firstRound, at: offset + 4)
        put64(nak.lastRound, at: offset + 12)
        offset += Wire.nakEntryBytes
        openSection!.count += 1
    }

    /// Appends another member's silent rounds to the open relayed-silence section
    /// (same layout as a NAK range).
    public mutating func appendRelayedSilence(_ range: NakRange) throws(WireError) {
        try appendNak(range)
    }

    /// Appends a generic 12-byte entry (membership sections: a key, a node or a rank, and a value).
    public mutating func appendEntry(_ entry: RankEntry) throws(WireError) {
        try appendRankEntry(rank: entry.rank, value: entry.value)
    }

    /// Appends a silent-round range to the open silent-rounds section.
    public mutating func appendSilent(_ range: SilentRange) throws(WireError) {
        guard openSection != nil else { throw .encoderMisuse }
        try reserve(Wire.silentEntryBytes)
        put64(range.firstRound, at: offset)
        put64(range.lastRound, at: offset + 8)
        offset += Wire.silentEntryBytes
        openSection!.count += 1
    }

    /// Appends a suspicion to the open suspicions section.
    public mutating func appendSuspicion(_ suspicion: Suspicion) throws(WireError) {
        try appendRankEntry(rank: suspicion.rank, value: suspicion.silentSinceRound)
    }

    /// Appends a clock sample to the open clock-samples section.
    public mutating func appendClockSample(_ sample: ClockSample) throws(WireError) {
        try appendRankEntry(rank: sample.rank, value: UInt64(bitPattern: sample.minOneWayNanos))
    }

    /// The 12-byte entry positions, suspicions and clock samples share:
    /// rank (2), reserved zero (2), a 64-bit value (8).
    private mutating func appendRankEntry(rank: UInt16, value: UInt64) throws(WireError) {
        guard openSection != nil else { throw .encoderMisuse }
        try reserve(Wire.rankEntryBytes)
        put16(rank, at: offset)
        put16(0, at: offset + 2)
        put64(value, at: offset + 4)
        offset += Wire.rankEntryBytes
        openSection!.count += 1
    }

    /// Begins an embedded frame in the open retransmission section and returns
    /// an encoder for it that writes in place; pass it to ``endEmbeddedFrame(_:)``.
    public mutating func beginEmbeddedFrame(header: FrameHeader) throws(WireError) -> FrameEncoder {
        guard openSection != nil else { throw .encoderMisuse }
        try reserve(Wire.retransmissionEntryHeaderBytes + Wire.headerBytes)
        let start = offset + Wire.retransmissionEntryHeaderBytes
        let inner = UnsafeMutableRawBufferPointer(rebasing: buffer[start...])
        return try FrameEncoder(buffer: inner, header: header)
    }

    /// Finishes an embedded frame begun with ``beginEmbeddedFrame(header:)``.
    public mutating func endEmbeddedFrame(_ inner: consuming FrameEncoder) throws(WireError) {
        guard openSection != nil, inner.header.kind == .slot else { throw .encoderMisuse }
        let length = try inner.finish(tagLength: 0)
        put32(UInt32(length), at: offset)
        offset += Wire.retransmissionEntryHeaderBytes + length
        openSection!.count += 1
    }

    /// Writes the header and the zeroed tag space; returns the frame's length.
    public mutating func finish(tagLength: Int = 0) throws(WireError) -> Int {
        guard openSection == nil else { throw .encoderMisuse }
        guard tagLength >= 0, tagLength <= Wire.maxTagBytes else { throw .badTag(tagLength: tagLength) }
        guard sectionCount <= Int(UInt16.max) else { throw .lengthOverflow }
        try reserve(tagLength)
        let bodyLength = offset - Wire.headerBytes
        guard Wire.headerBytes + bodyLength + tagLength <= Wire.maxFrameBytes else { throw .lengthOverflow }
        if tagLength > 0 {
            (buffer.baseAddress! + offset).initializeMemory(as: UInt8.self, repeating: 0, count: tagLength)
            header.flags.insert(.authenticated)
        } else {
            header.flags.remove(.authenticated)
        }
        put32(Wire.magic, at: FrameHeader.Offset.magic)
        buffer[FrameHeader.Offset.version] = Wire.version
        buffer[FrameHeader.Offset.kind] = header.kind.rawValue
        put16(header.flags.rawValue, at: FrameHeader.Offset.flags)
        put16(header.senderRank, at: FrameHeader.Offset.senderRank)
        put16(UInt16(sectionCount), at: FrameHeader.Offset.sectionCount)
        put32(UInt32(bodyLength), at: FrameHeader.Offset.bodyLength)
        put32(header.epoch, at: FrameHeader.Offset.epoch)
        put16(UInt16(tagLength), at: FrameHeader.Offset.tagLength)
        put16(0, at: FrameHeader.Offset.reserved)
        put64(header.round, at: FrameHeader.Offset.round)
        put64(header.senderTimestampNanos, at: FrameHeader.Offset.senderTimestamp)
        return offset + tagLength
    }

    private mutating func appendRaw(_ bytes: UnsafeRawBufferPointer, entries: Int) throws(WireError) {
        guard openSection != nil else { throw .encoderMisuse }
        try reserve(bytes.count)
        if bytes.count > 0, let base = bytes.baseAddress {
            (buffer.baseAddress! + offset).copyMemory(from: base, byteCount: bytes.count)
        }
        offset += bytes.count
        openSection!.count += entries
    }

    @inline(__always) private func reserve(_ bytes: Int) throws(WireError) {
        guard bytes <= buffer.count - offset else {
            throw .bufferTooSmall(needed: offset + bytes, available: buffer.count)
        }
    }

    @inline(__always) private func put16(_ value: UInt16, at offset: Int) {
        buffer.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt16.self)
    }
    @inline(__always) private func put32(_ value: UInt32, at offset: Int) {
        buffer.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt32.self)
    }
    @inline(__always) private func put64(_ value: UInt64, at offset: Int) {
        buffer.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt64.self)
    }
}
