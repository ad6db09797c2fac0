import CarillonAuth
import CarillonCapture
import CarillonWire
import Foundation
import Testing

/// Runs `executable` to its end: its exit status, standard output and standard error.
func runProcess(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String, errors: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let output = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    let errors = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, output, errors)
}

func temporaryPath(_ name: String) -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("carillon-tap-\(getpid())-\(name)").path
}

@Suite("carillon-tap with pcap files")
struct CaptureFileTests {
    /// A capture with good, malformed, truncated, unauthenticated and foreign
    /// packets, written through libpcap and read back: every kind is counted
    /// as what it is, and the good frames are all there.
    @Test func aMixedCaptureDecodesToTheRightCounts() throws {
        let path = temporaryPath("mixed.pcap")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let sample = SampleTraffic(members: 3, messagesPerFrame: 1, payloadBytes: 32, authenticator: tapKey)
        let unkeyed = SampleTraffic(members: 3, messagesPerFrame: 1, payloadBytes: 32)
        do {
            let writer = try PacketCapture.writer(linkType: LinkType.ethernet.rawValue, path: path)
            func put(_ bytes: [UInt8], _ t: UInt64) { bytes.withUnsafeBytes { writer.dump(timestampNanos: t, bytes: $0) } }
            for round in UInt64(100)..<UInt64(130) {
                for rank in 0..<3 {
                    put(sample.packet(udpPayload: sample.slotFrame(round: round, rank: rank, sequence: round, timestampNanos: 0), rank: rank), round)
                }
            }
            var broken = sample.slotFrame(round: 200, rank: 0, sequence: 1, timestampNanos: 0)
            broken[0] ^= 0xFF  // bad magic
            put(sample.packet(udpPayload: broken, rank: 0), 1)
            let whole = sample.slotFrame(round: 201, rank: 1, sequence: 1, timestampNanos: 0)
            put(sample.packet(udpPayload: Array(whole.prefix(30)), rank: 1), 2)  // truncated frame
            put(unkeyed.packet(udpPayload: unkeyed.slotFrame(round: 202, rank: 2, sequence: 1, timestampNanos: 0), rank: 2), 3)
            var forged = sample.slotFrame(round: 203, rank: 2, sequence: 1, timestampNanos: 0)
            forged[forged.count - 1] ^= 1  // the tag no longer matches
            put(sample.packet(udpPayload: forged, rank: 2), 4)
            put(Array(sample.packet(udpPayload: whole, rank: 1).prefix(20)), 5)  // cut inside the IPv4 header
            writer.flush()
        }
        let capture = try PacketCapture.offline(path: path)
        #expect(capture.linkType == LinkType.ethernet.rawValue)
        var decoder = TapDecoder(format: .line, authenticator: tapKey, runs: [sample.run])
        let read = try capture.run { packet, bytes in
            decoder.packet(timestampNanos: packet.timestampNanos, linkType: capture.linkType, bytes: bytes)
            return true
        }
        #expect(read == 90 + 5)
        let stats = decoder.statistics
        #expect(stats.frames == 92)  // 90 good + the unkeyed + the forged (both decode; their tags fail)
        #expect(stats.framesMalformed == 2)
        #expect(stats.packetsNotUDP == 1)
        #expect(stats.members.values.reduce(0) { $0 + $1.missingTags } == 1)
        #expect(stats.members.values.reduce(0) { $0 + $1.badTags } == 1)
        #expect(stats.members.values.reduce(0) { $0 + $1.slotFrames } == 92)
        let lines = String(decoding: decoder.output.bytes, as: UTF8.self).split(separator: "\n")
        #expect(lines.filter { $0.hasSuffix("auth=ok") }.count == 90)
        #expect(lines.contains { $0.contains("malformed frame") && $0.contains("badMagic") })
        #expect(lines.contains { $0.contains("IPv4 header truncated") })
    }

    /// Files that are not captures, or are cut short, give an error that says so.
    @Test func brokenCaptureFilesAreErrorsNotCrashes() throws {
        let good = temporaryPath("good.pcap")
        defer { try? FileManager.default.removeItem(atPath: good) }
        try SampleTraffic(members: 2).write(rounds: 5, to: good)
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: good)))
        var cases: [(String, [UInt8])] = [
            ("empty", []),
            ("short header", Array(bytes.prefix(10))),
            ("bad magic", [0xDE, 0xAD, 0xBE, 0xEF] + bytes.dropFirst(4)),
            ("cut record", Array(bytes.prefix(bytes.count - 7))),
            ("text", Array("not a capture at all, just text\n".utf8))
        ]
        // Every length of the file up to its first two records.
        for length in stride(from: 0, through: min(bytes.count, 300), by: 13) { cases.append(("prefix \(length)", Array(bytes.prefix(length)))) }
        for (name, content) in cases {
            let path = temporaryPath("broken-\(name.replacingOccurrences(of: " ", with: "-")).pcap")
            defer { try? FileManager.default.removeItem(atPath: path) }
            try Data(content).write(to: URL(fileURLWithPath: path))
            var decoder = TapDecoder(format: .line, authenticator: nil)
            do {
                let capture = try PacketCapture.offline(path: path)
                try capture.run { packet, data in
                    decoder.packet(timestampNanos: packet.timestampNanos, linkType: capture.linkType, bytes: data)
                    return true
                }
            } catch {
                #expect(!error.description.isEmpty, "\(name)")
            }
        }
        // The opening error names the file and the reason.
        #expect(throws: CaptureError.self) { try PacketCapture.offline(path: temporaryPath("does-not-exist.pcap")) }
    }
}
