import CPcap
import CarillonAuth
import CarillonWire

/// Synthetic bus traffic as Ethernet/IPv4/UDP packets: slot frames of
/// `members` senders round after round, with messages, positions and now and
/// then a NAK, and (in ``write(rounds:to:)``) one membership frame first that
/// names the run. Sealed, when a key is given, as a running bus seals them:
/// slot frames under the run's key (`authenticator.bound(toRun: run)`),
/// membership frames under the cluster key. For tests, the dissector check
/// and the decode-rate benchmark; a real capture is better for anything else.
public struct SampleTraffic {
    public var members: Int
    public var messagesPerFrame: Int
    public var payloadBytes: Int
    /// The cluster key (nil: frames without tags).
    public var authenticator: FrameAuthenticator? { didSet { deriveRunKey() } }
    /// The run identity: a running bus's is its first view's start time in
    /// nanoseconds; the default is this sample's first round's start.
    public var run: UInt64 = 17_950_000_000_000 * 100_000 { didSet { deriveRunKey() } }
    /// The key slot frames are sealed under: the cluster key bound to ``run``.
    public private(set) var runAuthenticator: FrameAuthenticator?
    /// Whether ``write(rounds:to:)`` starts with a membership frame naming the run (a decoder learns the run from it).
    public var includesMembershipFrame = true
    public var port: UInt16 = 7400
    public var roundPeriodNanos: UInt64 = 100_000
    /// Rounds on the realtime timebase, as a running bus numbers them (this one is in November 2026).
    public var firstRound: UInt64 = 17_950_000_000_000

    public init(members: Int = 3, messagesPerFrame: Int = 2, payloadBytes: Int = 64, authenticator: FrameAuthenticator? = nil) {
        self.members = max(1, members)
        self.messagesPerFrame = messagesPerFrame
        self.payloadBytes = payloadBytes
        self.authenticator = authenticator
        deriveRunKey()
    }

    mutating func deriveRunKey() { runAuthenticator = authenticator?.bound(toRun: run) }

    /// The UDP payload of a membership frame from `node` about epoch 1, as a
    /// member changing the view sends it: fields `incarnation` and `run`
    /// (both ``run``, a first-view member's), sealed under the cluster key.
    public func membershipFrame(round: UInt64, node: Int, timestampNanos: UInt64) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 256)
        let length: Int = buffer.withUnsafeMutableBytes { raw in
            do {
                var encoder = try FrameEncoder(
                    buffer: raw,
                    header: FrameHeader(
                        kind: .membership, senderRank: UInt16(node), epoch: 1, round: round, senderTimestampNanos: timestampNanos))
                try encoder.beginSection(.viewFields)
                try encoder.appendEntry(RankEntry(rank: ViewField.incarnation.rawValue, value: run))
                try encoder.appendEntry(RankEntry(rank: ViewField.run.rawValue, value: run))
                try encoder.endSection()
                return try encoder.finish(tagLength: authenticator == nil ? 0 : FrameAuthenticator.tagBytes)
            } catch {
                preconditionFailure("the sample membership frame fits its buffer: \(error)")
            }
        }
        buffer.removeLast(buffer.count - length)
        if let authenticator { buffer.withUnsafeMutableBytes { authenticator.seal($0) } }
        return buffer
    }

    /// The UDP payload of sender `rank`'s slot frame for `round` (sequence numbers continue from `sequence`).
    public func slotFrame(round: UInt64, rank: Int, sequence: UInt64, timestampNanos: UInt64) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 64 + messagesPerFrame * (payloadBytes + 16) + members * 12 + 64 + 16)
        let tagLength = authenticator == nil ? 0 : FrameAuthenticator.tagBytes
        let length: Int = buffer.withUnsafeMutableBytes { raw in
            do {
                var encoder = try FrameEncoder(
                    buffer: raw,
                    header: FrameHeader(
                        kind: .slot, senderRank: UInt16(rank), epoch: 1, round: round, senderTimestampNanos: timestampNanos))
                if messagesPerFrame > 0 {
                    try encoder.beginSection(.data)
                    let payload = UnsafeMutableRawBufferPointer.allocate(byteCount: payloadBytes, alignment: 1)
                    defer { payload.deallocate() }
                    payload.initializeMemory(as: UInt8.self, repeating: UInt8(truncatingIfNeeded: rank &+ 0x41))
                    for i in 0..<messagesPerFrame {
                        try encoder.appendMessage(sequence: sequence + UInt64(i), payload: UnsafeRawBufferPointer(payload))
                    }
                    try encoder.endSection()
                }
                try encoder.beginSection(.positions)
                for r in 0..<members { try encoder.appendPosition(PositionEntry(rank: UInt16(r), receivedBelowRound: round &- 2)) }
                try encoder.endSection()
                if round % 97 == 0 {
                    try encoder.beginSection(.naks)
                    try encoder.appendNak(NakRange(rank: UInt16((rank + 1) % members), firstRound: round &- 3, lastRound: round &- 3))
                    try encoder.endSection()
                }
                return try encoder.finish(tagLength: tagLength)
            } catch {
                preconditionFailure("the sample frame fits its buffer: \(error)")
            }
        }
        buffer.removeLast(buffer.count - length)
        if let runAuthenticator { buffer.withUnsafeMutableBytes { runAuthenticator.seal($0) } }
        return buffer
    }

    /// `payload` in Ethernet, IPv4 (10.77.0.<rank+1> → 10.77.0.255) and UDP headers.
    public func packet(udpPayload payload: [UInt8], rank: Int) -> [UInt8] {
        var p: [UInt8] = []
        p.reserveCapacity(42 + payload.count)
        p += [0x02, 0, 0, 0, 0, 0xFF, 0x02, 0, 0, 0, 0, UInt8(truncatingIfNeeded: rank + 1), 0x08, 0x00]
        let total = 20 + 8 + payload.count
        var ip: [UInt8] = [
            0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0, 0, 0x40, 0, 64, 17, 0, 0,
            10, 77, 0, UInt8(truncatingIfNeeded: rank + 1), 10, 77, 0, 255
        ]
        var sum: UInt32 = 0
        for i in stride(from: 0, to: 20, by: 2) { sum += UInt32(ip[i]) << 8 | UInt32(ip[i + 1]) }
        while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
        let checksum = ~UInt16(sum)
        ip[10] = UInt8(checksum >> 8); ip[11] = UInt8(checksum & 0xFF)
        p += ip
        let udpLength = 8 + payload.count
        p += [
            UInt8(port >> 8), UInt8(port & 0xFF), UInt8(port >> 8), UInt8(port & 0xFF),
            UInt8(udpLength >> 8), UInt8(udpLength & 0xFF), 0, 0
        ]
        p += payload
        return p
    }

    /// Writes a membership frame from node 0 naming the run (unless
    /// ``includesMembershipFrame`` is false), then `rounds` rounds of every
    /// member's slot frame, to a pcap file; returns the number of packets written.
    @discardableResult
    public func write(rounds: Int, to path: String) throws(CaptureError) -> Int {
        let writer = try PacketCapture.writer(linkType: LinkType.ethernet.rawValue, path: path)
        var written = 0
        if includesMembershipFrame {
            let time = firstRound * roundPeriodNanos + 1_000
            let bytes = packet(udpPayload: membershipFrame(round: firstRound, node: 0, timestampNanos: time), rank: 0)
            bytes.withUnsafeBytes { writer.dump(timestampNanos: time, bytes: $0) }
            written += 1
        }
        for i in 0..<rounds {
            let round = firstRound + UInt64(i)
            for rank in 0..<members {
                // On the schedule: each member a little into its slot (reservation 0.5).
                let time = round * roundPeriodNanos + UInt64(rank) * roundPeriodNanos / UInt64(2 * members) + 2_000
                let frame = slotFrame(round: round, rank: rank, sequence: UInt64(i * messagesPerFrame + 1), timestampNanos: time)
                let bytes = packet(udpPayload: frame, rank: rank)
                bytes.withUnsafeBytes { writer.dump(timestampNanos: time, bytes: $0) }
                written += 1
            }
        }
        writer.flush()
        return written
    }
}

extension PacketCapture {
    /// Flushes the writer opened by ``write(to:)``.
    public func flush() { if let dumper { pcap_dump_flush(dumper) } }
}
