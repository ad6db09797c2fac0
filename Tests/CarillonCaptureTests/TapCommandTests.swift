import CarillonAuth
import CarillonCapture
import Foundation
import Testing

/// The release build tools/test.sh makes, else the debug build `swift build --build-tests` makes.
let tapBinary =
    [".build/release/carillon-tap", ".build/debug/carillon-tap"].map { packageRoot.appendingPathComponent($0).path }
    .first { FileManager.default.isExecutableFile(atPath: $0) } ?? packageRoot.appendingPathComponent(".build/release/carillon-tap").path

/// The `carillon-tap` command itself.
@Suite(
    "carillon-tap command",
    .enabled(
        if: FileManager.default.isExecutableFile(atPath: tapBinary),
        "build it first: swift build -c release --product carillon-tap (tools/test.sh does)"))
struct TapCommandTests {
    func tap(_ arguments: [String]) throws -> (status: Int32, output: String, errors: String) {
        try runProcess(tapBinary, arguments)
    }

    @Test func readWriteAndPrintLikeTcpdump() throws {
        let sample = temporaryPath("cli-sample.pcap"), copy = temporaryPath("cli-copy.pcap")
        defer { for p in [sample, copy] { try? FileManager.default.removeItem(atPath: p) } }
        let written = try tap(["--write-sample", sample, "--sample-rounds", "20", "--sample-members", "3"])
        #expect(written.status == 0, "\(written.errors)")
        // -c, -w and --print together: ten lines out, ten packets in the copy.
        let printed = try tap(["-r", sample, "-n", "-c", "10", "-w", copy, "--print"])
        #expect(printed.status == 0, "\(printed.errors)")
        #expect(printed.output.split(separator: "\n").count == 10)
        let again = try tap(["-r", copy, "--stats", "-q"])
        #expect(again.output.isEmpty)
        #expect(again.errors.contains("10 frames in"), "\(again.errors)")
        // -w alone decodes nothing.
        let silent = try tap(["-r", sample, "-w", copy])
        #expect(silent.status == 0 && silent.output.isEmpty)
        // A trailing filter expression on top of the bus port: one member's frames.
        let filtered = try tap(["-r", sample, "src", "host", "10.77.0.2"])
        let lines = filtered.output.split(separator: "\n")
        #expect(lines.count == 20 && lines.allSatisfy { $0.contains(" 10.77.0.2:7400 ") }, "\(filtered.output.prefix(300))")
    }

    @Test func badArgumentsAndFilesSayWhatIsWrong() throws {
        let help = try tap(["--help"])
        #expect(help.output.contains("Examples:"))
        #expect(help.output.contains("--run <run>") && help.output.contains("--config <bus.json>"), "\(help.output)")
        #expect(help.output.contains("carillon-tap --config bus.json") && help.output.contains("--run 1796183437712642454"))
        #expect(help.output.contains("run-unknown"))
        let zero = try tap(["--key-file", "k", "--run", "0"])
        #expect(zero.status != 0 && zero.errors.contains("--run"), "\(zero.errors)")
        let keyless = try tap(["--run", "5", "-r", "x.pcap"])
        #expect(keyless.status != 0 && keyless.errors.contains("--key-file"), "\(keyless.errors)")
        let missing = try tap(["-r", temporaryPath("no-such.pcap")])
        #expect(missing.status != 0)
        #expect(missing.errors.contains("no-such.pcap"), "\(missing.errors)")
        let filter = try tap(["-r", temporaryPath("no-such.pcap"), "this", "is", "no", "filter"])
        #expect(filter.status != 0)
        let negative = try tap(["-c", "-3"])
        #expect(negative.status != 0)
        #expect(negative.errors.contains("-c"), "\(negative.errors)")
    }

    /// Tags checked under the run key end to end: the sample is sealed as the
    /// bus seals it, the run comes from its membership frame, from --run or
    /// from --config, and a wrong run alone does not stop the learning.
    @Test func slotTagsAreCheckedUnderTheRunKey() throws {
        let directory = temporaryPath("cli-run")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let key = directory + "/bus.key", config = directory + "/bus.json", sample = directory + "/s.pcap"
        try KeyFile.write(hexKey: String(repeating: "5e", count: 32), to: key)
        let run: UInt64 = 1_796_183_437_712_642_048  // a multiple of 256: exact as a Double
        try Data(
            #"{"members": [{"name": "a", "address": "10.77.0.1:7400"}], "start_at_ns": \#(run), "authentication": {"key_file": "bus.key"}}"#.utf8
        )
        .write(to: URL(fileURLWithPath: config))
        let written = try tap(["--write-sample", sample, "--sample-rounds", "5", "--config", config])
        #expect(written.status == 0 && written.errors.contains("run \(run)"), "\(written.errors)")
        for arguments in [["--key-file", key], ["--config", config], ["--key-file", key, "--run", "7"]] {
            let read = try tap(["-r", sample, "--json"] + arguments)
            #expect(read.status == 0, "\(read.errors)")
            let objects = read.output.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            #expect(objects.count == 16, "\(arguments)")
            #expect(objects.allSatisfy { $0["auth"] as? String == "ok" && $0["run"] as? UInt64 == run }, "\(arguments): \(read.output.prefix(600))")
        }
        // Without the membership frame (only member 1's frames): run unknown,
        // not bad tags; told another run only: bad tags; told the run: ok.
        let unknown = try tap(["-r", sample, "--key-file", key, "--stats", "src", "host", "10.77.0.2"])
        var lines = unknown.output.split(separator: "\n")
        #expect(lines.count == 6 && lines[0].contains("tag: run unknown (give --run or --config)"), "\(unknown.output)")
        #expect(lines.dropFirst().allSatisfy { $0.hasSuffix("auth=run-unknown") }, "\(unknown.output)")
        #expect(unknown.errors.contains("5 slot/repair frames not checked, run unknown"), "\(unknown.errors)")
        let wrong = try tap(["-r", sample, "--key-file", key, "--run", "7", "src", "host", "10.77.0.2"])
        lines = wrong.output.split(separator: "\n")
        #expect(lines.count == 5 && lines.allSatisfy { $0.hasSuffix("auth=bad-tag") }, "\(wrong.output)")
        let told = try tap(["-r", sample, "--key-file", key, "--run", "7", "--run", "\(run)", "src", "host", "10.77.0.2"])
        lines = told.output.split(separator: "\n")
        #expect(lines.count == 5 && lines.allSatisfy { $0.hasSuffix("auth=ok") }, "\(told.output)")
        let stats = try tap(["-r", sample, "--key-file", key, "--stats", "-q"])
        #expect(stats.errors.contains("runs: \(run) (15 slot/repair frames verified)"), "\(stats.errors)")
    }
}
