import ArgumentParser
import CCarillonSys
import CarillonBulk
import CarillonMembership
import CarillonMetricsEndpoint
import CarillonOrdering
import CarillonProcessStats
import CarillonRuntime
import CarillonServiceNode
import CarillonServices
import CarillonTransport
import Dispatch
import Foundation
import Synchronization

/// The replicated state of `carillon node`: how many messages were delivered
/// and an FNV-1a digest of their order. A joiner receives it by state transfer,
/// so every member's digest at the same point of the stream is the same.
struct StreamDigest: Equatable {
    var count: UInt64 = 0
    var digest: UInt64 = 0xCBF2_9CE4_8422_2325

    mutating func add(node: UInt16, sequence: UInt64) {
        var h = digest
        for byte in 0..<2 { h = (h ^ UInt64(truncatingIfNeeded: node >> (8 * byte))) &* 0x100_0000_01B3 }
        for byte in 0..<8 { h = (h ^ ((sequence >> (8 * UInt64(byte))) & 0xFF)) &* 0x100_0000_01B3 }
        digest = h
        count += 1
    }

    /// 16 bytes, little-endian: count, digest.
    var bytes: [UInt8] {
        withUnsafeBytes(of: (count.littleEndian, digest.littleEndian)) { Array($0) }
    }

    init() {}

    init?(bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        count = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        digest = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) }
    }

    var text: String { "\(count) \(String(digest, radix: 16))" }
}

/// One line of a node's log: a delivered message, or a view event.
enum LogLine {
    case message(node: UInt16, sequence: UInt64, sentNanos: UInt64, deliveredNanos: UInt64)
    case event(String)
}

/// What the agent thread's handlers share with the main thread.
final class NodeLog: @unchecked Sendable {
    let lines = Mutex<[LogLine]>([])
    /// Whether lines are kept for --log. Without it nothing would ever take
    /// them, and a node that runs for days would hold every delivery.
    let keepsLines: Bool
    /// Touched only on the agent thread (delivery and view handlers, snapshots).
    var state = StreamDigest()
    let delivered = Atomic<Int>(0)
    let ownDelivered = Atomic<Int>(0)
    /// Messages this member's sender got accepted by `broadcast` (for --stats).
    let sent = Atomic<Int>(0)
    /// Signalled per own delivery in closed-loop mode: the sender waits on it instead of spinning.
    let ownArrived = DispatchSemaphore(value: 0)
    let inView = Atomic<Bool>(false)

    init(keepsLines: Bool) { self.keepsLines = keepsLines }

    func append(_ line: LogLine) {
        guard keepsLines else { return }
        lines.withLock { $0.append(line) }
    }

    /// Swaps the pending lines with `spare` (which should be empty): the two
    /// buffers alternate, so no flush allocates. (Copying the array out and
    /// then emptying it with `keepingCapacity` made the shared buffer copy on
    /// write: a fresh buffer as large as the biggest backlog on every flush —
    /// with memory locked, mmap and page-faulting it in took most of a
    /// member's CPU under load.)
    func takeLines(into spare: inout [LogLine]) { lines.withLock { swap(&$0, &spare) } }
}

struct Node: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one member of a bus until SIGINT/SIGTERM, or until its traffic is delivered (--expect) or --timeout.",
        discussion: """
            Each message's payload starts with its send time (CLOCK_REALTIME, ns), the sender's node \
            and its message number (from 1; a --join process numbers on from the realtime clock in µs), so each delivery's latency can be computed and every sender's messages \
            identified across views. --log writes one line per delivery, "node number sent_ns \
            delivered_ns", and one line per view event, starting with "#": \
            "# view EPOCH ns COUNT DIGEST members=…", "# state EPOCH ns COUNT DIGEST members=…" \
            (joined that view with that state), "# excluded EPOCH ns UNSENT" (UNSENT are sent again after rejoining), "# no-primary EPOCH ns ROUNDS", and "# suspected 0 ns rank=R …" / "# cleared 0 ns rank=R" \
            when failure detection suspects a member of the current view or hears it again. COUNT and DIGEST are \
            the member's replicated state: messages delivered so far and a digest of their order. \
            `carillon verify` checks several members' logs against each other.

            --stats prints a line to standard error every --stats-interval seconds: deliveries, and every \
            counter that is not zero so far (names as in docs/operations.md), and over the interval the process's CPU time as a share of \
            one core (user + system, all threads, from /proc/self/stat) and its wake-ups per second \
            (voluntary context switches, summed over its threads from /proc/self/task/*/status) beside \
            its involuntary switches per second. The closing report always has the same cost line for \
            the whole run, from start to stop.

            Without --expect or --timeout the member runs until SIGINT or SIGTERM: it is a daemon \
            (docs/operations.md has a systemd unit). On SIGINT/SIGTERM (or when --expect or --timeout \
            ends it) the member stops sending, waits (at most 3 s) until its own queued messages are \
            delivered, then (at most 3 s) until every member holds its frames, with --leave leaves the \
            cluster (at most 1 s; without it the others detect the failure) and stops. A member that \
            left logs "# left EPOCH ns 0". A second SIGINT/SIGTERM while it stops ends the process at \
            once (status 130/143, no drain, the last 100 ms of --log lost). SIGHUP is logged and ignored.

            The node runs the services (locks, replicated objects; docs/services.md) and serves local \
            clients — carillon lock, carillon locks, carillon kv, the CarillonClient library — on a Unix \
            socket of mode 0600: the member's "client_socket", --client-socket, or \
            /tmp/carillon-PORT-MEMBER.sock. Their state goes to joiners over the bulk channel (bus port \
            + 1) unless --bulk uses that port for a benchmark. --no-services runs the bus alone.

            --metrics-listen HOST:PORT (or the member's "metrics_listen" in the configuration) serves \
            the member's counters and the process's CPU time and context switches in Prometheus text \
            format at http://HOST:PORT/metrics (docs/operations.md lists the metrics). Off by default.

            Examples:
              carillon node --config bus.json --member a
              carillon node --config bus.json --member b --send 10000 --rate 5000 --size 64 --expect 30000 --log b.log
              carillon node --config bus.json --member c --join --send 100000 --rate 1000 --log c.log
                  (a restarted member: joins the running cluster and receives its state)
              carillon node --config bus.json --member a --timeout 30 --stats --stats-interval 5
                  (an idle member for 30 s: what it costs, every 5 s)
              carillon node --config bus.json --member a --metrics-listen 127.0.0.1:9464 --leave
                  (a daemon until SIGTERM, then it leaves the view; scrape http://127.0.0.1:9464/metrics)
            """)

    @Option(help: "The bus's JSON configuration file.") var config: String
    @Option(help: "This member's name in the configuration.") var member: String
    @Flag(help: "Join the running cluster (a restart, or a later start) instead of starting with the first view.")
    var join = false
    @Option(help: "Messages to broadcast.") var send = 0
    @Option(help: "Messages per second to broadcast (0: as fast as the bus takes them).") var rate: Double = 1000
    @Option(help: "Payload size in bytes (at least 24).") var size = 64
    @Option(help: "Stop once this many messages have been delivered here.") var expect: Int?
    @Option(help: "Stop after this many seconds in any case (default: no limit; run until SIGINT/SIGTERM or --expect).")
    var timeout: Double?
    @Option(help: "Write every delivery and view event to this file (appended every 100 ms).") var log: String?
    @Flag(help: "Closed loop: send the next message only after this member delivered the previous one, then wait --gap-us.")
    var closedLoop = false
    @Option(help: "Pause after each delivered message in closed-loop mode, in microseconds.") var gapUs: Double = 1000
    @Option(
        help:
            "Run the bulk channel beside the bus (port + 1) with this pacing: gated (only outside the reserved slots), paced ((1 − reservation) × --link-mbit) or unpaced."
    )
    var bulk: String?
    @Option(help: "Keep bulk transfers queued to this member for the whole run (needs --bulk; the target runs --bulk too).")
    var bulkTo: String?
    @Option(help: "Bytes per bulk transfer.") var bulkBytes = 1 << 20
    @Option(
        help:
            "Rate of the link the bulk channel (--bulk, or the services' channel that joiners' states and migrating objects take) shares with the bus, in Mbit/s (the pacer's model of the bottleneck)."
    )
    var linkMbit: Double = 1000
    @Flag(
        help:
            "On SIGINT/SIGTERM, leave the cluster gracefully before stopping, so the others need not detect a failure. Not for stopping a whole cluster at once: the last members cannot form a majority to let each other go."
    )
    var leave = false
    @Flag(help: "Print counters, CPU (% of one core) and wake-ups per second to standard error every --stats-interval seconds.")
    var stats = false
    @Option(help: "Seconds between --stats lines.") var statsInterval: Double = 1
    @Option(
        help: ArgumentHelp(
            "Serve GET /metrics (Prometheus text format) on this IPv4 address and port; overrides the member's \"metrics_listen\".",
            valueName: "host:port"))
    var metricsListen: String?
    @Option(
        help: ArgumentHelp(
            "Serve local clients (carillon lock, carillon kv, CarillonClient) on this Unix socket; overrides the member's \"client_socket\" (default /tmp/carillon-PORT-MEMBER.sock).",
            valueName: "path"))
    var clientSocket: String?
    @Flag(help: "Do not run the services (locks, objects) nor their client socket.") var noServices = false

    func validate() throws {
        if send < 0 { throw ValidationError("--send must not be negative") }
        if size < 24 { throw ValidationError("--size must be at least 24 (send time, node and message number)") }
        if rate < 0 { throw ValidationError("--rate must not be negative") }
        if let timeout, !(timeout > 0) { throw ValidationError("--timeout must be positive") }
        if let metricsListen, UDPEndpoint(metricsListen) == nil {
            throw ValidationError("--metrics-listen must be an IPv4 address:port, for example 127.0.0.1:9464 (port 0: any free port)")
        }
        if !(statsInterval >= 0.05) { throw ValidationError("--stats-interval must be at least 0.05 seconds") }
        if let expect, expect < 0 { throw ValidationError("--expect must not be negative") }
        if let bulk, BulkPacing(rawValue: bulk) == nil { throw ValidationError("--bulk must be gated, paced or unpaced") }
        if bulkTo != nil, bulk == nil { throw ValidationError("--bulk-to needs --bulk PACING") }
        if !(1...(256 << 20)).contains(bulkBytes) { throw ValidationError("--bulk-bytes must be in 1...268435456") }
        if !(0.001...1_000_000).contains(linkMbit) { throw ValidationError("--link-mbit must be in 0.001...1000000 (1 kbit/s to 1 Tbit/s)") }
    }

    func run() throws {
        let file: ConfigFile
        var configuration: MemberConfiguration
        do {
            file = try ConfigFile.load(path: config)
            configuration = try file.memberConfiguration(name: member, path: config)
        } catch { throw ValidationError(error.description) }
        if join {
            configuration.joinRunningCluster()
        } else if file.startAtNanos == 0 {
            // The start time is the run's identity (and the first view's
            // incarnation): a file without one would make every start of the
            // cluster the same run, and every member a late starter.
            let suggestion = MemberClock.viewNanos() / 1_000_000_000 * 1_000_000_000 + 5_000_000_000
            throw ValidationError(
                "\(config): \"start_at_ns\" is not set. It is the first view's start on CLOCK_REALTIME and the run's identity: "
                    + "give every start of the cluster a fresh value shared by all members, a few seconds ahead "
                    + "(for example \(suggestion), or $(($(date +%s%N) + 5000000000)) in a shell), or start with --join "
                    + "to join a running cluster")
        }
        let name = "\(member) (node \(configuration.node))"
        // --metrics-listen, else the member's "metrics_listen". The backend is
        // bootstrapped before the member exists: it makes its counters at init.
        let metricsAddress = metricsListen.flatMap(UDPEndpoint.init) ?? file.members[configuration.node].metricsListen
        let export = metricsAddress.map { _ in PrometheusExport() }
        export?.bootstrapMetricsSystem()

        let output: FileHandle?
        if let log {
            guard FileManager.default.createFile(atPath: log, contents: nil), let handle = FileHandle(forWritingAtPath: log) else {
                throw ValidationError("cannot write --log \(log)")
            }
            output = handle
        } else {
            output = nil
        }
        let record = NodeLog(keepsLines: output != nil)
        if output != nil { record.lines.withLock { $0.reserveCapacity(max(expect ?? 0, 4096)) } }
        let myNode = UInt16(configuration.node)
        let closedLoop = self.closedLoop
        // Open-loop pacing sleeps to the microsecond (the default slack is 50 µs).
        _ = carillon_set_timer_slack(1)
        let target = expect
        let reached = DispatchSemaphore(value: 0)
        let node: Member
        let serviceNode = noServices ? nil : ServiceNode()
        let transport: any FrameTransport
        do { transport = try busTransport(file: file, configuration: configuration, member: member) } catch let error as RDMAUnavailable {
            FileHandle.standardError.write(Data("carillon node: \(error)\n".utf8))
            throw ExitCode(69)  // EX_UNAVAILABLE
        } catch { throw ValidationError("member \(member): socket: \(error)") }
        do {
            node = try Member(configuration: configuration, transport: transport) { delivery, payload in
                // Service commands go to the services; the rest is the node's own test traffic.
                if let serviceNode, serviceNode.deliverCommand(delivery, payload) { return }
                let now = MemberClock.viewNanos()
                guard payload.count >= 24 else { return }
                let sent = payload.loadUnaligned(as: UInt64.self)
                let sender = payload.loadUnaligned(fromByteOffset: 8, as: UInt16.self)
                let sequence = payload.loadUnaligned(fromByteOffset: 16, as: UInt64.self)
                record.state.add(node: sender, sequence: sequence)
                record.append(.message(node: sender, sequence: sequence, sentNanos: sent, deliveredNanos: now))
                if sender == myNode {
                    record.ownDelivered.add(1, ordering: .releasing)
                    if closedLoop { record.ownArrived.signal() }
                }
                if record.delivered.add(1, ordering: .relaxed).newValue == target { reached.signal() }
            }
        } catch { throw ValidationError("member \(member): \(error)") }
        node.snapshotProvider = { record.state.bytes }
        node.onViewEvent = { event in
            let now = MemberClock.viewNanos()
            switch event {
            case .installed(let view, _):
                record.inView.store(true, ordering: .relaxed)
                let members = view.members.map(\.description).joined(separator: ",")
                let change = node.lastChange.map { " change=\($0.description.replacingOccurrences(of: " ", with: ","))" } ?? ""
                record.append(.event("# view \(view.epoch) \(now) \(record.state.text) members=\(members)\(change)"))
            case .stateReceived(let view, let state):
                // With services the services node hands the stream digest over (applicationState below).
                if serviceNode == nil { record.state = StreamDigest(bytes: state) ?? StreamDigest() }
                record.inView.store(true, ordering: .relaxed)
                let members = view.members.map(\.description).joined(separator: ",")
                record.append(.event("# state \(view.epoch) \(now) \(record.state.text) members=\(members)"))
            case .excluded(let epoch, let unsent):
                record.inView.store(false, ordering: .relaxed)
                record.append(.event("# excluded \(epoch) \(now) \(unsent)"))
            case .noPrimaryComponent(let epoch, let rounds):
                record.append(.event("# no-primary \(epoch) \(now) \(rounds)"))
            }
        }
        // The services' large states go to joiners over the bulk channel (bus
        // port + 1), unless --bulk runs its own benchmark channel there.
        var serviceBulk: BulkChannel?
        if let serviceNode, bulk == nil, !configuration.nodes.contains(where: { $0.port == UInt16.max }) {
            do {
                // Owned objects migrate over it too: a transfer is an object of up to 1 GiB and its header.
                var settings = BulkChannelConfiguration(member: node)
                settings.transfer.maxTransferBytes = Int(OwnedObjectService.defaultMaximumObjectBytes) + (64 << 10)
                // Gated: only outside the reserved slots, at the link's rate, so a migration never delays the bus.
                settings.linkBitsPerSecond = UInt64(linkMbit * 1e6)
                settings.reservation = file.reservation
                do { try settings.validate(against: configuration.ordering.schedule) } catch {
                    // Gated cannot fit a datagram between the slots: paced (its share of the link) still moves states and objects.
                    settings.pacing = .paced
                    FileHandle.standardError.write(
                        Data("\(member): the services' bulk channel is paced, not gated: \(error)\n".utf8))
                }
                serviceBulk = try BulkChannel(configuration: settings, member: node) { source, _, bytes in
                    serviceNode.bulkArrived(source: source, bytes: bytes)
                }
            } catch { throw ValidationError("the services' bulk channel (bus port + 1): \(error)") }
        }
        serviceNode?.attach(
            to: node, bulk: serviceBulk,
            applicationState: ServiceNode.ApplicationState(
                provide: { record.state.bytes }, receive: { record.state = StreamDigest(bytes: $0) ?? StreamDigest() }))
        node.onSuspicionChange = { event in
            let now = MemberClock.viewNanos()
            switch event {
            case .suspected(let rank, let since): record.append(.event("# suspected 0 \(now) rank=\(rank) silent_since_round=\(since)"))
            case .cleared(let rank): record.append(.event("# cleared 0 \(now) rank=\(rank)"))
            }
        }
        if !join {
            record.inView.store(true, ordering: .relaxed)
            // The first view, so that every view of the run has its line.
            let first = configuration.initialView
            record.append(
                .event(
                    "# view \(first.epoch) \(MemberClock.viewNanos()) \(record.state.text) members=\(first.members.map(\.description).joined(separator: ","))"
                ))
        }

        let signals = ShutdownSignals(
            name: name,
            drain: "waiting for own messages (at most 3 s), then for every member to hold our frames (at most 3 s)"
                + (leave ? ", then leaving the view (at most 1 s)" : ""),
            wake: reached)
        defer { signals.cancel() }

        // Services beside the member: started before it joins the bus, stopped
        // after it drained and before it stops (NodeService).
        let services = NodeServices()
        defer { services.stopAll() }
        if let metricsAddress, let export {
            let responder: MetricsResponder
            do {
                responder = try MetricsResponder(listen: metricsAddress) { export.scrape() }
            } catch {
                let origin = metricsListen != nil ? "--metrics-listen" : "\(config): \"metrics_listen\" of member \(member)"
                throw ValidationError("metrics endpoint (\(origin)): \(error)")
            }
            let service = MetricsService(responder: responder)
            services.add(service)
            FileHandle.standardError.write(Data("\(name): \(service.name)\n".utf8))
        }

        if let serviceNode {
            let path = clientSocket ?? file.clientSocketPath(member: member)!
            let endpoint: ClientEndpoint
            do { endpoint = try ClientEndpoint(node: serviceNode, path: path) } catch {
                throw ValidationError(
                    "client socket (\(clientSocket != nil ? "--client-socket" : "\(config): \"client_socket\" of member \(member)")): \(error)")
            }
            endpoint.start()
            let service = ServicesEndpointService(endpoint: endpoint, node: serviceNode)
            services.add(service)
            FileHandle.standardError.write(Data("\(name): \(service.name)\n".utf8))
        }

        var nextFlush: UInt64 = 0
        var lines: [LogLine] = []
        var text: [UInt8] = []
        func flush(force: Bool = false) {
            let now = MemberClock.viewNanos()
            guard let output, force || now >= nextFlush else { return }
            nextFlush = now + 100_000_000
            lines.removeAll(keepingCapacity: true)
            record.takeLines(into: &lines)
            guard !lines.isEmpty else { return }
            // One reused buffer (no large allocation per flush; see takeLines).
            text.removeAll(keepingCapacity: true)
            for line in lines {
                switch line {
                case .message(let n, let q, let s, let d): text.append(contentsOf: "\(n) \(q) \(s) \(d)\n".utf8)
                case .event(let e): text.append(contentsOf: e.utf8); text.append(UInt8(ascii: "\n"))
                }
            }
            text.withUnsafeMutableBytes { bytes in
                guard let base = bytes.baseAddress else { return }
                output.write(Data(bytesNoCopy: base, count: bytes.count, deallocator: .none))
            }
        }

        try node.start()
        try serviceBulk?.start()
        defer { serviceBulk?.stop() }
        if let scheduling = node.schedulingReport {
            FileHandle.standardError.write(Data("\(name): \(scheduling)\n".utf8))
        }
        let bulkRun = try startBulk(configuration: configuration, file: file, member: node)
        let started = MemberClock.viewNanos()
        // What the process costs, from here to stop (the closing report), and per --stats interval.
        let firstSample = ProcessSample.read()
        let statsTimer = stats ? startStats(node: node, services: serviceNode, record: record, name: name, from: firstSample) : nil
        // No --timeout: no deadline (a daemon). The limit keeps a huge --timeout from overflowing.
        let deadline = timeout.map { started + UInt64(min($0 * 1e9, 4e18)) } ?? UInt64.max
        func running() -> Bool { !signals.stopRequested && MemberClock.viewNanos() < deadline }
        var payload = [UInt8](repeating: 0xA5, count: size)
        let interval = rate > 0 ? UInt64(1e9 / rate) : 0
        var next = max(MemberClock.viewNanos(), file.startAtNanos)
        var sent = 0
        // A joiner may be a restart of this node: number its messages after
        // anything an earlier process sent (realtime microseconds).
        let firstSequence: UInt64 = join ? MemberClock.viewNanos() / 1000 : 1
        while sent < send, running() {
            flush()
            let now = MemberClock.viewNanos()
            if now < next { sleepNanos(min(next - now, 50_000_000)); continue }
            // Open loop: the intended send time, so a message held up by
            // backpressure counts its wait (no coordinated omission).
            let stamp = closedLoop || interval == 0 ? MemberClock.viewNanos() : next
            payload.withUnsafeMutableBytes {
                $0.storeBytes(of: stamp, as: UInt64.self)
                $0.storeBytes(of: myNode, toByteOffset: 8, as: UInt16.self)
                $0.storeBytes(of: firstSequence + UInt64(sent), toByteOffset: 16, as: UInt64.self)
            }
            switch node.broadcast(payload) {
            case .queued:
                sent += 1
                record.sent.store(sent, ordering: .relaxed)
                next += interval
                if closedLoop {
                    while record.ownDelivered.load(ordering: .acquiring) < sent,
                        running()
                    { _ = record.ownArrived.wait(timeout: .now() + .milliseconds(100)) }
                    next = MemberClock.viewNanos() + UInt64(gapUs * 1000)
                }
            case .sendBufferFull:
                sleepNanos(configuration.ordering.schedule.roundPeriodNanos)
            case .notInView:
                sleepNanos(configuration.ordering.schedule.roundPeriodNanos)
                // Do not burst to catch up after a wait outside a view.
                if MemberClock.viewNanos() > next + 100_000_000 { next = MemberClock.viewNanos() }
            case .payloadTooLarge(let limit):
                throw ValidationError("--size \(size) exceeds the largest payload, \(limit) bytes, for max_frame_bytes \(file.maxFrameBytes)")
            }
        }
        if target != nil {
            while running(), record.delivered.load(ordering: .relaxed) < target! {
                _ = reached.wait(timeout: .now() + .milliseconds(100))
                flush()
            }
        } else {
            while running() { _ = reached.wait(timeout: .now() + .milliseconds(100)); flush() }
        }
        // Our own queued messages out and delivered (bounded: a member left out
        // of a view loses the messages of its frames past the cut), and a few more
        // rounds so peers still waiting for our frames get them.
        let drainUntil = MemberClock.viewNanos() + 3_000_000_000
        while record.inView.load(ordering: .relaxed),
            record.ownDelivered.load(ordering: .acquiring) < sent,
            MemberClock.viewNanos() < drainUntil
        {
            sleepNanos(1_000_000)
        }
        // Stay until every member holds our frames (the stability line passes
        // the round we are at), so nobody needs a repair from us after we stop.
        if let target = node.stability?.nextRoundToSend {
            let stableUntil = MemberClock.viewNanos() + 3_000_000_000
            while let line = node.stability, line.stableBelowRound < target, MemberClock.viewNanos() < stableUntil {
                sleepNanos(1_000_000)
            }
        }
        // Leave gracefully: the others install a view without this member at
        // once instead of first having to suspect it. Bounded: without a
        // majority of the view running the change cannot be decided.
        var leftEpoch: UInt32?
        if leave, signals.stopRequested, record.inView.load(ordering: .relaxed), let epoch = node.view?.epoch {
            node.leave()
            let leaveUntil = MemberClock.viewNanos() + 1_000_000_000
            while !node.hasLeft, MemberClock.viewNanos() < leaveUntil { sleepNanos(1_000_000) }
            if node.hasLeft { leftEpoch = epoch }
        }
        sleepNanos(20 * configuration.ordering.schedule.roundPeriodNanos)
        let bulkReport = bulkRun?.finish()
        statsTimer?.cancel()
        // Before stop: a thread's context switches are read from its own status file, gone once it ends.
        let lastSample = ProcessSample.read()
        services.stopAll()
        let report = node.stop()
        // After stop: every delivery the agent carried out is logged before this line.
        if let leftEpoch { record.append(.event("# left \(leftEpoch) \(MemberClock.viewNanos()) 0")) }
        flush(force: true)
        try? output?.close()
        let delivered = record.delivered.load(ordering: .relaxed)
        let c = report.ordering, m = report.membership, t = report.transport
        FileHandle.standardError.write(
            Data(
                """
                \(name): sent \(sent), delivered \(delivered)\(target.map { " of \($0)" } ?? ""), own delivered \(record.ownDelivered.load(ordering: .relaxed)); \(report)
                  views: \(m.viewsInstalled) installed, \(m.ballotsStarted) ballots started, \(m.exclusions) exclusions, state \(m.stateBytesSent) B sent / \(m.stateBytesReceived) B received
                  frames: \(c.slotFramesSent) slot + \(c.repairFramesSent) repair sent, \(c.framesReceived) received (\(c.duplicateFrames) duplicate, \(c.malformedFrames) malformed, \(c.framesBeyondWindow) beyond window); NAKs \(c.naksSent) sent / \(c.naksReceived) received; late slots \(report.runtime.lateSlots); refused: \(report.runtime.badTag) bad tag, \(report.runtime.missingTag) without tag; clock correction \(report.runtime.clockCorrectionNanos) ns
                  \(node.schedulingReport.map(String.init(describing:)) ?? "agent thread not started")
                  socket: \(t.datagramsSent) datagrams in \(t.sendCalls) sendmmsg, \(t.datagramsReceived) in \(t.receiveCalls) recvmmsg, \(t.datagramsNotSent) not sent, \(t.datagramsDroppedByInjection) dropped by injection
                  cost: \(costText(from: firstSample, to: lastSample, span: "from start to stop"))
                \(report.clockEstimate.map { "  \($0)\n" } ?? "")\(report.counterLines.map { "  counters \($0)\n" }.joined())\(serviceNode.map { "  counters services: \($0.status.counters.report())\n" } ?? "")
                """.utf8))
        if let bulkReport { FileHandle.standardError.write(Data("  \(bulkReport)\n".utf8)) }
        if let target, delivered < target { throw ExitCode(2) }
    }

    /// Every --stats-interval seconds, one line on standard error: counters so
    /// far and the process's cost over the interval. Runs on a dispatch queue,
    /// reading the member's counters (under its lock) once per line.
    func startStats(node: Member, services: ServiceNode?, record: NodeLog, name: String, from first: ProcessSample?) -> DispatchSourceTimer {
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "carillon.node.stats"))
        let started = ProcessSample.monotonicNanosNow()
        let interval = statsInterval
        var previous = first
        var previousDelivered = record.delivered.load(ordering: .relaxed)
        timer.schedule(deadline: .now() + interval, repeating: interval, leeway: .milliseconds(10))
        timer.setEventHandler {
            let sample = ProcessSample.read()
            let delivered = record.delivered.load(ordering: .relaxed)
            // Every counter that is not zero, from the tables (CounterSet): what an operator looks for is what moved.
            let counters = [
                node.orderingCounters.report(includingZeros: false), node.membershipCounters.report(includingZeros: false),
                node.transportCounters.report(includingZeros: false), node.runtimeCounters.report(includingZeros: false),
                services?.status.counters.report(includingZeros: false) ?? ""
            ]
            let elapsed = Double(ProcessSample.monotonicNanosNow() - started) / 1e9
            let seconds = previous.flatMap { p in sample.map { Double($0.monotonicNanos - p.monotonicNanos) / 1e9 } } ?? interval
            let line =
                "\(name) stats \(String(format: "%.1f", elapsed)) s: delivered \(delivered) (\(Int((Double(delivered - previousDelivered) / max(seconds, 1e-9)).rounded()))/s), "
                + "sent \(record.sent.load(ordering: .relaxed)); \(counters.filter { !$0.isEmpty }.joined(separator: ", ")); "
                + costText(from: previous, to: sample, span: "over the interval") + "\n"
            FileHandle.standardError.write(Data(line.utf8))
            previous = sample
            previousDelivered = delivered
        }
        timer.resume()
        return timer
    }

    /// "cpu 31.2 % of one core (…), 9812 wake-ups/s, 120 involuntary switches/s", or why it is unknown.
    func costText(from start: ProcessSample?, to end: ProcessSample?, span: String) -> String {
        guard let start, let end else { return "cpu and wake-ups unknown (/proc/self unreadable)" }
        let cost = ProcessCost(from: start, to: end)
        return "cpu \(String(format: "%.1f", cost.cpuPercentOfOneCore)) % of one core (\(String(format: "%.2f", cost.cpuSeconds)) s CPU in "
            + "\(String(format: "%.2f", cost.seconds)) s \(span)), \(Int(cost.wakeupsPerSecond.rounded())) wake-ups/s (voluntary context switches), "
            + "\(Int(cost.involuntarySwitchesPerSecond.rounded())) involuntary switches/s"
    }

    /// Starts the bulk channel when --bulk is given, and with --bulk-to a
    /// thread that keeps two transfers queued to that member.
    func startBulk(configuration: MemberConfiguration, file: ConfigFile, member: Member) throws -> BulkRun? {
        guard let bulk, let pacing = BulkPacing(rawValue: bulk) else { return nil }
        if let busy = configuration.nodes.first(where: { $0.port == UInt16.max }) {
            throw ValidationError("the bulk channel uses the bus port + 1, and \(busy) has port 65535: give the bus a lower port")
        }
        // The member's key (or none, as the configuration file says), run and incarnations.
        var settings = BulkChannelConfiguration(member: member)
        settings.pacing = pacing
        settings.linkBitsPerSecond = UInt64(linkMbit * 1e6)
        settings.reservation = file.reservation
        let channel: BulkChannel
        let arrivals = BulkArrivals()
        do {
            channel = try BulkChannel(configuration: settings, member: member) { _, _, bytes in arrivals.add(bytes.count) }
            try channel.validate(against: configuration.ordering.schedule)
        } catch { throw ValidationError("bulk channel: \(error)") }
        var target: Int?
        if let bulkTo {
            guard let index = file.members.firstIndex(where: { $0.name == bulkTo }), index != configuration.node else {
                throw ValidationError("--bulk-to \(bulkTo) is not another member in \(config)")
            }
            target = index
        }
        try channel.start()
        return BulkRun(
            channel: channel, target: target, bytes: [UInt8](repeating: 0xB5, count: bulkBytes), pacing: pacing,
            arrivals: arrivals)
    }
}

/// Transfers that arrived: how many, how many bytes, first and last arrival.
final class BulkArrivals: Sendable {
    let state = Mutex<(count: Int, bytes: Int, firstNanos: UInt64, lastNanos: UInt64)>((0, 0, 0, 0))

    func add(_ bytes: Int) {
        let now = MemberClock.viewNanos()
        state.withLock {
            if $0.count == 0 { $0.firstNanos = now }
            $0.count += 1
            $0.bytes += bytes
            $0.lastNanos = now
        }
    }

    /// Payload rate between the first and the last arrival (the first transfer's bytes excluded).
    var summary: String {
        let s = state.withLock { $0 }
        guard s.count >= 2, s.lastNanos > s.firstNanos else { return "received \(s.count) transfers" }
        let perTransfer = s.bytes / s.count
        let mbit = Double(s.bytes - perTransfer) * 8 / (Double(s.lastNanos - s.firstNanos) / 1e9) / 1e6
        return "received \(s.count) transfers, \(String(format: "%.1f", mbit)) Mbit/s from first to last"
    }
}

/// A bulk channel and the thread keeping it busy.
final class BulkRun: @unchecked Sendable {
    let channel: BulkChannel
    let pacing: BulkPacing
    let arrivals: BulkArrivals
    let stopping = Atomic<Bool>(false)
    let started = MemberClock.viewNanos()
    var filler: Thread?
    let done = DispatchSemaphore(value: 0)

    init(channel: BulkChannel, target: Int?, bytes: [UInt8], pacing: BulkPacing, arrivals: BulkArrivals) {
        self.channel = channel
        self.pacing = pacing
        self.arrivals = arrivals
        guard let target else { return }
        let thread = Thread { [self] in
            while !stopping.load(ordering: .relaxed) {
                while channel.pendingTransfers < 2, case .queued = channel.send(bytes, to: target) {}
                sleepNanos(1_000_000)
            }
            done.signal()
        }
        thread.start()
        filler = thread
    }

    /// Stops the filler and the channel; a one-line report.
    func finish() -> String {
        stopping.store(true, ordering: .relaxed)
        if filler != nil { done.wait() }
        let c = channel.stop()
        return
            "bulk (\(pacing)): \(arrivals.summary); \(c.sender.transfersCompleted) sent and acknowledged; chunks \(c.sender.chunksSent) sent, \(c.sender.chunksRetransmitted) retransmitted; acks \(c.acksSent) sent; waits for the pacer \(c.pacedWaits), socket full \(c.socketFull); refused \(c.malformed) malformed, \(c.badTag) bad tag, \(c.missingTag) without tag, \(c.replaysRefused) addressed to or from another incarnation (replays across a restart)"
    }
}
