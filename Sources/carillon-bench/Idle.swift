import ArgumentParser
import CarillonBench
import Foundation

// MARK: - idle

struct Idle: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "What each member costs on an idle bus and under load: CPU (% of one core) and wake-ups per second per member process.",
        discussion: """
            Two phases, each on a fresh cluster of --members `carillon node` processes (network \
            namespaces as root, loopback otherwise) started on the node's default configuration: only \
            the members, the start time, a fresh key and "ordering" are written (plus "idle" when --idle \
            is given), so round period, idle strategy, scheduling and failure detection are what a \
            configuration file without them gets (docs/configuration.md). Idle: nobody sends; loaded: \
            every member broadcasts --rate messages per second of --size bytes (open loop). In each phase \
            the bench reads every member process's /proc/<pid>/stat (user + system CPU time) and \
            /proc/<pid>/task/*/status (voluntary and involuntary context switches, summed over its \
            threads) --warmup seconds after the first round and again --seconds later; a voluntary \
            switch is a thread going to sleep, so voluntary switches per second are wake-ups. Issue 13's \
            goal for an idle 3-member bus: each member at most 2 % of one core and 1,000 wake-ups per \
            second over 30 s.

            Examples:
              sudo .build/release/carillon-bench idle
              sudo .build/release/carillon-bench idle --quick
              sudo .build/release/carillon-bench idle --members 5 --seconds 60 --rate 2000
              sudo .build/release/carillon-bench idle --ordering promises
              sudo .build/release/carillon-bench idle --idle blocking
              .build/release/carillon-bench idle --loopback --quick
            """)

    @OptionGroup var common: CommonOptions
    @Option(help: "Members (separate processes).") var members = 3
    @Option(help: "Seconds measured in each phase (--quick: 5).") var seconds: Double = 30
    @Option(help: "Seconds from the first round to the start of the measurement (start-up is left out).") var warmup: Double = 2
    @Option(help: "Loaded phase: messages per second each member broadcasts (open loop).") var rate: Double = 1000
    @Option(help: "Loaded phase: payload bytes (24 to 1400).") var size = 64

    func validate() throws {
        if !(2...16).contains(members) { throw ValidationError("--members must be in 2...16") }
        if !(seconds >= 1 && seconds <= 3600) { throw ValidationError("--seconds must be in 1...3600") }
        if !(warmup >= 0 && warmup <= 60) { throw ValidationError("--warmup must be in 0...60") }
        if !(rate > 0 && rate <= 1_000_000) { throw ValidationError("--rate must be in (0, 1000000]") }
        if !(24...1_400).contains(size) { throw ValidationError("--size must be in 24...1400") }
    }

    func run() throws {
        Cleanup.installSignalHandlers()
        defer { Cleanup.runAll() }
        let measured = common.quick ? 5 : seconds
        let warm = common.quick ? min(warmup, 1) : warmup
        let topology = try Topology(hosts: members, placement: try common.placement(), mtu: 1500)
        let progress = ProgressBar(scenario: "idle", steps: 2)
        var results: [BenchResult] = []
        let idleText = common.idle ?? "default"
        let base = ["members": "\(members)", "seconds": secondsText(measured), "idle": idleText, "ordering": common.ordering]

        for loaded in [false, true] {
            let phase = loaded ? "loaded" : "idle"
            progress.begin(
                loaded ? 2 : 1,
                loaded
                    ? "\(members) members, each sending \(Int(rate)) msgs/s of \(size) B, \(secondsText(measured)) s measured"
                    : "\(members) members, idle, \(secondsText(measured)) s measured")
            let outcome = try runPhase(
                loaded: loaded, topology: topology, measured: measured, warmup: warm,
                directory: try common.workDirectory("idle/\(phase)"))
            var parameters = base
            parameters["phase"] = phase
            parameters["mode"] = loaded ? "open-loop" : "idle"
            if loaded {
                parameters["rate_per_member"] = "\(Int(rate))"
                parameters["size_bytes"] = "\(size)"
            }
            results.append(row("idle", topology: topology, parameters: parameters, outcome: outcome, latency: loaded, throughput: loaded))
            var latencyOnly = outcome
            latencyOnly.cost = nil
            progress.report("\(phase): " + (outcome.cost.map(describe) ?? "cost not measured") + (loaded ? "; latency \(describe(latencyOnly))" : ""))
        }
        progress.finish()
        for result in results {
            guard let cost = result.cost else {
                print("\(result[parameter: "phase"]): cost not measured (\(result.notes.joined(separator: "; ")))")
                continue
            }
            print(
                "\(result[parameter: "phase"]) \(secondsText(cost.seconds)) s: "
                    + "cpu \(cost.cpuPercentOfOneCore.map { String(format: "%.1f", $0) }.joined(separator: " / ")) % of one core, "
                    + "\(cost.wakeupsPerSecond.map { String(Int($0.rounded())) }.joined(separator: " / ")) wake-ups/s, "
                    + "\(cost.involuntarySwitchesPerSecond.map { String(Int($0.rounded())) }.joined(separator: " / ")) involuntary switches/s "
                    + "(h0 / h1 / …)" + (result.notes.isEmpty ? "" : "; \(result.notes.joined(separator: "; "))"))
        }
        if let idle = results.first?.cost {
            let goal = BenchReport.idleGoal
            let met = idle.maxCPUPercent <= goal.cpuPercent && idle.maxWakeupsPerSecond <= goal.wakeupsPerSecond
            print(
                "idle goal (each member ≤ \(Int(goal.cpuPercent)) % of one core and ≤ \(Int(goal.wakeupsPerSecond)) wake-ups/s): "
                    + "\(met ? "met" : "not met"): busiest member \(String(format: "%.1f", idle.maxCPUPercent)) % and \(Int(idle.maxWakeupsPerSecond.rounded())) wake-ups/s"
            )
        }
        let run = BenchRun(
            scenario: "idle", environment: .current(),
            settings: [
                "placement": topology.label,
                "configuration": "node defaults (docs/configuration.md) + ordering\(common.idle.map { " + idle \($0)" } ?? "")",
                "ordering": common.ordering, "authentication": "on",
                "measured": "per member process, \(secondsText(warm)) s after the first round for \(secondsText(measured)) s: "
                    + "utime+stime from /proc/<pid>/stat, voluntary (wake-ups) and involuntary switches summed over /proc/<pid>/task/*/status",
                "load": "open loop, every member \(Int(rate)) msgs/s of \(size) B"
            ],
            results: results)
        try save(run, to: common.out)
    }

    /// One fresh cluster: idle (nobody sends; stopped with SIGTERM after the
    /// measurement) or loaded (every member sends until after the measurement,
    /// then they stop once every message is delivered everywhere).
    func runPhase(loaded: Bool, topology: Topology, measured: Double, warmup: Double, directory: String) throws -> BusOutcome {
        let carillon = try Binaries.carillon()
        var spec = BusSpec()
        spec.members = members
        spec.nodeDefaults = true
        spec.idle = common.idle
        spec.ordering = common.ordering
        spec.sizeBytes = size
        let config = try writeBusConfig(spec, on: topology, directory: directory)
        let lead = Double(config.startNanos > realtimeNanos() ? config.startNanos - realtimeNanos() : 0) / 1e9
        // Senders keep going a second past the measurement, so it is loaded throughout.
        let perMember = loaded ? Int((rate * (warmup + measured + 1)).rounded(.up)) : 0
        // A member that cannot reach --expect (a message lost to a view change)
        // stops by itself 15 s after the sending ends and says it fell short.
        let timeout = lead + warmup + measured + (loaded ? 16 : 60)

        var children: [Child] = []
        defer { children.forEach { $0.kill9() } }
        for i in 0..<members {
            var argv = [
                carillon, "node", "--config", config.path, "--member", "h\(i)", "--timeout", "\(Int(timeout.rounded(.up)))",
                "--log", "\(directory)/h\(i).log", "--send", "\(perMember)"
            ]
            if loaded { argv += ["--rate", "\(rate)", "--size", "\(size)", "--expect", "\(perMember * members)"] }
            children.append(try Child(topology.command(host: i, argv), stderr: "\(directory)/h\(i).err"))
        }
        let from = config.startNanos + UInt64(warmup * 1e9)
        // Two samples only (no sampling in between: the bench itself stays quiet while it measures).
        let sampler = CostSampler(pids: children.map(\.pid), start: from, intervalSeconds: nil)
        sleepUntilRealtime(from + UInt64(measured * 1e9))
        let (cost, problem) = sampler.finish()
        if !loaded { children.forEach { $0.terminate() } }
        var outcome = try collectOutcome(
            of: children, waitSeconds: loaded ? timeout : 30, directory: directory,
            sizeBytes: size, noun: "member")
        outcome.cost = cost
        if let problem { outcome.notes.append("member cost not measured: \(problem)") }
        return outcome
    }
}

/// Seconds as short text: `30`, `2.5`, `4.98`.
func secondsText(_ value: Double) -> String {
    value == value.rounded() ? String(Int(value)) : String(format: "%.3g", value)
}
