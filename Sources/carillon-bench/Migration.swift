// `carillon-bench migration`: owned objects moving between hosts over the
// services' bulk channel, against the raw bulk channel moving the same bytes on
// the same shaped links, and the ordered bus's p99 while they move.

import ArgumentParser
import CarillonBench
import CarillonClient
import CarillonServices
import Dispatch
import Foundation
import Glibc
import Histogram

struct Migration: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Object migration: time for each --sizes against the raw bulk transfer of the same bytes, unavailability, bus p99 during it.",
        discussion: """
            Every host's link is shaped as in `interference` (tbf at --link-mbit). First the raw \
            figure: a bus whose h0 keeps gated bulk transfers (1 MiB each) going to h2 (the bulk channel \
            alone, no services; the same path as the first migration) gives the channel's goodput; the \
            raw time of N bytes is N over that goodput. Then a cluster of `carillon node`s with their services: h1 \
            broadcasts closed loop (64 B, --gap-us) for the whole run, the bus is measured quiet for \
            --quiet-seconds (after 5 s to settle), then for each size an object is created on h0 and migrated h0 → h2 and back \
            while a client on h1 keeps writing to it. Reported per migration: the time from the migrate \
            request to its answer (the commit), its ratio to the raw time plus two ordered operations \
            (the target: at most 1.1), and the longest a write waited (the object is unavailable only \
            between freeze and commit); for the largest size, the ordered p99 of messages sent during \
            its migrations against the quiet p99 (the target: at most 1.5). Needs root.

            Examples:
              sudo .build/release/carillon-bench migration
              sudo .build/release/carillon-bench migration --sizes 1,64 --link-mbit 500 --period-us 300
              sudo .build/release/carillon-bench migration --quick
            """)

    @OptionGroup var common: CommonOptions
    @Option(help: "Object sizes in MiB, comma-separated.") var sizes = "1,64,512"
    @Option(help: "Bottleneck rate of every host's link, Mbit/s.") var linkMbit: Double = 200
    @Option(help: "Round period in microseconds.") var periodUs: Double = 500
    @Option(help: "Share of each round reserved for the slots.") var reservation = 0.5
    @Option(help: "Pause after each delivery of the ordered probe traffic, microseconds.") var gapUs: Double = 1000
    @Option(help: "Seconds the bus is measured without a migration.") var quietSeconds: Double = 20
    @Option(help: "Seconds the raw bulk channel runs for its goodput.") var rawSeconds: Double = 20

    func run() throws {
        Cleanup.installSignalHandlers()
        defer { Cleanup.runAll() }
        let sizeList: [Int] = common.quick ? [1] : try parseList(sizes, "--sizes")
        guard sizeList.allSatisfy({ (1...1000).contains($0) }) else { throw ValidationError("--sizes: MiB in 1...1000 each") }
        guard linkMbit >= 1, periodUs > 0, reservation > 0, reservation <= 1, quietSeconds >= 1, rawSeconds >= 1 else {
            throw ValidationError(
                "--link-mbit at least 1, --period-us positive, --reservation in (0, 1], --quiet-seconds and --raw-seconds at least 1")
        }
        let placement = try common.placement(needsNamespaces: true)
        let progress = ProgressBar(scenario: "migration", steps: 2 + sizeList.count)
        let quiet = common.quick ? 3.0 : quietSeconds, rawFor = common.quick ? 3.0 : rawSeconds

        // 1. The raw bulk channel on these links.
        progress.begin(1, "raw bulk channel, gated, link \(Int(linkMbit)) Mbit/s, \(Int(rawFor)) s")
        var spec = common.busSpec()
        spec.members = 3
        spec.roundPeriodMicros = periodUs
        spec.reservation = reservation
        spec.bulkPacing = "gated"
        // One flow, h0 → h2, as the first migration of each size.
        spec.bulkRoutes = [0: 2]
        spec.linkMbit = linkMbit
        spec.messagesPerSender = max(1, Int(rawFor * 1e6 / (gapUs + Double(periodUs) * 3)))
        spec.gapMicros = gapUs
        spec.timeoutSeconds = rawFor * 4 + 30
        let rawTopology = try Topology(hosts: 3, placement: placement, shapeMbit: linkMbit)
        let rawDirectory = try common.workDirectory("migration/raw")
        let rawOutcome = try runBus(spec, on: rawTopology, directory: rawDirectory)
        rawTopology.teardown()
        guard let goodputMbit = bulkGoodput(directory: rawDirectory, members: 3), goodputMbit > 0 else {
            throw BenchError("the raw bulk run reported no goodput (logs in \(rawDirectory))")
        }
        progress.report("raw bulk channel h0 → h2: \(String(format: "%.1f", goodputMbit)) Mbit/s; ordered beside it: \(describe(rawOutcome))")

        // 2. The services cluster, quiet.
        progress.begin(2, "services cluster, quiet bus for \(Int(quiet)) s")
        let work = try common.workDirectory("migration/services")
        var busSpec = common.busSpec()
        busSpec.roundPeriodMicros = periodUs
        busSpec.reservation = reservation
        let options = CarillonServicesOptions(placement: placement, idle: common.idleStrategy, ordering: common.ordering, config: [])
        let link = linkMbit, gap = gapUs
        let cluster = try ServiceCluster(
            members: 3, options: options, work: work, timeoutSeconds: 3600, spec: busSpec, shapeMbit: linkMbit,
            nodeArguments: { i in
                ["--link-mbit", "\(link)"] + (i == 1 ? ["--send", "1000000000", "--closed-loop", "--gap-us", "\(gap)", "--size", "64"] : [])
            })
        defer { cluster.stop() }
        for i in 0..<3 { try cluster.start(i, join: false) }
        for i in 0..<3 { try cluster.waitReady(i, seconds: 60) }
        // Not the first seconds: the members' clock estimates and the page
        // cache settle then, and their tail (p99 in the milliseconds) would
        // count as the quiet bus's.
        sleepSeconds(common.quick ? 1 : 5)
        let quietFrom = realtimeNanos()
        sleepSeconds(quiet)
        let quietTo = realtimeNanos()
        let source = try connectRetrying(cluster.sockets[0], seconds: 10), target = try connectRetrying(cluster.sockets[2], seconds: 10)
        let writer = try connectRetrying(cluster.sockets[1], seconds: 10)
        defer { [source, target, writer].forEach { $0.close() } }
        // One ordered operation, as the client sees it (the median of 50 locates).
        var opNanos: [UInt64] = []
        for _ in 0..<50 {
            let started = monotonicNanos()
            _ = try awaitBlocking("a list", timeoutSeconds: 10) { try await source.listObjects(prefix: "none/") }
            opNanos.append(monotonicNanos() - started)
        }
        let opSeconds = Double(opNanos.sorted()[opNanos.count / 2]) / 1e9
        progress.report(
            "quiet bus measured; one ordered operation (median of 50 lists through h0's socket): \(String(format: "%.2f", opSeconds * 1e3)) ms")

        // 3. Migrations.
        var rows: [BenchResult] = []
        var windows: [(UInt64, UInt64)] = []
        var lines: [String] = []
        for (k, mib) in sizeList.enumerated() {
            progress.begin(3 + k, "\(mib) MiB: create on h0, migrate h0 → h2 and back, a writer on h1")
            let bytes = UInt64(mib) << 20
            let name = "bench/object-\(mib)MiB"
            let cap = try awaitBlocking("create \(name)", timeoutSeconds: 60) { try await source.createObject(name, size: bytes, owner: 0) }
            let rawSeconds = Double(bytes) * 8 / (goodputMbit * 1e6)
            let timeout = rawSeconds * 10 + 60
            for (from, to, client) in [(0, 2, source), (2, 0, target)] {
                let stop = SharedValue(false)
                let waits = WriteWaits()
                let writing = DispatchSemaphore(value: 0)
                Task {
                    var n: UInt64 = 0
                    while !stop.value {
                        n += 1
                        let started = monotonicNanos()
                        do { _ = try await writer.writeObject(cap, at: 0, withUnsafeBytes(of: n) { Array($0) }) } catch { waits.failed() }
                        waits.add(monotonicNanos() - started)
                    }
                    writing.signal()
                }
                let startedRealtime = realtimeNanos()
                let started = monotonicNanos()
                let outcome = Result {
                    try awaitBlocking("migrate \(name) h\(from) → h\(to)", timeoutSeconds: timeout) {
                        try await client.migrateObject(cap, to: .node(UInt16(to)))
                    }
                }
                let seconds = Double(monotonicNanos() - started) / 1e9
                let endedRealtime = realtimeNanos()
                stop.value = true
                _ = writing.wait(timeout: .now() + 30)
                // A failed migration is reported, not hidden: the rest of the run still measures.
                guard case .success(let moved) = outcome, moved.owner.node == UInt16(to) else {
                    let why: String
                    switch outcome {
                    case .failure(let error): why = "\(error)"
                    case .success(let moved): why = "moved to \(moved.owner), not h\(to)"
                    }
                    let line = "\(mib) MiB h\(from) → h\(to): FAILED after \(String(format: "%.3f", seconds)) s: \(why)"
                    lines.append(line)
                    progress.report(line)
                    break
                }
                if k == sizeList.count - 1 { windows.append((startedRealtime, endedRealtime)) }
                let ratio = seconds / (rawSeconds + 2 * opSeconds)
                let waited = waits.summary
                let line =
                    "\(mib) MiB h\(from) → h\(to): \(String(format: "%.3f", seconds)) s; raw bulk \(String(format: "%.3f", rawSeconds)) s + 2 ordered ops "
                    + "\(String(format: "%.1f", opSeconds * 2e3)) ms → ratio \(String(format: "%.3f", ratio)) (target ≤ 1.1); "
                    + "longest write wait \(String(format: "%.3f", waited.longestSeconds)) s over \(waited.count) writes (\(waited.failures) failed)"
                lines.append(line)
                progress.report(line)
                rows.append(
                    BenchResult(
                        scenario: "migration", system: "carillon", placement: cluster.topology.label,
                        parameters: [
                            "object_mib": "\(mib)", "from": "h\(from)", "to": "h\(to)", "link_mbit": "\(Int(linkMbit))",
                            "round_period_us": "\(periodUs)", "reservation": "\(reservation)", "idle": common.idleStrategy,
                            "migration_seconds": String(format: "%.4f", seconds), "raw_bulk_seconds": String(format: "%.4f", rawSeconds),
                            "ordered_op_seconds": String(format: "%.5f", opSeconds), "ratio": String(format: "%.4f", ratio),
                            "longest_write_wait_seconds": String(format: "%.4f", waited.longestSeconds)
                        ],
                        notes: [line]))
            }
            _ = try? awaitBlocking("delete \(name)", timeoutSeconds: 60) { try await source.deleteObject(cap) }
        }
        progress.finish()
        for i in 0..<3 { cluster.nodes[i]?.terminate() }
        for i in 0..<3 { _ = cluster.nodes[i]?.wait(seconds: 30) }
        // 4. The ordered bus: quiet against during the largest migrations.
        let logs = try (0..<3).map { try readLog("\(work)/h\($0).log") }
        let quietLatency = latencies(logs, sentIn: [(quietFrom, quietTo)])
        let duringLatency = latencies(logs, sentIn: windows)
        var results = rows
        for (label, h) in [("quiet", quietLatency), ("during-\(sizeList.last!)MiB-migration", duringLatency)] where h.totalCount > 0 {
            results.append(
                BenchResult(
                    scenario: "migration", system: "carillon", placement: cluster.topology.label,
                    parameters: ["bus": label, "link_mbit": "\(Int(linkMbit))", "round_period_us": "\(periodUs)", "idle": common.idleStrategy],
                    latency: LatencySummary(nanoseconds: h)))
        }
        for line in lines { print(line) }
        print("raw bulk channel goodput h0 → h2: \(String(format: "%.1f", goodputMbit)) Mbit/s (gated, link \(Int(linkMbit)) Mbit/s, same run)")
        if quietLatency.totalCount > 0, duringLatency.totalCount > 0 {
            let q = Double(quietLatency.valueAtPercentile(99)) / 1000, d = Double(duringLatency.valueAtPercentile(99)) / 1000
            print(
                "ordered p99 quiet \(micros(q)) µs (\(quietLatency.totalCount) msgs); during the \(sizeList.last!) MiB migrations \(micros(d)) µs "
                    + "(\(duringLatency.totalCount) msgs); p99 during migration / p99 without: \(String(format: "%.2f", d / q)) (target ≤ 1.5)")
        } else {
            print("ordered p99: not measured (quiet \(quietLatency.totalCount), during \(duringLatency.totalCount) messages at every member)")
        }
        // Where in a migration the tail comes from: the p99 of each tenth of its time.
        for (i, window) in windows.enumerated() {
            let tenth = (window.1 - window.0) / 10
            let series = (0..<10).map { t -> String in
                let h = latencies(logs, sentIn: [(window.0 + UInt64(t) * tenth, window.0 + UInt64(t + 1) * tenth)])
                return h.totalCount > 0 ? micros(Double(h.valueAtPercentile(99)) / 1000) : "-"
            }
            let line =
                "ordered p99 by tenth of the \(sizeList.last!) MiB migration \(i == 0 ? "h0 → h2" : "h2 → h0") "
                + "(\(String(format: "%.1f", Double(tenth) / 1e9)) s each), µs: \(series.joined(separator: " "))"
            print(line)
            if let at = results.firstIndex(where: { $0.parameters["bus"]?.hasPrefix("during") == true }) { results[at].notes.append(line) }
        }
        let run = BenchRun(
            scenario: "migration", environment: .current(),
            settings: [
                "placement": cluster.topology.label, "idle": common.idleStrategy, "ordering": common.ordering,
                "shaper": "tbf \(Int(linkMbit)) Mbit/s on every host's link", "bulk": "the services' channel, gated",
                "probe": "h1 closed loop, 64 B, gap \(Int(gapUs)) µs", "writer": "one client on h1 writing 8 B at offset 0 back to back"
            ],
            results: results)
        try save(run, to: common.out)
    }

    /// Latency at all members of messages sent inside any of `windows` (CLOCK_REALTIME ns).
    func latencies(_ logs: [MemberLog], sentIn windows: [(UInt64, UInt64)]) -> Histogram<UInt64> {
        var seen: [UInt64: (sent: UInt64, last: UInt64, count: Int)] = [:]
        for log in logs {
            for d in log.deliveries where windows.contains(where: { d.sentNanos >= $0.0 && d.sentNanos <= $0.1 }) {
                let key = UInt64(d.node) << 48 | (d.sequence & 0xFFFF_FFFF_FFFF)
                let entry = seen[key] ?? (d.sentNanos, 0, 0)
                seen[key] = (entry.sent, max(entry.last, d.deliveredNanos), entry.count + 1)
            }
        }
        var h = latencyHistogram()
        for entry in seen.values where entry.count == logs.count { _ = h.record(entry.last > entry.sent ? entry.last - entry.sent : 0) }
        return h
    }
}

/// The writer's waits during one migration.
final class WriteWaits: @unchecked Sendable {
    let lock = NSLock()
    var longest: UInt64 = 0
    var count = 0
    var failures = 0
    func add(_ nanos: UInt64) {
        lock.withLock {
            longest = max(longest, nanos); count += 1
        }
    }
    func failed() { lock.withLock { failures += 1 } }
    var summary: (longestSeconds: Double, count: Int, failures: Int) { lock.withLock { (Double(longest) / 1e9, count, failures) } }
}

/// A value one task sets and another reads.
final class SharedValue<T: Sendable>: @unchecked Sendable {
    let lock = NSLock()
    var stored: T
    init(_ value: T) { stored = value }
    var value: T {
        get { lock.withLock { stored } }
        set { lock.withLock { stored = newValue } }
    }
}

func sleepSeconds(_ seconds: Double) { usleep(UInt32(min(seconds, 4000) * 1e6)) }
