import ArgumentParser
import CarillonAuth
import CarillonOrdering
import CarillonRuntime
import CarillonTransport
import Foundation

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start a cluster of member processes on loopback, send traffic, check the order, summarise latency.",
        discussion: """
            Each member is a separate `carillon node` process on 127.0.0.1. Every member broadcasts \
            --messages messages of --size bytes at --rate per second; each logs its deliveries. The demo \
            then checks that every member delivered every message in one identical order and prints the \
            latency from broadcast to delivery at all members (p50 / p99 / p99.9).

            Examples:
              carillon demo
              carillon demo --members 5 --messages 5000 --rate 5000
              carillon demo --idle busy-spin --period-us 50
            """)

    @Option(help: "Member processes.") var members = 3
    @Option(help: "Messages each member broadcasts.") var messages = 2000
    @Option(help: "Messages per second per member.") var rate: Double = 2000
    @Option(help: "Payload bytes (at least 24).") var size = 64
    @Option(help: "Round period in microseconds.") var periodUs: Double = 100
    @Option(help: "Share of each round reserved for the slots, in (0, 1].") var reservation = 0.5
    @Option(help: "Idle strategy: busy-spin, spin-then-park[:NANOS] or blocking.") var idle = "spin-then-park"
    @Option(help: "Delivery mode: agreed or safe.") var delivery = "agreed"
    @Option(help: "Ordering: promises (send at once; idle members promise silence ahead) or slots (every member sends in its TDMA slot every round).")
    var ordering = "promises"
    @Option(help: "Largest frame in bytes (loopback carries up to 65,507 without fragments).") var maxFrameBytes = 1472
    @Option(
        help:
            "Slots of silence before a member is suspected (a view change follows). The demo waits 200 slots (20 ms at 100 µs): three members on a small machine miss a few slots now and then, and the demo is about ordered delivery, not failure detection."
    )
    var suspicionSlots = 200
    @Option(help: "Give up after this many seconds.") var timeout: Double = 60
    @Flag(help: "Keep the generated configuration and logs (their directory is printed).") var keep = false
    @Flag(
        help:
            "Take frames' arrival times for clock estimation from the agent's clock reads instead of the kernel's receive timestamps (to compare; the closing reports show each member's clock estimate)."
    )
    var noKernelTimestamps = false

    func validate() throws {
        if !(1...32).contains(members) { throw ValidationError("--members must be in 1...32") }
        if messages < 1 { throw ValidationError("--messages must be at least 1") }
        if suspicionSlots < 1 { throw ValidationError("--suspicion-slots must be at least 1") }
        if !(256...65_507).contains(maxFrameBytes) { throw ValidationError("--max-frame-bytes must be in 256...65507") }
        if size < 24 { throw ValidationError("--size must be at least 24 (send time, node and message number)") }
        if IdleStrategy(idle) == nil { throw ValidationError("--idle must be busy-spin, spin-then-park[:NANOS] or blocking") }
        if delivery != "agreed", delivery != "safe" { throw ValidationError("--delivery must be agreed or safe") }
        if OrderingMode(rawValue: ordering) == nil { throw ValidationError("--ordering must be promises or slots") }
    }

    func run() throws {
        // A private directory (0700, fresh): it holds the cluster key.
        let directory: URL
        do { directory = URL(fileURLWithPath: try KeyFile.makePrivateDirectory(prefix: "carillon-demo-")) } catch {
            throw ValidationError("\(error)")
        }
        defer { if !keep { try? FileManager.default.removeItem(at: directory) } }

        // Free loopback ports: bind port 0, note the port, release it.
        var endpoints: [UDPEndpoint] = []
        do {
            let holders = try (0..<members).map { _ in try UDPTransport(options: UDPTransportOptions(bind: UDPEndpoint("127.0.0.1:0")!, peers: [])) }
            endpoints = holders.map(\.localEndpoint)
        }
        var file = ConfigFile(members: endpoints.enumerated().map { .init(name: "m\($0.offset)", address: $0.element) })
        file.roundPeriodMicros = periodUs
        file.reservation = reservation
        file.idle = IdleStrategy(idle)!
        file.delivery = delivery == "safe" ? .safe : .agreed
        file.ordering = OrderingMode(rawValue: ordering)!
        file.maxFrameBytes = maxFrameBytes
        file.suspicionSlots = suspicionSlots
        file.kernelTimestamps = !noKernelTimestamps
        // Every process starts its view at the same round, shortly from now.
        file.startAtNanos = MemberClock.viewNanos() + 300_000_000
        // Frames are authenticated: a fresh cluster key for this demo.
        let keyPath = directory.appendingPathComponent("bus.key").path
        do { try KeyFile.write(hexKey: FrameAuthenticator.generateHexKey(), to: keyPath) } catch { throw ValidationError("\(error)") }
        file.keyFile = "bus.key"

        let configPath = directory.appendingPathComponent("bus.json").path
        try file.json().write(to: URL(fileURLWithPath: configPath))

        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        print(
            "carillon demo: \(members) member processes on 127.0.0.1, round period \(periodUs) µs, reservation \(reservation), idle \(idle), \(ordering) ordering, \(delivery) delivery, authenticated frames"
        )
        print("  each broadcasts \(messages) × \(size) B at \(Int(rate))/s; configuration \(configPath)")
        var processes: [Process] = []
        for rank in 0..<members {
            let process = Process()
            process.executableURL = executable
            process.arguments = [
                "node", "--config", configPath, "--member", "m\(rank)", "--send", "\(messages)",
                "--rate", "\(rate)", "--size", "\(size)", "--expect", "\(messages * members)",
                "--timeout", "\(timeout)", "--log", directory.appendingPathComponent("m\(rank).log").path
            ]
            let errorPath = directory.appendingPathComponent("m\(rank).err").path
            _ = FileManager.default.createFile(atPath: errorPath, contents: nil)
            process.standardError = FileHandle(forWritingAtPath: errorPath)
            try process.run()
            processes.append(process)
        }
        // Bounded wait; a member that hangs is killed (SIGKILL: SIGTERM may be blocked in children).
        let giveUp = Date().addingTimeInterval(timeout + 10)
        for process in processes {
            while process.isRunning, Date() < giveUp { usleep(20_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
        }

        var logs: [[(sender: Int, sequence: UInt64, sent: UInt64, delivered: UInt64)]] = []
        for rank in 0..<members {
            let path = directory.appendingPathComponent("m\(rank).log").path
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            logs.append(
                text.split(separator: "\n").compactMap { line in
                    let f = line.split(separator: " ")
                    guard f.count == 4, let s = Int(f[0]), let q = UInt64(f[1]), let a = UInt64(f[2]), let b = UInt64(f[3]) else { return nil }
                    return (s, q, a, b)
                })
            let err = (try? String(contentsOfFile: directory.appendingPathComponent("m\(rank).err").path, encoding: .utf8)) ?? ""
            print(err.split(separator: "\n").map { "  | " + $0 }.joined(separator: "\n"))
        }
        let expected = messages * members
        let reference = logs[0].map { "\($0.sender):\($0.sequence)" }
        let identical = logs.allSatisfy { $0.map { "\($0.sender):\($0.sequence)" } == reference }
        let complete = logs.allSatisfy { $0.count == expected }
        print(
            "ordered deliveries at m0 (first 12 of \(logs[0].count), as sender:sequence): "
                + reference.prefix(12).joined(separator: " "))
        print(
            "identical order at all \(members) members: \(identical ? "yes" : "NO"); complete: \(complete ? "yes, \(expected) each" : "NO (\(logs.map(\.count)))")"
        )

        // Latency to delivery at every member: the last member's delivery time minus the send time.
        var last: [String: (sent: UInt64, delivered: UInt64, count: Int)] = [:]
        for log in logs {
            for r in log {
                let key = "\(r.sender):\(r.sequence)"
                let old = last[key] ?? (r.sent, 0, 0)
                last[key] = (r.sent, max(old.delivered, r.delivered), old.count + 1)
            }
        }
        let latencies = last.values.filter { $0.count == members && $0.delivered >= $0.sent }.map { $0.delivered - $0.sent }.sorted()
        func percentile(_ q: Double) -> String {
            guard !latencies.isEmpty else { return "-" }
            return String(format: "%.1f", Double(latencies[min(latencies.count - 1, Int(Double(latencies.count) * q))]) / 1000)
        }
        // Throughput: messages delivered per second at each member, first to last delivery.
        let rates = logs.map { log -> Double in
            guard let first = log.map(\.delivered).min(), let last = log.map(\.delivered).max(), last > first else { return 0 }
            return Double(log.count) / (Double(last - first) / 1e9)
        }
        print("delivered per member: " + rates.map { String(format: "%.0f msg/s", $0) }.joined(separator: ", "))
        print(
            "latency, broadcast → delivered at all \(members) members (µs): p50 \(percentile(0.5))  p99 \(percentile(0.99))  p99.9 \(percentile(0.999))  max \(percentile(1.0))  (\(latencies.count) messages)"
        )
        if keep { print("logs kept in \(directory.path)") }
        guard identical, complete else { throw ExitCode(1) }
    }
}
