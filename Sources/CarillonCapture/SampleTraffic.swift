import CPcap
import CarillonAuth
import CarillonWire

/// Synthetic bus traffic as Ethernet/IPv4/UDP packets: slot frames of
/// `members` senders round after round, with messages, positions and now and
/// then a NAK, sealed when a key is given. For tests, the dissector check and
/// the decode-rate benchmark; a real capture is better for anything else.
public struct SampleTraffic {
    public var members: Int
    public var messagesPerFrame: Int
    public var payloadBytes: Int
    public var authenticator: FrameAuthenticator?
    public var port: UInt16 = 7400
    public var roundPeriodNanos: UInt64 = 100_000
    /// Rounds on the realtime timebase, as a running bus numbers them (this one is in November 2026).
    public var firstRound: UInt64 = 17_950_000_000_000

    public init(members: Int = 3, messagesPerFrame: Int = 2, payloadBytes: Int = 64, authenticator: FrameAuthenticator? = nil) {
        self.members = max(1, members)
        self.messagesPerFrame = messagesPerFrame
        self.payloadBytes = payloadBytes
        self.authenticator = authenticator
    }

    /// The UDP payload of sender `rank`'s slot frame for `round` (sequence numbers continue from `sequence`).
    public func slotFrame(round: UInt64, rank: Int, sequence: UInt64, timestampNanos: UInt64) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 64 + messagesPerFrame * (payloadBytes + 16) + members * 12 + 64 + 16)
        let tagLength = authenticator == nil ? 0 : FrameAuthenticator.tagBytes
        let length: Int = buffer.withUnsafeMutableBytes { raw in
            do {
                var encoder = try FrameEncoder(buffer: raw, header: FrameHeader(
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
        if let authenticator { buffer.withUnsafeMutableBytes { authenticator.seal($0) } }
        return buffer
    }

    /// `payload` in Ethernet, IPv4 (10.77.0.<rank+1> → 10.77.0.255) and UDP headers.
    public func packet(udpPayload payload: [UInt8], rank: Int) -> [UInt8] {
        var p: [UInt8] = []
        p.reserveCapacity(42 + payload.count)
        p += [0x02, 0, 0, 0, 0, 0xFF, 0x02, 0, 0, 0, 0, UInt8(truncatingIfNeeded: rank + 1), 0x08, 0x00]
        let total = 20 + 8 + payload.count
        var ip: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0, 0, 0x40, 0, 64, 17, 0, 0,
                           10, 77, 0, UInt8(truncatingIfNeeded: rank + 1), 10, 77, 0, 255]
        var sum: UInt32 = 0
        for i in stride(from: 0, to: 20, by: 2) { sum += UInt32(ip[i]) << 8 | UInt32(ip[i + 1]) }
        while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
        let checksum = ~UInt16(sum)
        ip[10] = UInt8(checksum >> 8); ip[11] = UInt8(checksum & 0xFF)
        p += ip
        let udpLength = 8 + payload.count
        p += [UInt8(port >> 8), UInt8(port & 0xFF), UInt8(port >> 8), UInt8(port & 0xFF),
              UInt8(udpLength >> 8), UInt8(udpLength & 0xFF), 0, 0]
        p += payload
        return p
    }

    /// Writes `rounds` rounds of every member's slot frame to a pcap file;
    /// returns the number of packets written.
    @discardableResult
    public func write(rounds: Int, to path: String) throws(CaptureError) -> Int {
        let writer = try PacketCapture.writer(linkType: LinkType.ethernet.rawValue, path: path)
        var written = 0
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
