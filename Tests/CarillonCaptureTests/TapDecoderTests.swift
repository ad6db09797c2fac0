import CarillonAuth
import CarillonCapture
import CarillonSchedule
import CarillonWire
import Foundation
import Testing

let tapKey = try! FrameAuthenticator(hexKey: String(repeating: "5e", count: 32))

func text(_ decoder: TapDecoder) -> String { String(decoding: decoder.output.bytes, as: UTF8.self) }

@Suite("carillon-tap decoding")
struct TapDecoderTests {
    let sample = SampleTraffic(members: 3, messagesPerFrame: 2, payloadBytes: 20, authenticator: tapKey)

    @Test func aSlotFrameIsOneLineWithItsFields() {
        var decoder = TapDecoder(format: .line, authenticator: tapKey)
        let frame = sample.slotFrame(round: 1_000_167, rank: 2, sequence: 7, timestampNanos: 5)  // 1000167 = 97 · 10311: it NAKs
        sample.packet(udpPayload: frame, rank: 2).withUnsafeBytes {
            decoder.packet(timestampNanos: 3_723_000_004_000, linkType: LinkType.ethernet.rawValue, bytes: $0)
        }
        let line = text(decoder)
        #expect(line.hasPrefix("01:02:03.000004 10.77.0.3:7400 slot e=1 r=1000167 s=2 msgs=2 bytes=40 acks=0:1000165,1:1000165,2:1000165"), "\(line)")
        #expect(line.contains("naks=0:1000164-1000164"), "\(line)")
        #expect(line.hasSuffix(" auth=ok\n"), "\(line)")
        #expect(decoder.statistics.frames == 1)
    }

    @Test func aFrameUnderAnotherKeyIsBadTagAndUntaggedIsNoTag() throws {
        let other = try FrameAuthenticator(hexKey: String(repeating: "11", count: 32))
        var decoder = TapDecoder(format: .line, authenticator: other)
        sample.slotFrame(round: 5, rank: 0, sequence: 1, timestampNanos: 0).withUnsafeBytes {
            decoder.frame(timestampNanos: 0, source: nil, payload: $0)
        }
        let untagged = SampleTraffic(members: 3).slotFrame(round: 5, rank: 1, sequence: 1, timestampNanos: 0)
        untagged.withUnsafeBytes { decoder.frame(timestampNanos: 0, source: nil, payload: $0) }
        let lines = text(decoder).split(separator: "\n")
        #expect(lines.count == 2)
        #expect(lines[0].hasSuffix("auth=bad-tag"))
        #expect(lines[1].hasSuffix("auth=no-tag"))
        #expect(decoder.statistics.members.values.reduce(0) { $0 + $1.badTags } == 1)
        #expect(decoder.statistics.members.values.reduce(0) { $0 + $1.missingTags } == 1)
    }

    @Test func malformedAndTruncatedInputIsReportedWithTheReasonNeverACrash() {
        var decoder = TapDecoder(format: .line, authenticator: nil)
        var frame = sample.slotFrame(round: 9, rank: 1, sequence: 1, timestampNanos: 0)
        // Every prefix of a frame, and every single-byte corruption of its header.
        for length in 0..<frame.count {
            frame.withUnsafeBytes { decoder.frame(timestampNanos: 0, source: nil, payload: UnsafeRawBufferPointer(rebasing: $0[0..<length])) }
        }
        for i in 0..<40 {
            var copy = frame
            copy[i] ^= 0xFF
            copy.withUnsafeBytes { decoder.frame(timestampNanos: 0, source: nil, payload: $0) }
        }
        #expect(decoder.statistics.framesMalformed >= frame.count)
        let output = text(decoder)
        #expect(output.contains("malformed frame (0 bytes): "))
        #expect(output.contains("truncated"))
        // Packets that are not UDP or are cut short at each layer.
        let packet = sample.packet(udpPayload: frame, rank: 1)
        for length in [0, 10, 20, 40] {
            packet.withUnsafeBytes { decoder.packet(timestampNanos: 0, linkType: 1, bytes: UnsafeRawBufferPointer(rebasing: $0[0..<length])) }
        }
        frame[0] = 0
        _ = frame
        #expect(decoder.statistics.packetsNotUDP == 4)
        #expect(text(decoder).contains("Ethernet header truncated"))
    }

    @Test func jsonLinesCarryTheSameFields() throws {
        var decoder = TapDecoder(format: .json, authenticator: nil)
        sample.slotFrame(round: 42, rank: 1, sequence: 3, timestampNanos: 0).withUnsafeBytes {
            decoder.frame(timestampNanos: 77, source: SocketAddress(address: 0x0A00_0001, port: 7400), payload: $0)
        }
        let object = try JSONSerialization.jsonObject(with: Data(decoder.output.bytes)) as? [String: Any]
        #expect(object?["round"] as? Int == 42)
        #expect(object?["slot"] as? Int == 1)
        #expect(object?["messages"] as? Int == 2)
        #expect(object?["src"] as? String == "10.0.0.1:7400")
        #expect(object?["auth"] as? String == "unchecked")
        #expect(object?["s"] as? Int == 0 && object?["ns"] as? Int == 77)
        #expect(object?["silent"] is [Any] && object?["suspects"] is [Any])
    }

    /// Forged frames with extreme rounds, from the same sender, never trap the statistics.
    @Test func extremeRoundsAreCountedNotFatal() throws {
        var statistics = TapStatistics(schedule: try CarillonSchedule.TDMASchedule(memberCount: 3, roundPeriodNanos: 100_000, reservation: 0.5))
        statistics.linkBitsPerSecond = 1e9
        var decoder = TapDecoder(format: .quiet, authenticator: nil, statistics: statistics)
        let plain = SampleTraffic(members: 3, messagesPerFrame: 0)
        for round in [UInt64.max, UInt64.max, 0, 5, UInt64.max - 1, 7, 1 << 63] + Array(UInt64(10)..<UInt64(2_200)) {
            plain.slotFrame(round: round, rank: 1, sequence: 1, timestampNanos: 0).withUnsafeBytes {
                decoder.frame(timestampNanos: UInt64.max, source: nil, payload: $0)
            }
        }
        decoder.statistics.settle()
        #expect(decoder.statistics.frames == 7 + 2_190)
        #expect(decoder.statistics.members.values.first?.gapRounds ?? -1 < 1_000_000)
    }

    /// Link layers and IP oddities: Linux cooked with a VLAN tag, a UDP length
    /// beyond the IP datagram, a first fragment.
    @Test func linkLayersAndIPOddities() {
        let frame = sample.slotFrame(round: 3, rank: 0, sequence: 1, timestampNanos: 0)
        let ethernet = sample.packet(udpPayload: frame, rank: 0)
        let ip = Array(ethernet.dropFirst(14))
        // Linux cooked v1 with the VLAN tag libpcap restores after it.
        var cooked: [UInt8] = [0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x81, 0x00]
        cooked += [0, 5, 0x08, 0x00] + ip
        var decoder = TapDecoder(format: .line, authenticator: nil)
        cooked.withUnsafeBytes { decoder.packet(timestampNanos: 0, linkType: LinkType.linuxSLL.rawValue, bytes: $0) }
        ip.withUnsafeBytes { decoder.packet(timestampNanos: 0, linkType: LinkType.raw.rawValue, bytes: $0) }
        #expect(decoder.statistics.frames == 2)
        var longUDP = ethernet
        longUDP[14 + 20 + 4] = 0xFF  // UDP length far beyond the IP datagram
        var fragment = ethernet
        fragment[14 + 6] = 0x20  // more fragments
        for packet in [longUDP, fragment] { packet.withUnsafeBytes { decoder.packet(timestampNanos: 0, linkType: 1, bytes: $0) } }
        #expect(decoder.statistics.packetsNotUDP == 2)
        let output = text(decoder)
        #expect(output.contains("exceeds the IPv4 datagram"))
        #expect(output.contains("first IPv4 fragment"))
    }
}
