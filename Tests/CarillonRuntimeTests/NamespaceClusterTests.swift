import Foundation
import Testing

/// Whether this process may build network namespaces (root, `ip` and `nft` present).
let namespacesAvailable: Bool = {
    guard getuid() == 0 else { return false }
    return ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"].contains { FileManager.default.isExecutableFile(atPath: $0) }
        && ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"].contains { FileManager.default.isExecutableFile(atPath: $0) }
}()

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// Runs a script to its end; its standard output and error together.
func runScript(_ script: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = packageRoot.appendingPathComponent(script)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardError = pipe
    process.standardOutput = pipe
    try process.run()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, output)
}

/// `ip netns list`: every network namespace on the machine, one per line.
func namespaceNames() throws -> String {
    let list = Process()
    list.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
    list.arguments = ["netns", "list"]
    let pipe = Pipe()
    list.standardOutput = pipe
    try list.run()
    let names = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    list.waitUntilExit()
    return names
}

/// The release `carillon` binary the namespace scripts run (timing in a debug
/// build is not representative: members miss their slots and are suspected).
func releaseCarillon() throws -> String {
    let binary = packageRoot.appendingPathComponent(".build/release/carillon").path
    try #require(
        FileManager.default.isExecutableFile(atPath: binary),
        "build the release carillon first: swift build -c release --product carillon (tools/test.sh does)")
    return binary
}

/// Separate `carillon node` processes in network namespaces on a bridge, with
/// nftables dropping 5% of arriving bus datagrams at every host; the script
/// checks identical, complete, gap-free (sender, sequence) lists and removes
/// its namespaces on every path. Needs root; CI runs as root with iproute2
/// and nftables installed.
/// Every namespace test, one at a time: each starts several busy processes,
/// and two such scripts at once on 2 cores would starve each other's members.
@Suite(
    "Namespaces (separate processes)", .serialized,
    .enabled(if: namespacesAvailable, "needs root plus iproute2 and nftables to build network namespaces; CI has them"))
enum NamespaceTests {}

extension NamespaceTests {
    @Suite("Namespace clusters (separate processes, nftables loss)")
    struct NamespaceClusterTests {
        func run(members: Int, loss: Int, messages: Int, extra: [String] = []) throws -> (status: Int32, output: String) {
            let binary = try releaseCarillon()
            // Round period 400 µs and suspicion after 50 silent slots: N busy members
            // on 2 cores cannot all wake every 100 µs, and these tests are about
            // loss and order, not failure detection (NamespaceFaultTests is).
            return try runScript(
                "tools/netns-cluster.sh",
                [
                    "--members", "\(members)", "--loss", "\(loss)", "--messages", "\(messages)", "--bin", binary,
                    "--timeout", "60", "--period-us", "400", "--suspicion-slots", "50"
                ] + extra)
        }

        @Test func threeMembersWithFivePercentLoss() throws {
            let (status, output) = try run(members: 3, loss: 5, messages: 1000)
            #expect(status == 0, "\(output)")
            #expect(output.contains("OK — 3 members delivered the same 3000 messages in the same order"))
            // The loss was real: members NAKed and repaired.
            #expect(!output.contains("NAKs 0 sent"), "\(output)")
        }

        @Test func fiveMembersWithFivePercentLoss() throws {
            let (status, output) = try run(members: 5, loss: 5, messages: 600)
            #expect(status == 0, "\(output)")
            #expect(output.contains("OK — 5 members delivered the same 3000 messages in the same order"))
        }

        /// IP multicast across the bridge: each frame leaves once, to group 239.77.0.1.
        @Test func fourMembersOverMulticastWithLoss() throws {
            let (status, output) = try run(members: 4, loss: 5, messages: 500, extra: ["--multicast"])
            #expect(status == 0, "\(output)")
            #expect(output.contains("multicast 239.77.0.1"))
            #expect(output.contains("OK — 4 members delivered the same 2000 messages in the same order"))
            // One datagram per send call: the group, not a fan-out to three peers.
            let sockets = output.split(separator: "\n").filter { $0.contains("socket:") }
            #expect(sockets.count == 4)
            for line in sockets {
                let words = line.split(separator: " ")
                if let i = words.firstIndex(of: "datagrams"), i > 0 {
                    #expect(words[i - 1] == words[i + 2], "\(line)")
                }
            }
        }

        @Test func noNamespaceIsLeftBehind() throws {
            _ = try run(members: 2, loss: 0, messages: 10)
            let names = try namespaceNames()
            #expect(!names.contains("crln-"), "\(names)")
        }
    }
}
