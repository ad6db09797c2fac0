import ArgumentParser
import CarillonBench
import Foundation
import Glibc

// MARK: - latency

struct Latency: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Issue 13's latency acceptance in one run: raw UDP fan-out, the bus closed and open loop in both orderings, and closed loop beside a CPU hog on every core; prints the ratios.",
        discussion: """
            One topology of --members hosts (network namespaces on a bridge as root, loopback otherwise), \
            seven measurements in this order:
              1. raw UDP fan-out, the floor: h0 sends each datagram to every other host with one sendmmsg, \
            --messages datagrams, --gap-us apart (as `baseline`); latency = the last arrival − send time;
              2–3. the bus closed loop, ordering slots then promises: h0 broadcasts --messages messages of \
            --size bytes, each --gap-us after it delivered the previous one; latency = the last member's \
            delivery − broadcast;
              4–5. the bus open loop, slots then promises: every member sends, --rate messages per second \
            in total, for --duration seconds; a message carries its intended send time;
              6–7. with a CPU hog on every core (unless --no-hog): one `yes > /dev/null` per online core at \
            normal priority, started just before these two runs and killed right after (on every exit \
            path): the closed loop again, slots then promises.
            Every bus run is a fresh cluster of `carillon node` processes with idle strategy blocking (or \
            --idle), 100 µs rounds, reservation 0.5, authenticated frames, agreed delivery; the bench \
            reads each member's CPU time and wake-ups from /proc over the run. Both orderings are always \
            measured (--ordering is not used). The summary gives issue 13's ratios: closed-loop p50 and \
            p99 against the fan-out's (goals ≤ 1.5× and ≤ 2×), open-loop p50 against the fan-out's p50 \
            (≤ 2×), and closed-loop p99 with the hog against without (≤ 2×).

            Examples:
              sudo .build/release/carillon-bench latency
              sudo .build/release/carillon-bench latency --quick
              sudo .build/release/carillon-bench latency --members 5 --rate 20000
              sudo .build/release/carillon-bench latency --no-hog --out /tmp/lat
              .build/release/carillon-bench latency --loopback --quick
            """)

    @OptionGroup var common: CommonOptions
    @Option(help: "Hosts: bus members, and the fan-out goes from h0 to the others.") var members = 3
    @Option(help: "Messages per closed loop and datagrams of the fan-out (--quick: 200).") var messages = 5000
    @Option(help: "Payload bytes (24 to 1400).") var size = 64
    @Option(help: "Pause between messages in the closed loops and the fan-out, microseconds.") var gapUs: Double = 1000
    @Option(help: "Open loop: messages per second offered in total, spread evenly over every member.") var rate: Double = 10_000
    @Option(help: "Open loop: seconds each ordering sends (--quick: 0.5).") var duration: Double = 5
    @Flag(inversion: .prefixedNo, help: "Repeat both closed loops beside one busy `yes > /dev/null` per online core.") var hog = true

    static let orderings = ["slots", "promises"]

    func validate() throws {
        if !(2...16).contains(members) { throw ValidationError("--members must be in 2...16") }
        if messages < 1 { throw ValidationError("--messages must be at least 1") }
        if !(24...1_400).contains(size) { throw ValidationError("--size must be in 24...1400") }
        if !(gapUs >= 0) { throw ValidationError("--gap-us must not be negative") }
        if !(rate > 0 && rate <= 1_000_000) { throw ValidationError("--rate must be in (0, 1000000]") }
        if !(duration > 0 && duration <= 600) { throw ValidationError("--duration must be in (0, 600]") }
    }

    func run() throws {
        Cleanup.installSignalHandlers()
        defer { Cleanup.runAll() }
        let count = common.quick ? 200 : messages
        let seconds = common.quick ? 0.5 : duration
        let idle = common.idleStrategy
        let topology = try Topology(hosts: members, placement: try common.placement(), mtu: 1500)
        let cores = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        let progress = ProgressBar(scenario: "latency", steps: hog ? 7 : 5)
        var results: [BenchResult] = []
        var lines: [String] = []
        var step = 0

        func closedSpec(_ ordering: String) -> BusSpec {
            var s = common.busSpec()
            s.members = members
            s.sizeBytes = size
            s.idle = idle
            s.ordering = ordering
            s.messagesPerSender = count
            s.gapMicros = gapUs
            // Room for a mean latency of 3 ms: a member that cannot reach the
            // count (a message lost to a view change) waits this long and says
            // it fell short, so it must not hold the whole run for minutes.
            s.timeoutSeconds = Double(count) * (gapUs + 3_000) / 1e6 + 20
            return s
        }
        func parameters(_ ordering: String, mode: String, hog: Bool) -> [String: String] {
            var p = [
                "members": "\(members)", "size_bytes": "\(size)", "idle": idle, "ordering": ordering, "mode": mode,
                "hog": hog ? "yes" : "no"
            ]
            if mode == "closed-loop" { p["gap_us"] = "\(gapUs)" } else { p["offered_per_second"] = "\(Int(rate))" }
            return p
        }
        func record(_ label: String, _ result: BenchResult, _ outcome: BusOutcome) {
            results.append(result)
            let line = "\(label): \(describe(outcome))" + (result.notes.isEmpty ? "" : "; \(result.notes.joined(separator: "; "))")
            lines.append(line)
            progress.report(line)
        }

        // 1. The floor.
        step += 1
        progress.begin(step, "raw UDP fan-out h0 → \(members - 1) hosts, \(count) datagrams")
        let fanout = try runFanout(
            topology: topology, members: members, count: count, size: size, gapUs: gapUs,
            work: try common.workDirectory("latency/fanout"))
        record(
            "raw UDP fan-out",
            row(
                "latency", system: "raw-udp-fanout", topology: topology,
                parameters: [
                    "members": "\(members)", "size_bytes": "\(size)", "mode": "closed-loop",
                    "gap_us": "\(gapUs)", "metric": "one-way, last receiver"
                ],
                outcome: fanout), fanout)

        // 2–3. Closed loop, each ordering.
        for ordering in Latency.orderings {
            step += 1
            progress.begin(step, "\(ordering), closed loop, \(count) messages of \(size) B")
            let outcome = try runBus(closedSpec(ordering), on: topology, directory: try common.workDirectory("latency/closed-\(ordering)"))
            record(
                "\(ordering), closed loop",
                row(
                    "latency", topology: topology, parameters: parameters(ordering, mode: "closed-loop", hog: false),
                    outcome: outcome), outcome)
        }

        // 4–5. Open loop, every member sending.
        for ordering in Latency.orderings {
            step += 1
            progress.begin(step, "\(ordering), open loop, \(Int(rate)) msgs/s in total for \(secondsText(seconds)) s")
            var s = closedSpec(ordering)
            s.closedLoop = false
            s.senders = Array(0..<members)
            s.ratePerSender = rate / Double(members)
            s.messagesPerSender = max(1, Int(rate / Double(members) * seconds))
            s.timeoutSeconds = seconds * 3 + 20
            let outcome = try runBus(s, on: topology, directory: try common.workDirectory("latency/open-\(ordering)"))
            record(
                "\(ordering), open loop \(Int(rate)) msgs/s",
                row(
                    "latency", topology: topology,
                    parameters: parameters(ordering, mode: "open-loop", hog: false),
                    outcome: outcome, throughput: true), outcome)
        }

        // 6–7. Closed loop again beside a hog on every core.
        var hogText = "off (--no-hog)"
        if hog {
            let specs = Latency.orderings.map(closedSpec)
            // A backstop should the bench itself be killed with SIGKILL (no
            // cleanup then): each hog may use at most this much CPU time.
            let cpuLimit = Int(specs.map { $0.timeoutSeconds + 15 }.reduce(60, +).rounded(.up))
            let hogs = try startHogs(cores, cpuLimitSeconds: cpuLimit, directory: try common.workDirectory("latency/hogs"))
            defer { hogs.forEach { $0.kill9() } }
            // Sampled from 0.2 s on: by then `prlimit` has exec'd `yes` (the sampler refuses any other command).
            let hogCost = CostSampler(pids: hogs.map(\.pid), command: "yes", start: realtimeNanos() + 200_000_000, intervalSeconds: nil)
            var hogRows: [Int] = []
            for (ordering, spec) in zip(Latency.orderings, specs) {
                step += 1
                progress.begin(step, "\(ordering), closed loop, \(count) messages of \(size) B, beside \(cores) CPU hog(s)")
                let outcome = try runBus(spec, on: topology, directory: try common.workDirectory("latency/closed-\(ordering)-hog"))
                hogRows.append(results.count)
                record(
                    "\(ordering), closed loop, CPU hog on every core",
                    row("latency", topology: topology, parameters: parameters(ordering, mode: "closed-loop", hog: true), outcome: outcome), outcome)
            }
            let (cost, problem) = hogCost.finish()
            hogs.forEach { $0.kill9() }
            let note: String
            if let cost {
                note =
                    "\(cores) hog(s) used \(cost.cpuPercentOfOneCore.map { String(format: "%.1f", $0) }.joined(separator: " / ")) % of one core over the hog runs"
            } else {
                note = "hogs' CPU not measured: \(problem ?? "unknown")"
            }
            for index in hogRows { results[index].notes.append(note) }
            lines.append(note)
            hogText = "\(cores) × yes > /dev/null (normal priority), one per online core, running only during the hog=yes rows"
        }
        progress.finish()

        print(
            "latency: \(members) members on \(topology.label), \(size) B, idle strategy \(idle) (every member\(common.idle == nil ? ", the bench's default; --idle to change" : "")), "
                + "closed loops of \(count) messages \(Int(gapUs)) µs apart, open loops \(Int(rate)) msgs/s in total for \(secondsText(seconds)) s")
        for line in lines { print("  " + line) }
        print("against issue 13's goals:")
        for line in BenchReport.latencyRatioLines(results) { print("  " + line) }

        let run = BenchRun(
            scenario: "latency", environment: .current(),
            settings: [
                "placement": topology.label, "idle": idle, "delivery": "agreed", "authentication": "on",
                "bus": "round 100 µs, reservation 0.5, frames up to 1,472 B, suspicion after 200 silent slots",
                "latency": "broadcast (open loop: intended send) → delivered at the last member; fan-out: send → last arrival",
                "hog": hogText
            ],
            results: results)
        try save(run, to: common.out)
    }

    /// One busy `yes` with its output to /dev/null per core, normal priority,
    /// killed with SIGKILL by the caller, by ``Cleanup`` on an error or a
    /// signal, and by the kernel once it used `cpuLimitSeconds` of CPU time
    /// (`prlimit`, when installed: the bench killed with SIGKILL cleans up nothing).
    func startHogs(_ count: Int, cpuLimitSeconds: Int, directory: String) throws -> [Child] {
        let limit = which("prlimit").map { [$0, "--cpu=\(cpuLimitSeconds)"] } ?? []
        var hogs: [Child] = []
        do {
            for i in 0..<count { hogs.append(try Child(limit + ["yes"], stderr: "\(directory)/hog\(i).err")) }
            // Their pids, so that a test can check they are gone afterwards.
            try hogs.map { "\($0.pid)\n" }.joined().write(toFile: "\(directory)/pids", atomically: true, encoding: .utf8)
        } catch {
            hogs.forEach { $0.kill9() }
            throw error
        }
        return hogs
    }
}
