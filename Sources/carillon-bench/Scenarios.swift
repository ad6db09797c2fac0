import ArgumentParser
import CarillonBench
import Foundation
import Histogram

// MARK: - baseline

struct Baseline: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The machine's floor: raw UDP ping-pong and 1→N fan-out on the path the bus uses.",
        discussion: """
            Ping-pong: h0 sends a datagram to h1, h1 returns it; round-trip time. Fan-out: h0 sends each \
            datagram to every other host with one sendmmsg; latency = the last arrival − send time (the \
            floor for "delivered at all members"). Closed loop, --gap-us between messages, receivers block \
            in ppoll. Namespaces on a bridge as root; loopback otherwise.

            Examples:
              sudo .build/release/carillon-bench baseline
              sudo .build/release/carillon-bench baseline --members 5 --messages 5000 --size 1024
            """)

    @OptionGroup var common: CommonOptions
    @Option(help: "Hosts (fan-out goes from h0 to the others).") var members = 3
    @Option(help: "Messages per measurement.") var messages = 2000
    @Option(help: "Payload bytes.") var size = 64
    @Option(help: "Pause between messages, microseconds.") var gapUs: Double = 1000

    func validate() throws {
        if !(2...16).contains(members) { throw ValidationError("--members must be in 2...16") }
        if messages < 1 { throw ValidationError("--messages must be at least 1") }
        if !(16...8_192).contains(size) { throw ValidationError("--size must be in 16...8192") }
    }

    func run() throws {
        Cleanup.installSignalHandlers()
        defer { Cleanup.runAll() }
        let count = common.quick ? 200 : messages
        let topology = try Topology(hosts: members, placement: try common.placement(), mtu: 9000)
        let work = try common.workDirectory("baseline")
        let progress = ProgressBar(scenario: "baseline", steps: 2)
        var results: [BenchResult] = []
        let parameters = ["members": "\(members)", "size_bytes": "\(size)", "mode": "closed-loop", "gap_us": "\(gapUs)"]

        progress.begin(1, "raw UDP ping-pong h0 ↔ h1")
        let pingPong = try runPingPong(topology: topology, count: count, work: work)
        var pingParameters = parameters
        pingParameters["members"] = "2"
        pingParameters["metric"] = "round trip"
        results.append(
            BenchResult(
                scenario: "baseline", system: "raw-udp-pingpong", placement: topology.label, parameters: pingParameters,
                latency: LatencySummary(nanoseconds: pingPong)))
        progress.report(
            "ping-pong round trip: p50 \(micros(Double(pingPong.valueAtPercentile(50)) / 1000)) p99 \(micros(Double(pingPong.valueAtPercentile(99)) / 1000)) µs"
        )

        progress.begin(2, "raw UDP fan-out h0 → \(members - 1) hosts")
        let fanout = try runFanout(topology: topology, members: members, count: count, size: size, gapUs: gapUs, work: work)
        var fanParameters = parameters
        fanParameters["metric"] = "one-way, last receiver"
        results.append(row("baseline", system: "raw-udp-fanout", topology: topology, parameters: fanParameters, outcome: fanout))
        progress.report("fan-out at all: \(describe(fanout))")
        progress.finish()

        let run = BenchRun(
            scenario: "baseline", environment: .current(), settings: ["placement": topology.label, "receivers": "block in ppoll"],
            results: results)
        try save(run, to: common.out)
    }

    func runPingPong(topology: Topology, count: Int, work: String) throws -> Histogram<UInt64> {
        let bench = Binaries.bench
        let echoAddress = "\(topology.address(1)):\(topology.busPort(1) + 5)"
        let echo = try Child(
            topology.command(
                host: 1,
                [
                    bench, "udp-pingpong", "--role", "echo", "--bind", echoAddress,
                    "--count", "\(count)", "--timeout", "120"
                ]), stderr: "\(work)/echo.err")
        let ping = try Child(
            topology.command(
                host: 0,
                [
                    bench, "udp-pingpong", "--role", "ping", "--bind",
                    "\(topology.address(0)):\(topology.busPort(0) + 5)", "--peer", echoAddress,
                    "--count", "\(count)", "--size", "\(size)", "--gap-us", "\(gapUs)",
                    "--timeout", "120", "--log", "\(work)/pingpong.log"
                ]),
            stderr: "\(work)/ping.err")
        guard ping.wait(seconds: 150) == 0 else { echo.kill9(); throw BenchError("ping-pong failed:\n\(ping.stderrTail)") }
        echo.kill9()
        var histogram = latencyHistogram()
        for d in try readLog("\(work)/pingpong.log").deliveries { _ = histogram.record(d.deliveredNanos - d.sentNanos) }
        return histogram
    }
}

/// Raw UDP 1 → N fan-out from h0 (`carillon fanout`; `baseline` and `latency`): `count` datagrams of
/// `size` bytes, `gapUs` apart, each sent to every other host with one
/// sendmmsg; the outcome's latency is the last receiver's arrival − send time.
func runFanout(topology: Topology, members: Int, count: Int, size: Int, gapUs: Double, work: String) throws -> BusOutcome {
    var spec = BusSpec()
    spec.members = members
    let config = try writeBusConfig(spec, on: topology, directory: work).path
    let carillon = try Binaries.carillon()
    let timeout = max(120, Int(Double(count) * (gapUs + 1_000) / 1e6) + 30)
    var receivers: [Child] = []
    for i in 1..<members {
        receivers.append(
            try Child(
                topology.command(
                    host: i,
                    [
                        carillon, "fanout", "--config", config, "--member", "h\(i)",
                        "--expect", "\(count)", "--timeout", "\(timeout)", "--log", "\(work)/fanout.h\(i)"
                    ]),
                stderr: "\(work)/fanout.h\(i).err"))
    }
    let sender = try Child(
        topology.command(
            host: 0,
            [
                carillon, "fanout", "--config", config, "--member", "h0", "--send", "\(count)",
                "--gap-us", "\(gapUs)", "--size", "\(size)", "--timeout", "\(timeout)"
            ]),
        stderr: "\(work)/fanout.h0.err")
    _ = sender.wait(seconds: Double(timeout + 30))
    for receiver in receivers { _ = receiver.wait(seconds: 20) }
    let logs = try (1..<members).map { try readLog("\(work)/fanout.h\($0)") }
    return summarise(logs: logs, sizeBytes: size)
}

// MARK: - ordered

struct Ordered: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Ordered latency delivered at all members: versus members, message size, round period and reservation (closed loop), and versus offered load (open loop).",
        discussion: """
            Closed loop: h0 broadcasts --messages messages, each --gap-us after it delivered the previous \
            one; latency = the last member's delivery − broadcast. The sweep runs every --members × \
            --sizes at the first period and reservation, then the other --periods-us and --reservations \
            at 3 members (or the first of --members) and the first size. Open loop: every member sends \
            at rate/members per second for --duration seconds; each message carries its intended send \
            time, so latency under overload includes the wait (no coordinated omission). Sizes above \
            1,400 B use jumbo frames (MTU 9000, frames up to 8,972 B).

            Examples:
              sudo .build/release/carillon-bench ordered
              sudo .build/release/carillon-bench ordered --members 3 --sizes 64 --rates 1000,10000,50000
              .build/release/carillon-bench ordered --loopback --quick
            """)

    @OptionGroup var common: CommonOptions
    @Option(help: "Member counts to sweep.") var members = "2,3,5"
    @Option(help: "Payload sizes in bytes to sweep (24 to 8192).") var sizes = "64,1024,8192"
    @Option(help: "Round periods in microseconds (the first is used for the member/size sweep).") var periodsUs = "100,200"
    @Option(help: "Reservations (the first is used for the member/size sweep).") var reservations = "0.5,0.25"
    @Option(help: "Open-loop offered loads, total messages per second over all members (empty: none).") var rates = "2000,10000,50000,100000,200000"
    @Option(help: "Closed-loop messages per configuration.") var messages = 1000
    @Option(help: "Pause after each delivery in closed loop, microseconds.") var gapUs: Double = 1000
    @Option(help: "Seconds per open-loop rate.") var duration: Double = 2

    func run() throws {
        Cleanup.installSignalHandlers()
        defer { Cleanup.runAll() }
        let memberCounts: [Int] = try parseList(members, "--members")
        let sizeList: [Int] = try parseList(sizes, "--sizes")
        let periods: [Double] = try parseList(periodsUs, "--periods-us")
        let reservationList: [Double] = try parseList(reservations, "--reservations")
        let rateList: [Double] = rates.isEmpty ? [] : try parseList(rates, "--rates")
        guard memberCounts.allSatisfy({ (1...16).contains($0) }) else { throw ValidationError("--members: each in 1...16") }
        guard sizeList.allSatisfy({ (24...8_192).contains($0) }) else { throw ValidationError("--sizes: each in 24...8192") }
        let reference = memberCounts.contains(3) ? 3 : memberCounts[0]
        guard messages >= 1, duration > 0, gapUs >= 0 else {
            throw ValidationError("--messages must be at least 1, --duration positive, --gap-us not negative")
        }
        let count = common.quick ? 100 : messages
        let seconds = common.quick ? 0.5 : duration

        struct Step { var label: String; var spec: BusSpec; var parameters: [String: String] }
        var steps: [Step] = []
        func spec(members: Int, size: Int, period: Double, reservation: Double) -> BusSpec {
            var s = common.busSpec()
            s.members = members
            s.sizeBytes = size
            s.roundPeriodMicros = period
            s.reservation = reservation
            s.idle = common.idleStrategy
            s.messagesPerSender = count
            s.gapMicros = gapUs
            s.maxFrameBytes = size > 1_400 ? 8_972 : 1_472
            s.timeoutSeconds = Double(count) * (gapUs + 20_000) / 1e6 + 30
            return s
        }
        func parameters(_ s: BusSpec, mode: String) -> [String: String] {
            [
                "members": "\(s.members)", "size_bytes": "\(s.sizeBytes)", "round_period_us": "\(s.roundPeriodMicros)",
                "reservation": "\(s.reservation)", "idle": s.idle ?? "default", "mode": mode
            ]
        }
        for m in memberCounts {
            for size in sizeList {
                let s = spec(members: m, size: size, period: periods[0], reservation: reservationList[0])
                steps.append(Step(label: "\(m) members, \(size) B, closed loop", spec: s, parameters: parameters(s, mode: "closed-loop")))
            }
        }
        for period in periods.dropFirst() {
            let s = spec(members: reference, size: sizeList[0], period: period, reservation: reservationList[0])
            steps.append(
                Step(label: "\(reference) members, round \(period) µs, closed loop", spec: s, parameters: parameters(s, mode: "closed-loop")))
        }
        for reservation in reservationList.dropFirst() {
            let s = spec(members: reference, size: sizeList[0], period: periods[0], reservation: reservation)
            steps.append(
                Step(label: "\(reference) members, reservation \(reservation), closed loop", spec: s, parameters: parameters(s, mode: "closed-loop")))
        }
        for rate in rateList {
            var s = spec(members: reference, size: sizeList[0], period: periods[0], reservation: reservationList[0])
            s.closedLoop = false
            s.senders = Array(0..<reference)
            s.ratePerSender = rate / Double(reference)
            s.messagesPerSender = max(1, Int(rate / Double(reference) * seconds))
            s.timeoutSeconds = seconds * 10 + 30
            var p = parameters(s, mode: "open-loop")
            p["offered_per_second"] = "\(Int(rate))"
            steps.append(Step(label: "\(reference) members, open loop \(Int(rate)) msgs/s offered", spec: s, parameters: p))
        }

        let needsJumbo = sizeList.contains { $0 > 1_400 }
        let topology = try Topology(hosts: memberCounts.max()!, placement: try common.placement(), mtu: needsJumbo ? 9000 : 1500)
        let progress = ProgressBar(scenario: "ordered", steps: steps.count)
        var results: [BenchResult] = []
        for (index, step) in steps.enumerated() {
            progress.begin(index + 1, step.label)
            let outcome = try runBus(step.spec, on: topology, directory: try common.workDirectory("ordered/\(index)"))
            results.append(
                row(
                    "ordered", topology: topology, parameters: step.parameters, outcome: outcome,
                    throughput: !step.spec.closedLoop))
            progress.report("\(step.label): \(describe(outcome))")
        }
        progress.finish()
        let run = BenchRun(
            scenario: "ordered", environment: .current(),
            settings: [
                "placement": topology.label, "idle": common.idleStrategy, "ordering": common.ordering, "delivery": "agreed", "authentication": "on",
                "latency": "broadcast (open loop: intended send) → delivered at the last member",
                "suspicion": "after 200 silent slots"
            ],
            results: results)
        try save(run, to: common.out)
    }
}

// MARK: - throughput

struct Throughput: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Delivered messages/s and bytes/s per member, every member broadcasting as fast as the bus takes messages.",
        discussion: """
            Every member sends --messages messages back to back (backpressure paces it); each member's \
            rate is its deliveries from first to last. Jumbo frames (MTU 9000, --max-frame-bytes 8972) by \
            default, as the bus packs many messages per frame.

            Examples:
              sudo .build/release/carillon-bench throughput
              sudo .build/release/carillon-bench throughput --members 5 --sizes 64 --messages 200000
            """)

    @OptionGroup var common: CommonOptions
    @Option(help: "Member counts.") var members = "3"
    @Option(help: "Payload sizes in bytes.") var sizes = "64,1024"
    @Option(help: "Messages each member sends.") var messages = 100_000
    @Option(help: "Largest frame (1472 for a standard 1500 B MTU).") var maxFrameBytes = 8_972
    @Option(help: "Round period in microseconds.") var periodUs: Double = 100

    func run() throws {
        Cleanup.installSignalHandlers()
        defer { Cleanup.runAll() }
        let memberCounts: [Int] = try parseList(members, "--members")
        let sizeList: [Int] = try parseList(sizes, "--sizes")
        guard memberCounts.allSatisfy({ (1...16).contains($0) }) else { throw ValidationError("--members: each in 1...16") }
        guard sizeList.allSatisfy({ (24...65_000).contains($0) }) else { throw ValidationError("--sizes: each in 24...65000") }
        guard messages >= 1 else { throw ValidationError("--messages must be at least 1") }
        guard (256...65_507).contains(maxFrameBytes) else { throw ValidationError("--max-frame-bytes must be in 256...65507") }
        let count = common.quick ? 2_000 : messages
        let topology = try Topology(hosts: memberCounts.max()!, placement: try common.placement(), mtu: maxFrameBytes > 1_472 ? 9000 : 1500)
        let steps = memberCounts.flatMap { m in sizeList.map { (m, $0) } }
        let progress = ProgressBar(scenario: "throughput", steps: steps.count)
        var results: [BenchResult] = []
        for (index, (m, size)) in steps.enumerated() {
            progress.begin(index + 1, "\(m) members, \(size) B, all sending")
            var s = common.busSpec()
            s.members = m
            s.sizeBytes = size
            s.idle = common.idleStrategy
            s.roundPeriodMicros = periodUs
            s.senders = Array(0..<m)
            s.messagesPerSender = count
            s.closedLoop = false
            s.ratePerSender = 0
            s.maxFrameBytes = maxFrameBytes
            s.timeoutSeconds = 120
            // Saturating senders on two cores miss slots for tens of ms now and
            // then; this scenario measures capacity, not failure detection, so
            // a member is suspected after 200 ms of silence rather than 20.
            s.suspicionSlots = 2_000
            let outcome = try runBus(s, on: topology, directory: try common.workDirectory("throughput/\(index)"))
            let parameters = [
                "members": "\(m)", "size_bytes": "\(size)", "round_period_us": "\(periodUs)", "idle": common.idleStrategy,
                "max_frame_bytes": "\(maxFrameBytes)", "mode": "throughput"
            ]
            results.append(row("throughput", topology: topology, parameters: parameters, outcome: outcome, latency: false, throughput: true))
            let mean = outcome.meanMessagesPerSecond
            progress.report(
                "\(m) members, \(size) B: \(Int(mean)) msgs/s per member (\(String(format: "%.1f", mean * Double(size) * 8 / 1e6)) Mbit/s of payload)\(outcome.cost.map { "; " + describe($0) } ?? "")"
            )
        }
        progress.finish()
        let run = BenchRun(
            scenario: "throughput", environment: .current(),
            settings: [
                "placement": topology.label, "idle": common.idleStrategy, "ordering": common.ordering, "delivery": "agreed", "authentication": "on",
                "rate": "deliveries per member, first to last", "suspicion": "after 2000 silent slots"
            ],
            results: results)
        try save(run, to: common.out)
    }
}

// MARK: - interference

struct Interference: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ordered latency on a shaped bottleneck link while bulk transfers saturate it: no bulk, gated bulk, unpaced bulk.",
        discussion: """
            Every host's link is shaped with a token bucket (tbf) at --link-mbit. For each --modes entry a \
            fresh cluster runs: h0 broadcasts closed loop (as `ordered`), and with bulk every member keeps \
            bulk transfers of --bulk-bytes going to the next member (a ring, so every link carries one bulk \
            flow). gated: bulk only outside the reserved slots, at the link rate; paced: at (1 − \
            reservation) of the link rate; unpaced: as fast as the socket takes it. The summary gives \
            p99 gated / p99 none (the target: at most 1.5) and p99 unpaced / p99 none (the inflation that \
            reservation avoids). The modes take turns --repeats times and each mode's histograms are pooled, \
            so a noisy spell of the machine does not fall on one mode only. A slot must carry a full frame at the link rate, so the round period is \
            longer than on an unshaped link (500 µs at 200 Mbit/s). Needs root.

            Examples:
              sudo .build/release/carillon-bench interference
              sudo .build/release/carillon-bench interference --link-mbit 500 --period-us 300 --modes none,gated,paced,unpaced
            """)

    @OptionGroup var common: CommonOptions
    @Option(help: "Bottleneck rate of every host's link, Mbit/s.") var linkMbit: Double = 200
    @Option(help: "Round period in microseconds.") var periodUs: Double = 500
    @Option(help: "Share of each round reserved for the slots.") var reservation = 0.5
    @Option(help: "Bulk modes to compare, in order: none, gated, paced, unpaced.") var modes = "none,gated,unpaced"
    @Option(help: "Members.") var members = 3
    @Option(help: "Closed-loop messages per mode.") var messages = 2000
    @Option(help: "Payload bytes of the ordered messages.") var size = 64
    @Option(help: "Pause after each delivery, microseconds.") var gapUs: Double = 1000
    @Option(help: "Runs per mode; the modes take turns and each mode's runs are pooled.") var repeats = 3

    func run() throws {
        Cleanup.installSignalHandlers()
        defer { Cleanup.runAll() }
        guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1") }
        let modeList = modes.split(separator: ",").map(String.init)
        guard !modeList.isEmpty, modeList.allSatisfy({ ["none", "gated", "paced", "unpaced"].contains($0) }) else {
            throw ValidationError("--modes: a comma-separated list of none, gated, paced, unpaced")
        }
        guard (2...8).contains(members) else { throw ValidationError("--members must be in 2...8") }
        guard messages >= 1, gapUs >= 0, (24...1_400).contains(size) else {
            throw ValidationError("--messages must be at least 1, --gap-us not negative, --size in 24...1400")
        }
        guard linkMbit >= 1, periodUs > 0, reservation > 0, reservation <= 1 else {
            throw ValidationError("--link-mbit must be at least 1, --period-us positive, --reservation in (0, 1]")
        }
        let count = common.quick ? 200 : messages
        let rounds = common.quick ? 1 : repeats
        let topology = try Topology(hosts: members, placement: try common.placement(needsNamespaces: true), mtu: 1500, shapeMbit: linkMbit)
        let progress = ProgressBar(scenario: "interference", steps: modeList.count * rounds)
        // The modes take turns (none, gated, unpaced, none, …) and each mode's
        // runs are pooled, so a quiet or noisy spell of the machine does not
        // land on one mode only.
        var pooled: [String: BusOutcome] = [:]
        var goodput: [String: [Double]] = [:]
        var runP99: [String: [Double]] = [:]
        var step = 0
        for repetition in 1...rounds {
            for mode in modeList {
                step += 1
                progress.begin(step, "bulk \(mode), link \(Int(linkMbit)) Mbit/s, run \(repetition) of \(rounds)")
                var s = common.busSpec()
                s.members = members
                s.sizeBytes = size
                s.roundPeriodMicros = periodUs
                s.reservation = reservation
                s.idle = common.idleStrategy
                s.messagesPerSender = count
                s.gapMicros = gapUs
                s.bulkPacing = mode == "none" ? nil : mode
                s.linkMbit = linkMbit
                s.timeoutSeconds = Double(count) * (gapUs + 30_000) / 1e6 + 30
                let directory = try common.workDirectory("interference/\(mode)-\(repetition)")
                let outcome = try runBus(s, on: topology, directory: directory)
                if let rate = bulkThroughput(directory: directory, members: members) { goodput[mode, default: []].append(rate) }
                if outcome.atAll.totalCount > 0 { runP99[mode, default: []].append(Double(outcome.atAll.valueAtPercentile(99)) / 1000) }
                progress.report("bulk \(mode), run \(repetition): \(describe(outcome))")
                if var merged = pooled[mode] {
                    merged.atAll.add(outcome.atAll)
                    if let cost = outcome.cost { merged.cost = merged.cost.map { $0.merged(with: cost) } ?? cost }
                    merged.notes += outcome.notes.map { "run \(repetition): \($0)" }
                    pooled[mode] = merged
                } else {
                    var first = outcome
                    first.notes = outcome.notes.map { "run \(repetition): \($0)" }
                    pooled[mode] = first
                }
            }
        }
        progress.finish()
        var results: [BenchResult] = []
        var p99: [String: Double] = [:]
        for mode in modeList {
            guard let outcome = pooled[mode] else { continue }
            var r = row(
                "interference", topology: topology,
                parameters: [
                    "members": "\(members)", "size_bytes": "\(size)", "round_period_us": "\(periodUs)",
                    "reservation": "\(reservation)", "idle": common.idleStrategy, "mode": "closed-loop", "bulk": mode,
                    "link_mbit": "\(Int(linkMbit))", "runs": "\(rounds)"
                ],
                outcome: outcome)
            if let values = runP99[mode], values.count > 1 {
                r.notes.insert("p99 of each run: \(values.map { micros($0) }.joined(separator: ", ")) µs", at: 0)
            }
            if let rates = goodput[mode], !rates.isEmpty {
                r.notes.insert(
                    "bulk goodput \(String(format: "%.1f", rates.reduce(0, +) / Double(rates.count))) Mbit/s per member (received, first to last transfer)",
                    at: 0)
            }
            results.append(r)
            p99[mode] = r.latency?.p99Micros
            print("bulk \(mode): \(describe(outcome))\(r.notes.first.map { "; \($0)" } ?? "")")
        }
        if let none = p99["none"] {
            for mode in modeList where mode != "none" {
                if let value = p99[mode] { print("p99 with \(mode) bulk / p99 without bulk: \(String(format: "%.2f", value / none))") }
            }
        }
        let run = BenchRun(
            scenario: "interference", environment: .current(),
            settings: [
                "placement": topology.label, "idle": common.idleStrategy, "ordering": common.ordering,
                "shaper": "tbf \(Int(linkMbit)) Mbit/s, burst 4 KB, on every host's link",
                "bulk": "ring h(i) → h(i+1), 1 MiB transfers, two queued at all times",
                "runs": "\(rounds) per mode, modes taking turns, histograms pooled"
            ],
            results: results)
        try save(run, to: common.out)
    }

    func bulkThroughput(directory: String, members: Int) -> Double? { bulkGoodput(directory: directory, members: members) }
}

/// Mean bulk goodput per member (Mbit/s, received, first to last transfer) from the members' reports.
func bulkGoodput(directory: String, members: Int) -> Double? {
    var rates: [Double] = []
    for i in 0..<members {
        guard let text = try? String(contentsOfFile: "\(directory)/h\(i).err", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.contains("bulk (") }),
            let open = line.range(of: " transfers, "), let close = line[open.upperBound...].range(of: " Mbit/s from first to last")
        else { continue }
        if let value = Double(line[open.upperBound..<close.lowerBound]) { rates.append(value) }
    }
    guard !rates.isEmpty else { return nil }
    return rates.reduce(0, +) / Double(rates.count)
}
