import ArgumentParser
import CarillonBench
import CarillonRuntime
import Foundation

// MARK: - the agent

/// One CPG client per host: joins the group, waits for every member, sends
/// (closed loop or as fast as flow control allows) and logs each delivery in
/// `carillon node`'s format, so both systems' logs are read by one parser.
struct CPGAgent: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cpg-agent",
        abstract: "Agent for `corosync`: a Corosync CPG client that sends and logs deliveries (started by the bench inside a namespace).",
        discussion: """
            Messages start with the send time (CLOCK_REALTIME, ns), the sender's index and its message \
            number, like `carillon node`'s; the log has one "sender number sent_ns delivered_ns" line per \
            delivery. Needs a corosync daemon in the same network namespace and libcpg.so.4 (apt-get \
            install -y corosync libcpg4); the bench starts the daemons.

            Examples:
              ip netns exec NS carillon-bench cpg-agent --index 0 --members 3 --send 1000 --closed-loop --expect 1000 --log h0.log
              ip netns exec NS carillon-bench cpg-agent --index 1 --members 3 --send 30000 --expect 90000 --log h1.log
            """)

    @Option(help: "CPG group name.") var group = "carillon-bench"
    @Option(help: "This client's index (0-based), written into its messages.") var index: Int
    @Option(help: "Members to wait for before sending.") var members: Int
    @Option(help: "Messages to send.") var send = 0
    @Flag(help: "Send the next message only after this client delivered the previous one, then wait --gap-us.") var closedLoop = false
    @Option(help: "Pause after each own delivery in closed loop, microseconds.") var gapUs: Double = 1000
    @Option(help: "Payload bytes (at least 24).") var size = 64
    @Option(help: "Stop once this many messages were delivered here.") var expect: Int
    @Option(help: "Give up after this many seconds.") var timeout: Double = 120
    @Option(help: "Delivery log.") var log: String

    func validate() throws {
        if size < 24 { throw ValidationError("--size must be at least 24") }
        if members < 1 || index < 0 || index >= members { throw ValidationError("--index must be in 0..<--members") }
    }

    func run() throws {
        let client: CPGClient
        do { client = try CPGClient(group: group) } catch { throw ValidationError("\(error)") }
        var log: [(UInt16, UInt64, UInt64, UInt64)] = []
        log.reserveCapacity(expect)
        var ownDelivered = 0
        let me = UInt16(index)
        client.onDeliver = { _, _, payload in
            let now = MemberClock.viewNanos()
            guard payload.count >= 24 else { return }
            let sender = payload.loadUnaligned(fromByteOffset: 8, as: UInt16.self)
            log.append((sender, payload.loadUnaligned(fromByteOffset: 16, as: UInt64.self), payload.loadUnaligned(as: UInt64.self), now))
            if sender == me { ownDelivered += 1 }
        }
        let deadline = MemberClock.viewNanos() + UInt64(timeout * 1e9)
        // Everyone in the group before the first message (CPG delivers to current members only).
        while client.memberCount < members {
            guard MemberClock.viewNanos() < deadline else {
                throw ValidationError("only \(client.memberCount) of \(members) members joined \(group)")
            }
            if client.waitForEvents(timeoutMilliseconds: 100) { try client.dispatch(blocking: false) }
        }
        var payload = [UInt8](repeating: 0xC5, count: size)
        var sent = 0
        while sent < send, MemberClock.viewNanos() < deadline {
            payload.withUnsafeMutableBytes {
                $0.storeBytes(of: MemberClock.viewNanos(), as: UInt64.self)
                $0.storeBytes(of: me, toByteOffset: 8, as: UInt16.self)
                $0.storeBytes(of: UInt64(sent + 1), toByteOffset: 16, as: UInt64.self)
            }
            try payload.withUnsafeBytes { try client.multicastRetrying($0) }
            sent += 1
            if closedLoop {
                while ownDelivered < sent, MemberClock.viewNanos() < deadline {
                    if client.waitForEvents(timeoutMilliseconds: 100) { try client.dispatch(blocking: false) }
                }
                sleepNanos(UInt64(gapUs * 1000))
            } else {
                try client.dispatch(blocking: false)
            }
        }
        while log.count < expect, MemberClock.viewNanos() < deadline {
            if client.waitForEvents(timeoutMilliseconds: 100) { try client.dispatch(blocking: false) }
        }
        // Stay a little so peers still sending are not cut off by our leaving.
        let lingerUntil = MemberClock.viewNanos() + 500_000_000
        while MemberClock.viewNanos() < lingerUntil {
            if client.waitForEvents(timeoutMilliseconds: 50) { try client.dispatch(blocking: false) }
        }
        var text = ""
        text.reserveCapacity(log.count * 48)
        for (sender, sequence, sentNanos, delivered) in log { text += "\(sender) \(sequence) \(sentNanos) \(delivered)\n" }
        try text.write(toFile: self.log, atomically: true, encoding: .utf8)
        FileHandle.standardError.write(Data("cpg-agent \(index): sent \(sent), delivered \(log.count) of \(expect)\n".utf8))
        if log.count < expect { throw ExitCode(2) }
    }
}

// MARK: - the scenario

struct CorosyncComparison: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "corosync",
        abstract: "Carillon and Corosync CPG side by side: closed-loop latency and throughput, same namespaces, same message sizes, one run.",
        discussion: """
            Three hosts (--members) in network namespaces on one bridge, standard 1500 B MTU. For each \
            size: Carillon closed loop (h0 broadcasts, latency at the last member; frames up to 1,472 B), \
            Carillon throughput (every member sends --throughput-messages as fast as the bus takes them; \
            frames up to 8,972 B, which the kernel fragments), then the same two \
            with Corosync 3 CPG (udpu transport, agreed delivery, one daemon per namespace, sched_rr off, \
            token 1000 ms) and one `cpg-agent` client per host. Needs root and corosync with libcpg4; \
            when they are missing the bench says what to install and installs nothing.

            Examples:
              sudo apt-get install -y corosync libcpg4
              sudo .build/release/carillon-bench corosync
              sudo .build/release/carillon-bench corosync --sizes 64 --messages 2000 --throughput-messages 50000
            """)

    @OptionGroup var common: CommonOptions
    @Option(help: "Payload sizes in bytes.") var sizes = "64,1024"
    @Option(help: "Hosts.") var members = 3
    @Option(help: "Closed-loop messages per system and size.") var messages = 1000
    @Option(help: "Messages each member sends in the throughput runs (Corosync needs 30,000 or more to reach its sustained rate).")
    var throughputMessages = 30_000
    @Option(help: "Pause after each delivery in closed loop, microseconds.") var gapUs: Double = 1000
    @Option(help: "Round period of the bus in microseconds.") var periodUs: Double = 100

    func run() throws {
        if let missing = CorosyncCluster.availability() {
            throw ValidationError("Corosync is not installed; this scenario installs nothing itself. Install it with: \(missing)")
        }
        Cleanup.installSignalHandlers()
        defer { Cleanup.runAll() }
        let sizeList: [Int] = try parseList(sizes, "--sizes")
        guard sizeList.allSatisfy({ (24...1_400).contains($0) }) else {
            throw ValidationError("--sizes: each in 24...1400 (one frame, standard MTU)")
        }
        guard (2...8).contains(members) else { throw ValidationError("--members must be in 2...8") }
        guard messages >= 1, throughputMessages >= 1, gapUs >= 0, periodUs > 0 else {
            throw ValidationError("--messages and --throughput-messages must be at least 1, --gap-us not negative, --period-us positive")
        }
        let closedCount = common.quick ? 100 : messages
        let bulkCount = common.quick ? 2_000 : throughputMessages
        let topology = try Topology(hosts: members, placement: try common.placement(needsNamespaces: true), mtu: 1500)
        let progress = ProgressBar(scenario: "corosync", steps: sizeList.count * 4)
        var results: [BenchResult] = []
        var step = 0
        func parameters(_ size: Int, _ mode: String, _ extra: [String: String]) -> [String: String] {
            ["members": "\(members)", "size_bytes": "\(size)", "mode": mode].merging(extra) { a, _ in a }
        }

        // Carillon first, then the daemons (they stay up for both Corosync runs of every size).
        for size in sizeList {
            step += 1
            progress.begin(step, "carillon, \(size) B, closed loop")
            var s = common.busSpec()
            s.members = members
            s.sizeBytes = size
            s.roundPeriodMicros = periodUs
            s.idle = common.idleStrategy
            s.messagesPerSender = closedCount
            s.gapMicros = gapUs
            s.timeoutSeconds = Double(closedCount) * (gapUs + 20_000) / 1e6 + 30
            let closed = try runBus(s, on: topology, directory: try common.workDirectory("corosync/carillon-\(size)-closed"))
            results.append(
                row(
                    "corosync", topology: topology,
                    parameters: parameters(size, "closed-loop", ["idle": common.idleStrategy, "round_period_us": "\(periodUs)"]), outcome: closed))
            progress.report("carillon \(size) B closed loop: \(describe(closed))")

            step += 1
            progress.begin(step, "carillon, \(size) B, throughput")
            s.senders = Array(0..<members)
            s.messagesPerSender = bulkCount
            s.closedLoop = false
            s.ratePerSender = 0
            s.timeoutSeconds = 120
            // Many messages per frame, as Corosync packs many per totem frame;
            // the kernel fragments 8,972 B frames on the 1500 B MTU.
            s.maxFrameBytes = 8_972
            // Capacity, not failure detection (as in `throughput`): 200 ms of silence before a suspicion.
            s.suspicionSlots = 2_000
            let busy = try runBus(s, on: topology, directory: try common.workDirectory("corosync/carillon-\(size)-throughput"))
            results.append(
                row(
                    "corosync", topology: topology,
                    parameters: parameters(
                        size, "throughput",
                        [
                            "idle": common.idleStrategy, "round_period_us": "\(periodUs)",
                            "max_frame_bytes": "8972"
                        ]),
                    outcome: busy, latency: false, throughput: true))
            progress.report(
                "carillon \(size) B throughput: \(Int(busy.meanMessagesPerSecond)) msgs/s per member\(busy.cost.map { "; " + describe($0) } ?? "")")
        }

        let work = try common.workDirectory("corosync/daemons")
        let cluster = CorosyncCluster(hosts: (0..<members).map { (topology.namespace($0), topology.address($0)) }, workDirectory: work)
        let token = Cleanup.register { cluster.stop() }
        defer { Cleanup.run(token) }
        try cluster.start()
        for size in sizeList {
            step += 1
            progress.begin(step, "corosync CPG, \(size) B, closed loop")
            let closed = try runCPG(
                cluster: cluster, size: size, senders: [0], perSender: closedCount, closedLoop: true,
                directory: try common.workDirectory("corosync/cpg-\(size)-closed"))
            results.append(
                row(
                    "corosync", system: "corosync-cpg", topology: topology,
                    parameters: parameters(size, "closed-loop", ["transport": "udpu"]), outcome: closed))
            progress.report("corosync \(size) B closed loop: \(describe(closed))")

            step += 1
            progress.begin(step, "corosync CPG, \(size) B, throughput")
            let busy = try runCPG(
                cluster: cluster, size: size, senders: Array(0..<members), perSender: bulkCount, closedLoop: false,
                directory: try common.workDirectory("corosync/cpg-\(size)-throughput"))
            results.append(
                row(
                    "corosync", system: "corosync-cpg", topology: topology,
                    parameters: parameters(size, "throughput", ["transport": "udpu"]), outcome: busy, latency: false, throughput: true))
            progress.report("corosync \(size) B throughput: \(Int(busy.meanMessagesPerSecond)) msgs/s per member")
        }
        progress.finish()
        let run = BenchRun(
            scenario: "corosync", environment: .current(),
            settings: [
                "placement": topology.label, "ordering": common.ordering,
                "carillon": "round \(periodUs) µs, reservation 0.5, idle \(common.idleStrategy), agreed delivery, authenticated",
                "corosync": "3.x CPG, udpu, agreed (CPG_TYPE_AGREED), sched_rr off, token 1000 ms, one daemon per namespace",
                "latency": "send → delivered at the last member, closed loop from h0, \(Int(gapUs)) µs gap"
            ],
            results: results)
        try save(run, to: common.out)
    }

    /// One CPG client per host; the same log format and summary as the bus.
    func runCPG(cluster: CorosyncCluster, size: Int, senders: [Int], perSender: Int, closedLoop: Bool, directory: String) throws -> BusOutcome {
        let group = "crln-\(getpid())-\(size)-\(closedLoop ? "c" : "t")"
        var children: [Child] = []
        defer { children.forEach { $0.kill9() } }
        let expect = senders.count * perSender
        let timeout = closedLoop ? Double(perSender) * (gapUs + 20_000) / 1e6 + 30 : 180
        for i in 0..<members {
            var argv =
                cluster.clientCommandPrefix(host: i) + [
                    Binaries.bench, "cpg-agent", "--group", group, "--index", "\(i)",
                    "--members", "\(members)", "--size", "\(size)", "--expect", "\(expect)",
                    "--timeout", "\(Int(timeout))", "--log", "\(directory)/h\(i).log"
                ]
            argv += ["--send", "\(senders.contains(i) ? perSender : 0)"]
            if closedLoop { argv += ["--closed-loop", "--gap-us", "\(gapUs)"] }
            children.append(try Child(argv, stderr: "\(directory)/h\(i).err"))
        }
        return try collectOutcome(of: children, waitSeconds: timeout + 15, directory: directory, sizeBytes: size, noun: "client")
    }
}
