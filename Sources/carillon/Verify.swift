import ArgumentParser
import Foundation

/// Checks the logs of several `carillon node --log` members against each other:
/// the same views at the same points of the stream, the same messages in the
/// same order within each view, correct transferred state, no duplicates.
struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check that members' delivery logs agree: views, order within each view, transferred state.",
        discussion: """
            Reads logs written by `carillon node --log` (a killed member's log may end anywhere) and checks:
              • every member that installed view E did so with the same members and the same state \
            (count and digest of everything delivered before it);
              • a member that joined at view E received exactly that state;
              • members that went through all of view E delivered the same messages in the same order in it;
              • a member whose log ends inside view E delivered a prefix of it (a member left out of the \
            view may have delivered messages the others trimmed, as agreed delivery allows; its other \
            messages must still come in the same order);
              • no member delivered a message twice, and each sender's messages come in increasing order.
            Prints a line per view with how many members installed it and how far apart (first to last, ms).
            Exit status 1 on any disagreement.

            Examples:
              carillon verify h0.log h1.log h2.log h3.log h4.log
              carillon verify --quiet /tmp/run/*.log
            """)

    @Argument(help: "Logs to compare.") var logs: [String]
    @Flag(help: "Print only problems and the verdict.") var quiet = false

    func validate() throws {
        if logs.isEmpty { throw ValidationError("give at least one log") }
    }

    func run() throws {
        var parsed: [MemberLog] = []
        for path in logs {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw ValidationError("cannot read \(path)")
            }
            do { parsed.append(try MemberLog(name: URL(fileURLWithPath: path).lastPathComponent, text: text)) } catch {
                throw ValidationError("\(path): \(error)")
            }
        }
        let result = LogComparison(logs: parsed).check()
        if !quiet { for line in result.summary { print(line) } }
        for problem in result.problems { print("PROBLEM: \(problem)") }
        let messages = parsed.reduce(0) { $0 + $1.messageCount }
        if result.problems.isEmpty {
            print("verify: OK — \(parsed.count) logs, \(result.epochs) views, \(messages) deliveries agree")
        } else {
            print("verify: FAILED — \(result.problems.count) problem(s)")
            throw ExitCode(1)
        }
    }
}

struct MessageID: Hashable, CustomStringConvertible {
    var node: UInt16
    var sequence: UInt64
    var description: String { "\(node):\(sequence)" }
}

/// One member's log, cut into segments: the messages it delivered in each view.
struct MemberLog {
    struct Segment {
        var epoch: UInt32
        var messages: [MessageID] = []
        /// Ended by the next view's installation (not by exclusion or the log's end).
        var complete = false
        /// The member was left out, or reported no primary component, in this view.
        var leftOut = false
    }
    struct Installation {
        var epoch: UInt32
        var atNanos: UInt64
        var state: String
        var members: String?
        var joined: Bool
    }
    struct ParseError: Error, CustomStringConvertible {
        var line: Int
        var text: String
        var description: String { "line \(line): cannot read \"\(text)\"" }
    }

    var name: String
    var segments: [Segment] = []
    var installations: [Installation] = []
    var messageCount = 0

    init(name: String, text: String) throws {
        self.name = name
        var current: Segment?
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
        // A member killed while writing may leave half a last line: skip it.
        let complete = text.hasSuffix("\n") ? lines.count : lines.count - 1
        for (number, raw) in lines.prefix(complete).enumerated() {
            let fields = raw.split(separator: " ")
            if fields.first == "#" {
                guard fields.count >= 4, let epoch = UInt32(fields[2]), let at = UInt64(fields[3]) else {
                    throw ParseError(line: number + 1, text: String(raw))
                }
                switch fields[1] {
                case "view", "state":
                    guard fields.count >= 6 else { throw ParseError(line: number + 1, text: String(raw)) }
                    if fields[1] == "view", var segment = current {
                        segment.complete = segment.epoch + 1 == epoch
                        if segment.complete { segment.leftOut = false }
                        segments.append(segment)
                    }
                    let members = fields.count > 6 ? String(fields[6].dropFirst("members=".count)) : nil
                    installations.append(Installation(epoch: epoch, atNanos: at, state: "\(fields[4]) \(fields[5])",
                                                      members: members, joined: fields[1] == "state"))
                    current = Segment(epoch: epoch)
                case "left":
                    // Left gracefully: its last view ends here, a prefix of the others'.
                    if let segment = current { segments.append(segment) }
                    current = nil
                case "excluded":
                    if var segment = current {
                        segment.leftOut = true
                        segments.append(segment)
                    }
                    current = nil
                case "suspected", "cleared":
                    break  // failure-detection observations, not stream events
                case "no-primary":
                    // A report, not an end: the member stays in the view, delivering
                    // nothing until a change decides (or it is left out).
                    current?.leftOut = true
                default:
                    throw ParseError(line: number + 1, text: String(raw))
                }
                continue
            }
            guard fields.count == 4, let node = UInt16(fields[0]), let sequence = UInt64(fields[1]) else {
                throw ParseError(line: number + 1, text: String(raw))
            }
            // Messages before any view line belong to the first view (epoch 1 unless a view line says otherwise).
            if current == nil { current = Segment(epoch: installations.last.map { $0.epoch } ?? 1) }
            current!.messages.append(MessageID(node: node, sequence: sequence))
            messageCount += 1
        }
        if let current { segments.append(current) }
    }
}

/// The cross-log checks of `carillon verify`.
struct LogComparison {
    var logs: [MemberLog]

    func check() -> (problems: [String], summary: [String], epochs: Int) {
        var problems: [String] = []
        var summary: [String] = []
        // Integrity: no duplicates, each sender's numbers increasing, per log.
        for log in logs {
            var seen = Set<MessageID>()
            var last: [UInt16: UInt64] = [:]
            for segment in log.segments {
                for message in segment.messages {
                    if !seen.insert(message).inserted { problems.append("\(log.name) delivered \(message) twice") }
                    if let previous = last[message.node], message.sequence <= previous {
                        problems.append("\(log.name): sender \(message.node)'s \(message.sequence) came after \(previous)")
                    }
                    last[message.node] = message.sequence
                }
            }
        }
        // Views: same members and state at every installation (or state transfer) of an epoch.
        var byEpoch: [UInt32: [(log: String, installation: MemberLog.Installation)]] = [:]
        for log in logs { for i in log.installations { byEpoch[i.epoch, default: []].append((log.name, i)) } }
        for epoch in byEpoch.keys.sorted() {
            let all = byEpoch[epoch]!
            let views = all.filter { !$0.installation.joined }
            if let reference = views.first {
                for other in views where other.installation.state != reference.installation.state
                    || other.installation.members != reference.installation.members {
                    problems.append("view \(epoch): \(other.log) installed it with state \(other.installation.state) members \(other.installation.members ?? "?"), \(reference.log) with \(reference.installation.state) members \(reference.installation.members ?? "?")")
                }
                for joiner in all where joiner.installation.joined && joiner.installation.state != reference.installation.state {
                    problems.append("view \(epoch): \(joiner.log) joined with state \(joiner.installation.state), the members had \(reference.installation.state)")
                }
            }
            let times = all.map(\.installation.atNanos)
            let spread = Double(times.max()! - times.min()!) / 1e6
            let members = views.first?.installation.members ?? "?"
            summary.append(String(format: "view %u: members %@; installed at %d log(s)%@, within %.3f ms", epoch, members,
                                  views.count, all.count > views.count ? ", joined by \(all.count - views.count)" : "", spread))
        }
        // Order within each view.
        var segmentEpochs = Set<UInt32>()
        for log in logs { for s in log.segments { segmentEpochs.insert(s.epoch) } }
        for epoch in segmentEpochs.sorted() {
            var segments: [(log: String, segment: MemberLog.Segment)] = []
            for log in logs { for s in log.segments where s.epoch == epoch { segments.append((log.name, s)) } }
            let complete = segments.filter(\.segment.complete)
            let reference = complete.first ?? segments.filter { !$0.segment.leftOut }.max { $0.segment.messages.count < $1.segment.messages.count }
                ?? segments.max { $0.segment.messages.count < $1.segment.messages.count }!
            let referenceSet = Set(reference.segment.messages)
            for (name, segment) in segments {
                if segment.complete {
                    if segment.messages != reference.segment.messages {
                        problems.append("view \(epoch): \(name) delivered \(segment.messages.count) messages, \(reference.log) \(reference.segment.messages.count), or in another order (first difference at \(firstDifference(segment.messages, reference.segment.messages)))")
                    }
                    continue
                }
                let compared = segment.leftOut ? segment.messages.filter { referenceSet.contains($0) } : segment.messages
                if !reference.segment.messages.starts(with: compared) && !compared.starts(with: reference.segment.messages) {
                    problems.append("view \(epoch): \(name)'s \(compared.count) deliveries are not a prefix of \(reference.log)'s (first difference at \(firstDifference(compared, reference.segment.messages)))")
                }
            }
        }
        return (problems, summary, byEpoch.count)
    }

    func firstDifference(_ a: [MessageID], _ b: [MessageID]) -> Int {
        (0..<min(a.count, b.count)).first { a[$0] != b[$0] } ?? min(a.count, b.count)
    }
}
