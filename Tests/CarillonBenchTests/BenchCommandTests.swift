import CarillonBench
import Foundation
import Testing

private let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The release `carillon-bench` binary end to end, on loopback (no root
/// needed): one command per scenario, results, report, and clear errors.
@Suite(.serialized) struct BenchCommandTests {
    func bench(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let binary = packageRoot.appendingPathComponent(".build/release/carillon-bench")
        try #require(FileManager.default.isExecutableFile(atPath: binary.path),
                     "build it first: swift build -c release --product carillon && swift build -c release --product carillon-bench (tools/test.sh does)")
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }

    @Test func orderedOnLoopbackThenReportIntoAMarkdownFile() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("crln-bench-loopback-\(getpid())")
        defer { try? FileManager.default.removeItem(at: out) }
        let (status, output) = try bench(["ordered", "--loopback", "--quick", "--members", "2", "--sizes", "64",
                                          "--periods-us", "200", "--reservations", "0.5", "--rates", "1000", "--out", out.path])
        #expect(status == 0, "\(output)")
        let run = try BenchRun.load(from: out.appendingPathComponent("ordered.json"))
        #expect(run.results.count == 2)
        #expect(run.results.allSatisfy { $0.placement == "loopback" })
        #expect(run.environment.buildMode == "release")
        #expect(run.environment.command.hasPrefix("carillon-bench ordered --loopback"))
        // Closed loop: all 100 messages at both members; open loop: 1000 msgs/s for 0.5 s.
        #expect(run.results[0].latency?.count == 100)
        #expect(run.results[1].latency?.count == 500)
        #expect(run.results[1].parameters["offered_per_second"] == "1000")

        let doc = out.appendingPathComponent("doc.md")
        try "# Benchmarks\n\nhand-written text\n".write(to: doc, atomically: true, encoding: .utf8)
        let (reportStatus, reportOutput) = try bench(["report", "--results", out.path, "--doc", doc.path])
        #expect(reportStatus == 0, "\(reportOutput)")
        let text = try String(contentsOf: doc, encoding: .utf8)
        #expect(text.hasPrefix("# Benchmarks\n\nhand-written text\n"))
        #expect(text.contains("<!-- carillon-bench:begin -->") && text.contains("<!-- carillon-bench:end -->"))
        #expect(text.contains("carillon-bench ordered --loopback"))
        #expect(text.contains("](./ordered-percentiles.svg)") || text.contains("](ordered-percentiles.svg)"))
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("ordered-load.svg").path))
    }

    @Test func wrongArgumentsGetAnErrorThatSaysWhatToDo() throws {
        let sizes = try bench(["ordered", "--loopback", "--sizes", "64,abc"])
        #expect(sizes.status != 0 && sizes.output.contains("--sizes"))
        let modes = try bench(["interference", "--modes", "none,fast"])
        #expect(modes.status != 0 && modes.output.contains("--modes"))
        let ordering = try bench(["idle", "--loopback", "--ordering", "fast"])
        #expect(ordering.status != 0 && ordering.output.contains("--ordering must be promises or slots"))
        let shaped = try bench(["interference", "--loopback"])
        #expect(shaped.status != 0 && shaped.output.contains("namespaces"))
        let report = try bench(["report", "--results", "/nonexistent-crln"])
        #expect(report.status != 0 && report.output.contains("no <scenario>.json"))
        let help = try bench(["--help"])
        #expect(help.status == 0 && help.output.contains("Examples:"))
    }
}
