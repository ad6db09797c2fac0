// Carillon's half of `carillon-bench services`: three `carillon node`
// processes (in network namespaces as root) serving their client sockets, the
// bench connecting to those sockets with CarillonClient as any local client
// would, the same metrics as etcd's half (ServiceMetric), and the lock takeover
// after `kill -9` of the holder's node.

import CarillonBench
import CarillonClient
import Dispatch
import Foundation
import Glibc
import Histogram
import Synchronization

/// How Carillon's members run in `services`: --loopback, --idle, --ordering
/// and --carillon-config.
struct CarillonServicesOptions {
    var placement: Placement
    /// The idle strategy written into the configuration (and the rows).
    var idle: String
    var ordering: String
    /// More configuration keys: (key, JSON value text), in the given order.
    var config: [(key: String, value: String)]

    /// "key=value, …" for the rows, or "" without extra keys.
    var configText: String { config.map { "\($0.key)=\($0.value)" }.joined(separator: ", ") }
}

/// The durability of an acknowledged Carillon write, for the rows.
let carillonDurability = "in memory at every member; survives the loss of a minority of members, not of every member at once"

/// Progress steps ``measureCarillon(_:options:work:progress:step:problems:)`` takes:
/// start and lock round, hand-off, puts, gets, takeover.
func carillonSteps(_ settings: ServicesSettings) -> Int { 5 }

// MARK: - async from the bench's synchronous flow

/// Where a task leaves its outcome for a waiting thread.
private final class OutcomeSlot<T: Sendable>: Sendable {
    let value = Mutex<Result<T, any Error>?>(nil)
}

/// Runs `body` as a task and waits for it on this (non-cooperative) thread;
/// nil when `timeoutSeconds` pass first (the task is left to finish on its own:
/// the caller closes the clients it uses, which ends their calls).
func awaitBlocking<T: Sendable>(timeoutSeconds: Double, _ body: @escaping @Sendable () async throws -> T) throws -> T? {
    let done = DispatchSemaphore(value: 0)
    let slot = OutcomeSlot<T>()
    Task {
        let outcome: Result<T, any Error>
        do { outcome = .success(try await body()) } catch { outcome = .failure(error) }
        slot.value.withLock { $0 = outcome }
        done.signal()
    }
    guard done.wait(timeout: .now() + timeoutSeconds) == .success else { return nil }
    return try slot.value.withLock { $0 }!.get()
}

/// ``awaitBlocking(timeoutSeconds:_:)`` that throws `what` when the time is up.
func awaitBlocking<T: Sendable>(_ what: String, timeoutSeconds: Double, _ body: @escaping @Sendable () async throws -> T) throws -> T {
    guard let value = try awaitBlocking(timeoutSeconds: timeoutSeconds, body) else {
        throw BenchError("\(what): no answer within \(Int(timeoutSeconds)) s")
    }
    return value
}

/// What ``measureCalls(_:warmup:maxSeconds:callTimeoutSeconds:maxFailures:path:_:)`` saw.
struct CallsOutcome {
    var histogram = latencyHistogram()
    /// Calls made, warm-up excluded.
    var attempts = 0
    var timeouts = 0
    /// Errors of calls that failed (a view change that left the node out ends its sessions).
    var failures: [String] = []
    /// Why it stopped before `operations`, if it did.
    var stopped: String?
    let callTimeoutSeconds: Double

    init(callTimeoutSeconds: Double) { self.callTimeoutSeconds = callTimeoutSeconds }

    /// Notes for a row: timeouts, failures (the first few errors), early stop.
    var notes: [String] {
        var notes: [String] = []
        if timeouts > 0 {
            notes.append(
                "\(timeouts) of \(attempts) calls not answered within \(String(format: "%g", callTimeoutSeconds)) s (left out; a new session after each)"
            )
        }
        if !failures.isEmpty {
            var seen: [String] = []
            for failure in failures where !seen.contains(failure) { seen.append(failure) }
            notes.append(
                "\(failures.count) of \(attempts) calls failed (left out; a new session after each): " + seen.prefix(3).joined(separator: "; "))
        }
        if let stopped { notes.append(stopped) }
        return notes
    }
}

/// `operations` calls of `body` through a session on `path` (after `warmup`
/// unrecorded ones), each timed inside its own task and bounded by
/// `callTimeoutSeconds`. A call that fails or times out is left out and
/// counted, and the session replaced (a view change that leaves the node out
/// ends its sessions; a timed-out request stays pending at the node). Stops
/// after `maxSeconds`, or after `maxFailures` failures and timeouts together.
func measureCalls(
    _ operations: Int, warmup: Int = 0, maxSeconds: Double, callTimeoutSeconds: Double = 10, maxFailures: Int = 10,
    path: String, _ body: @escaping @Sendable (CarillonClient) async throws -> Void
) throws -> CallsOutcome {
    var outcome = CallsOutcome(callTimeoutSeconds: callTimeoutSeconds)
    var client = try connectRetrying(path, seconds: 30)
    defer { client.close() }
    var deadline = UInt64.max
    var done = -warmup
    while done < operations {
        if done == 0, deadline == .max { deadline = monotonicNanos() + UInt64(maxSeconds * 1e9) }
        let current = client
        var failed = false
        do {
            let took = try awaitBlocking(timeoutSeconds: callTimeoutSeconds) { () async throws -> UInt64 in
                let start = monotonicNanos()
                try await body(current)
                return monotonicNanos() - start
            }
            if let took {
                if done >= 0 { _ = outcome.histogram.record(took) }
            } else {
                if done >= 0 { outcome.timeouts += 1 }
                failed = true
            }
        } catch {
            if done >= 0 { outcome.failures.append("\(error)") }
            failed = true
        }
        if done >= 0 { outcome.attempts += 1 }
        done += 1
        if failed {
            if outcome.timeouts + outcome.failures.count >= maxFailures {
                outcome.stopped =
                    "stopped after \(outcome.timeouts + outcome.failures.count) failed calls: \(outcome.attempts) of \(operations) operations"
                return outcome
            }
            client.close()
            client = try connectRetrying(path, seconds: 30)
        }
        if monotonicNanos() > deadline, done < operations {
            outcome.stopped = "stopped after \(Int(maxSeconds)) s: \(outcome.attempts) of \(operations) operations"
            return outcome
        }
    }
    return outcome
}

/// A session on the node at `path`, retrying while the node is not there (restarting).
func connectRetrying(_ path: String, seconds: Double) throws -> CarillonClient {
    let deadline = monotonicNanos() + UInt64(seconds * 1e9)
    while true {
        do { return try CarillonClient(path: path) } catch {
            guard monotonicNanos() < deadline else { throw BenchError("cannot connect to \(path) for \(Int(seconds)) s: \(error)") }
            usleep(20_000)
        }
    }
}

// MARK: - the cluster

/// `members` `carillon node` processes (the release build beside the bench),
/// each serving its own client socket under the work directory, as daemons
/// with a generous --timeout as a backstop. Killed, and the namespaces
/// deleted, by ``stop()`` or on any exit path (``Cleanup``).
final class ServiceCluster {
    let topology: Topology
    let work: String
    let configPath: String
    /// Member i's client socket (absolute).
    let sockets: [String]
    let timeoutSeconds: Int
    private let carillon: String
    private(set) var nodes: [Child?]
    /// Processes started per member so far (names the logs of restarts).
    private var starts: [Int]
    private var socketCleanup: Int?
    /// More `carillon node` arguments of member i.
    let nodeArguments: (Int) -> [String]

    /// `spec` nil: every setting but the members, idle and ordering is the
    /// node's default; else the bus as `spec` says (its members, idle and
    /// ordering are set from these options). `shapeMbit` shapes every host's link.
    init(
        members: Int, options: CarillonServicesOptions, work: String, timeoutSeconds: Int, spec given: BusSpec? = nil,
        shapeMbit: Double? = nil, nodeArguments: @escaping (Int) -> [String] = { _ in [] }
    ) throws {
        carillon = try Binaries.carillon()
        topology = try Topology(hosts: members, placement: options.placement, shapeMbit: shapeMbit)
        self.work = work
        self.timeoutSeconds = timeoutSeconds
        self.nodeArguments = nodeArguments
        var spec = given ?? BusSpec()
        spec.members = members
        spec.idle = options.idle
        spec.ordering = options.ordering
        // Every other setting is the node's default (docs/configuration.md), as a user would run it.
        spec.nodeDefaults = given == nil
        spec.extraSettings = options.config.map { "\"\($0.key)\": \($0.value)" }
        configPath = try writeBusConfig(spec, on: topology, directory: work).path
        // A Unix socket path has at most 107 bytes: a deep --out falls back to /tmp.
        let directory = URL(fileURLWithPath: work).standardizedFileURL.path
        if directory.utf8.count + 12 < 100 {
            sockets = (0..<members).map { "\(directory)/h\($0).sock" }
        } else {
            let paths = (0..<members).map { "/tmp/crlnb-\(getpid())-h\($0).sock" }
            sockets = paths
            socketCleanup = Cleanup.register { for path in paths { unlink(path) } }
        }
        nodes = Array(repeating: nil, count: members)
        starts = Array(repeating: 0, count: members)
    }

    deinit { stop() }

    /// The member processes' pids (0 for one not running).
    var pids: [Int32] { nodes.map { $0?.pid ?? 0 } }

    /// Starts member i's `carillon node` (with --join: a restart into the running cluster).
    func start(_ i: Int, join: Bool) throws {
        let suffix = starts[i] == 0 ? "" : "-r\(starts[i])"
        starts[i] += 1
        var argv = [
            carillon, "node", "--config", configPath, "--member", "h\(i)", "--client-socket", sockets[i],
            "--timeout", "\(timeoutSeconds)", "--log", "\(work)/h\(i)\(suffix).log"
        ]
        if join { argv.append("--join") }
        argv += nodeArguments(i)
        nodes[i] = try Child(topology.command(host: i, argv), stderr: "\(work)/h\(i)\(suffix).err")
    }

    /// Waits until a request through member i's socket is answered (the
    /// member is in a primary view and serves); the seconds it took.
    @discardableResult
    func waitReady(_ i: Int, seconds: Double) throws -> Double {
        let started = monotonicNanos()
        let deadline = started + UInt64(seconds * 1e9)
        var last = "no attempt"
        while monotonicNanos() < deadline {
            guard let node = nodes[i], node.process.isRunning else {
                throw BenchError("carillon node h\(i) exited: \(nodes[i]?.stderrTail ?? "not started")")
            }
            do {
                let client = try CarillonClient(path: sockets[i])
                defer { client.close() }
                let answered = try awaitBlocking(timeoutSeconds: 5) { () async throws -> Bool in
                    _ = try await client.get("carillon-bench/ready")
                    return true
                }
                if answered == true { return Double(monotonicNanos() - started) / 1e9 }
                last = "a get through h\(i) was not answered within 5 s"
            } catch {
                last = "\(error)"
            }
            usleep(20_000)
        }
        throw BenchError(
            "carillon node h\(i) did not serve a request through \(sockets[i]) within \(Int(seconds)) s (last: \(last)):\n\(nodes[i]?.stderrTail ?? "")"
        )
    }

    /// Sends SIGKILL to member i's process now; CLOCK_MONOTONIC and
    /// CLOCK_REALTIME just before the signal. ``reap(_:)`` after.
    func kill9(_ i: Int) -> (monotonic: UInt64, realtime: UInt64) {
        let realtime = realtimeNanos()
        let monotonic = monotonicNanos()
        if let node = nodes[i] { kill(node.pid, SIGKILL) }
        return (monotonic, realtime)
    }

    /// Waits for member i's killed process and forgets it.
    func reap(_ i: Int) {
        nodes[i]?.kill9()
        nodes[i] = nil
    }

    /// Kills every member, deletes the namespaces and the sockets.
    func stop() {
        for i in nodes.indices { reap(i) }
        topology.teardown()
        if let token = socketCleanup {
            Cleanup.run(token)
            socketCleanup = nil
        }
    }
}

// MARK: - a client without the async library

/// A blocking client of a node's socket speaking ``ClientMessage`` directly,
/// one call at a time on the calling thread: what CarillonClient's own cost
/// (its reader thread and the task it resumes) adds is the difference.
final class RawServiceSocket {
    let descriptor: Int32
    private var reader = ClientMessageReader()
    private var nextID: UInt64 = 1
    private var buffer = [UInt8](repeating: 0, count: 65_536)

    init(path: String) throws {
        descriptor = try UnixSocket.connect(path)
        guard case .hello = try next() else {
            close(descriptor)
            throw BenchError("\(path) did not start with a hello")
        }
    }

    deinit { close(descriptor) }

    private func next() throws -> ClientMessage {
        while true {
            if let message = try reader.next() { return message }
            let n = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { throw BenchError("the node closed the connection") }
            buffer.withUnsafeBytes { reader.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
    }

    /// Sends the message `make(requestID)` and waits for its response.
    func call(_ make: (UInt64) -> ClientMessage) throws -> ServiceResponse {
        let id = nextID
        nextID += 1
        let bytes = make(id).encoded()
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { send(descriptor, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n < 0 { if errno == EINTR { continue }; throw BenchError("send: \(String(cString: strerror(errno)))") }
            sent += n
        }
        while true {
            if case .response(let got, let response) = try next(), got == id { return response }
        }
    }

    func localRead(_ key: String) throws -> ServiceResponse { try call { .localRead(requestID: $0, key: key) } }

    func lock(_ command: LockCommand) throws -> ServiceResponse {
        var w = ByteWriter()
        command.encode(into: &w)
        return try call { .request(requestID: $0, consistency: .agreed, service: LockService.serviceID, body: w.bytes) }
    }
}

// MARK: - the measurements

/// Carillon's rows of `services` (system `carillon`): a fresh cluster of
/// `members` nodes, then every ``ServiceMetric``. Advances `step` by
/// ``carillonSteps(_:)``. Leaves no node process, namespace or socket behind
/// on any path. `problems` gets what must fail the run after its results are
/// saved (a fencing token that did not increase, mutual exclusion broken).
func measureCarillon(
    _ settings: ServicesSettings, options: CarillonServicesOptions, work: String, progress: ProgressBar,
    step: inout Int, problems: inout [String]
) throws -> [BenchResult] {
    let members = 3
    var results: [BenchResult] = []
    // A backstop for the daemons should the bench die without cleaning up: far beyond the run's length.
    let timeout = Int(600 + 6 * settings.maxSecondsPerMetric + settings.handOffSeconds + Double(settings.kills) * (60 + settings.killIntervalSeconds))
    let cluster = try ServiceCluster(members: members, options: options, work: work, timeoutSeconds: timeout)
    defer { cluster.stop() }
    let placement = cluster.topology.label

    func result(
        _ metric: String, _ extra: [String: String], latency: Histogram<UInt64>? = nil, rate: Double? = nil,
        cost: CostSummary? = nil, notes: [String] = []
    ) -> BenchResult {
        // What state the bus was in: view changes (h1 never restarts; its log is flushed every 100 ms).
        let views = viewLines(log: "\(work)/h1.log", from: 0)
        var notes = notes
        if metric != ServiceMetric.lockTakeover {
            notes.append(views <= 1 ? "no view change since the cluster started" : "\(views - 1) view change(s) since the cluster started (h1's log)")
        }
        var parameters = [
            "metric": metric, "storage": "memory", "durability": carillonDurability, "members": "\(members)",
            "idle": options.idle, "ordering": options.ordering
        ]
        if !options.config.isEmpty { parameters["config"] = options.configText }
        parameters.merge(extra) { _, new in new }
        return BenchResult(
            scenario: "services", system: "carillon", placement: placement, parameters: parameters,
            latency: latency.flatMap { $0.totalCount > 0 ? LatencySummary(nanoseconds: $0) : nil },
            throughput: rate.map { ThroughputSummary(messagesPerSecondPerMember: [$0], bytesPerSecondPerMember: [0]) },
            cost: cost, notes: notes)
    }
    func add(_ row: BenchResult) {
        results.append(row)
        progress.report(describeServiceRow(row))
    }
    /// What the members cost from now until the returned closure is called.
    func sampleCost() -> () -> (CostSummary?, [String]) {
        let sampler = CostSampler(pids: cluster.pids, start: realtimeNanos(), intervalSeconds: nil)
        return {
            let (cost, problem) = sampler.finish()
            return (cost, problem.map { ["member cost not measured: \($0)"] } ?? [])
        }
    }

    step += 1
    progress.begin(step, "carillon: start \(members) nodes, \(ServiceMetric.lockRound)")
    for i in 0..<members { try cluster.start(i, join: false) }
    for i in 0..<members { try cluster.waitReady(i, seconds: 30) }
    // Past the start-up's view changes.
    usleep(500_000)
    for i in 0..<members { try cluster.waitReady(i, seconds: 30) }
    let operations = settings.operations, maxSeconds = settings.maxSecondsPerMetric
    let h0 = cluster.sockets[0]

    // (a) uncontended lock: acquire then release, one session on h0.
    let lockName = "carillon-bench/lock"
    var finishCost = sampleCost()
    let rounds = try measureCalls(operations, warmup: min(20, operations), maxSeconds: maxSeconds, path: h0) { client in
        guard try await client.acquire(lockName) != nil else { throw BenchError("acquire \(lockName) returned no grant") }
        try await client.release(lockName)
    }
    var (cost, costNotes) = finishCost()
    // Where the time goes: the same node through a blocking raw socket (no
    // async client), a local read (no bus) both ways.
    let breakdown: String
    do { breakdown = try lockRoundBreakdown(path: h0, operations: min(operations, 1000), name: lockName) } catch {
        breakdown = "where the time goes: not measured (\(error))"
    }
    add(
        result(
            ServiceMetric.lockRound, ["operations": "\(rounds.histogram.totalCount)", "consistency": "agreed"], latency: rounds.histogram, cost: cost,
            notes: [
                "one CarillonClient session on h0, uncontended; acquire then release, each ordered through the bus and answered when h0 applied it (agreed)",
                breakdown
            ] + rounds.notes + costNotes))

    // (b) contended hand-off, contenders on different nodes.
    step += 1
    progress.begin(
        step,
        "carillon: \(ServiceMetric.lockHandOff), \(settings.contenders) clients on \(min(settings.contenders, members)) nodes, \(settings.handOffSeconds) s"
    )
    finishCost = sampleCost()
    let handOff = try measureCarillonHandOff(
        sockets: cluster.sockets, contenders: settings.contenders, seconds: settings.handOffSeconds,
        name: "carillon-bench/handoff")
    (cost, costNotes) = finishCost()
    if handOff.summary.overlaps > 0 {
        problems.append("carillon \(ServiceMetric.lockHandOff): \(handOff.summary.overlaps) grants before the previous holder had sent its release")
    }
    let placementText = (0..<settings.contenders).map { "h\($0 % members)" }.joined(separator: ", ")
    add(
        result(
            ServiceMetric.lockHandOff, ["contenders": "\(settings.contenders)", "seconds": "\(settings.handOffSeconds)", "consistency": "agreed"],
            latency: handOff.summary.handOff, rate: handOff.summary.grantsPerSecond, cost: cost,
            notes: [
                "throughput column: grants per second over all contenders together; latency: a holder's release sent → the next holder's grant received",
                "contenders' sessions on \(placementText)",
                "grants per contender: \(handOff.summary.perContender.map(String.init).joined(separator: ", "))"
            ]
                + (handOff.summary.overlaps > 0
                    ? ["\(handOff.summary.overlaps) grants arrived before the previous holder had sent its release (mutual exclusion broken?)"] : [])
                + (handOff.failures.isEmpty
                    ? []
                    : ["\(handOff.failures.count) calls failed (a new session after each): \(handOff.failures.prefix(2).joined(separator: "; "))"])
                + costNotes))

    // (c) put, answered when applied at h0 (agreed) and once every member holds it (safe).
    step += 1
    progress.begin(step, "carillon: \(ServiceMetric.put), \(settings.valueBytes) B, agreed and safe")
    let value = [UInt8](repeating: 0x76, count: settings.valueBytes)
    let key = "carillon-bench/object"
    finishCost = sampleCost()
    let puts = try measureCalls(operations, warmup: 1, maxSeconds: maxSeconds, path: h0) { client in try await client.put(key, value) }
    (cost, costNotes) = finishCost()
    add(
        result(
            ServiceMetric.put, ["operations": "\(puts.histogram.totalCount)", "value_bytes": "\(settings.valueBytes)", "consistency": "agreed"],
            latency: puts.histogram, cost: cost,
            notes: [
                "one CarillonClient session on h0; answered when h0 applied it (agreed: ordered; every member holds it once it is stable, a round or two later; a write whose member fails before any other received it is lost with it)"
            ]
                + puts.notes + costNotes))
    // Safe: each put bounded by 2 s and few timeouts allowed (before 99fb82c a held safe answer waited for unrelated traffic).
    finishCost = sampleCost()
    let safe = try measureCalls(operations, maxSeconds: maxSeconds, callTimeoutSeconds: 2, maxFailures: 3, path: h0) { client in
        try await client.put(key, value, consistency: .safe)
    }
    (cost, costNotes) = finishCost()
    let safeNotes = ["one CarillonClient session on h0; answered once stable (safe): every member of the view holds it"]
    add(
        result(
            ServiceMetric.put, ["operations": "\(safe.histogram.totalCount)", "value_bytes": "\(settings.valueBytes)", "consistency": "safe"],
            latency: safe.histogram, cost: cost, notes: safeNotes + safe.notes + costNotes))

    // (d) get: linearizable (ordered through the bus) and the local copy.
    step += 1
    progress.begin(step, "carillon: \(ServiceMetric.getLinearizable), \(ServiceMetric.getSerializable)")
    let check = try connectRetrying(h0, seconds: 30)
    let stored = try awaitBlocking("carillon get", timeoutSeconds: 30) { try await check.get(key)?.value }
    check.close()
    guard stored == value else { throw BenchError("carillon: get did not return the value just put") }
    for (metric, local) in [(ServiceMetric.getLinearizable, false), (ServiceMetric.getSerializable, true)] {
        finishCost = sampleCost()
        let gets = try measureCalls(operations, warmup: 1, maxSeconds: maxSeconds, path: h0) { client in
            if local { _ = try await client.localRead(key) } else { _ = try await client.get(key) }
        }
        (cost, costNotes) = finishCost()
        add(
            result(
                metric,
                ["operations": "\(gets.histogram.totalCount)", "value_bytes": "\(settings.valueBytes)", "consistency": local ? "local" : "agreed"],
                latency: gets.histogram, cost: cost,
                notes: (local
                    ? ["localRead: h0's replica, not ordered (stale by up to the delivery latency); no bus"]
                    : ["ordered through the bus like a write and answered when h0 applied it: sees every write acknowledged before it began"])
                    + gets.notes + costNotes))
    }

    // (e) takeover after kill -9 of the holder's node.
    step += 1
    progress.begin(step, "carillon: \(ServiceMetric.lockTakeover), \(settings.kills) kills of h0")
    let takeover = try measureCarillonTakeover(
        cluster: cluster, kills: settings.kills, killInterval: settings.killIntervalSeconds,
        name: "carillon-bench/takeover")
    problems += takeover.problems
    var takeoverParameters = ["kills": "\(settings.kills)", "consistency": "agreed"]
    if settings.killIntervalSeconds > 0 { takeoverParameters["kill_interval_s"] = String(format: "%g", settings.killIntervalSeconds) }
    add(result(ServiceMetric.lockTakeover, takeoverParameters, latency: takeover.histogram, notes: takeover.notes))
    cluster.stop()
    return results
}

/// The note on where an uncontended acquire+release's time goes, from
/// measurements through the node at `path`: local reads (the socket and the
/// node's endpoint, no bus) by CarillonClient and by a blocking raw socket,
/// and by the raw socket a put (one ordering through the bus) and
/// acquire+release (two).
func lockRoundBreakdown(path: String, operations: Int, name: String) throws -> String {
    let raw = try RawServiceSocket(path: path)
    var rawRead = latencyHistogram(), rawRound = latencyHistogram(), rawPut = latencyHistogram()
    for _ in 0..<min(20, operations) { _ = try raw.localRead("carillon-bench/object") }
    for _ in 0..<operations {
        let start = monotonicNanos()
        _ = try raw.localRead("carillon-bench/object")
        _ = rawRead.record(monotonicNanos() - start)
    }
    for _ in 0..<operations {
        let start = monotonicNanos()
        let grant = try raw.lock(.acquire(name: name, mode: .exclusive, wait: true))
        guard grant.status == .granted else { throw BenchError("raw acquire \(name): \(grant.status)") }
        let released = try raw.lock(.release(name: name))
        guard released.status == .ok else { throw BenchError("raw release \(name): \(released.status)") }
        _ = rawRound.record(monotonicNanos() - start)
    }
    var put = ByteWriter()
    ObjectCommand.put(key: "carillon-bench/breakdown", value: [UInt8](repeating: 0x76, count: 64)).encode(into: &put)
    for _ in 0..<operations {
        let start = monotonicNanos()
        let answer = try raw.call { .request(requestID: $0, consistency: .agreed, service: ObjectStore.serviceID, body: put.bytes) }
        guard answer.status == .ok else { throw BenchError("raw put: \(answer.status)") }
        _ = rawPut.record(monotonicNanos() - start)
    }
    let clientRead = try measureCalls(operations, warmup: 20, maxSeconds: 10, path: path) { client in
        _ = try await client.localRead("carillon-bench/object")
    }
    func p50(_ h: Histogram<UInt64>) -> String { micros(Double(h.valueAtPercentile(50)) / 1000) }
    return "where the time goes (p50, \(operations) each, same node): local read (socket round trip and the node's endpoint, no bus) "
        + "\(p50(rawRead)) µs from a blocking raw socket, \(p50(clientRead.histogram)) µs through CarillonClient (its reader thread resumes a task); "
        + "from the raw socket, a put of 64 B \(p50(rawPut)) µs (one ordering through the bus) and acquire+release \(p50(rawRound)) µs (two round trips, each ordered)"
}

/// `contenders` CarillonClient sessions, contender i on node i mod members,
/// loop acquire/release on `name` for `seconds` (as ``measureEtcdHandOff``).
/// A contender whose call fails (its session ended by a view change) counts
/// the failure and goes on with a new session.
func measureCarillonHandOff(sockets: [String], contenders: Int, seconds: Double, name: String) throws
    -> (summary: HandOffSummary, failures: [String])
{
    let start = monotonicNanos() + 500_000_000
    let end = start + UInt64(seconds * 1e9)
    let outcome = try awaitBlocking("carillon lock hand-off", timeoutSeconds: seconds + 90) {
        try await withThrowingTaskGroup(of: ([LockGrant], [String]).self) { group in
            for contender in 0..<contenders {
                let path = sockets[contender % sockets.count]
                group.addTask {
                    var mine: [LockGrant] = [], failures: [String] = []
                    var client = try connectRetrying(path, seconds: 30)
                    defer { client.close() }
                    let now = monotonicNanos()
                    if now < start { try await Task.sleep(nanoseconds: start - now) }
                    while monotonicNanos() < end {
                        do {
                            let lockSent = monotonicNanos()
                            guard try await client.acquire(name) != nil else { throw BenchError("acquire \(name) returned no grant") }
                            let granted = monotonicNanos()
                            let unlockSent = monotonicNanos()
                            try await client.release(name)
                            mine.append(LockGrant(contender: contender, lockSent: lockSent, granted: granted, unlockSent: unlockSent))
                        } catch {
                            failures.append("\(error)")
                            guard failures.count < 10 else { throw error }
                            client.close()
                            client = try connectRetrying(path, seconds: 30)
                        }
                    }
                    return (mine, failures)
                }
            }
            var grants: [LockGrant] = [], failures: [String] = []
            for try await part in group {
                grants += part.0
                failures += part.1
            }
            return (grants, failures)
        }
    }
    return (summariseHandOff(outcome.0, contenders: contenders, start: start, end: end, seconds: seconds), outcome.1)
}

/// Kills h0 `kills` times while its session holds `name` and a session on h1
/// waits for it: kill → the waiter's grant, the fencing tokens, and from h1's
/// log when it suspected h0 and installed the view without it; h0 restarts
/// with --join and serves again before the next kill. An attempt that fails
/// before its kill (a view change ended a session) is noted and repeated, at
/// most `kills` more times.
func measureCarillonTakeover(cluster: ServiceCluster, kills: Int, killInterval: Double, name: String) throws
    -> (histogram: Histogram<UInt64>, notes: [String], problems: [String])
{
    var generator = SystemRandomNumberGenerator()
    var histogram = latencyHistogram()
    var takeovers: [Double] = [], rejoins: [Double] = []
    var tokens: [(holder: UInt64, waiter: UInt64)] = []
    var killTimes: [UInt64] = []
    var problems: [String] = [], retried: [String] = []
    var attempt = 0
    /// When the cluster was last whole again (start, or h0 serving after its restart).
    var lastReady: UInt64? = monotonicNanos()
    while takeovers.count < kills {
        attempt += 1
        guard attempt <= 2 * kills else {
            throw BenchError("takeover: \(retried.count) attempts failed before their kill, the last: \(retried.last ?? "?")")
        }
        // Before the sessions open: a view change while waiting would end them.
        if killInterval > 0, let last = lastReady {
            let due = last + UInt64(killInterval * 1e9)
            let now = monotonicNanos()
            if due > now { sleepNanos(due - now) }
        }
        let holder = try connectRetrying(cluster.sockets[0], seconds: 30)
        let waiter = try connectRetrying(cluster.sockets[1], seconds: 30)
        let observer = try connectRetrying(cluster.sockets[2], seconds: 30)
        defer {
            holder.close()
            waiter.close()
            observer.close()
        }
        let grant = OutcomeSlot<(granted: UInt64, token: UInt64)>()
        let granted = DispatchSemaphore(value: 0)
        let holderToken: UInt64
        do {
            // The holder on h0 (the lock is free: the last holder released it, or its session ended).
            guard let held = try awaitBlocking("acquire on h0", timeoutSeconds: 30, { try await holder.acquire(name) }) else {
                throw BenchError("h0's session got no grant of the free lock")
            }
            holderToken = held.token
            // The waiter on h1.
            Task {
                let outcome: Result<(granted: UInt64, token: UInt64), any Error>
                do {
                    guard let g = try await waiter.acquire(name) else { throw BenchError("the waiter's acquire returned no grant") }
                    outcome = .success((monotonicNanos(), g.token))
                } catch { outcome = .failure(error) }
                grant.value.withLock { $0 = outcome }
                granted.signal()
            }
            // Queued: the lock table (ordered, read through h2) shows one waiter.
            let queuedBy = monotonicNanos() + 15_000_000_000
            while true {
                let waiting = try awaitBlocking("lock table through h2", timeoutSeconds: 15) {
                    try await observer.locks().first { $0.name == name }?.waiters.count ?? 0
                }
                if waiting >= 1 { break }
                guard monotonicNanos() < queuedBy else { throw BenchError("the waiter on h1 did not queue within 15 s") }
                usleep(1_000)
            }
            // Both still in their sessions (a view change in between would have ended one).
            guard !holder.isClosed, !waiter.isClosed, grant.value.withLock({ $0 == nil }) else {
                throw BenchError("a session ended before the kill")
            }
        } catch {
            retried.append("\(error)")
            for i in 0..<3 { try cluster.waitReady(i, seconds: 60) }
            lastReady = monotonicNanos()
            continue
        }
        sleepNanos(UInt64.random(in: 0..<5_000_000, using: &generator))
        let killed = cluster.kill9(0)
        killTimes.append(killed.realtime)
        guard granted.wait(timeout: .now() + 30) == .success else {
            throw BenchError("takeover \(takeovers.count + 1): the waiter on h1 was not granted the lock within 30 s of kill -9 of h0")
        }
        let waited = grant.value.withLock { $0 }!
        cluster.reap(0)
        var taken: (granted: UInt64, token: UInt64)?
        switch waited {
        case .success(let g) where g.granted > killed.monotonic:
            taken = g
        case .success:
            // A view change (a false suspicion) ended the holder's session just before the kill.
            retried.append("the waiter was granted before the kill (the holder's session had ended)")
        case .failure(let error):
            retried.append("the waiter's acquire failed: \(error)")
        }
        guard let (grantedAt, waiterToken) = taken else {
            killTimes.removeLast()
            try cluster.start(0, join: true)
            for i in 0..<3 { try cluster.waitReady(i, seconds: 60) }
            lastReady = monotonicNanos()
            continue
        }
        _ = histogram.record(grantedAt - killed.monotonic)
        takeovers.append(Double(grantedAt - killed.monotonic) / 1e6)
        tokens.append((holderToken, waiterToken))
        if waiterToken <= holderToken {
            problems.append("takeover \(takeovers.count): the fencing token did not increase (holder \(holderToken), next holder \(waiterToken))")
        }
        // h0 back: a new process joins the running cluster and serves again.
        try cluster.start(0, join: true)
        rejoins.append(try cluster.waitReady(0, seconds: 60))
        lastReady = monotonicNanos()
        _ = try? awaitBlocking(timeoutSeconds: 30) { try await waiter.release(name) }
    }
    // The survivors' view of each kill, from h1's log (flushed every 100 ms).
    usleep(300_000)
    let phases = takeoverPhases(log: "\(cluster.work)/h1.log", kills: killTimes)
    func list(_ values: [Double], decimals: Int = 1) -> String { values.map { String(format: "%.\(decimals)f", $0) }.joined(separator: ", ") }
    func median(_ values: [Double]) -> Double { values.isEmpty ? .nan : values.sorted()[values.count / 2] }
    var notes = [
        "holder: a CarillonClient session on h0 holding the lock; waiter: a session on h1, queued (seen in the lock table read through h2); h0's `carillon node` killed with SIGKILL 0–5 ms (random) after"
            + (killInterval > 0 ? " (the sessions opened at least \(String(format: "%g", killInterval)) s after the cluster was whole again)" : "")
            + "; kill → the waiter's acquire returned; h0 restarted with --join and serving (a get through it answered) before the next kill",
        "each kill: \(list(takeovers, decimals: 2)) ms",
        "fencing tokens, holder → next holder: " + tokens.map { "\($0.holder) → \($0.waiter)" }.joined(separator: ", ")
            + (tokens.allSatisfy { $0.waiter > $0.holder } ? " (increased at every takeover)" : " (DID NOT INCREASE: a bug)")
    ]
    if !phases.suspected.isEmpty || !phases.viewed.isEmpty {
        var line =
            "at h1 (its log): kill → h0 suspected \(list(phases.suspected)) ms (median \(String(format: "%.1f", median(phases.suspected)))); kill → view without h0 installed \(list(phases.viewed)) ms (median \(String(format: "%.1f", median(phases.viewed))))"
        if phases.viewed.count == takeovers.count {
            let rest = zip(takeovers, phases.viewed).map { $0 - $1 }
            line += "; that view → the waiter's grant received \(list(rest)) ms (median \(String(format: "%.1f", median(rest))))"
        }
        notes.append(line + (phases.changes.isEmpty ? "" : "; view changes (rounds of 100 µs): " + phases.changes.joined(separator: "; ")))
    }
    if let first = killTimes.first {
        let views = viewLines(log: "\(cluster.work)/h1.log", from: first)
        let excluded = (1..<3).map { excludedCount(log: "\(cluster.work)/h\($0).log") }
        notes.append(
            "views installed at h1 from the first kill on: \(views) for \(takeovers.count) kills (2 per kill: without h0, then with it again; more are false suspicions); h1 and h2 left out of a view (falsely suspected) over the whole run: \(excluded.map(String.init).joined(separator: " and ")) times"
        )
    }
    notes.append("restart of h0 → serving again: \(list(rejoins.map { $0 * 1000 }, decimals: 0)) ms")
    if !retried.isEmpty {
        notes.append("\(retried.count) attempt(s) repeated, a session having ended before the kill: \(retried.prefix(2).joined(separator: "; "))")
    }
    return (histogram, notes, problems)
}

/// "# view" lines of a member's log at or after `from` (CLOCK_REALTIME ns).
func viewLines(log path: String, from: UInt64) -> Int {
    let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    return text.split(separator: "\n").filter { line in
        let fields = line.split(separator: " ")
        return fields.count >= 4 && fields[0] == "#" && fields[1] == "view" && (UInt64(fields[3]) ?? 0) >= from
    }.count
}

/// "# excluded" lines of a member's log (it was left out of a view and rejoined).
func excludedCount(log path: String) -> Int {
    let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    return text.split(separator: "\n").filter { $0.hasPrefix("# excluded ") }.count
}

/// From a member's log: for each kill (CLOCK_REALTIME ns), ms from the kill to
/// the first "# suspected" line after it, to the first "# view" line after it,
/// and that view line's `change=` field.
func takeoverPhases(log path: String, kills: [UInt64]) -> (suspected: [Double], viewed: [Double], changes: [String]) {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return ([], [], []) }
    var suspects: [UInt64] = [], views: [(UInt64, String)] = []
    for line in text.split(separator: "\n") where line.hasPrefix("#") {
        let fields = line.split(separator: " ")
        guard fields.count >= 4, let nanos = UInt64(fields[3]) else { continue }
        if fields[1] == "suspected" { suspects.append(nanos) }
        if fields[1] == "view" { views.append((nanos, fields.first { $0.hasPrefix("change=") }.map { String($0.dropFirst(7)) } ?? "")) }
    }
    var suspected: [Double] = [], viewed: [Double] = [], changes: [String] = []
    for kill in kills {
        if let s = suspects.first(where: { $0 >= kill }) { suspected.append(Double(s - kill) / 1e6) }
        if let v = views.first(where: { $0.0 >= kill }) {
            viewed.append(Double(v.0 - kill) / 1e6)
            if !v.1.isEmpty { changes.append(v.1) }
        }
    }
    return (suspected, viewed, changes)
}
