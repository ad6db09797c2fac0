import Foundation
import Testing

/// Whether this process may build network namespaces (root, `ip` and `nft` present).
let namespacesAvailable: Bool = {
    guard getuid() == 0 else { return false }
    return ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"].contains { FileManager.default.isExecutableFile(atPath: $0) }
        && ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"].contains { FileManager.default.isExecutableFile(atPath: $0) }
}()

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// Runs a script (a path under the package, or absolute) to its end, or for at
/// most `limitSeconds`: its standard output and error together. The script
/// runs under coreutils `timeout`, which puts it in a process group of its own
/// and, at the limit, sends SIGTERM to the whole group (the scripts' traps then
/// kill their members and remove their namespaces) and SIGKILL 20 s later.
/// Without the bound a member or client that never exits holds the pipe open,
/// the read below never ends and CI runs out of time with nothing said (a CI
/// run ended so, at its 90 minutes).
func runScript(_ script: String, _ arguments: [String], limitSeconds: Int = 600) throws -> (status: Int32, output: String) {
    let path = script.hasPrefix("/") ? script : packageRoot.appendingPathComponent(script).path
    return try runBounded(path, arguments, limitSeconds: limitSeconds)
}

/// ``runScript(_:_:limitSeconds:)`` for an absolute path.
func runBounded(_ path: String, _ arguments: [String], limitSeconds: Int) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
    process.arguments = ["--kill-after=20", "\(limitSeconds)", path] + arguments
    let pipe = Pipe()
    process.standardError = pipe
    process.standardOutput = pipe
    try process.run()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    let status = process.terminationStatus
    // 124: timed out (SIGTERM); 137: SIGKILL after it.
    let timedOut = status == 124 || status == 137
    return (status, timedOut ? output + "\n\(path): still running after \(limitSeconds) s: stopped (timeout exit \(status))\n" : output)
}

/// `ip netns list`: the names of every network namespace on the machine.
func namespaceNames() throws -> Set<String> {
    let (status, output) = try runBounded("/usr/sbin/ip", ["netns", "list"], limitSeconds: 60)
    try #require(status == 0, "ip netns list: \(output)")
    return Set(output.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) })
}

/// The namespaces named `prefix`… that exist now and did not before `body`
/// ran (others may be on the machine: a run stopped by kill -9 cannot clean up).
func namespacesLeftBehind<T>(prefix: String, by body: () throws -> T) throws -> (T, [String]) {
    let before = try namespaceNames()
    let result = try body()
    return (result, try namespaceNames().subtracting(before).filter { $0.hasPrefix(prefix) }.sorted())
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
            let ((status, output), left) = try namespacesLeftBehind(prefix: "crln-") { try run(members: 2, loss: 0, messages: 10) }
            #expect(status == 0, "\(output)")
            #expect(left.isEmpty, "namespaces left behind: \(left)")
        }
    }
}
