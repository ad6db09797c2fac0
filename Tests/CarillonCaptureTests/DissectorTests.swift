import CarillonCapture
import Foundation
import Testing

let tsharkPath: String? = ["/usr/bin/tshark", "/usr/local/bin/tshark"].first { FileManager.default.isExecutableFile(atPath: $0) }
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// tools/carillon.lua in tshark, against a capture this test writes.
@Suite("Wireshark dissector (tshark)", .enabled(if: tsharkPath != nil, "tshark is not installed (apt-get install -y tshark; CI has it)"))
struct DissectorTests {
    func tshark(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let run = try runProcess(tsharkPath!, ["-X", "lua_script:" + packageRoot.appendingPathComponent("tools/carillon.lua").path] + arguments)
        return (run.status, run.output + run.errors.split(separator: "\n").filter { !$0.contains("Running as user") }.joined(separator: "\n"))
    }

    @Test func everyFrameIsDissectedWithItsRoundSenderAndMessages() throws {
        let path = temporaryPath("dissector.pcap")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let sample = SampleTraffic(members: 3, messagesPerFrame: 2, payloadBytes: 24, authenticator: tapKey)
        try sample.write(rounds: 50, to: path)
        let (status, output) = try tshark([
            "-r", path, "-Y", "carillon", "-T", "fields", "-E", "separator=;",
            "-e", "carillon.round", "-e", "carillon.sender", "-e", "carillon.kind"
        ])
        #expect(status == 0, "\(output)")
        let rows = output.split(separator: "\n").filter { $0.first?.isNumber == true }
        #expect(rows.count == 151, "\(output.prefix(2000))")
        var expected = ["\(sample.firstRound);0;3"]  // the membership frame naming the run
        for i in 0..<50 { for rank in 0..<3 { expected.append("\(sample.firstRound + UInt64(i));\(rank);1") } }
        #expect(rows.map(String.init) == expected, "\(rows.prefix(6))")
        // Two messages per frame, each a msg.sequence field.
        let (_, messages) = try tshark(["-r", path, "-Y", "carillon", "-T", "fields", "-e", "carillon.msg.sequence"])
        let sequences = messages.split(separator: "\n").filter { $0.first?.isNumber == true }
        #expect(sequences.count == 150)
        #expect(sequences.allSatisfy { $0.split(separator: ",").count == 2 })
        // The membership frame's `run` view field (key 13) is named, with the sample's run.
        let (_, runs) = try tshark(["-r", path, "-Y", "carillon.view.key == 13", "-V"])
        #expect(runs.contains("View field: run (13)") && runs.contains("\(sample.run)"), "\(runs.suffix(1500))")
    }

    @Test func malformedFramesAreFlaggedNotFatal() throws {
        let path = temporaryPath("dissector-bad.pcap")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let sample = SampleTraffic(members: 2)
        do {
            let writer = try PacketCapture.writer(linkType: LinkType.ethernet.rawValue, path: path)
            let frame = sample.slotFrame(round: 10, rank: 0, sequence: 1, timestampNanos: 0)
            for length in [frame.count, 45, 41, 12] {
                sample.packet(udpPayload: Array(frame.prefix(length)), rank: 0).withUnsafeBytes { writer.dump(timestampNanos: 1, bytes: $0) }
            }
            writer.flush()
        }
        let (status, output) = try tshark(["-r", path, "-Y", "carillon"])
        #expect(status == 0, "\(output)")
        #expect(!output.contains("Lua Error"), "\(output)")
        let (_, expert) = try tshark(["-r", path, "-Y", "_ws.malformed || _ws.expert.severity == error", "-T", "fields", "-e", "frame.number"])
        #expect(expert.split(separator: "\n").filter { $0.first?.isNumber == true }.count >= 2, "\(expert)")
    }

    /// pcapng (converted by Wireshark's editcap, installed with tshark) reads like pcap.
    @Test func pcapngFilesReadLikePcap() throws {
        let pcap = temporaryPath("ng.pcap"), pcapng = temporaryPath("ng.pcapng")
        defer { for p in [pcap, pcapng] { try? FileManager.default.removeItem(atPath: p) } }
        try SampleTraffic(members: 2).write(rounds: 20, to: pcap)
        let editcap = Process()
        editcap.executableURL = URL(fileURLWithPath: "/usr/bin/editcap")
        editcap.arguments = ["-F", "pcapng", pcap, pcapng]
        try editcap.run()
        editcap.waitUntilExit()
        try #require(editcap.terminationStatus == 0)
        let header = try [UInt8](Data(contentsOf: URL(fileURLWithPath: pcapng)).prefix(4))
        #expect(header == [0x0A, 0x0D, 0x0D, 0x0A])  // a pcapng section header block
        let capture = try PacketCapture.offline(path: pcapng)
        var decoder = TapDecoder(format: .quiet, authenticator: nil)
        try capture.run { packet, bytes in
            decoder.packet(timestampNanos: packet.timestampNanos, linkType: capture.linkType, bytes: bytes)
            return true
        }
        #expect(decoder.statistics.frames == 41)  // 20 rounds × 2 members and the membership frame
        #expect(decoder.statistics.framesMalformed == 0)
    }
}
