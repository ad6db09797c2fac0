import ArgumentParser
@_spi(Canary) import CarillonMembership
@_spi(Canary) import CarillonOrdering
@_spi(Canary) import CarillonServices
@_spi(Canary) import CarillonSimulation
import Dispatch
import Foundation
import Synchronization

struct CarillonSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "carillon-sim",
        abstract: "Run Carillon's ordering and membership layers in a seeded, deterministic cluster simulator.",
        discussion: """
            Each seed runs a cluster in virtual time: a safety phase with loss, duplication, \
            reordering, delay spikes, partitions that heal, member pauses and drifting clocks, \
            then a liveness phase with faults off in which everything broadcast must be \
            delivered everywhere within a stated bound. Agreement, integrity and order are \
            checked on every delivery, validity at the end. The exit status is 0 only when no \
            seed failed; a failing seed prints the one command that replays it.

            Faults of the ordering swarm (--swarm draws each from the seed):
              loss, duplicates, reordering   per frame and directed link
              delay spikes, partitions       partitions split the members in two and heal
              pauses                         a member stops (descheduled): up to 100 rounds, or 1–50 ms
              receive queues                 a bounded queue per member (a socket buffer): frames
                                             beyond it are dropped; each frame costs CPU time,
                                             during which the queue fills and the next slot waits
              replays                        an adversary re-injects old frames of the same run
                                             (earlier rounds) at random later times
              clocks                         per-member offset and drift
            Receive queues and frame costs stay on in the liveness phase (they are the host).

            Faults of the membership swarm (--membership --swarm), on top of loss and duplicates:
              crashes, restarts              kill -9 and a restart that joins as a new incarnation
              restarts without join          a restart given the first view's configuration again
              partitions                     a majority and a minority side, healed later
              deaf members                   a member still sends but hears nothing (a full socket
                                             buffer, a lost multicast membership)
              one-way links                  frames from one member to another are lost, not back
              pauses                         a process is descheduled for 1–50 ms
              receive queues                 bounded, with a CPU cost per frame (as above)
              replays                        frames recorded earlier in this run, or in an earlier
                                             run of the same cluster under the same key
            Membership checks: integrity, agreement and virtual synchrony per epoch, one member
            list per epoch, equal state digests, validity, and liveness after the faults.

            Services (--services): the membership simulator, its faults and its checks,
            with a ServiceHost (locks, object store) at every member and clients at each
            member: sessions that acquire, hold, cancel and release locks, read and write
            registers, add to counters, retry, send duplicates and end sessions. Checks:
              lock safety        no grant while a conflicting holder holds (each member's
                                 stream); tokens increase per lock; members grant the same
              replica equality   equal service digests at every member at each view, and
                                 a joiner's right after it received the state
              linearizability    each register key's history (get, put, cas, delete)
              exactly once       a retried request is applied once: answers agree,
                                 counters add up to the distinct adds applied
              view bounds        no member delivers in a view past the next view's start
            Safe delivery unless --mode agreed (agreed delivery is not uniform: an answer
            may come from a delivery the view's survivors never made).
            Canaries (--canary): grant-while-held, divergent-tokens (lock safety),
            forget-sessions (exactly once), divergent-replica (replica equality),
            stale-local-reads (linearizability), unfrozen-migration (object
            ownership), ignore-rights (capabilities).
            Membership canaries (--membership --canary): install-before-cut-held,
            skip-ragged-trim, half-is-majority (and the scripted adversary
            tests' runs-not-told, deaf-may-propose, stale-joins-taken, restart-reuses-first-view).
            With --expect-failure the exit status is 0 only when some seed failed: a canary
            sweep passes when the checkers catch the canary.

            Examples:
              carillon-sim --seed 1 --demo           one seed: delivery order and latency summary
              carillon-sim --seed 42                 one seed, standard fault profile
              carillon-sim --seed 42 --swarm -v      one swarm seed, with its profile and counters
              carillon-sim --swarm --seeds 1-10000   the release sweep
              carillon-sim --seeds 1-200 --members 5 --loss 0.2
              carillon-sim --membership --swarm --seeds 1-10000
                                                     view changes: crashes, restarts, partitions, joins
              carillon-sim --membership --seed 7 -v  one membership seed with its event log
              carillon-sim --services --swarm --seeds 1-2000
                                                     services under the membership adversary
              carillon-sim --services --swarm --seed 12 -v
                                                     one services seed: profile, event log, counts
              carillon-sim --services --swarm --seeds 1-20 --canary grant-while-held
                                                     a broken lock service: lock safety must fail
              carillon-sim --membership --swarm --seeds 1-200 --canary skip-ragged-trim --expect-failure
                                                     a broken view change: the membership checkers must fail
            """)

    @Option(name: .long, help: "Run this one seed.")
    var seed: UInt64?

    @Option(name: .long, help: "Run an inclusive range of seeds, as A-B.")
    var seeds: String?

    @Flag(name: .long, help: "Draw every fault and workload parameter from the seed (swarm testing).")
    var swarm = false

    @Flag(name: .long, help: "Simulate the membership layer: crashes, restarts, partitions, joins and view changes.")
    var membership = false

    @Flag(name: .long, help: "Simulate the services (locks, objects) and their clients on top of the membership simulator.")
    var services = false

    @Option(name: .long, help: "Members in the cluster (standard profile only).")
    var members: Int?

    @Option(name: .long, help: "Frame loss probability per link (standard profile only).")
    var loss: Double?

    @Option(name: .long, help: "Rounds in the safety phase (standard profile only).")
    var rounds: Int?

    @Option(
        name: .long,
        help: "Delivery mode: agreed or safe (standard profile only; with --services, also with --swarm: safe unless agreed is asked for).")
    var mode: String?

    @Option(name: .long, help: "Worker threads (default: one per core).")
    var jobs: Int?

    @Option(name: .long, help: ArgumentHelp("Run a deliberately broken variant to see the checkers catch it.", visibility: .hidden))
    var canary: String?

    @Flag(name: .long, help: ArgumentHelp("Exit 0 only if some seed fails (a canary sweep: the checkers must catch it).", visibility: .hidden))
    var expectFailure = false

    @Flag(name: .shortAndLong, help: "Print every seed's result and profile, not only failures.")
    var verbose = false

    @Flag(name: .long, help: "Show the agreed delivery order and the broadcast-to-delivery latency of each seed.")
    var demo = false

    func validate() throws {
        if seed == nil, seeds == nil { throw ValidationError("give --seed N or --seeds A-B (for example --seeds 1-100)") }
        if seed != nil, seeds != nil { throw ValidationError("give either --seed or --seeds, not both") }
        if let seeds { _ = try parseRange(seeds) }
        if let members, !(1...64).contains(members) { throw ValidationError("--members must be in 1...64, got \(members)") }
        if let loss, !(0..<1).contains(loss) { throw ValidationError("--loss must be in [0, 1), got \(loss)") }
        if let rounds, rounds < 1 { throw ValidationError("--rounds must be positive, got \(rounds)") }
        if let mode, DeliveryMode(rawValue: mode) == nil { throw ValidationError("--mode must be agreed or safe, got \(mode)") }
        if let jobs, jobs < 1 { throw ValidationError("--jobs must be at least 1") }
        if services {
            if membership { throw ValidationError("--services runs the membership simulator already; drop --membership") }
            if swarm, members != nil || loss != nil || rounds != nil {
                throw ValidationError("--swarm draws members, loss and rounds from the seed; drop those options")
            }
            if let canary, ServiceCanary(rawValue: canary) == nil {
                throw ValidationError(
                    "unknown services canary \(canary): "
                        + ServiceCanary.allCases.map(\.rawValue).joined(separator: ", "))
            }
        } else if membership {
            if let canary, MembershipCanary(rawValue: canary) == nil {
                throw ValidationError(
                    "unknown membership canary \(canary): "
                        + MembershipCanary.allCases.map(\.rawValue).joined(separator: ", "))
            }
            if mode != nil { throw ValidationError("--membership takes no --mode") }
        } else if let canary, canaryVariant(canary) == nil {
            throw ValidationError("unknown canary \(canary): deliver-on-arrival, redeliver-duplicates or ignore-naks")
        }
        if swarm, !services, members != nil || loss != nil || rounds != nil || mode != nil {
            throw ValidationError("--swarm draws members, loss, rounds and mode from the seed; drop those options")
        }
    }

    func parseRange(_ text: String) throws -> ClosedRange<UInt64> {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, let low = UInt64(parts[0]), let high = UInt64(parts[1]), low <= high else {
            throw ValidationError("--seeds takes A-B with A ≤ B, for example 1-10000; got \(text)")
        }
        return low...high
    }

    func canaryVariant(_ name: String) -> OrderingCanary? {
        switch name {
        case "deliver-on-arrival": return .deliverOnArrival
        case "redeliver-duplicates": return .redeliverDuplicates
        case "ignore-naks": return .ignoreNaks
        default: return nil
        }
    }

    func profile(for seed: UInt64) -> FaultProfile {
        if swarm { return .swarm(seed: seed) }
        var profile = FaultProfile.standard
        if let members { profile.memberCount = members }
        if let loss { profile.lossProbability = loss }
        if let rounds { profile.faultRounds = rounds }
        if let mode { profile.deliveryMode = DeliveryMode(rawValue: mode)! }
        return profile
    }

    func replayCommand(_ seed: UInt64) -> String {
        var parts = ["swift run -c release carillon-sim --seed \(seed)"]
        if membership { parts.append("--membership") }
        if services { parts.append("--services") }
        if swarm { parts.append("--swarm") }
        if let members { parts.append("--members \(members)") }
        if let loss { parts.append("--loss \(loss)") }
        if let rounds { parts.append("--rounds \(rounds)") }
        if let mode { parts.append("--mode \(mode)") }
        if let canary { parts.append("--canary \(canary)") }
        return parts.joined(separator: " ") + " -v"
    }

    func run() throws {
        let range = try seed.map { $0...$0 } ?? parseRange(seeds!)
        let count = Int(range.upperBound - range.lowerBound + 1)
        let workers = min(jobs ?? ProcessInfo.processInfo.activeProcessorCount, count)
        let variant = services || membership ? nil : canary.flatMap(canaryVariant)
        let membershipCanary = membership ? canary.flatMap(MembershipCanary.init(rawValue:)) : nil
        let serviceCanary = services ? canary.flatMap(ServiceCanary.init(rawValue:)) : nil
        let started = ContinuousClock.now
        let state = Mutex(SweepState())
        let showProgress = count > 1 && isatty(STDERR_FILENO) != 0

        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            var index = worker
            while index < count {
                let seed = range.lowerBound + UInt64(index)
                let passed: Bool, messages: Int, livenessRounds: Int?, line: String?
                if services {
                    var simulator = MembershipSimulator(
                        seed: seed, profile: servicesProfile(seed),
                        services: swarm ? .swarm(seed: seed) : ServicesWorkloadProfile(), serviceCanary: serviceCanary)
                    let result = simulator.run()
                    (passed, messages, livenessRounds, line) = (
                        result.passed, result.messagesBroadcast,
                        result.livenessRounds, render(result)
                    )
                } else if membership {
                    var simulator = MembershipSimulator(
                        seed: seed, profile: swarm ? .swarm(seed: seed) : membershipProfile(), canary: membershipCanary)
                    let result = simulator.run()
                    (passed, messages, livenessRounds, line) = (
                        result.passed, result.messagesBroadcast,
                        result.livenessRounds, render(result)
                    )
                    if let first = result.violations.first {
                        state.withLock { $0.caughtBy[first.checker.rawValue, default: 0] += 1 }
                    }
                } else {
                    var simulator = ClusterSimulator(seed: seed, profile: profile(for: seed), canary: variant)
                    let result = simulator.run()
                    (passed, messages, livenessRounds, line) = (
                        result.passed, result.messagesBroadcast,
                        result.livenessRounds, render(result)
                    )
                }
                state.withLock { sweep in
                    sweep.done += 1
                    sweep.messages += messages
                    if let rounds = livenessRounds { sweep.maxLivenessRounds = max(sweep.maxLivenessRounds, rounds) }
                    if !passed { sweep.failed.append(seed) }
                    if let line { print(line) }
                    if showProgress, sweep.done % 50 == 0 || sweep.done == count {
                        let seconds = max(0.001, (ContinuousClock.now - started).seconds)
                        FileHandle.standardError.write(
                            Data(
                                "\r\(sweep.done)/\(count) seeds, \(sweep.failed.count) failed, \(Int(Double(sweep.done) / seconds)) seeds/s   ".utf8))
                    }
                }
                index += workers
            }
        }
        let seconds = (ContinuousClock.now - started).seconds
        let sweep = state.withLock { $0 }
        if showProgress { FileHandle.standardError.write(Data("\n".utf8)) }
        print(
            String(
                format: "%d seed%@ in %.1f s (%.0f seeds/s, %d workers): %d failed; %d messages broadcast; longest liveness phase %d rounds",
                count, count == 1 ? "" : "s", seconds, Double(count) / max(seconds, 1e-9), workers,
                sweep.failed.count, sweep.messages, sweep.maxLivenessRounds))
        if !sweep.caughtBy.isEmpty {
            print("first violation by checker: " + sweep.caughtBy.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
        if expectFailure {
            guard !sweep.failed.isEmpty else {
                print("expected a failure\(canary.map { " (canary \($0))" } ?? ""), but every seed passed: the checkers missed it")
                throw ExitCode(1)
            }
            print("failed as expected\(canary.map { " (canary \($0))" } ?? ""): first failing seed \(sweep.failed.min()!)")
            return
        }
        if !sweep.failed.isEmpty {
            print("failing seeds: \(sweep.failed.sorted().prefix(20).map(String.init).joined(separator: " "))\(sweep.failed.count > 20 ? " …" : "")")
            print("replay the first: \(replayCommand(sweep.failed.min()!))")
            throw ExitCode(1)
        }
    }

    /// The services run over safe delivery unless `--mode agreed` asks otherwise
    /// (see ``MembershipFaultProfile/servicesSwarm(seed:)``).
    func servicesProfile(_ seed: UInt64) -> MembershipFaultProfile {
        var profile = swarm ? MembershipFaultProfile.servicesSwarm(seed: seed) : membershipProfile()
        profile.deliveryMode = mode.flatMap(DeliveryMode.init(rawValue:)) ?? .safe
        return profile
    }

    func membershipProfile() -> MembershipFaultProfile {
        var profile = MembershipFaultProfile()
        if let members { profile.nodeCount = members }
        if let loss { profile.lossProbability = loss }
        if let rounds { profile.faultRounds = rounds }
        return profile
    }

    func render(_ result: MembershipSimulationResult) -> String? {
        guard verbose || demo || !result.passed else { return nil }
        var lines = [result.description, "  profile: \(result.profile)"]
        if services { lines.append("  services: \(swarm ? ServicesWorkloadProfile.swarm(seed: result.seed) : ServicesWorkloadProfile())") }
        for violation in result.violations { lines.append("  \(violation)") }
        for violation in result.serviceViolations { lines.append("  \(violation)") }
        if verbose { for entry in result.log { lines.append("  \(entry)") } }
        if !result.passed { lines.append("  replay: \(replayCommand(result.seed))") }
        return lines.joined(separator: "\n")
    }

    func render(_ result: SimulationResult) -> String? {
        guard verbose || demo || !result.passed else { return nil }
        var lines = [result.description, "  profile: \(result.profile)"]
        if demo {
            let n = result.profile.memberCount
            lines.append("  agreed order, identical at all \(n) members (first \(result.deliveryOrderPrefix.count), as (sender,sequence)):")
            lines.append("    " + result.deliveryOrderPrefix.map(String.init(describing:)).joined(separator: " "))
            lines.append("  broadcast → delivered at all \(n) members (virtual time, faults included): \(result.latency)")
        }
        if verbose {
            // Summed over the members; every ordering counter that is not zero (OrderingCounters.descriptors).
            lines.append("  counters: " + result.counters.report(includingZeros: false))
        }
        for violation in result.violations { lines.append("  \(violation)") }
        if verbose, !result.passed { for state in result.memberStates { lines.append("  \(state)") } }
        if !result.passed { lines.append("  replay: \(replayCommand(result.seed))") }
        return lines.joined(separator: "\n")
    }
}

struct SweepState {
    var done = 0
    var events = 0
    var messages = 0
    var maxLivenessRounds = 0
    var failed: [UInt64] = []
    /// Membership runs: failing seeds by the checker of their first violation.
    var caughtBy: [String: Int] = [:]
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
