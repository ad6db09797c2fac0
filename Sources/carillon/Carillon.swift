import ArgumentParser
import CCarillonSys
import CarillonAuth
import CarillonOrdering
import CarillonRuntime
import CarillonTransport
import Dispatch
import Foundation
import Synchronization

struct Carillon: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "carillon",
        abstract: "Run members of a Carillon totally ordered bus on UDP.",
        discussion: """
            Examples:
              carillon demo                                   3 member processes on loopback, ordered delivery, latency summary
              carillon demo --members 5 --messages 5000 --idle busy-spin
              carillon node --config bus.json --member a      run member "a" of the bus in bus.json
              carillon node --config bus.json --member a --send 1000 --rate 500 --log a.log
            The configuration file format is in docs/configuration.md.
            """,
        subcommands: [Node.self, Demo.self, Keygen.self, Fanout.self])
}

/// One delivered message as logged by `carillon node --log`.
struct DeliveryRecord {
    var sender: Int
    var sequence: UInt64
    var sentNanos: UInt64
    var deliveredNanos: UInt64
}

struct Node: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one member of a bus until its traffic is delivered, a timeout, or SIGINT/SIGTERM.",
        discussion: """
            Examples:
              carillon node --config bus.json --member a
              carillon node --config bus.json --member b --send 10000 --rate 5000 --size 64 --expect 30000 --log b.log
            With --send, the member broadcasts that many messages whose first 8 bytes are the send time \
            (CLOCK_REALTIME, ns), so each delivery's latency can be computed. --log writes one line per \
            delivery: sender sequence sent_ns delivered_ns.
            """)

    @Option(help: "The bus's JSON configuration file.") var config: String
    @Option(help: "This member's name in the configuration.") var member: String
    @Option(help: "Messages to broadcast.") var send = 0
    @Option(help: "Messages per second to broadcast (0: as fast as the bus takes them).") var rate: Double = 1000
    @Option(help: "Payload size in bytes (at least 8).") var size = 64
    @Option(help: "Stop once this many messages have been delivered here.") var expect: Int?
    @Option(help: "Stop after this many seconds in any case.") var timeout: Double = 60
    @Option(help: "Write every delivery to this file.") var log: String?
    @Flag(help: "Closed loop: send the next message only after this member delivered the previous one, then wait --gap-us.")
    var closedLoop = false
    @Option(help: "Pause after each delivered message in closed-loop mode, in microseconds.") var gapUs: Double = 1000

    func validate() throws {
        if send < 0 { throw ValidationError("--send must not be negative") }
        if size < 8 { throw ValidationError("--size must be at least 8 (the send timestamp)") }
        if rate < 0 { throw ValidationError("--rate must not be negative") }
        if timeout <= 0 { throw ValidationError("--timeout must be positive") }
        if let expect, expect < 0 { throw ValidationError("--expect must not be negative") }
    }

    func run() throws {
        let file: ConfigFile
        let configuration: MemberConfiguration
        do {
            file = try ConfigFile.load(path: config)
            configuration = try file.memberConfiguration(name: member, path: config)
        } catch { throw ValidationError(error.description) }

        let records = Mutex<[DeliveryRecord]>([])
        let ownDelivered = Atomic<Int>(0)
        let ownRank = configuration.rank
        let target = expect
        let reached = DispatchSemaphore(value: 0)
        let node: Member
        do {
            node = try Member(configuration: configuration) { delivery, payload in
                let now = Clock.viewNanos()
                let sent = payload.count >= 8 ? payload.loadUnaligned(as: UInt64.self) : 0
                let count = records.withLock {
                    $0.append(DeliveryRecord(sender: delivery.sender, sequence: delivery.sequence, sentNanos: sent, deliveredNanos: now))
                    return $0.count
                }
                if delivery.sender == ownRank { ownDelivered.add(1, ordering: .releasing) }
                if count == target { reached.signal() }
            }
        } catch { throw ValidationError("member \(member): \(error)") }
        records.withLock { $0.reserveCapacity(max(target ?? 0, 1024)) }

        let stopRequested = Atomic<Bool>(false)
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let sources = [SIGINT, SIGTERM].map { number in
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { stopRequested.store(true, ordering: .relaxed); reached.signal() }
            source.resume()
            return source
        }
        defer { sources.forEach { $0.cancel() } }

        try node.start()
        let started = Clock.viewNanos()
        let deadline = started + UInt64(timeout * 1e9)
        // Wait for the view's start before sending.
        var payload = [UInt8](repeating: 0xA5, count: size)
        let interval = rate > 0 ? UInt64(1e9 / rate) : 0
        var next = max(Clock.viewNanos(), file.startAtNanos)
        var sent = 0
        while sent < send, !stopRequested.load(ordering: .relaxed), Clock.viewNanos() < deadline {
            let now = Clock.viewNanos()
            if now < next { sleepNanos(min(next - now, 50_000_000)); continue }
            payload.withUnsafeMutableBytes { $0.storeBytes(of: Clock.viewNanos(), as: UInt64.self) }
            switch node.broadcast(payload) {
            case .queued:
                sent += 1
                next += interval
                if closedLoop {
                    while ownDelivered.load(ordering: .acquiring) < sent, Clock.viewNanos() < deadline,
                          !stopRequested.load(ordering: .relaxed) { sched_yield() }
                    next = Clock.viewNanos() + UInt64(gapUs * 1000)
                }
            case .sendBufferFull, .notInView:
                sleepNanos(configuration.ordering.schedule.roundPeriodNanos)
            case .payloadTooLarge(let limit):
                throw ValidationError("--size \(size) exceeds the largest payload, \(limit) bytes, for max_frame_bytes \(file.maxFrameBytes)")
            }
        }
        if target != nil {
            let remaining = deadline > Clock.viewNanos() ? deadline - Clock.viewNanos() : 0
            _ = reached.wait(timeout: .now() + .nanoseconds(Int(min(remaining, UInt64(Int.max)))))
        } else {
            while !stopRequested.load(ordering: .relaxed), Clock.viewNanos() < deadline { _ = reached.wait(timeout: .now() + .milliseconds(200)) }
        }
        // A few more rounds so peers still waiting for our frames get them.
        sleepNanos(20 * configuration.ordering.schedule.roundPeriodNanos)
        let report = node.stop()
        let delivered = records.withLock { $0 }
        if let log {
            var text = ""
            text.reserveCapacity(delivered.count * 48)
            for r in delivered { text += "\(r.sender) \(r.sequence) \(r.sentNanos) \(r.deliveredNanos)\n" }
            do { try text.write(toFile: log, atomically: true, encoding: .utf8) } catch {
                throw ValidationError("cannot write --log \(log): \(error.localizedDescription)")
            }
        }
        let c = report.ordering, t = report.transport
        FileHandle.standardError.write(Data("""
            \(member) (rank \(configuration.rank)): sent \(sent), delivered \(delivered.count)\(target.map { " of \($0)" } ?? ""); \(report)
              frames: \(c.slotFramesSent) slot + \(c.repairFramesSent) repair sent, \(c.framesReceived) received (\(c.duplicateFrames) duplicate, \(c.malformedFrames) malformed, \(c.framesBeyondWindow) beyond window); NAKs \(c.naksSent) sent / \(c.naksReceived) received; late slots \(report.runtime.lateSlots); refused: \(report.runtime.badTag) bad tag, \(report.runtime.missingTag) without tag; clock correction \(report.runtime.clockCorrectionNanos) ns
              socket: \(t.datagramsSent) datagrams in \(t.sendCalls) sendmmsg, \(t.datagramsReceived) in \(t.receiveCalls) recvmmsg, \(t.datagramsNotSent) not sent, \(t.datagramsDroppedByInjection) dropped by injection

            """.utf8))
        if let target, delivered.count < target { throw ExitCode(2) }
    }
}

func sleepNanos(_ nanos: UInt64) {
    var request = timespec(tv_sec: Int(nanos / 1_000_000_000), tv_nsec: Int(nanos % 1_000_000_000))
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0, errno == EINTR { request = remaining }
}

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a fresh random cluster key (64 hex digits) for the configuration's key_file.",
        discussion: """
            Examples:
              carillon keygen > bus.key && chmod 600 bus.key
            """)
    func run() { print(FrameAuthenticator.generateHexKey()) }
}

/// Raw UDP 1→N fan-out on the same path as the bus: the baseline every
/// latency figure is a ratio against.
struct Fanout: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Baseline: the first member sends timestamped datagrams straight to the others over plain UDP; the others log arrivals.",
        discussion: """
            Same configuration file and addresses as the bus; no ordering, no authentication. The sender \
            (--send N) sends to every other member with one sendmmsg, waiting --gap-us between messages; \
            receivers block in ppoll and log "sender sequence sent_ns received_ns" per datagram.

            Examples:
              carillon fanout --config bus.json --member h1 --expect 1000 --log h1.fanout
              carillon fanout --config bus.json --member h0 --send 1000 --gap-us 1000
            """)

    @Option(help: "The bus's JSON configuration file.") var config: String
    @Option(help: "This member's name.") var member: String
    @Option(help: "Datagrams to send (sender only).") var send = 0
    @Option(help: "Pause between datagrams, microseconds.") var gapUs: Double = 1000
    @Option(help: "Payload size in bytes (at least 16).") var size = 64
    @Option(help: "Stop after receiving this many datagrams.") var expect = 0
    @Option(help: "Stop after this many seconds in any case.") var timeout: Double = 60
    @Option(help: "Write every arrival to this file.") var log: String?

    func run() throws {
        let file: ConfigFile
        do { file = try ConfigFile.load(path: config) } catch { throw ValidationError(error.description) }
        guard let rank = file.members.firstIndex(where: { $0.name == member }) else {
            throw ValidationError("\(config) has no member named \(member)")
        }
        let peers = file.members.enumerated().filter { $0.offset != rank }.map(\.element.address)
        let transport = try UDPTransport(options: UDPTransportOptions(bind: file.members[rank].address, peers: peers))
        let deadline = Clock.viewNanos() + UInt64(timeout * 1e9)
        var payload = [UInt8](repeating: 0x5A, count: max(size, 16))
        if send > 0 {
            // Let the receivers bind first.
            while Clock.viewNanos() < file.startAtNanos { sleepNanos(1_000_000) }
            for sequence in 1...send {
                payload.withUnsafeMutableBytes {
                    $0.storeBytes(of: Clock.viewNanos(), as: UInt64.self)
                    $0.storeBytes(of: UInt64(sequence), toByteOffset: 8, as: UInt64.self)
                }
                try payload.withUnsafeBytes { try transport.sendToAll($0) }
                sleepNanos(UInt64(gapUs * 1000))
            }
        }
        var lines: [String] = []
        lines.reserveCapacity(expect)
        while lines.count < expect, Clock.viewNanos() < deadline {
            _ = carillon_wait_readable(transport.descriptor, 100_000_000)
            try transport.receiveBatch { bytes, _ in
                let now = Clock.viewNanos()
                guard bytes.count >= 16 else { return }
                lines.append("0 \(bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) \(bytes.loadUnaligned(as: UInt64.self)) \(now)")
            }
        }
        if let log { try (lines.joined(separator: "\n") + (lines.isEmpty ? "" : "\n")).write(toFile: log, atomically: true, encoding: .utf8) }
        FileHandle.standardError.write(Data("\(member): fanout sent \(send), received \(lines.count)\n".utf8))
        if lines.count < expect { throw ExitCode(2) }
    }
}
