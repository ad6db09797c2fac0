import CarillonAuth
import CarillonBench
import Foundation
import Histogram

/// The binaries the bench starts: `carillon` next to `carillon-bench`.
enum Binaries {
    static var directory: String { URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path }

    static func carillon() throws -> String {
        let path = directory + "/carillon"
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw BenchError("\(path) is missing: build it with `swift build -c release --product carillon`")
        }
        return path
    }

    static var bench: String { URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path }
}

/// One latency histogram in nanoseconds (1 ns to 60 s, 3 significant digits).
func latencyHistogram() -> Histogram<UInt64> {
    Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
}

/// What one bus run does: who sends what, how, with which settings.
struct BusSpec {
    var members = 3
    var sizeBytes = 64
    var roundPeriodMicros = 100.0
    var reservation = 0.5
    /// Idle strategy; nil leaves the node's default (spin-then-park).
    var idle: String? = "blocking"
    /// "ordering" in the node configuration: slots or promises.
    var ordering = "promises"
    /// Write only what a bus cannot run without (members, start, key) plus
    /// `ordering` and, when set, `idle`: every other setting is the node's
    /// default (docs/configuration.md).
    var nodeDefaults = false
    /// Members that send.
    var senders: [Int] = [0]
    var messagesPerSender = 1000
    /// Closed loop: the next message after the sender delivered the previous one, plus `gapMicros`.
    var closedLoop = true
    var gapMicros = 1000.0
    /// Open loop: messages per second per sender (0: as fast as the bus takes them).
    var ratePerSender = 0.0
    var maxFrameBytes = 1472
    var suspicionSlots = 200
    /// Bulk channel on every member with this pacing, each sending to the next member.
    var bulkPacing: String?
    /// Who sends bulk to whom (sender → receiver); nil: every member to the next (a ring).
    var bulkRoutes: [Int: Int]?
    var linkMbit = 1000.0
    var timeoutSeconds = 120.0
    /// More top-level keys of the node configuration, as `"key": value` JSON
    /// text each (`services --carillon-config`), written after the others.
    var extraSettings: [String] = []

    var expectedPerMember: Int { senders.count * messagesPerSender }
}

/// One member's log, parsed.
struct MemberLog {
    var deliveries: [(node: UInt16, sequence: UInt64, sentNanos: UInt64, deliveredNanos: UInt64)] = []
    var viewChanges = 0
    var bulkLine: String?
}

/// What a bus run measured.
struct BusOutcome {
    /// Broadcast (or intended send, open loop) → delivered at every member.
    var atAll = latencyHistogram()
    var messagesPerSecond: [Double] = []
    var bytesPerSecond: [Double] = []
    var delivered: [Int] = []
    var notes: [String] = []
    /// What each member process cost over the measured phase.
    var cost: CostSummary?

    /// Delivered messages per second, averaged over members.
    var meanMessagesPerSecond: Double {
        messagesPerSecond.isEmpty ? 0 : messagesPerSecond.reduce(0, +) / Double(messagesPerSecond.count)
    }
}

/// Starts one `carillon node` per member, waits for them, and reads their
/// logs. What the members cost is sampled from the first round until the
/// first member ends (every 100 ms while all run).
func runBus(_ spec: BusSpec, on topology: Topology, directory: String) throws -> BusOutcome {
    let carillon = try Binaries.carillon()
    let config = try writeBusConfig(spec, on: topology, directory: directory)
    let configPath = config.path

    var children: [Child] = []
    defer { children.forEach { $0.kill9() } }
    for i in 0..<spec.members {
        var argv = [
            carillon, "node", "--no-services", "--config", configPath, "--member", "h\(i)", "--size", "\(spec.sizeBytes)",
            "--expect", "\(spec.expectedPerMember)", "--timeout", "\(Int(spec.timeoutSeconds))",
            "--log", "\(directory)/h\(i).log"
        ]
        let sends = spec.senders.contains(i) ? spec.messagesPerSender : 0
        argv += ["--send", "\(sends)"]
        if spec.closedLoop {
            argv += ["--closed-loop", "--gap-us", "\(spec.gapMicros)"]
        } else {
            argv += ["--rate", "\(spec.ratePerSender)"]
        }
        if let pacing = spec.bulkPacing {
            argv += ["--bulk", pacing, "--link-mbit", "\(spec.linkMbit)"]
            if let to = spec.bulkRoutes.map({ $0[i] }) ?? (i + 1) % spec.members { argv += ["--bulk-to", "h\(to)"] }
        }
        children.append(try Child(topology.command(host: i, argv), stderr: "\(directory)/h\(i).err"))
    }
    let sampler = CostSampler(pids: children.map(\.pid), start: config.startNanos, intervalSeconds: 0.1)
    var outcome = try collectOutcome(
        of: children, waitSeconds: spec.timeoutSeconds + 15, directory: directory,
        sizeBytes: spec.sizeBytes, noun: "member")
    let (cost, problem) = sampler.finish()
    outcome.cost = cost
    if let problem { outcome.notes.append("member cost not measured: \(problem)") }
    return outcome
}

/// Waits for the agents h0, h1, … (bus members or CPG clients) that log to
/// `directory/h<i>.log`, then reads and summarises their logs; an agent that
/// failed or timed out is noted on the outcome and its stderr tail printed.
func collectOutcome(of children: [Child], waitSeconds: Double, directory: String, sizeBytes: Int, noun: String) throws -> BusOutcome {
    var failures: [String] = []
    for (i, child) in children.enumerated() {
        let status = child.wait(seconds: waitSeconds)
        if status != 0 { failures.append("h\(i) \(status.map { "exited with status \($0)" } ?? "timed out"):\n\(child.stderrTail)") }
    }
    let logs = try children.indices.map { try readLog("\(directory)/h\($0).log", stderr: "\(directory)/h\($0).err") }
    var outcome = summarise(logs: logs, sizeBytes: sizeBytes)
    if !failures.isEmpty {
        outcome.notes.append("\(failures.count) \(noun)(s) fell short")
        FileHandle.standardError.write(Data("\ncarillon-bench: \(failures.joined(separator: "\n"))\n(logs in \(directory))\n".utf8))
    }
    return outcome
}

/// Writes the bus configuration (and a fresh key beside it) for `spec`'s
/// members; its path and the first round's start (CLOCK_REALTIME, ns).
func writeBusConfig(_ spec: BusSpec, on topology: Topology, directory: String) throws -> (path: String, startNanos: UInt64) {
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    // A fresh key, mode 0600 (KeyFile.write never replaces a file: the last run's goes first).
    let keyPath = directory + "/bus.key"
    if FileManager.default.fileExists(atPath: keyPath) { try FileManager.default.removeItem(atPath: keyPath) }
    try KeyFile.write(hexKey: FrameAuthenticator.generateHexKey(), to: keyPath)
    // Every process must be up before the first round: 1.5 s plus a little per member.
    let startNanos = UInt64(Date().timeIntervalSince1970 * 1e9) + UInt64(1_500_000_000 + 200_000_000 * spec.members)
    let members = (0..<spec.members).map { i in
        "{\"name\": \"h\(i)\", \"address\": \"\(topology.address(i)):\(topology.busPort(i))\"}"
    }.joined(separator: ",\n  ")
    // The one place the bench writes a node configuration: every scenario's settings go through here.
    var settings = ["\"start_at_ns\": \(startNanos)", "\"ordering\": \"\(spec.ordering)\""]
    if let idle = spec.idle { settings.append("\"idle\": \"\(idle)\"") }
    if !spec.nodeDefaults {
        settings += [
            "\"round_period_us\": \(spec.roundPeriodMicros)", "\"reservation\": \(spec.reservation)",
            "\"max_frame_bytes\": \(spec.maxFrameBytes)", "\"suspicion_slots\": \(spec.suspicionSlots)"
        ]
    }
    settings += spec.extraSettings
    let config = """
        { "members": [
          \(members)
        ],
        \(settings.joined(separator: ", ")),
        "authentication": {"key_file": "bus.key"} }
        """
    let path = directory + "/bus.json"
    try config.write(toFile: path, atomically: true, encoding: .utf8)
    return (path, startNanos)
}

/// Reads a `carillon node` log ("node seq sent_ns delivered_ns" and "# …" lines).
func readLog(_ path: String, stderr: String? = nil) throws -> MemberLog {
    var log = MemberLog()
    guard let data = FileManager.default.contents(atPath: path) else { throw BenchError("no log at \(path)") }
    data.withUnsafeBytes { raw in
        var fields: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        var field = 0, value: UInt64 = 0, comment = false, any = false
        func endLine() {
            if !comment, field == 3, any {
                fields.3 = value
                log.deliveries.append((UInt16(truncatingIfNeeded: fields.0), fields.1, fields.2, fields.3))
            }
            field = 0; value = 0; comment = false; any = false
        }
        for byte in raw {
            if byte == 0x0A {
                endLine()
            } else if comment {
                continue
            } else if byte == 0x23 {  // '#': a view event line
                comment = true
            } else if byte == 0x20 {
                switch field {
                case 0: fields.0 = value
                case 1: fields.1 = value
                case 2: fields.2 = value
                default: break
                }
                field += 1; value = 0
            } else if byte >= 0x30, byte <= 0x39 {
                value = value &* 10 &+ UInt64(byte - 0x30)
                any = true
            }
        }
        if raw.last != 0x0A { endLine() }  // a last line without its newline counts too
    }
    if let text = try? String(contentsOfFile: path, encoding: .utf8) {
        log.viewChanges = text.split(separator: "\n").filter { $0.hasPrefix("# view ") }.count
    }
    if let stderr, let text = try? String(contentsOfFile: stderr, encoding: .utf8) {
        log.bulkLine = text.split(separator: "\n").first { $0.contains("bulk (") }.map { $0.trimmingCharacters(in: .whitespaces) }
    }
    return log
}

/// Latency at all members and delivered rates from members' logs.
func summarise(logs: [MemberLog], sizeBytes: Int) -> BusOutcome {
    var outcome = BusOutcome()
    // (node, sequence) → (sent, latest delivery, members that delivered it)
    var seen: [UInt64: (sent: UInt64, last: UInt64, count: Int)] = [:]
    for log in logs {
        for d in log.deliveries {
            let key = UInt64(d.node) << 48 | (d.sequence & 0xFFFF_FFFF_FFFF)
            if let entry = seen[key] {
                seen[key] = (entry.sent, max(entry.last, d.deliveredNanos), entry.count + 1)
            } else {
                seen[key] = (d.sentNanos, d.deliveredNanos, 1)
            }
        }
        outcome.delivered.append(log.deliveries.count)
        if let first = log.deliveries.first?.deliveredNanos, let last = log.deliveries.last?.deliveredNanos, last > first {
            let seconds = Double(last - first) / 1e9
            outcome.messagesPerSecond.append(Double(log.deliveries.count - 1) / seconds)
            outcome.bytesPerSecond.append(Double((log.deliveries.count - 1) * sizeBytes) / seconds)
        } else {
            outcome.messagesPerSecond.append(0)
            outcome.bytesPerSecond.append(0)
        }
    }
    var partial = 0, beyondRange = 0
    for entry in seen.values {
        if entry.count == logs.count {
            if !outcome.atAll.record(entry.last > entry.sent ? entry.last - entry.sent : 0) { beyondRange += 1 }
        } else {
            partial += 1
        }
    }
    if partial > 0 { outcome.notes.append("\(partial) messages not delivered at every member (left out of the latency)") }
    if beyondRange > 0 { outcome.notes.append("\(beyondRange) latencies above the histogram's 60 s range (left out)") }
    let views = logs.map(\.viewChanges).max() ?? 0
    if views > 1 { outcome.notes.append("\(views - 1) view changes during the run") }
    return outcome
}
