/// A decoded frame that reads the datagram in place.
///
/// `decode(_:)` validates the whole frame — header, every section, every count
/// against every length, every embedded frame — before it returns, so reading
/// a `FrameView` afterwards cannot fail. The view borrows `bytes`: it is valid
/// only while the buffer it was decoded from is alive and unchanged, exactly like
/// the pointer it holds. Payloads are never copied.
public struct FrameView {
    /// The whole frame: header, body and tag.
    public let bytes: UnsafeRawBufferPointer
    /// The decoded fixed header.
    public let header: FrameHeader

    var data: SectionRef?
    var positions: SectionRef?
    var naks: SectionRef?
    var retransmissions: SectionRef?
    var silentRounds: SectionRef?
    var clockSamples: SectionRef?
    var suspicions: SectionRef?
    var viewFields: SectionRef?
    var viewPositions: SectionRef?
    var viewMembers: SectionRef?
    var viewCut: SectionRef?
    var relayedSilence: SectionRef?

    struct SectionRef {
        /// Offset of the first entry (just after the section header).
        var offset: Int
        var count: Int
        var length: Int
    }

    /// Header and body: the bytes an authentication tag covers.
    public var authenticatedBytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[0..<(Wire.headerBytes + Int(header.bodyLength))])
    }

    /// The authentication tag (empty when the frame carries none).
    public var tag: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[(Wire.headerBytes + Int(header.bodyLength))...])
    }

    /// Messages in the data batch, in batch order.
    public var messages: MessageSequence {
        guard let data else { return MessageSequence(validatedBatch: UnsafeRawBufferPointer(start: nil, count: 0), count: 0) }
        return MessageSequence(validatedBatch: slice(data), count: data.count)
    }

    /// Number of messages in the data batch.
    public var messageCount: Int { data?.count ?? 0 }

    /// The data batch's entries, exactly as on the wire (for storing a frame's
    /// messages without re-encoding them); empty when there is no data section.
    public var dataBatchBytes: UnsafeRawBufferPointer {
        guard let data else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return slice(data)
    }

    /// Received-below positions carried by the frame.
    public var positionEntries: FixedEntrySequence<PositionEntry> {
        FixedEntrySequence(positions.map(slice), stride: Wire.positionEntryBytes) { b, o in
            PositionEntry(rank: b.u16(o), receivedBelowRound: b.u64(o + 4))
        }
    }

    /// NAK ranges carried by the frame.
    public var nakRanges: FixedEntrySequence<NakRange> {
        FixedEntrySequence(naks.map(slice), stride: Wire.nakEntryBytes) { b, o in
            NakRange(rank: b.u16(o), firstRound: b.u64(o + 4), lastRound: b.u64(o + 12))
        }
    }

    /// Silent-round ranges of the frame's sender.
    public var silentRanges: FixedEntrySequence<SilentRange> {
        FixedEntrySequence(silentRounds.map(slice), stride: Wire.silentEntryBytes) { b, o in
            SilentRange(firstRound: b.u64(o), lastRound: b.u64(o + 8))
        }
    }

    /// Suspicions the frame's sender holds.
    public var suspicionEntries: FixedEntrySequence<Suspicion> {
        FixedEntrySequence(suspicions.map(slice), stride: Wire.suspicionEntryBytes) { b, o in
            Suspicion(rank: b.u16(o), silentSinceRound: b.u64(o + 4))
        }
    }

    /// Clock samples carried by the frame.
    public var clockSampleEntries: FixedEntrySequence<ClockSample> {
        FixedEntrySequence(clockSamples.map(slice), stride: Wire.clockEntryBytes) { b, o in
            ClockSample(rank: b.u16(o), minOneWayNanos: Int64(bitPattern: b.u64(o + 4)))
        }
    }

    /// Membership frames: key/value fields (see ``ViewField``).
    public var viewFieldEntries: FixedEntrySequence<RankEntry> { rankEntries(viewFields) }
    /// Membership frames: received-below rounds per old-view rank, frozen at the promise.
    public var viewPositionEntries: FixedEntrySequence<RankEntry> { rankEntries(viewPositions) }
    /// Membership frames: proposed members in rank order (node, incarnation).
    public var viewMemberEntries: FixedEntrySequence<RankEntry> { rankEntries(viewMembers) }
    /// Membership frames: proposed cut per old-view rank.
    public var viewCutEntries: FixedEntrySequence<RankEntry> { rankEntries(viewCut) }

    /// Repair frames: other members' silent rounds, relayed during a view change.
    public var relayedSilentRanges: FixedEntrySequence<NakRange> {
        FixedEntrySequence(relayedSilence.map(slice), stride: Wire.nakEntryBytes) { b, o in
            NakRange(rank: b.u16(o), firstRound: b.u64(o + 4), lastRound: b.u64(o + 12))
        }
    }

    private func rankEntries(_ ref: SectionRef?) -> FixedEntrySequence<RankEntry> {
        FixedEntrySequence(ref.map(slice), stride: Wire.rankEntryBytes) { b, o in
            RankEntry(rank: b.u16(o), value: b.u64(o + 4))
        }
    }

    /// Embedded frames of a retransmission section; each already validated, so
    /// `FrameView.decode(_:)` on one of them succeeds.
    public var embeddedFrames: EmbeddedFrameSequence {
        EmbeddedFrameSequence(
            section: retransmissions.map(slice) ?? UnsafeRawBufferPointer(start: nil, count: 0),
            count: retransmissions?.count ?? 0)
    }

    private func slice(_ ref: SectionRef) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[ref.offset..<(ref.offset + ref.length)])
    }
}

// MARK: - Decoding

extension FrameView {
    /// Decodes and validates one frame occupying all of `bytes`.
    ///
    /// - Throws: a ``WireError`` naming the first problem found; never traps.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(WireError) -> FrameView {
        try decode(bytes, embedded: false)
    }

    static func decode(_ bytes: UnsafeRawBufferPointer, embedded: Bool) throws(WireError) -> FrameView {
        guard bytes.count >= Wire.headerBytes else {
            throw .truncated(needed: Wire.headerBytes, available: bytes.count)
        }
        let magic = bytes.u32(FrameHeader.Offset.magic)
        guard magic == Wire.magic else { throw .badMagic(magic) }
        let version = bytes.u8(FrameHeader.Offset.version)
        guard version == Wire.version else { throw .unsupportedVersion(version) }
        let kindCode = bytes.u8(FrameHeader.Offset.kind)
        guard let kind = FrameKind(rawValue: kindCode) else { throw .unknownFrameKind(kindCode) }
        let flagBits = bytes.u16(FrameHeader.Offset.flags)
        guard flagBits & ~FrameFlags.known.rawValue == 0 else { throw .unknownFlags(flagBits) }
        let flags = FrameFlags(rawValue: flagBits)
        guard bytes.u16(FrameHeader.Offset.reserved) == 0 else { throw .reservedFieldNotZero }

        let tagLength = Int(bytes.u16(FrameHeader.Offset.tagLength))
        if flags.contains(.authenticated) {
            guard tagLength > 0, tagLength <= Wire.maxTagBytes, !embedded else { throw .badTag(tagLength: tagLength) }
        } else {
            guard tagLength == 0 else { throw .badTag(tagLength: tagLength) }
        }
        let bodyLength = Int(bytes.u32(FrameHeader.Offset.bodyLength))
        let declared = Wire.headerBytes + bodyLength + tagLength
        guard declared <= Wire.maxFrameBytes else { throw .lengthOverflow }
        if declared > bytes.count { throw .truncated(needed: declared, available: bytes.count) }
        if declared != bytes.count { throw .frameLengthMismatch(declared: declared, actual: bytes.count) }

        let sectionCount = Int(bytes.u16(FrameHeader.Offset.sectionCount))
        let header = FrameHeader(
            kind: kind, flags: flags, senderRank: bytes.u16(FrameHeader.Offset.senderRank),
            sectionCount: UInt16(sectionCount), bodyLength: UInt32(bodyLength),
            epoch: bytes.u32(FrameHeader.Offset.epoch), tagLength: UInt16(tagLength),
            round: bytes.u64(FrameHeader.Offset.round),
            senderTimestampNanos: bytes.u64(FrameHeader.Offset.senderTimestamp))
        var view = FrameView(bytes: bytes, header: header)

        let end = Wire.headerBytes + bodyLength
        var offset = Wire.headerBytes
        var found = 0
        while offset < end {
            guard end - offset >= Wire.sectionHeaderBytes else {
                throw .truncated(needed: offset + Wire.sectionHeaderBytes, available: end)
            }
            let code = bytes.u16(offset)
            let count = Int(bytes.u16(offset + 2))
            let length = Int(bytes.u32(offset + 4))
            let start = offset + Wire.sectionHeaderBytes
            guard length <= end - start else { throw .truncated(needed: start + length, available: end) }
            let ref = SectionRef(offset: start, count: count, length: length)
            let body = UnsafeRawBufferPointer(rebasing: bytes[start..<(start + length)])
            found += 1
            guard found <= sectionCount else { throw .sectionCountMismatch(declared: sectionCount, found: found) }
            offset = start + length

            guard let section = SectionKind(rawValue: code) else {
                if code & SectionKind.skippableBit != 0 { continue }
                throw .unknownSectionKind(code)
            }
            guard isAllowed(section, in: kind) else { throw .sectionNotAllowed(section: code, kind: kindCode) }
            switch section {
            case .data:
                guard view.data == nil else { throw .duplicateSection(code) }
                try validateDataBatch(body, count: count, code: code)
                view.data = ref
            case .positions:
                guard view.positions == nil else { throw .duplicateSection(code) }
                try validateRankEntries(body, count: count, code: code)
                view.positions = ref
            case .naks, .relayedSilence:
                guard (section == .naks ? view.naks : view.relayedSilence) == nil else { throw .duplicateSection(code) }
                try validateFixed(body, count: count, stride: Wire.nakEntryBytes, code: code) { b, o throws(WireError) in
                    guard b.u16(o + 2) == 0 else { throw .reservedFieldNotZero }
                    let first = b.u64(o + 4), last = b.u64(o + 12)
                    guard first <= last else { throw .invalidRange(first: first, last: last) }
                }
                if section == .naks { view.naks = ref } else { view.relayedSilence = ref }
            case .viewFields, .viewPositions, .viewMembers, .viewCut:
                let existing: SectionRef? =
                    switch section {
                    case .viewFields: view.viewFields
                    case .viewPositions: view.viewPositions
                    case .viewMembers: view.viewMembers
                    default: view.viewCut
                    }
                guard existing == nil else { throw .duplicateSection(code) }
                try validateRankEntries(body, count: count, code: code)
                switch section {
                case .viewFields: view.viewFields = ref
                case .viewPositions: view.viewPositions = ref
                case .viewMembers: view.viewMembers = ref
                default: view.viewCut = ref
                }
            case .silentRounds:
                guard view.silentRounds == nil else { throw .duplicateSection(code) }
                try validateFixed(body, count: count, stride: Wire.silentEntryBytes, code: code) { b, o throws(WireError) in
                    let first = b.u64(o), last = b.u64(o + 8)
                    guard first <= last else { throw .invalidRange(first: first, last: last) }
                }
                view.silentRounds = ref
            case .suspicions:
                guard view.suspicions == nil else { throw .duplicateSection(code) }
                try validateRankEntries(body, count: count, code: code)
                view.suspicions = ref
            case .clockSamples:
                guard view.clockSamples == nil else { throw .duplicateSection(code) }
                try validateRankEntries(body, count: count, code: code)
                view.clockSamples = ref
            case .retransmissions:
                guard view.retransmissions == nil else { throw .duplicateSection(code) }
                guard !embedded else { throw .sectionNotAllowed(section: code, kind: kindCode) }
                try validateRetransmissions(body, count: count, code: code)
                view.retransmissions = ref
            }
        }
        guard found == sectionCount else { throw .sectionCountMismatch(declared: sectionCount, found: found) }
        if embedded, kind != .slot { throw .malformedEmbeddedFrame }
        return view
    }

    private init(bytes: UnsafeRawBufferPointer, header: FrameHeader) {
        self.bytes = bytes
        self.header = header
    }

    static func isAllowed(_ section: SectionKind, in kind: FrameKind) -> Bool {
        switch (kind, section) {
        case (.membership, .viewFields), (.membership, .viewPositions), (.membership, .viewMembers),
            (.membership, .viewCut), (.membership, .data):
            return true
        case (.membership, _), (_, .viewFields), (_, .viewPositions), (_, .viewMembers), (_, .viewCut): return false
        case (.repair, .relayedSilence): return true
        case (_, .relayedSilence): return false
        case (.slot, .retransmissions), (.repair, .data), (.repair, .clockSamples), (.repair, .suspicions): return false
        default: return true
        }
    }

    private static func validateDataBatch(_ body: UnsafeRawBufferPointer, count: Int, code: UInt16) throws(WireError) {
        var offset = 0
        for _ in 0..<count {
            guard body.count - offset >= Wire.messageHeaderBytes else {
                throw .entryCountMismatch(section: code, declaredEntries: count)
            }
            let length = Int(body.u32(offset + 8))
            offset += Wire.messageHeaderBytes
            guard length <= body.count - offset else { throw .entryCountMismatch(section: code, declaredEntries: count) }
            offset += length
        }
        guard offset == body.count else { throw .entryCountMismatch(section: code, declaredEntries: count) }
    }

    private static func validateFixed(
        _ body: UnsafeRawBufferPointer, count: Int, stride: Int, code: UInt16,
        _ check: (UnsafeRawBufferPointer, Int) throws(WireError) -> Void
    ) throws(WireError) {
        guard body.count == count * stride else { throw .entryCountMismatch(section: code, declaredEntries: count) }
        var offset = 0
        while offset < body.count {
            try check(body, offset)
            offset += stride
        }
    }

    /// Positions, suspicions and clock samples share one entry layout: rank,
    /// a reserved field that must be zero, a 64-bit value.
    private static func validateRankEntries(_ body: UnsafeRawBufferPointer, count: Int, code: UInt16) throws(WireError) {
        try validateFixed(body, count: count, stride: Wire.rankEntryBytes, code: code) { b, o throws(WireError) in
            guard b.u16(o + 2) == 0 else { throw .reservedFieldNotZero }
        }
    }

    private static func validateRetransmissions(_ body: UnsafeRawBufferPointer, count: Int, code: UInt16) throws(WireError) {
        var offset = 0
        for _ in 0..<count {
            guard body.count - offset >= Wire.retransmissionEntryHeaderBytes else {
                throw .entryCountMismatch(section: code, declaredEntries: count)
            }
            let length = Int(body.u32(offset))
            offset += Wire.retransmissionEntryHeaderBytes
            guard length <= body.count - offset else { throw .entryCountMismatch(section: code, declaredEntries: count) }
            let inner = UnsafeRawBufferPointer(rebasing: body[offset..<(offset + length)])
            do { _ = try decode(inner, embedded: true) } catch { throw .malformedEmbeddedFrame }
            offset += length
        }
        guard offset == body.count else { throw .entryCountMismatch(section: code, declaredEntries: count) }
    }
}

// MARK: - Sequences over validated sections

/// The messages of a data batch. Iterating never reads outside the batch: it
/// stops early if the bytes do not hold `count` well-formed entries.
public struct MessageSequence: Sequence {
    let batch: UnsafeRawBufferPointer
    let count: Int

    /// A sequence over batch entries kept from a frame that ``FrameView/decode(_:)``
    /// validated (see ``FrameView/dataBatchBytes``).
    public init(validatedBatch: UnsafeRawBufferPointer, count: Int) {
        self.batch = validatedBatch
        self.count = count
    }

    public struct Iterator: IteratorProtocol {
        let batch: UnsafeRawBufferPointer
        var remaining: Int
        var offset = 0

        public mutating func next() -> WireMessage? {
            guard remaining > 0, batch.count - offset >= Wire.messageHeaderBytes else { return nil }
            let sequence = batch.u64(offset)
            let length = Int(batch.u32(offset + 8))
            let start = offset + Wire.messageHeaderBytes
            guard length <= batch.count - start else { return nil }
            offset = start + length
            remaining -= 1
            return WireMessage(sequence: sequence, payload: UnsafeRawBufferPointer(rebasing: batch[start..<offset]))
        }
    }

    public func makeIterator() -> Iterator { Iterator(batch: batch, remaining: count) }
}

/// Entries of a fixed-stride section.
public struct FixedEntrySequence<Element>: Sequence {
    let section: UnsafeRawBufferPointer
    let stride: Int
    let read: (UnsafeRawBufferPointer, Int) -> Element

    init(_ section: UnsafeRawBufferPointer?, stride: Int, read: @escaping (UnsafeRawBufferPointer, Int) -> Element) {
        self.section = section ?? UnsafeRawBufferPointer(start: nil, count: 0)
        self.stride = stride
        self.read = read
    }

    /// Number of entries.
    public var count: Int { section.count / stride }

    public struct Iterator: IteratorProtocol {
        let sequence: FixedEntrySequence
        var offset = 0
        public mutating func next() -> Element? {
            guard sequence.section.count - offset >= sequence.stride else { return nil }
            defer { offset += sequence.stride }
            return sequence.read(sequence.section, offset)
        }
    }

    public func makeIterator() -> Iterator { Iterator(sequence: self) }
}

/// The embedded frames of a retransmission section, as raw frame bytes.
public struct EmbeddedFrameSequence: Sequence {
    let section: UnsafeRawBufferPointer
    let count: Int

    public struct Iterator: IteratorProtocol {
        let section: UnsafeRawBufferPointer
        var remaining: Int
        var offset = 0
        public mutating func next() -> UnsafeRawBufferPointer? {
            guard remaining > 0, section.count - offset >= Wire.retransmissionEntryHeaderBytes else { return nil }
            let length = Int(section.u32(offset))
            let start = offset + Wire.retransmissionEntryHeaderBytes
            guard length <= section.count - start else { return nil }
            offset = start + length
            remaining -= 1
            return UnsafeRawBufferPointer(rebasing: section[start..<offset])
        }
    }

    public func makeIterator() -> Iterator { Iterator(section: section, remaining: count) }
}

// MARK: - Little-endian access (callers check bounds first)

extension UnsafeRawBufferPointer {
    @inline(__always) func u8(_ offset: Int) -> UInt8 { self[offset] }
    @inline(__always) func u16(_ offset: Int) -> UInt16 {
        UInt16(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }
    @inline(__always) func u32(_ offset: Int) -> UInt32 {
        UInt32(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }
    @inline(__always) func u64(_ offset: Int) -> UInt64 {
        UInt64(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }
}
