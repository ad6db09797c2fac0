import CarillonSimulation
import Foundation
import Testing

/// View-change scenario transcripts: `Transcripts/*.txt` hold commands and the
/// output they must produce (``TranscriptScript``, as the ordering transcripts).
/// Set `CARILLON_REWRITE=1` to rewrite the expected output from the current
/// behaviour (then read the diff before committing it).
///
/// After each input a node prints what it did (deliveries, view events) and how
/// its part of the agreement and its phase changed: steps one input takes
/// together (accept, decide, install) show as the last of them.
///
/// Commands (nodes are numbered from 0; `r` is the round, members print as `node.incarnation`):
///   cluster nodes=N [members=M]   N nodes, the first M (default N) members of the first view
///   run R                         every running node for R rounds; prints what changed
///   run R until N promises|accepts|PHASE   ... or until node N has promised, accepted, or is in PHASE
///   broadcast N TEXT              queue TEXT at node N
///   crash N                       node N stops (kill -9)
///   start N                       a new process on node N asks to join
///   leave N                       node N asks to leave
///   partition A,B | C,D           the groups hear nothing from each other (nodes in none: one more group)
///   heal                          every node hears every other again
///   status                        per node: phase, view, the application's state
@Suite("Membership scenario transcripts")
struct MembershipTranscriptTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Transcripts")
    static var files: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).filter { $0.hasSuffix(".txt") }.sorted()
    }

    @Test func transcriptsArePresent() { #expect(Self.files.count >= 5) }

    @Test(arguments: files)
    func replay(file: String) throws {
        let url = Self.directory.appendingPathComponent(file)
        let text = try String(contentsOf: url, encoding: .utf8)
        var cluster = MembershipCluster(nodeCount: 3, memberCount: 3)
        let (rewritten, mismatches) = TranscriptScript.replay(text) { run($0, &cluster) }
        for mismatch in mismatches { Issue.record("\(file): \(mismatch)") }
        if ProcessInfo.processInfo.environment["CARILLON_REWRITE"] == "1" {
            try rewritten.write(to: url, atomically: true, encoding: .utf8)
        }
    }

    func run(_ command: String, _ cluster: inout MembershipCluster) -> [String] {
        let words = command.split(separator: " ").map(String.init)
        func node(_ index: Int) -> Int { Int(words[index])! }
        switch words.first {
        case "cluster":
            let options = TranscriptScript.options(words)
            let nodes = Int(options["nodes"] ?? "3")!
            cluster = MembershipCluster(nodeCount: nodes, memberCount: Int(options["members"] ?? "\(nodes)")!)
            return cluster.status()
        case "run" where words.count == 5 && words[2] == "until":
            let (target, condition) = (node(3), words[4])
            return cluster.run(rounds: UInt64(words[1])!) { cluster in
                let shown = cluster.nodes[target].shown
                switch condition {
                case "promises": return shown.promised != 0
                case "accepts": return shown.accepted != 0
                default: return shown.phase.rawValue == condition
                }
            }
        case "run":
            return cluster.run(rounds: UInt64(words[1])!)
        case "broadcast":
            return [cluster.broadcast(node(1), words.dropFirst(2).joined(separator: " "))]
        case "crash":
            cluster.crash(node(1))
            return ["r\(cluster.round) n\(node(1)) crashes"]
        case "start":
            return ["r\(cluster.round) " + cluster.start(node(1))]
        case "leave":
            cluster.leave(node(1))
            return ["r\(cluster.round) n\(node(1)) asks to leave"]
        case "partition":
            let groups = words.dropFirst().joined().split(separator: "|").map { $0.split(separator: ",").map { Int($0)! } }
            cluster.partition(groups)
            return ["r\(cluster.round) partition " + groups.map { $0.map(String.init).joined(separator: ",") }.joined(separator: " | ")]
        case "heal":
            cluster.heal()
            return ["r\(cluster.round) heal"]
        case "status":
            return cluster.status()
        default:
            return ["unknown command: \(command)"]
        }
    }
}
