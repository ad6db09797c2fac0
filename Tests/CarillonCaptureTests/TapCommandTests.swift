import CarillonCapture
import Foundation
import Testing

let tapBinary = packageRoot.appendingPathComponent(".build/release/carillon-tap").path

/// The `carillon-tap` command itself (the release build tools/test.sh makes).
@Suite("carillon-tap command", .enabled(if: FileManager.default.isExecutableFile(atPath: tapBinary),
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
        let missing = try tap(["-r", temporaryPath("no-such.pcap")])
        #expect(missing.status != 0)
        #expect(missing.errors.contains("no-such.pcap"), "\(missing.errors)")
        let filter = try tap(["-r", temporaryPath("no-such.pcap"), "this", "is", "no", "filter"])
        #expect(filter.status != 0)
        let negative = try tap(["-c", "-3"])
        #expect(negative.status != 0)
        #expect(negative.errors.contains("-c"), "\(negative.errors)")
    }
}
