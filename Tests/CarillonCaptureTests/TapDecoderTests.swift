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
        var decoder = TapDecoder(format: .line, authenticator: tapKey, runs: [sample.run])
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
        var decoder = TapDecoder(format: .line, authenticator: other, runs: [sample.run])
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

    /// Slot and repair frames are sealed under the run's key: a decoder that
    /// does not know the run says so (never "bad tag"), and learns the run
    /// from the first authentic membership frame that names it.
    @Test func withoutTheRunSlotFramesAreRunUnknownUntilAMembershipFrameNamesIt() throws {
        var decoder = TapDecoder(format: .line, authenticator: tapKey)
        decoder.verbose = true
        func feed(_ frame: [UInt8]) { frame.withUnsafeBytes { decoder.frame(timestampNanos: 0, source: nil, payload: $0) } }
        feed(sample.slotFrame(round: 10, rank: 0, sequence: 1, timestampNanos: 0))
        feed(sample.slotFrame(round: 10, rank: 1, sequence: 1, timestampNanos: 0))
        var lines = text(decoder).split(separator: "\n").filter { !$0.hasPrefix("    seq=") }
        // One note, then the two frames.
        #expect(lines.count == 3, "\(lines)")
        #expect(lines[0].contains("! tag: run unknown (give --run or --config)"), "\(lines[0])")
        #expect(lines[1].hasSuffix("auth=run-unknown") && lines[2].hasSuffix("auth=run-unknown"), "\(lines)")
        #expect(decoder.statistics.members.values.reduce(0) { $0 + $1.runUnknown } == 2)
        #expect(decoder.statistics.members.values.reduce(0) { $0 + $1.badTags } == 0)
        #expect(decoder.statistics.report().contains("2 slot/repair frames not checked, run unknown"))
        #expect(decoder.runs.isEmpty)

        // A forged membership frame naming another run teaches nothing.
        var forgedSample = sample
        forgedSample.run = 12_345
        var forged = forgedSample.membershipFrame(round: 11, node: 2, timestampNanos: 0)
        forged[forged.count - 1] ^= 1
        feed(forged)
        #expect(decoder.runs.isEmpty)

        decoder.output.removeAll()
        feed(sample.membershipFrame(round: 11, node: 0, timestampNanos: 0))
        #expect(decoder.runs == [sample.run])
        feed(sample.slotFrame(round: 11, rank: 0, sequence: 3, timestampNanos: 0))
        lines = text(decoder).split(separator: "\n").filter { !$0.hasPrefix("    seq=") }
        #expect(lines.count == 2, "\(lines)")
        #expect(lines[0].contains(" membership e=1 ") && lines[0].hasSuffix("auth=ok run=\(sample.run)"), "\(lines[0])")
        #expect(lines[1].contains(" slot ") && lines[1].hasSuffix("auth=ok run=\(sample.run)"), "\(lines[1])")
        #expect(decoder.statistics.framesByRun == [sample.run: 1])
        #expect(decoder.statistics.members.values.reduce(0) { $0 + $1.badTags } == 1)  // the forged membership frame
    }

    /// Once the run is known, a slot frame sealed under another run's key (an
    /// earlier run of the cluster) or under the cluster key itself is a bad
    /// tag; with two runs known (a recording across a restart) each frame
    /// verifies under its own, and the JSON says which.
    @Test func aFrameUnderAnotherRunsKeyIsABadTagWhenTheRunIsKnown() throws {
        var earlier = sample
        earlier.run = sample.run - 3_600_000_000_000
        var decoder = TapDecoder(format: .json, authenticator: tapKey, runs: [sample.run])
        var objects: [[String: Any]] = []
        func feed(_ frame: [UInt8]) throws {
            decoder.output.removeAll()
            frame.withUnsafeBytes { decoder.frame(timestampNanos: 0, source: nil, payload: $0) }
            objects.append(try #require(try JSONSerialization.jsonObject(with: Data(decoder.output.bytes)) as? [String: Any]))
        }
        try feed(earlier.slotFrame(round: 20, rank: 1, sequence: 1, timestampNanos: 0))
        // Sealed under the cluster key, as before runs were bound into tags (the tag covers header and body only).
        var underClusterKey = sample.slotFrame(round: 20, rank: 2, sequence: 1, timestampNanos: 0)
        underClusterKey.withUnsafeMutableBytes { tapKey.seal($0) }
        try feed(underClusterKey)
        try feed(sample.slotFrame(round: 20, rank: 0, sequence: 1, timestampNanos: 0))
        #expect(objects.map { $0["auth"] as? String } == ["bad-tag", "bad-tag", "ok"], "\(objects)")
        #expect(objects[0]["run"] == nil && objects[2]["run"] as? UInt64 == sample.run)
        #expect(decoder.statistics.members.values.reduce(0) { $0 + $1.badTags } == 2)
        #expect(decoder.statistics.members.values.reduce(0) { $0 + $1.runUnknown } == 0)

        // Both runs known: each frame verifies under its own run's key.
        objects = []
        decoder.learn(run: earlier.run)
        try feed(earlier.slotFrame(round: 21, rank: 1, sequence: 1, timestampNanos: 0))
        try feed(sample.slotFrame(round: 21, rank: 0, sequence: 1, timestampNanos: 0))
        try feed(earlier.slotFrame(round: 22, rank: 1, sequence: 1, timestampNanos: 0))
        #expect(objects.map { $0["auth"] as? String } == ["ok", "ok", "ok"], "\(objects)")
        #expect(objects.map { $0["run"] as? UInt64 } == [earlier.run, sample.run, earlier.run])
        #expect(decoder.statistics.framesByRun == [earlier.run: 2, sample.run: 2])
        #expect(decoder.statistics.report().contains("runs: \(earlier.run) (2 slot/repair frames verified), \(sample.run) (2"))
    }

    /// At most `maxRuns` runs are kept, each derived once; the least recently matched goes first.
    @Test func runsAreBoundedAndRecentlyMatchedOnesKept() {
        var decoder = TapDecoder(format: .quiet, authenticator: tapKey, runs: [sample.run])
        for run in UInt64(1)...UInt64(TapDecoder.maxRuns - 1) { decoder.learn(run: run) }
        #expect(decoder.runs.count == TapDecoder.maxRuns)
        sample.slotFrame(round: 1, rank: 0, sequence: 1, timestampNanos: 0).withUnsafeBytes {
            decoder.frame(timestampNanos: 0, source: nil, payload: $0)
        }
        #expect(decoder.runs.first == sample.run)
        #expect(!decoder.learn(run: sample.run) && !decoder.learn(run: 0))
        decoder.learn(run: 1_000)
        #expect(decoder.runs.count == TapDecoder.maxRuns && decoder.runs.contains(sample.run) && decoder.runs.first == 1_000)
        // Without a cluster key there is nothing to derive from.
        var unkeyed = TapDecoder(format: .quiet, authenticator: nil, runs: [5])
        #expect(unkeyed.runs.isEmpty && !unkeyed.learn(run: 6))
    }

    /// `--config`: the run and the key file come out of a cluster configuration
    /// as `carillon node` reads it (start_at_ns through a Double; run at least 1).
    @Test func theRunAndKeyComeFromTheClusterConfiguration() throws {
        let directory = temporaryPath("config")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try KeyFile.write(hexKey: String(repeating: "5e", count: 32), to: directory + "/bus.key")
        let path = directory + "/bus.json"
        func config(_ json: String) throws -> ClusterConfigRun {
            try Data(json.utf8).write(to: URL(fileURLWithPath: path))
            return try ClusterConfigRun.load(path: path)
        }
        let members = #""members": [{"name": "a", "address": "127.0.0.1:7400"}]"#
        let read = try config(#"{\#(members), "start_at_ns": 1796183437712642454, "authentication": {"key_file": "bus.key"}}"#)
        #expect(read.runIdentity == UInt64(Double(1796183437712642454 as UInt64)))
        #expect(read.keyFilePath == directory + "/bus.key")
        let key = try #require(try read.loadKey())
        var check = sample
        check.authenticator = key
        check.run = read.runIdentity
        var decoder = TapDecoder(format: .quiet, authenticator: key, runs: [read.runIdentity])
        check.slotFrame(round: 1, rank: 0, sequence: 1, timestampNanos: 0).withUnsafeBytes {
            decoder.frame(timestampNanos: 0, source: nil, payload: $0)
        }
        #expect(decoder.statistics.framesByRun == [read.runIdentity: 1])

        let off = try config(#"{\#(members), "authentication": "off"}"#)
        #expect(off.runIdentity == 1 && off.keyFilePath == nil)
        for bad in [#"true"#, #""soon""#, #"-5"#] {
            #expect(throws: ClusterConfigError.self) { try config(#"{\#(members), "start_at_ns": \#(bad), "authentication": "off"}"#) }
        }
        #expect(throws: ClusterConfigError.self) { try config("not json") }
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
