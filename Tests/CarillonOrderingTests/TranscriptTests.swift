import CarillonOrdering
import CarillonSimulation
import Foundation
import Testing

/// Scenario transcripts: `Transcripts/*.txt` hold commands and the output they
/// must produce, in blocks of `command`, `----`, expected lines, blank line
/// (``TranscriptScript``, shared with the membership transcripts).
/// Set `CARILLON_REWRITE=1` to rewrite the expected output from the current
/// behaviour (then read the diff before committing it).
///
/// Commands:
///   cluster members=N [mode=agreed|safe] [window=W] [buffer=BYTES]
///   broadcast M TEXT          queue TEXT at member M
///   slot M R                  member M's slot of round R opens; prints its frames
///   send M -> A,B             hand M's unsent frames to A and B; prints deliveries
///   drop M                    lose M's unsent frames
///   replay M -> A,B           hand every frame M ever sent to A and B again (duplicates)
///   round R                   every member's slot of R, each frame to everyone
///   state M                   member M's positions
@Suite("Scenario transcripts")
struct TranscriptTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Transcripts")
    static var files: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).filter { $0.hasSuffix(".txt") }.sorted()
    }

    @Test func transcriptsArePresent() { #expect(Self.files.count >= 3) }

    @Test(arguments: files)
    func replay(file: String) throws {
        let url = Self.directory.appendingPathComponent(file)
        let text = try String(contentsOf: url, encoding: .utf8)
        var cluster = TestCluster(memberCount: 3)
        let (rewritten, mismatches) = TranscriptScript.replay(text) { run($0, &cluster) }
        for mismatch in mismatches { Issue.record("\(file): \(mismatch)") }
        if ProcessInfo.processInfo.environment["CARILLON_REWRITE"] == "1" {
            try rewritten.write(to: url, atomically: true, encoding: .utf8)
        }
    }

    func run(_ command: String, _ cluster: inout TestCluster) -> [String] {
        let words = command.split(separator: " ").map(String.init)
        func options() -> [String: String] { TranscriptScript.options(words) }
        switch words.first {
        case "cluster":
            let o = options()
            cluster = TestCluster(
                memberCount: Int(o["members"] ?? "3")!, mode: DeliveryMode(rawValue: o["mode"] ?? "agreed")!,
                windowRounds: Int(o["window"] ?? "16")!, sendBufferBytes: Int(o["buffer"] ?? "4096")!)
            return ["ok"]
        case "broadcast":
            let member = Int(words[1])!
            return ["\(cluster.broadcast(member, words.dropFirst(2).joined(separator: " ")))"]
        case "slot":
            let member = Int(words[1])!
            return cluster.openSlot(member, round: UInt64(words[2])!).map { "\(member) sent \(describeFrame($0))" }
                + cluster.lastDeliveries.map { "\(member) delivered \($0)" }
        case "send", "replay":
            let from = Int(words[1])!
            let targets = words[3].split(separator: ",").map { Int($0)! }
            var output: [String] = []
            for frame in words[0] == "send" ? cluster.outbox[from] : cluster.history[from] {
                for target in targets {
                    let (disposition, deliveries) = cluster.receive(target, frame)
                    if disposition != .accepted { output.append("\(target) \(disposition)") }
                    output += deliveries.map { "\(target) delivered \($0)" }
                }
            }
            if words[0] == "send" { cluster.outbox[from].removeAll() }
            return output
        case "drop":
            let member = Int(words[1])!
            defer { cluster.outbox[member].removeAll() }
            return ["dropped \(cluster.outbox[member].count) frame(s) of \(member)"]
        case "round":
            let round = UInt64(words[1])!
            var output: [String] = []
            for member in cluster.members.indices {
                output += cluster.openSlot(member, round: round).map { "\(member) sent \(describeFrame($0))" }
                output += cluster.lastDeliveries.map { "\(member) delivered \($0)" }
                for frame in cluster.outbox[member] {
                    for target in cluster.members.indices where target != member {
                        output += cluster.receive(target, frame).1.map { "\(target) delivered \($0)" }
                    }
                }
                cluster.outbox[member].removeAll()
            }
            return output
        case "state":
            return [cluster.members[Int(words[1])!].debugDescription]
        default:
            return ["unknown command: \(command)"]
        }
    }
}
