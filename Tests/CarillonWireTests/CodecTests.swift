import Testing
@testable import CarillonWire

/// Builds a frame with every section kind a slot frame allows.
func sampleSlotFrame(tagLength: Int = 0, payloads: [[UInt8]] = [[1, 2, 3], [], Array(repeating: 0xAB, count: 64)]) -> [UInt8] {
    var buffer = [UInt8](repeating: 0xEE, count: 4096)
    let length = buffer.withUnsafeMutableBytes { raw -> Int in
        var encoder = try! FrameEncoder(
            buffer: raw,
            header: FrameHeader(kind: .slot, senderRank: 2, epoch: 7, round: 1234, senderTimestampNanos: 99))
        try! encoder.beginSection(.data)
        for (i, payload) in payloads.enumerated() {
            try! payload.withUnsafeBytes { try encoder.appendMessage(sequence: UInt64(10 + i), payload: $0) }
        }
        try! encoder.endSection()
        try! encoder.beginSection(.positions)
        try! encoder.appendPosition(PositionEntry(rank: 2, receivedBelowRound: 1200))
        try! encoder.endSection()
        try! encoder.beginSection(.naks)
        try! encoder.appendNak(NakRange(rank: 0, firstRound: 1100, lastRound: 1105))
        try! encoder.appendNak(NakRange(rank: 1, firstRound: 1190, lastRound: 1190))
        try! encoder.endSection()
        try! encoder.beginSection(.silentRounds)
        try! encoder.appendSilent(SilentRange(firstRound: 1230, lastRound: 1233))
        try! encoder.endSection()
        return try! encoder.finish(tagLength: tagLength)
    }
    return Array(buffer[..<length])
}

func decode(_ bytes: [UInt8]) -> Result<FrameHeader, WireError> {
    bytes.withUnsafeBytes { raw in
        do throws(WireError) { return .success(try FrameView.decode(raw).header) } catch { return .failure(error) }
    }
}

@Suite("Wire codec")
struct CodecTests {
    @Test func roundTripsEverySection() throws {
        let frame = sampleSlotFrame()
        try frame.withUnsafeBytes { raw in
            let view = try FrameView.decode(raw)
            #expect(view.header.kind == .slot)
            #expect(view.header.senderRank == 2)
            #expect(view.header.epoch == 7)
            #expect(view.header.round == 1234)
            #expect(view.header.senderTimestampNanos == 99)
            #expect(view.header.sectionCount == 4)
            #expect(view.header.tagLength == 0)
            #expect(view.messageCount == 3)
            let messages = Array(view.messages)
            #expect(messages.map(\.sequence) == [10, 11, 12])
            #expect(messages.map { Array($0.payload) } == [[1, 2, 3], [], Array(repeating: 0xAB, count: 64)])
            #expect(Array(view.positionEntries) == [PositionEntry(rank: 2, receivedBelowRound: 1200)])
            #expect(
                Array(view.nakRanges) == [
                    NakRange(rank: 0, firstRound: 1100, lastRound: 1105),
                    NakRange(rank: 1, firstRound: 1190, lastRound: 1190)
                ])
            #expect(Array(view.silentRanges) == [SilentRange(firstRound: 1230, lastRound: 1233)])
            #expect(Array(view.embeddedFrames).isEmpty)
        }
    }

    @Test func headerIsLittleEndianAtDocumentedOffsets() {
        let frame = sampleSlotFrame()
        #expect(Array(frame[0..<4]) == [0x43, 0x52, 0x4C, 0x4E])  // "CRLN"
        #expect(frame[4] == 1)  // version
        #expect(frame[5] == 1)  // kind: slot
        #expect(Array(frame[8..<10]) == [2, 0])  // sender rank
        #expect(Array(frame[16..<20]) == [7, 0, 0, 0])  // epoch
        #expect(Array(frame[24..<32]) == [0xD2, 0x04, 0, 0, 0, 0, 0, 0])  // round 1234
        #expect(frame.count == Wire.headerBytes + Int(frame[12]) + Int(frame[13]) << 8)
    }

    @Test func tagSpaceIsReservedAndFlagged() throws {
        let frame = sampleSlotFrame(tagLength: 16)
        try frame.withUnsafeBytes { raw in
            let view = try FrameView.decode(raw)
            #expect(view.header.flags.contains(.authenticated))
            #expect(view.tag.count == 16)
            #expect(view.tag.allSatisfy { $0 == 0 })
            #expect(view.authenticatedBytes.count == frame.count - 16)
        }
    }

    @Test func repairFrameCarriesEmbeddedFrames() throws {
        let inner = sampleSlotFrame(payloads: [[9, 9]])
        // Strip the sections a retransmitted frame does not need: rebuild with data only.
        var buffer = [UInt8](repeating: 0, count: 4096)
        let length = buffer.withUnsafeMutableBytes { raw -> Int in
            var encoder = try! FrameEncoder(
                buffer: raw, header: FrameHeader(kind: .repair, senderRank: 2, epoch: 7, round: 1300, senderTimestampNanos: 5))
            try! encoder.beginSection(.retransmissions)
            var embedded = try! encoder.beginEmbeddedFrame(
                header: FrameHeader(kind: .slot, senderRank: 2, epoch: 7, round: 1234, senderTimestampNanos: 0))
            try! embedded.beginSection(.data)
            try! [UInt8]([9, 9]).withUnsafeBytes { try embedded.appendMessage(sequence: 10, payload: $0) }
            try! embedded.endSection()
            try! encoder.endEmbeddedFrame(embedded)
            try! encoder.endSection()
            return try! encoder.finish(tagLength: 0)
        }
        _ = inner
        let frame = Array(buffer[..<length])
        try frame.withUnsafeBytes { raw in
            let view = try FrameView.decode(raw)
            #expect(view.header.kind == .repair)
            let embedded = Array(view.embeddedFrames)
            #expect(embedded.count == 1)
            let innerView = try FrameView.decode(embedded[0])
            #expect(innerView.header.round == 1234)
            #expect(Array(innerView.messages).map { Array($0.payload) } == [[9, 9]])
        }
    }

    @Test func everyPrefixIsRejectedWithoutTrapping() {
        let frame = sampleSlotFrame(tagLength: 8)
        for length in 0..<frame.count {
            guard case .failure(let error) = decode(Array(frame[..<length])) else {
                Issue.record("prefix of \(length) bytes decoded")
                continue
            }
            if length < Wire.headerBytes {
                #expect(error == .truncated(needed: Wire.headerBytes, available: length))
            } else {
                #expect(error == .truncated(needed: frame.count, available: length))
            }
        }
    }

    @Test func trailingBytesAreRejected() {
        #expect(
            decode(sampleSlotFrame() + [0]) == .failure(.frameLengthMismatch(declared: sampleSlotFrame().count, actual: sampleSlotFrame().count + 1)))
    }

    @Test func headerFieldErrors() {
        var frame = sampleSlotFrame()
        frame[0] = 0
        #expect(decode(frame) == .failure(.badMagic(0x4E4C_5200)))
        frame = sampleSlotFrame(); frame[4] = 2
        #expect(decode(frame) == .failure(.unsupportedVersion(2)))
        frame = sampleSlotFrame(); frame[5] = 4
        #expect(decode(frame) == .failure(.unknownFrameKind(4)))
        frame = sampleSlotFrame(); frame[6] = 0x02
        #expect(decode(frame) == .failure(.unknownFlags(0x02)))
        frame = sampleSlotFrame(); frame[22] = 1
        #expect(decode(frame) == .failure(.reservedFieldNotZero))
        frame = sampleSlotFrame(); frame[20] = 4  // tag length without the flag
        #expect(decode(frame) == .failure(.badTag(tagLength: 4)))
        frame = sampleSlotFrame(); frame[15] = 0xFF  // body length ~4 GB
        #expect(decode(frame) == .failure(.lengthOverflow))
        frame = sampleSlotFrame(); frame[10] = 5  // five sections declared, four present
        #expect(decode(frame) == .failure(.sectionCountMismatch(declared: 5, found: 4)))
        frame = sampleSlotFrame(); frame[10] = 3
        #expect(decode(frame) == .failure(.sectionCountMismatch(declared: 3, found: 4)))
    }

    @Test func sectionErrors() {
        let base = sampleSlotFrame()
        let data = Wire.headerBytes  // first section: data
        var frame = base
        frame[data + 2] = 4  // four messages declared, three present
        #expect(decode(frame) == .failure(.entryCountMismatch(section: 1, declaredEntries: 4)))
        frame = base
        frame[data] = 0x77  // unknown, not skippable
        #expect(decode(frame) == .failure(.unknownSectionKind(0x77)))
        frame = base
        frame[data + 1] = 0x80  // unknown kind 0x8001 with the skippable bit: skipped
        #expect((try? decode(frame).get()) != nil)
        frame = base
        frame[data] = 2  // data section relabelled "positions": its length is not a multiple of 12
        #expect(decode(frame) == .failure(.entryCountMismatch(section: 2, declaredEntries: 3)))
        frame = base
        frame[5] = FrameKind.repair.rawValue  // a data section in a repair frame
        #expect(decode(frame) == .failure(.sectionNotAllowed(section: 1, kind: 2)))
    }

    @Test func encoderRefusesToOverrunItsBuffer() {
        var buffer = [UInt8](repeating: 0, count: 60)
        buffer.withUnsafeMutableBytes { raw in
            var encoder = try! FrameEncoder(buffer: raw, header: FrameHeader(kind: .slot, senderRank: 0, epoch: 1, round: 0, senderTimestampNanos: 0))
            try! encoder.beginSection(.data)
            let payload = [UInt8](repeating: 1, count: 32)
            #expect(throws: WireError.bufferTooSmall(needed: 48 + 12 + 32, available: 60)) {
                try payload.withUnsafeBytes { try encoder.appendMessage(sequence: 1, payload: $0) }
            }
            #expect(throws: WireError.encoderMisuse) { _ = try encoder.finish() }
        }
        var tiny = [UInt8](repeating: 0, count: 10)
        tiny.withUnsafeMutableBytes { raw in
            #expect(throws: WireError.bufferTooSmall(needed: 40, available: 10)) {
                _ = try FrameEncoder(buffer: raw, header: FrameHeader(kind: .slot, senderRank: 0, epoch: 1, round: 0, senderTimestampNanos: 0))
            }
        }
    }

    /// Every single-byte change to a valid frame either decodes or returns an
    /// error: no trap, no read outside the buffer (ASan in the fuzz build checks
    /// the latter; here it is the absence of a crash).
    @Test func singleByteMutationsNeverTrap() {
        let frame = sampleSlotFrame(tagLength: 4)
        var decoded = 0, rejected = 0
        for index in frame.indices {
            for value: UInt8 in [0x00, 0x01, 0x7F, 0x80, 0xFF] where frame[index] != value {
                var mutated = frame
                mutated[index] = value
                switch decode(mutated) {
                case .success: decoded += 1
                case .failure: rejected += 1
                }
            }
        }
        #expect(rejected > 0)
        #expect(decoded > 0)  // payload bytes and free fields may change freely
    }
}
