import Foundation

/// A delivered message: its sender's node and the sender's message number.
public struct MessageID: Hashable, Sendable, CustomStringConvertible {
    public var node: UInt16
    public var sequence: UInt64
    public init(node: UInt16, sequence: UInt64) {
        self.node = node
        self.sequence = sequence
    }
    public var description: String { "\(node):\(sequence)" }
}

/// One member's log, cut into segments: the messages it delivered in each view.
public struct MemberLog: Sendable {
    public struct Segment: Sendable {
        public var epoch: UInt32
        public var messages: [MessageID] = []
        /// Ended by the next view's installation (not by exclusion or the log's end).
        public var complete = false
        /// The member was left out, or reported no primary component, in this view.
        public var leftOut = false
    }
    public struct Installation: Sendable {
        public var epoch: UInt32
        public var atNanos: UInt64
        public var state: String
        public var members: String?
        public var joined: Bool
    }
    public struct ParseError: Error, CustomStringConvertible {
        public var line: Int
        public var text: String
        public var description: String { "line \(line): cannot read \"\(text)\"" }
    }

    public var name: String
    public var segments: [Segment] = []
    public var installations: [Installation] = []
    public var messageCount = 0
    /// True when the log holds no view and no delivery (a joiner that never
    /// joined, or a member killed before its first line was complete).
    public var isEmpty: Bool { installations.isEmpty && segments.isEmpty }

    /// Parses a log's text; `name` names it in problems.
    public init(name: String, text: String) throws {
        self.name = name
        var current: Segment?
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
        // A member killed while writing may leave half a last line: skip it.
        // An empty log (a joiner that never joined) has no lines at all.
        let complete = text.hasSuffix("\n") || lines.isEmpty ? lines.count : lines.count - 1
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
                    installations.append(
                        Installation(
                            epoch: epoch, atNanos: at, state: "\(fields[4]) \(fields[5])",
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
public struct LogComparison: Sendable {
    public var logs: [MemberLog]

    public init(logs: [MemberLog]) { self.logs = logs }

    /// Compares the logs: every disagreement, one summary line per view, and how many views were seen.
    public func check() -> (problems: [String], summary: [String], epochs: Int) {
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
                for other in views
                where other.installation.state != reference.installation.state
                    || other.installation.members != reference.installation.members
                {
                    problems.append(
                        "view \(epoch): \(other.log) installed it with state \(other.installation.state) members \(other.installation.members ?? "?"), \(reference.log) with \(reference.installation.state) members \(reference.installation.members ?? "?")"
                    )
                }
                for joiner in all where joiner.installation.joined && joiner.installation.state != reference.installation.state {
                    problems.append(
                        "view \(epoch): \(joiner.log) joined with state \(joiner.installation.state), the members had \(reference.installation.state)"
                    )
                }
            }
            let times = all.map(\.installation.atNanos)
            let spread = Double(times.max()! - times.min()!) / 1e6
            let members = views.first?.installation.members ?? "?"
            summary.append(
                String(
                    format: "view %u: members %@; installed at %d log(s)%@, within %.3f ms", epoch, members,
                    views.count, all.count > views.count ? ", joined by \(all.count - views.count)" : "", spread))
        }
        // Order within each view.
        var segmentEpochs = Set<UInt32>()
        for log in logs { for s in log.segments { segmentEpochs.insert(s.epoch) } }
        for epoch in segmentEpochs.sorted() {
            var segments: [(log: String, segment: MemberLog.Segment)] = []
            for log in logs { for s in log.segments where s.epoch == epoch { segments.append((log.name, s)) } }
            let complete = segments.filter(\.segment.complete)
            let reference =
                complete.first ?? segments.filter { !$0.segment.leftOut }.max { $0.segment.messages.count < $1.segment.messages.count }
                ?? segments.max { $0.segment.messages.count < $1.segment.messages.count }!
            let referenceSet = Set(reference.segment.messages)
            for (name, segment) in segments {
                if segment.complete {
                    if segment.messages != reference.segment.messages {
                        problems.append(
                            "view \(epoch): \(name) delivered \(segment.messages.count) messages, \(reference.log) \(reference.segment.messages.count), or in another order (first difference at \(firstDifference(segment.messages, reference.segment.messages)))"
                        )
                    }
                    continue
                }
                let compared = segment.leftOut ? segment.messages.filter { referenceSet.contains($0) } : segment.messages
                if !reference.segment.messages.starts(with: compared) && !compared.starts(with: reference.segment.messages) {
                    problems.append(
                        "view \(epoch): \(name)'s \(compared.count) deliveries are not a prefix of \(reference.log)'s (first difference at \(firstDifference(compared, reference.segment.messages)))"
                    )
                }
            }
        }
        return (problems, summary, byEpoch.count)
    }

    func firstDifference(_ a: [MessageID], _ b: [MessageID]) -> Int {
        (0..<min(a.count, b.count)).first { a[$0] != b[$0] } ?? min(a.count, b.count)
    }
}
