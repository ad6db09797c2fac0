import CarillonBench
import Foundation
import Glibc
import Testing

private let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The release `carillon-bench` binary end to end, on loopback (no root
/// needed): one command per scenario, results, report, and clear errors.
@Suite(.serialized) struct BenchCommandTests {
    func bench(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let binary = packageRoot.appendingPathComponent(".build/release/carillon-bench")
        try #require(
            FileManager.default.isExecutableFile(atPath: binary.path),
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
        let (status, output) = try bench([
            "ordered", "--loopback", "--quick", "--members", "2", "--sizes", "64",
            "--periods-us", "200", "--reservations", "0.5", "--rates", "1000", "--out", out.path
        ])
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

    /// Carillon's half of `services` on loopback: three nodes, every metric, the takeover after kill -9, no node left behind.
    @Test func servicesCarillonOnLoopback() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("crln-bench-services-\(getpid())")
        defer { try? FileManager.default.removeItem(at: out) }
        let (status, output) = try bench(["services", "--systems", "carillon", "--loopback", "--quick", "--operations", "50", "--out", out.path])
        #expect(status == 0, "\(output)")
        let run = try BenchRun.load(from: out.appendingPathComponent("services.json"))
        #expect(run.results.allSatisfy { $0.system == "carillon" && $0.placement == "loopback" })
        #expect(
            run.results.map { $0.parameters["metric"] ?? "" } == [
                "lock acquire+release", "lock hand-off rate", "put", "put", "get linearizable", "get serializable", "lock takeover after kill -9"
            ])
        #expect(
            run.results.allSatisfy {
                $0.parameters["durability"] == "in memory at every member; survives the loss of a minority of members, not of every member at once"
            })
        #expect(run.results[0].latency?.count ?? 0 > 0 && run.results[1].throughput != nil)
        let takeover = try #require(run.results.last)
        #expect(takeover.latency?.count == 2)
        #expect(takeover.notes.contains { $0.contains("(increased at every takeover)") })
        #expect(output.contains("lock takeover after kill -9 p50: carillon"))
        // The nodes are gone and so are their sockets' listeners.
        let sockets = try FileManager.default.contentsOfDirectory(atPath: out.appendingPathComponent("work/services/carillon").path).filter {
            $0.hasSuffix(".sock")
        }
        for socket in sockets {
            #expect(throws: (any Error).self) { try CarillonClientProbe.connect(out.appendingPathComponent("work/services/carillon/\(socket)").path) }
        }
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
        let systems = try bench(["services", "--systems", "zookeeper"])
        #expect(systems.status != 0 && systems.output.contains("--systems"))
        let config = try bench(["services", "--systems", "carillon", "--loopback", "--carillon-config", "suspicion_gap_factor"])
        #expect(config.status != 0 && config.output.contains("--carillon-config"))
        let report = try bench(["report", "--results", "/nonexistent-crln"])
        #expect(report.status != 0 && report.output.contains("no <scenario>.json"))
        let help = try bench(["--help"])
        #expect(help.status == 0 && help.output.contains("Examples:"))
    }
}

/// Whether anything listens on a Unix socket (connect succeeds).
enum CarillonClientProbe {
    struct Refused: Error {}

    static func connect(_ path: String) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, b) in path.utf8.enumerated() where i < raw.count - 1 { raw[i] = b } }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if result != 0 { throw Refused() }
    }
}
