import Foundation
import Glibc
import Testing

private let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The no-device path end to end with the release `carillon` binary: on a
/// machine without the configured device, `carillon node` with
/// `"transport": "rdma"` names what is missing and exits 69, or runs over
/// UDP when the file allows it; `carillon devices` says what it found.
@Suite(.serialized) struct RDMACommandTests {
    func carillon(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let binary = packageRoot.appendingPathComponent(".build/release/carillon")
        try #require(
            FileManager.default.isExecutableFile(atPath: binary.path),
            "build it first: swift build -c release --product carillon (tools/test.sh does)")
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

    /// A two-member file on loopback asking for an RDMA device no machine has.
    func configFile(fallback: String) throws -> URL {
        let ports = try freePorts(2)
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("crln-rdma-\(getpid())-\(fallback).json")
        let start = UInt64(Date().timeIntervalSince1970 * 1e9) + 1_000_000_000
        let text = """
            {"members": [{"name": "a", "address": "\(ports[0])"}, {"name": "b", "address": "\(ports[1])"}],
             "authentication": "off", "start_at_ns": \(start), "transport": "rdma",
             "rdma": {"device": "crl-no-such-device0", "port": 1, "fallback": "\(fallback)"}}
            """
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    @Test func devicesSaysWhatItFound() throws {
        let (status, output) = try carillon(["devices"])
        #expect(status == 0, "\(output)")
        if FileManager.default.fileExists(atPath: "/sys/class/infiniband") {
            #expect(output.contains("port "), "\(output)")
        } else {
            #expect(output.contains("no RDMA devices") && output.contains("rdma link add"), "\(output)")
        }
    }

    @Test func nodeWithoutTheDeviceSaysWhyAndExits69() throws {
        let file = try configFile(fallback: "none")
        defer { try? FileManager.default.removeItem(at: file) }
        let (status, output) = try carillon(["node", "--config", file.path, "--member", "a", "--no-services", "--timeout", "5"])
        #expect(status == 69, "\(output)")
        #expect(output.contains("RDMA unavailable"), "\(output)")
        #expect(output.contains("\"fallback\": \"udp\""), "the error says how to run over UDP instead: \(output)")
        #expect(!output.contains("member starting"), "nothing ran: \(output)")
    }

    @Test func nodeFallsBackToUDPWhenTheFileAllowsIt() throws {
        let file = try configFile(fallback: "udp")
        defer { try? FileManager.default.removeItem(at: file) }
        let (status, output) = try carillon(["node", "--config", file.path, "--member", "a", "--no-services", "--timeout", "1.5"])
        #expect(status == 0, "\(output)")
        #expect(output.contains("running over UDP"), "\(output)")
        #expect(output.contains("transport=udp"), "\(output)")
    }
}
