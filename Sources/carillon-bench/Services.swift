import ArgumentParser
import CarillonBench
import Dispatch
import Foundation
import Glibc
import Histogram
import Synchronization

// MARK: - services

/// The metrics of `services`, as the rows' `metric` parameter spells them.
/// Every system's rows use these names, so a reader can line them up.
enum ServiceMetric {
    /// One client: acquire a free lock, release it; the round trip of both.
    static let lockRound = "lock acquire+release"
    /// Several clients looping acquire/release on one lock: grants per second
    /// over all of them; latency = a holder's release sent → the next holder's grant received.
    static let lockHandOff = "lock hand-off rate"
    /// Write one key, acknowledged as the system's durability says.
    static let put = "put"
    /// Read one key, linearizable (sees every write acknowledged before the read began).
    static let getLinearizable = "get linearizable"
    /// Read one key from the local copy (may be stale), for reference.
    static let getSerializable = "get serializable"
    /// The holder of a lock is killed with SIGKILL; time until a waiter holds it.
    static let lockTakeover = "lock takeover after kill -9"
}

/// What `services` measures, --quick applied; every system's half reads the
/// shared fields, the `etcd…` ones are etcd's alone.
struct ServicesSettings {
    /// Operations per latency metric (lock round, put, each get).
    var operations: Int
    /// Value size of a put, bytes.
    var valueBytes: Int
    /// Clients contending for one lock in the hand-off measurement.
    var contenders: Int
    /// Length of the hand-off measurement, seconds.
    var handOffSeconds: Double
    /// Kills of a lock holder (at etcd's first TTL).
    var kills: Int
    /// A latency metric stops after this many seconds even if fewer operations ran (said in the row's notes).
    var maxSecondsPerMetric: Double
    /// `tmpfs`, `disk`: one etcd per entry.
    var etcdStorages: [String]
    /// `etcdctl lock --ttl` values for the takeover (etcd raises a TTL below 2 s to 2 s).
    var etcdTTLs: [Int]
    /// Kills at each TTL after the first (a kill costs about one TTL).
    var etcdLongTTLKills: Int
    /// Carillon: least seconds from the cluster being whole again (after the
    /// last restart) to the next kill (0: at once).
    var killIntervalSeconds: Double = 0
}

struct Services: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Locks and replicated objects: lock round trip, lock hand-off, put and get latency, and lock takeover after a holder is killed — Carillon and etcd in the same run.",
        discussion: """
            Carillon: three `carillon node` processes (the release build beside the bench; network \
            namespaces on a bridge as root, 127.0.0.1 with --loopback or without root) with the node's \
            default configuration plus --ordering (promises by default), --idle (blocking by default) and \
            --carillon-config, each serving its own client socket under the work directory; the bench \
            connects to those sockets with CarillonClient, as any local client does. On node h0: \
            --operations lock acquire+release rounds by one session, --operations puts of --value-bytes \
            answered when h0 applied them (agreed) and again once every member holds them (safe), \
            linearizable gets (ordered through the bus) and local reads; plus, for the lock round, the \
            same node through a blocking raw socket (where the time goes). --contenders sessions on \
            different nodes loop acquire/release on one lock for --handoff-seconds. Then the takeover, \
            --kills times: a session on h0 holds a lock and a session on h1 waits for it; h0's process \
            gets SIGKILL; timed from the kill to the waiter's grant (the fencing token must increase: the \
            run fails otherwise); h0 restarts with --join and serves again before the next kill \
            (--kill-interval: at least that many seconds later). Each row notes whether the bus changed \
            views since it started and what each member cost. The summary gives Carillon's p50 against \
            each etcd's and the issue's two goals. About 30 s with the defaults.

            etcd 3.4 (Debian's etcd-server and etcd-client; installed with apt-get as root when missing, \
            otherwise the bench prints the apt line) runs as a private single-node process on 127.0.0.1 \
            with free ports and its own data directory, once on tmpfs (/dev/shm) and once on disk \
            (/var/tmp); the system's etcd service is never used. The client speaks HTTP/1.1 keep-alive \
            to etcd's v3 JSON gateway over one TCP connection per client. Per storage: --operations lock \
            acquire+release rounds by one client (one lease), --contenders clients looping \
            acquire/release on one lock for --handoff-seconds (grants per second, and release → next \
            grant latency), --operations puts of --value-bytes, linearizable and serializable gets; then \
            the takeover: a holder `etcdctl lock NAME --ttl T` is killed with SIGKILL at a random point of \
            its keep-alive period while a second `etcdctl lock NAME` waits, timed from the kill to the \
            waiter printing the key, --kills times at the first --etcd-ttls value and --long-ttl-kills \
            times at the others. About 90 s with the defaults. etcd ignores --loopback, --idle and \
            --ordering (they configure the bus's members).

            Examples:
              sudo .build/release/carillon-bench services
              sudo .build/release/carillon-bench services --quick
              sudo .build/release/carillon-bench services --etcd-storage tmpfs --etcd-ttls 1 --kills 10
              sudo .build/release/carillon-bench services --systems carillon --carillon-config suspicion_gap_factor=0
              .build/release/carillon-bench services --operations 5000 --contenders 4 --out bench-results
            """)

    @OptionGroup var common: CommonOptions
    @Option(help: "Systems to measure, comma-separated: etcd, carillon.") var systems = "etcd,carillon"
    @Option(help: "Operations per latency metric (lock round, put, each get).") var operations = 1000
    @Option(help: "Value bytes of a put.") var valueBytes = 64
    @Option(help: "Clients contending for one lock in the hand-off measurement.") var contenders = 2
    @Option(help: "Seconds of the hand-off measurement.") var handoffSeconds: Double = 3
    @Option(help: "Kills of a lock holder for the takeover (at etcd's first --etcd-ttls value).") var kills = 5
    @Option(help: "A latency metric stops after this many seconds even with operations left (the row says so).") var maxSeconds: Double = 10
    @Option(help: "etcd data directory media, comma-separated: tmpfs (/dev/shm), disk (/var/tmp).") var etcdStorage = "tmpfs,disk"
    @Option(help: "Session TTLs (seconds) of the etcdctl lock holders for the takeover; etcd raises a TTL below 2 to 2; 10 is etcdctl's default.")
    var etcdTtls = "1,10"
    @Option(help: "Kills at each --etcd-ttls value after the first (a kill costs about one TTL).") var longTtlKills = 2
    @Option(
        help:
            "Carillon: wait at least this many seconds after the restarted node serves again before the next kill (the members forget learned gaps after 60 s)."
    )
    var killInterval: Double = 0
    @Option(
        help: ArgumentHelp(
            "More keys of Carillon's node configuration, comma-separated KEY=VALUE (docs/configuration.md), e.g. suspicion_gap_factor=0,promise_heartbeat_us=1000; the rows list them.",
            valueName: "key=value,…"))
    var carillonConfig: String?

    func validate() throws {
        guard operations >= 1, valueBytes >= 1, valueBytes <= 1_000_000 else {
            throw ValidationError("--operations must be at least 1, --value-bytes in 1...1000000")
        }
        guard contenders >= 2, contenders <= 64 else { throw ValidationError("--contenders must be in 2...64") }
        guard handoffSeconds > 0, maxSeconds > 0 else { throw ValidationError("--handoff-seconds and --max-seconds must be positive") }
        guard kills >= 1, longTtlKills >= 1 else { throw ValidationError("--kills and --long-ttl-kills must be at least 1") }
        guard killInterval >= 0, killInterval <= 3_600 else { throw ValidationError("--kill-interval must be in 0...3600 seconds") }
    }

    func settings() throws -> ServicesSettings {
        let storages = etcdStorage.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !storages.isEmpty, storages.allSatisfy({ ["tmpfs", "disk"].contains($0) }) else {
            throw ValidationError("--etcd-storage: a comma-separated list of tmpfs, disk")
        }
        let ttls: [Int] = try parseList(etcdTtls, "--etcd-ttls")
        guard ttls.allSatisfy({ (1...60).contains($0) }) else { throw ValidationError("--etcd-ttls: each in 1...60 seconds") }
        let quick = common.quick
        return ServicesSettings(
            operations: quick ? min(operations, 100) : operations, valueBytes: valueBytes, contenders: contenders,
            handOffSeconds: quick ? min(handoffSeconds, 1) : handoffSeconds, kills: quick ? min(kills, 2) : kills,
            maxSecondsPerMetric: maxSeconds, etcdStorages: storages, etcdTTLs: quick ? [ttls[0]] : ttls,
            etcdLongTTLKills: quick ? 1 : longTtlKills, killIntervalSeconds: killInterval)
    }

    func run() throws {
        let systemList = systems.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !systemList.isEmpty, systemList.allSatisfy({ ["etcd", "carillon"].contains($0) }) else {
            throw ValidationError("--systems: a comma-separated list of etcd, carillon")
        }
        let settings = try settings()
        let carillonOptions = try CarillonServicesOptions(
            placement: systemList.contains("carillon") ? common.placement() : .loopback,
            idle: common.idleStrategy, ordering: common.ordering, config: carillonConfigPairs())
        if systemList.contains("etcd") { try EtcdServer.ensureInstalled() }
        if systemList.contains("carillon") { _ = try Binaries.carillon() }
        Cleanup.installSignalHandlers()
        defer { Cleanup.runAll() }

        var steps = 0
        if systemList.contains("etcd") { steps += etcdSteps(settings) }
        if systemList.contains("carillon") { steps += carillonSteps(settings) }
        let progress = ProgressBar(scenario: "services", steps: steps)
        var step = 0
        var results: [BenchResult] = []
        var runSettings: [String: String] = [
            "latency": "request sent → reply received, one client, closed loop (hand-off: release sent → next holder's grant received)"
        ]
        // The machine is shared: how busy it was says how far to trust the figures.
        let loadAtStart = loadAverage()
        if systemList.contains("etcd") {
            results += try measureEtcd(settings, work: try common.workDirectory("services/etcd"), progress: progress, step: &step)
            runSettings["etcd"] =
                "\(EtcdServer.version()), one node on 127.0.0.1 per storage, default heartbeat 100 ms / election 1000 ms; client: HTTP/1.1 keep-alive to the v3 JSON gateway, which turns each request into a gRPC call to the same etcd process (a loopback hop a native gRPC client would not pay)"
        }
        // Carillon's rows: the same `metric` names (ServiceMetric), system `carillon`.
        var problems: [String] = []
        if systemList.contains("carillon") {
            results += try measureCarillon(
                settings, options: carillonOptions, work: try common.workDirectory("services/carillon"),
                progress: progress, step: &step, problems: &problems)
            runSettings["carillon"] =
                "3 carillon node processes (release) on \(carillonOptions.placement.rawValue), the node's default configuration with ordering \(carillonOptions.ordering), idle \(carillonOptions.idle)"
                + (carillonOptions.config.isEmpty ? "" : ", \(carillonOptions.configText)")
                + ", authenticated frames; client: CarillonClient on each node's Unix socket (one connection = one session)"
        }
        progress.finish()
        runSettings["load average"] = "\(loadAtStart) at the start, \(loadAverage()) at the end (1, 5, 15 min; /proc/loadavg)"
        for result in results { print(describeServiceRow(result)) }
        let ratios = BenchReport.servicesRatioLines(results)
        if !ratios.isEmpty {
            print("carillon against etcd (p50):")
            for line in ratios { print("  " + line.replacingOccurrences(of: "**", with: "")) }
        }
        for problem in problems { print("PROBLEM: " + problem) }
        let run = BenchRun(scenario: "services", environment: .current(), settings: runSettings, results: results)
        try save(run, to: common.out)
        if !problems.isEmpty { throw BenchError("services: \(problems.count) problem(s), see above (results saved)") }
    }

    /// --carillon-config as (key, JSON value) pairs: numbers, true/false and null as they are, anything else as a string.
    func carillonConfigPairs() throws -> [(key: String, value: String)] {
        guard let text = carillonConfig?.trimmingCharacters(in: .whitespaces), !text.isEmpty else { return [] }
        return try text.split(separator: ",").map { item in
            let parts = item.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw ValidationError("--carillon-config: KEY=VALUE pairs separated by commas, got \(item)")
            }
            guard !["members", "start_at_ns", "authentication", "ordering", "idle"].contains(parts[0]) else {
                throw ValidationError("--carillon-config: \(parts[0]) is set by the bench (--ordering, --idle, or always)")
            }
            let value = parts[1]
            let literal = Double(value) != nil || ["true", "false", "null"].contains(value)
            return (
                parts[0], literal ? value : "\"\(value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\""))\""
            )
        }
    }
}

/// The 1, 5 and 15 minute load averages, "0.52 0.41 0.30".
func loadAverage() -> String {
    let text = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? ""
    return text.split(separator: " ").prefix(3).joined(separator: " ")
}

/// "etcd-disk  put  p50 … p99 … max … µs (n)" and the like, one line per row, for the summary.
func describeServiceRow(_ result: BenchResult) -> String {
    let metric = result[parameter: "metric"]
    let consistency = result[parameter: "consistency"]
    var line = "\(result.system)  \(metric)\(consistency.isEmpty ? "" : " (\(consistency))"):"
    if metric == ServiceMetric.lockTakeover, let latency = result.latency {
        let ttl = result[parameter: "ttl_s"], granted = result[parameter: "granted_ttl_s"]
        let ttlText = ttl.isEmpty ? "" : " TTL \(ttl) s\(granted.isEmpty || granted == ttl ? "" : " (granted \(granted) s)"),"
        line +=
            "\(ttlText) p50 \(BenchReport.duration(micros: latency.p50Micros)), max \(BenchReport.duration(micros: latency.maxMicros)) (\(latency.count) kills)"
    } else {
        if let throughput = result.throughput {
            line += " \(Int(throughput.meanMessagesPerSecond.rounded())) grants/s"
            if !result[parameter: "contenders"].isEmpty { line += " (\(result[parameter: "contenders"]) contenders)" }
            if result.latency != nil { line += "; hand-off" }
        }
        if let latency = result.latency {
            line += " p50 \(micros(latency.p50Micros)) p99 \(micros(latency.p99Micros)) max \(micros(latency.maxMicros)) µs (\(latency.count))"
        }
    }
    if result.latency == nil, result.throughput == nil { line += " no figure" }
    if let cost = result.cost { line += "; " + describe(cost) }
    return line
}

/// Runs `body` `operations` times (or until `maxSeconds` pass) and records each call's duration in ns.
/// Returns the histogram and a note when time ran out first.
func timedOperations(_ operations: Int, maxSeconds: Double, _ body: () throws -> Void) throws -> (Histogram<UInt64>, String?) {
    var histogram = latencyHistogram()
    let deadline = monotonicNanos() + UInt64(maxSeconds * 1e9)
    var done = 0
    while done < operations {
        let start = monotonicNanos()
        try body()
        let end = monotonicNanos()
        _ = histogram.record(end - start)
        done += 1
        if end > deadline, done < operations { return (histogram, "stopped after \(Int(maxSeconds)) s: \(done) of \(operations) operations") }
    }
    return (histogram, nil)
}

// MARK: - etcd's half

/// Progress steps ``measureEtcd(_:work:progress:step:)`` takes: per storage,
/// lock round, hand-off, put, gets, and one per takeover TTL.
func etcdSteps(_ settings: ServicesSettings) -> Int { settings.etcdStorages.count * (4 + settings.etcdTTLs.count) }

/// etcd's rows of `services`: for each storage (system `etcd-tmpfs`,
/// `etcd-disk`) a fresh single-node etcd, then every ``ServiceMetric``.
/// Advances `step` by ``etcdSteps(_:)``. Leaves no etcd process or data
/// directory behind on any path.
func measureEtcd(_ settings: ServicesSettings, work: String, progress: ProgressBar, step: inout Int) throws -> [BenchResult] {
    try EtcdServer.ensureInstalled()
    let version = EtcdServer.version()
    var results: [BenchResult] = []
    for storageName in settings.etcdStorages {
        let storage = try EtcdStorage.named(storageName)
        let system = "etcd-\(storage.name)"
        func result(
            _ metric: String, _ extra: [String: String], latency: Histogram<UInt64>? = nil, rate: Double? = nil,
            notes: [String] = []
        ) -> BenchResult {
            var parameters = ["metric": metric, "storage": storage.name, "durability": storage.durability, "etcd": version]
            parameters.merge(extra) { _, new in new }
            return BenchResult(
                scenario: "services", system: system, placement: "loopback", parameters: parameters,
                latency: latency.flatMap { $0.totalCount > 0 ? LatencySummary(nanoseconds: $0) : nil },
                throughput: rate.map { ThroughputSummary(messagesPerSecondPerMember: [$0], bytesPerSecondPerMember: [0]) },
                notes: notes)
        }
        func add(_ row: BenchResult) {
            results.append(row)
            progress.report(describeServiceRow(row))
        }

        step += 1
        progress.begin(step, "\(system): start etcd, \(ServiceMetric.lockRound)")
        let server = try EtcdServer(dataDirectory: storage.directory, log: "\(work)/\(system).log")
        defer { server.stop() }
        try server.waitUntilHealthy()
        let client = try EtcdClient(port: server.clientPort)
        let lease = try client.grantLease(ttlSeconds: 3_600).id

        // (a) uncontended lock: lock then unlock, one client, one lease.
        let lockName = "carillon-bench/lock"
        for _ in 0..<min(20, settings.operations) { try client.unlock(key: client.lock(name: lockName, lease: lease)) }
        let (rounds, roundsNote) = try timedOperations(settings.operations, maxSeconds: settings.maxSecondsPerMetric) {
            try client.unlock(key: client.lock(name: lockName, lease: lease))
        }
        add(
            result(
                ServiceMetric.lockRound, ["operations": "\(rounds.totalCount)"], latency: rounds,
                notes: ["one client, one lease; lock/lock then lock/unlock, both writes through raft"] + (roundsNote.map { [$0] } ?? [])))

        // (b) contended hand-off.
        step += 1
        progress.begin(step, "\(system): \(ServiceMetric.lockHandOff), \(settings.contenders) clients, \(settings.handOffSeconds) s")
        let handOff = try measureEtcdHandOff(
            port: server.clientPort, contenders: settings.contenders, seconds: settings.handOffSeconds,
            name: "carillon-bench/handoff")
        add(
            result(
                ServiceMetric.lockHandOff, ["contenders": "\(settings.contenders)", "seconds": "\(settings.handOffSeconds)"],
                latency: handOff.handOff, rate: handOff.grantsPerSecond,
                notes: [
                    "throughput column: grants per second over all contenders together; latency: a holder's unlock sent → the next holder's lock reply received",
                    "grants per contender: \(handOff.perContender.map(String.init).joined(separator: ", "))"
                ] + handOff.notes))

        // (c) put.
        step += 1
        progress.begin(step, "\(system): \(ServiceMetric.put), \(settings.valueBytes) B")
        let value = String(repeating: "v", count: settings.valueBytes)
        try client.put(key: "carillon-bench/warm", value: value)
        let (puts, putsNote) = try timedOperations(settings.operations, maxSeconds: settings.maxSecondsPerMetric) {
            try client.put(key: "carillon-bench/object", value: value)
        }
        add(
            result(
                ServiceMetric.put, ["operations": "\(puts.totalCount)", "value_bytes": "\(settings.valueBytes)"], latency: puts,
                notes: putsNote.map { [$0] } ?? []))

        // (d) get, linearizable and serializable.
        step += 1
        progress.begin(step, "\(system): \(ServiceMetric.getLinearizable), \(ServiceMetric.getSerializable)")
        guard try client.get(key: "carillon-bench/object") == value else { throw BenchError("\(system): get did not return the value just put") }
        for (metric, serializable) in [(ServiceMetric.getLinearizable, false), (ServiceMetric.getSerializable, true)] {
            let (gets, getsNote) = try timedOperations(settings.operations, maxSeconds: settings.maxSecondsPerMetric) {
                _ = try client.get(key: "carillon-bench/object", serializable: serializable)
            }
            add(
                result(
                    metric, ["operations": "\(gets.totalCount)", "value_bytes": "\(settings.valueBytes)"], latency: gets,
                    notes: (serializable
                        ? ["the local copy, no quorum round (may be stale)"]
                        : ["ReadIndex: the leader confirms it still leads with a quorum (itself alone on one node), no disk write"])
                        + (getsNote.map { [$0] } ?? [])))
        }

        // (e) takeover after kill -9 of the holder.
        for (index, ttl) in settings.etcdTTLs.enumerated() {
            let kills = index == 0 ? settings.kills : settings.etcdLongTTLKills
            step += 1
            progress.begin(step, "\(system): \(ServiceMetric.lockTakeover), etcdctl lock --ttl \(ttl), \(kills) kills")
            let takeover = try measureEtcdTakeover(server: server, client: client, ttl: ttl, kills: kills, work: work, tag: "\(system)-ttl\(ttl)")
            var extra = ["ttl_s": "\(ttl)", "kills": "\(kills)"]
            if let granted = takeover.grantedTTL { extra["granted_ttl_s"] = "\(granted)" }
            add(
                result(
                    ServiceMetric.lockTakeover, extra, latency: takeover.histogram,
                    notes: [
                        "holder and waiter: `etcdctl lock NAME --ttl \(ttl)` (a session lease kept alive every TTL/3); the holder killed at a random point of that period; kill → the waiter prints the key",
                        "each kill: " + takeover.seconds.map { String(format: "%.2f", $0) }.joined(separator: ", ") + " s"
                    ]))
        }
        server.stop()
    }
    return results
}

/// A contender's grant: when it sent lock/lock, got the reply, and sent lock/unlock (CLOCK_MONOTONIC ns).
struct LockGrant: Sendable {
    var contender: Int
    var lockSent: UInt64
    var granted: UInt64
    var unlockSent: UInt64
}

/// `contenders` clients, one thread, connection and lease each, loop lock/unlock
/// on `name` for `seconds`. Grants per second count replies received in the
/// window; a hand-off is a grant to a client that was waiting when the previous
/// holder (another client) sent its unlock.
func measureEtcdHandOff(port: Int, contenders: Int, seconds: Double, name: String) throws
    -> (grantsPerSecond: Double, perContender: [Int], handOff: Histogram<UInt64>, notes: [String])
{
    final class Collected: Sendable {
        let grants = Mutex<[LockGrant]>([])
        let errors = Mutex<[String]>([])
    }
    let collected = Collected()
    let group = DispatchGroup()
    let start = monotonicNanos() + 500_000_000
    let end = start + UInt64(seconds * 1e9)
    for contender in 0..<contenders {
        DispatchQueue.global().async(group: group) {
            do {
                let client = try EtcdClient(port: port, timeoutSeconds: seconds + 30)
                let lease = try client.grantLease(ttlSeconds: 3_600).id
                var mine: [LockGrant] = []
                let now = monotonicNanos()
                if now < start { sleepNanos(start - now) }
                while monotonicNanos() < end {
                    let lockSent = monotonicNanos()
                    let key = try client.lock(name: name, lease: lease)
                    let granted = monotonicNanos()
                    let unlockSent = monotonicNanos()
                    try client.unlock(key: key)
                    mine.append(LockGrant(contender: contender, lockSent: lockSent, granted: granted, unlockSent: unlockSent))
                }
                collected.grants.withLock { $0 += mine }
            } catch {
                collected.errors.withLock { $0.append("contender \(contender): \(error)") }
            }
        }
    }
    guard group.wait(timeout: .now() + seconds + 90) == .success else {
        throw BenchError("lock hand-off: contenders still busy \(Int(seconds) + 90) s after the start")
    }
    if let error = collected.errors.withLock({ $0.first }) { throw BenchError("lock hand-off failed: \(error)") }
    let summary = summariseHandOff(collected.grants.withLock { $0 }, contenders: contenders, start: start, end: end, seconds: seconds)
    let handOff = summary.handOff
    var notes: [String] = []
    let slow = handOff.totalCount == 0 ? 0 : handOff.totalCount - handOff.count(within: 0...50_000_000)
    if slow > 0 {
        notes.append(
            "\(slow) of \(handOff.totalCount) hand-offs took over 50 ms: consistent with etcd's watch sync (a lock waiter watches its predecessor's key from a past revision; etcd catches such unsynced watchers up every 100 ms)"
        )
    }
    if summary.overlaps > 0 {
        notes.append("\(summary.overlaps) grants arrived before the previous holder had sent its unlock (mutual exclusion broken?)")
    }
    return (summary.grantsPerSecond, summary.perContender, handOff, notes)
}

/// What a hand-off measurement found (any system's).
struct HandOffSummary {
    /// Grants received in the window, per second, over all contenders.
    var grantsPerSecond: Double
    var perContender: [Int]
    /// A holder's unlock sent → the next holder's grant received (ns), for grants to another contender that was waiting.
    var handOff: Histogram<UInt64>
    /// Grants received before the previous holder sent its unlock (mutual exclusion broken).
    var overlaps: Int
}

/// Grants per second in [start, end], grants per contender, and hand-offs: a
/// grant to a contender that was waiting when the previous holder (another
/// contender) sent its unlock.
func summariseHandOff(_ all: [LockGrant], contenders: Int, start: UInt64, end: UInt64, seconds: Double) -> HandOffSummary {
    let grants = all.sorted { $0.granted < $1.granted }
    let inWindow = grants.filter { $0.granted >= start && $0.granted <= end }
    var perContender = Array(repeating: 0, count: contenders)
    for grant in inWindow { perContender[grant.contender] += 1 }
    var handOff = latencyHistogram()
    var overlaps = 0
    for (previous, grant) in zip(grants, grants.dropFirst()) where grant.granted >= start && grant.granted <= end {
        if grant.granted < previous.unlockSent { overlaps += 1; continue }
        if grant.contender != previous.contender, grant.lockSent < previous.unlockSent {
            _ = handOff.record(grant.granted - previous.unlockSent)
        }
    }
    return HandOffSummary(grantsPerSecond: Double(inWindow.count) / seconds, perContender: perContender, handOff: handOff, overlaps: overlaps)
}

/// Kills the holder of a lock `kills` times: `etcdctl lock` holds it, a second
/// `etcdctl lock` waits (queued: two keys under the lock's prefix), the holder
/// gets SIGKILL at a random point of its keep-alive period (granted TTL / 3),
/// and the time until the waiter prints the key is recorded; the waiter is the
/// next holder. Returns the histogram (ns), each takeover in seconds, and the
/// TTL etcd granted the holder's session.
func measureEtcdTakeover(server: EtcdServer, client: EtcdClient, ttl: Int, kills: Int, work: String, tag: String) throws
    -> (histogram: Histogram<UInt64>, seconds: [Double], grantedTTL: Int?)
{
    let name = "carillon-bench/takeover-\(tag)"
    var generator = SystemRandomNumberGenerator()
    var holder = try EtcdctlLock(endpoint: server.endpoint, name: name, ttlSeconds: ttl, stderr: "\(work)/\(tag)-0.err")
    defer { holder.kill9() }
    guard holder.waitAcquired(seconds: 15) != nil else {
        throw BenchError("`etcdctl lock \(name)` did not acquire the free lock within 15 s: \(tail("\(work)/\(tag)-0.err"))")
    }
    let grantedTTL = try client.keys(prefix: name + "/").firstLease.flatMap { try client.grantedTTL(lease: $0) }
    let period = Double(grantedTTL ?? max(ttl, 2)) / 3
    var histogram = latencyHistogram()
    var seconds: [Double] = []
    for kill in 1...kills {
        let waiter = try EtcdctlLock(endpoint: server.endpoint, name: name, ttlSeconds: ttl, stderr: "\(work)/\(tag)-\(kill).err")
        let queuedBy = monotonicNanos() + 15_000_000_000
        while try client.keys(prefix: name + "/").count < 2 {
            guard monotonicNanos() < queuedBy else {
                waiter.kill9()
                throw BenchError("the waiting `etcdctl lock \(name)` did not queue within 15 s: \(tail("\(work)/\(tag)-\(kill).err"))")
            }
            usleep(10_000)
        }
        sleepNanos(UInt64(Double.random(in: 0..<period, using: &generator) * 1e9))
        let killed = holder.sendKill()
        guard let acquired = waiter.waitAcquired(seconds: Double(grantedTTL ?? ttl) * 3 + 10) else {
            waiter.kill9()
            throw BenchError(
                "after kill -9 of the holder, the waiting `etcdctl lock \(name)` did not acquire within \(Double(grantedTTL ?? ttl) * 3 + 10) s: \(tail("\(work)/\(tag)-\(kill).err"))"
            )
        }
        holder.kill9()
        _ = histogram.record(acquired - killed)
        seconds.append(Double(acquired - killed) / 1e9)
        holder = waiter
    }
    return (histogram, seconds, grantedTTL)
}

/// The last lines of a file, for error messages.
private func tail(_ path: String) -> String {
    let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    let lines = text.split(separator: "\n").suffix(6)
    return lines.isEmpty ? "(no output)" : lines.joined(separator: "\n")
}
