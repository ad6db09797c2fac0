// Corosync daemons as the comparison peer of carillon-bench: one corosync per
// network namespace, each in a private mount namespace of its own.

import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Why a ``CorosyncCluster`` could not start.
enum CorosyncClusterError: Error, CustomStringConvertible {
    /// A program or library is missing; the payload is the apt line that installs it.
    case unavailable(installCommand: String)
    /// The host list or the work directory cannot be used.
    case invalidConfiguration(String)
    /// Writing a file or starting a process failed.
    case launchFailed(host: Int, reason: String)
    /// A daemon (or its wrapper) exited during start-up.
    case daemonExited(host: Int, status: Int32, output: String)
    /// Not every daemon saw every other one before the deadline.
    case membershipTimeout(joined: [Int], expected: Int, seconds: Double)

    var description: String {
        switch self {
        case .unavailable(let command):
            return "Corosync is not installed. Install it with: \(command)"
        case .invalidConfiguration(let reason):
            return "Corosync cluster configuration: \(reason)"
        case .launchFailed(let host, let reason):
            return "corosync on host \(host) could not be started: \(reason)"
        case .daemonExited(let host, let status, let output):
            return "corosync on host \(host) exited with status \(status) during start-up:\n\(output)"
        case .membershipTimeout(let joined, let expected, let seconds):
            let seen = joined.enumerated().map { "h\($0.offset): \($0.element)" }.joined(separator: ", ")
            return "Corosync membership incomplete after \(seconds) s: members seen per host (\(seen)), expected \(expected)"
        }
    }
}

/// A Corosync 3 cluster of one daemon per network namespace, with the `udpu`
/// transport, for running Corosync CPG as a comparison peer.
///
/// The caller owns the network: every host's namespace must exist, with its
/// IPv4 address configured on an interface that reaches the other hosts (e.g.
/// veth pairs on a bridge). ``start(timeout:)`` writes one `corosync.conf` per
/// host into the work directory, starts the daemons in the foreground and
/// returns once every daemon's membership holds every host. ``stop()`` ends
/// them; `deinit` calls it.
///
/// Each daemon runs as
/// `ip netns exec NS unshare -m --propagation private sh -c SCRIPT`, where the
/// script bind-mounts `<work>/h<i>/run` over `/run` (corosync's pid file path
/// is compiled in and locked, so the daemons need a `/run` each) and then runs
/// `corosync -f -c <work>/h<i>/corosync.conf` as a child. The script also
/// watches a pipe from this process: when the pipe closes, because ``stop()``
/// closed it or because this process died in any way, it sends the daemon
/// SIGTERM, then SIGKILL after 5 s. So daemons do not outlive their
/// orchestrator, though the namespaces (the caller's) do.
///
/// Needs root (network and mount namespaces, the bind mount). The class is
/// thread-safe, so ``stop()`` may also run from a signal handler's queue;
/// configuration is fixed at `init`.
///
/// Work directory layout, for host `i`:
/// - `h<i>/corosync.conf`: the configuration (``configuration(host:)``)
/// - `h<i>/corosync.log`: the daemon's log
/// - `h<i>/daemon.out`: the wrapper's and the daemon's stdout and stderr
/// - `h<i>/corosync.pid`: the daemon's pid, written by the wrapper (for a shell trap)
/// - `h<i>/run/`: the daemon's `/run`; `h<i>/state/`: its `system.state_dir`
///
/// Clients: libcpg talks to the daemon through libqb IPC, whose endpoints are
/// abstract Unix sockets (scoped by network namespace) and ring-buffer files in
/// `/dev/shm`, which the daemon's private mount namespace still shares with the
/// host. So a client needs the daemon's network namespace only: start it with
/// ``clientCommandPrefix(host:)`` (`ip netns exec NS`).
final class CorosyncCluster: Sendable {
    /// One host: a network namespace and the IPv4 address it has in it.
    struct Host: Equatable, Sendable {
        var namespace: String
        var address: String
    }

    /// The hosts, in node-id order: host `i` is Corosync node `i + 1`.
    let hosts: [Host]
    /// Where configurations, logs and the daemons' private directories go (absolute).
    let workDirectory: String
    /// `totem.cluster_name`.
    let clusterName: String
    /// `totem.token`, in milliseconds.
    let tokenMilliseconds: Int
    /// `system.sched_rr`: whether the daemons give themselves real-time priority.
    let realtimeScheduling: Bool

    /// The running daemons, by host; empty before start and after stop.
    private let daemons = Mutex<[Daemon]>([])
    private let exited = DispatchGroup()

    private struct Daemon: Sendable {
        let process: Process
        let watchdog: FileHandle
        let pidFile: String
    }

    /// Describes a cluster; nothing runs until ``start(timeout:)``.
    ///
    /// - Parameters:
    ///   - hosts: (namespace, IPv4 address) for each host, in node-id order.
    ///   - workDirectory: created if missing; a relative path is taken from the current directory.
    ///   - clusterName: `totem.cluster_name`.
    ///   - tokenMilliseconds: `totem.token`. With three or more nodes Corosync
    ///     adds `token_coefficient` (650 ms) per node beyond two, and waits
    ///     `consensus` = 1.2 × token when the first membership rounds race at
    ///     start-up; 1000 ms keeps that wait near 1.2 s (Corosync's default,
    ///     3000, makes it about 4 s) while riding out a daemon briefly starved
    ///     of CPU on a small shared machine. The benchmarks do not measure
    ///     failure detection.
    ///   - realtimeScheduling: `system.sched_rr`. Off by default: Corosync's
    ///     default (on) gives every daemon SCHED_RR priority, which on two
    ///     shared cores starves everything else under load, and Carillon runs
    ///     at normal priority too.
    init(
        hosts: [(namespace: String, address: String)], workDirectory: String,
        clusterName: String = "carillon-bench", tokenMilliseconds: Int = 1_000,
        realtimeScheduling: Bool = false
    ) {
        self.hosts = hosts.map { Host(namespace: $0.namespace, address: $0.address) }
        let directory =
            workDirectory.hasPrefix("/")
            ? workDirectory : FileManager.default.currentDirectoryPath + "/" + workDirectory
        self.workDirectory = directory
        self.clusterName = clusterName
        self.tokenMilliseconds = tokenMilliseconds
        self.realtimeScheduling = realtimeScheduling
    }

    deinit {
        stop()
    }

    // MARK: Availability

    /// `nil` when the `corosync` program and `libcpg.so.4` are installed (and
    /// `ip` and `unshare` to run them in namespaces); otherwise the apt line to run.
    static func availability() -> String? {
        var packages: [String] = []
        if locate("corosync") == nil || locate("corosync-cmapctl") == nil || CPGClient.libraryUnavailable() != nil {
            packages += ["corosync", "libcpg4"]
        }
        if locate("ip") == nil { packages.append("iproute2") }
        if locate("unshare") == nil || locate("mount") == nil { packages += ["util-linux", "mount"] }
        return packages.isEmpty ? nil : "apt-get install -y " + packages.joined(separator: " ")
    }

    // MARK: Configuration

    /// The `corosync.conf` of host `host`.
    ///
    /// udpu transport (unicast UDP; no crypto, which only knet supports), one
    /// node per host with `nodeid` `host + 1`, no quorum provider (CPG does not
    /// need one), `sched_rr` as ``realtimeScheduling`` says, no move to the
    /// root cgroup, no blackbox (an 8 MiB file per daemon in `/dev/shm`), and
    /// logging to `h<i>/corosync.log` only.
    func configuration(host: Int) -> String {
        var nodes = ""
        for (index, peer) in hosts.enumerated() {
            nodes += """
                    node {
                        nodeid: \(index + 1)
                        name: h\(index)
                        ring0_addr: \(peer.address)
                    }

                """
        }
        let directory = hostDirectory(host)
        return """
            # Written by carillon-bench: host \(host) of \(hosts.count), network namespace \(hosts[host].namespace).
            totem {
                version: 2
                cluster_name: \(clusterName)
                transport: udpu
                ip_version: ipv4
                crypto_cipher: none
                crypto_hash: none
                token: \(tokenMilliseconds)
            }

            nodelist {
            \(nodes)}

            system {
                state_dir: \(directory)/state
                sched_rr: \(realtimeScheduling ? "yes" : "no")
                move_to_root_cgroup: no
            }

            logging {
                to_stderr: no
                to_syslog: no
                to_logfile: yes
                logfile: \(directory)/corosync.log
                timestamp: hires
                blackbox: off
            }

            """
    }

    /// `<work>/h<host>`.
    func hostDirectory(_ host: Int) -> String { "\(workDirectory)/h\(host)" }

    /// The daemon's log file.
    func logPath(host: Int) -> String { "\(hostDirectory(host))/corosync.log" }

    /// The daemon's process id while it runs (as written by its wrapper), e.g.
    /// for `nsenter --mount=/proc/<pid>/ns/mnt` to see its `/run`.
    func daemonPID(host: Int) -> pid_t? {
        let daemon = daemons.withLock { $0.indices.contains(host) ? $0[host] : nil }
        guard let daemon, daemon.process.isRunning else { return nil }
        return Self.readPID(daemon.pidFile)
    }

    /// The argv prefix that runs a program in host `host`'s context, where
    /// libcpg reaches that host's daemon: `[<path of ip>, "netns", "exec", NS]`.
    /// Append the program and its arguments.
    ///
    /// The daemon's own mount namespace is not needed: only `/run` differs in
    /// it, and libqb's ring buffers live in the shared `/dev/shm`.
    func clientCommandPrefix(host: Int) -> [String] {
        [Self.locate("ip") ?? "ip", "netns", "exec", hosts[host].namespace]
    }

    // MARK: Running

    /// Writes the configurations, starts one daemon per host and waits until
    /// every daemon counts every host as joined.
    ///
    /// Start-up takes 0.2–0.3 s on an idle machine, about 1.3 s when the
    /// daemons' first membership rounds race (one `consensus` timeout). On any
    /// failure the daemons already started are stopped before the error is thrown.
    ///
    /// - Throws: ``CorosyncClusterError``.
    func start(timeout: Duration = .seconds(30)) throws {
        guard daemons.withLock({ $0.isEmpty }) else { throw CorosyncClusterError.invalidConfiguration("already started") }
        if let command = Self.availability() { throw CorosyncClusterError.unavailable(installCommand: command) }
        guard geteuid() == 0 else {
            throw CorosyncClusterError.invalidConfiguration("needs root for network and mount namespaces (run with sudo)")
        }
        try validate()
        do {
            for host in hosts.indices { try launch(host: host) }
            try waitForMembership(timeout: timeout)
        } catch {
            stop()
            throw error
        }
    }

    /// Waits until every host's daemon lists all hosts as joined
    /// (`runtime.members.*.status = joined`, asked with `corosync-cmapctl` in
    /// the host's namespace), checking again after 20 ms, then backing off to
    /// 200 ms, until `timeout`. Fails at once when a daemon exits.
    func waitForMembership(timeout: Duration = .seconds(30)) throws {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        var joined = Array(repeating: 0, count: hosts.count)
        var pause = Duration.milliseconds(20)
        while true {
            for host in hosts.indices where joined[host] < hosts.count {
                try checkRunning(host: host)
                joined[host] = joinedMembers(host: host) ?? 0
            }
            if joined.allSatisfy({ $0 >= hosts.count }) { return }
            if clock.now >= deadline {
                let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
                throw CorosyncClusterError.membershipTimeout(joined: joined, expected: hosts.count, seconds: seconds)
            }
            Thread.sleep(forTimeInterval: Double(pause.components.attoseconds) / 1e18 + Double(pause.components.seconds))
            pause = min(pause * 2, .milliseconds(200))
        }
    }

    /// Ends every daemon: closes the watchdog pipes and sends SIGTERM, waits up
    /// to `grace`, then SIGKILLs what is left (the daemon, its wrapper and the
    /// wrapper's watcher) and waits up to 2 s more; then removes the libqb
    /// files in `/dev/shm` that a daemon which did not exit cleanly left.
    /// Takes about 0.3 s. Safe to call more than once, and from several
    /// threads (one of them does the work); `deinit` calls it.
    func stop(grace: Duration = .seconds(3)) {
        let running = daemons.withLock { list in
            defer { list.removeAll() }; return list
        }
        guard !running.isEmpty else { return }
        let daemonPIDs = running.compactMap { Self.readPID($0.pidFile) }
        for daemon in running {
            try? daemon.watchdog.close()  // the wrapper's watcher sends SIGTERM too
            if daemon.process.isRunning, let pid = Self.readPID(daemon.pidFile) { kill(pid, SIGTERM) }
        }
        if exited.wait(timeout: .now() + Self.interval(grace)) == .timedOut {
            for daemon in running where daemon.process.isRunning {
                // Only while the wrapper runs: it has not reaped the daemon, so the pid is still the
                // daemon's. Process makes the wrapper a process-group leader; the group holds the
                // daemon, the watcher and its sleep, all of which keep Process from seeing the exit.
                if let pid = Self.readPID(daemon.pidFile) { kill(pid, SIGKILL) }
                kill(-daemon.process.processIdentifier, SIGKILL)
                kill(daemon.process.processIdentifier, SIGKILL)
            }
            _ = exited.wait(timeout: .now() + 2)
        }
        for pid in daemonPIDs { Self.removeSharedMemory(ofDeadDaemon: pid) }
    }

    // MARK: Internals

    private func validate() throws {
        guard !hosts.isEmpty else { throw CorosyncClusterError.invalidConfiguration("no hosts") }
        for (index, host) in hosts.enumerated() {
            guard !host.namespace.isEmpty, !host.namespace.contains("/") else {
                throw CorosyncClusterError.invalidConfiguration("host \(index): bad namespace name '\(host.namespace)'")
            }
            var address = in_addr()
            guard inet_pton(AF_INET, host.address, &address) == 1 else {
                throw CorosyncClusterError.invalidConfiguration("host \(index): '\(host.address)' is not an IPv4 address")
            }
            guard FileManager.default.fileExists(atPath: "/run/netns/\(host.namespace)") else {
                throw CorosyncClusterError.invalidConfiguration("network namespace '\(host.namespace)' does not exist (ip netns add)")
            }
        }
        guard Set(hosts.map(\.address)).count == hosts.count, Set(hosts.map(\.namespace)).count == hosts.count else {
            throw CorosyncClusterError.invalidConfiguration("namespaces and addresses must be distinct")
        }
        // Corosync's parser reads a value to the end of its line.
        guard !workDirectory.contains(where: { $0.isNewline || $0 == "{" || $0 == "}" || $0 == "#" }) else {
            throw CorosyncClusterError.invalidConfiguration("work directory path unusable in corosync.conf: \(workDirectory)")
        }
    }

    /// The wrapper run by `sh -c` in the daemon's namespaces. $1 run directory,
    /// $2 corosync, $3 configuration, $4 pid file. Standard input is the
    /// watchdog pipe: end-of-file (stop(), or this process gone) ends the daemon.
    private static let wrapper = """
        exec 3<&0 </dev/null
        mount --bind "$1" /run || exit 97
        "$2" -f -c "$3" 3<&- &
        daemon=$!
        echo "$daemon" > "$4"
        (
            read -r _ <&3
            kill -TERM "$daemon" 2>/dev/null
            ticks=0
            while kill -0 "$daemon" 2>/dev/null; do
                ticks=$((ticks + 1))
                if [ "$ticks" -gt 50 ]; then kill -KILL "$daemon" 2>/dev/null; break; fi
                sleep 0.1
            done
        ) &
        watcher=$!
        exec 3<&-
        wait "$daemon"
        status=$?
        kill "$watcher" 2>/dev/null
        exit "$status"
        """

    private func launch(host: Int) throws {
        let directory = hostDirectory(host)
        let fileManager = FileManager.default
        let output = "\(directory)/daemon.out"
        let pidFile = "\(directory)/corosync.pid"
        do {
            for sub in ["run", "state"] {
                try fileManager.createDirectory(atPath: "\(directory)/\(sub)", withIntermediateDirectories: true)
            }
            for stale in [logPath(host: host), pidFile, "\(directory)/run/corosync.pid"] {
                try? fileManager.removeItem(atPath: stale)
            }
            try configuration(host: host).write(toFile: "\(directory)/corosync.conf", atomically: true, encoding: .utf8)
            guard fileManager.createFile(atPath: output, contents: nil) else {
                throw CorosyncClusterError.launchFailed(host: host, reason: "cannot create \(output)")
            }
        } catch let error as CorosyncClusterError {
            throw error
        } catch {
            throw CorosyncClusterError.launchFailed(host: host, reason: "\(error)")
        }
        guard let ip = Self.locate("ip"), let corosync = Self.locate("corosync") else {
            throw CorosyncClusterError.unavailable(installCommand: Self.availability() ?? "apt-get install -y corosync libcpg4")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ip)
        process.arguments = [
            "netns", "exec", hosts[host].namespace,
            "unshare", "--mount", "--propagation", "private",
            "sh", "-c", Self.wrapper, "corosync-h\(host)",
            "\(directory)/run", corosync, "\(directory)/corosync.conf", pidFile
        ]
        let watchdog = Pipe()
        process.standardInput = watchdog.fileHandleForReading
        guard let log = FileHandle(forWritingAtPath: output) else {
            throw CorosyncClusterError.launchFailed(host: host, reason: "cannot open \(output)")
        }
        process.standardOutput = log
        process.standardError = log
        let group = exited
        group.enter()
        process.terminationHandler = { _ in group.leave() }
        do {
            try process.run()
        } catch {
            group.leave()
            throw CorosyncClusterError.launchFailed(host: host, reason: "\(error)")
        }
        try? log.close()
        try? watchdog.fileHandleForReading.close()
        daemons.withLock { $0.append(Daemon(process: process, watchdog: watchdog.fileHandleForWriting, pidFile: pidFile)) }
    }

    private func checkRunning(host: Int) throws {
        guard let process = daemons.withLock({ $0.indices.contains(host) ? $0[host].process : nil }) else {
            throw CorosyncClusterError.launchFailed(host: host, reason: "stopped while starting")
        }
        guard !process.isRunning else { return }
        let output = (try? String(contentsOfFile: "\(hostDirectory(host))/daemon.out", encoding: .utf8)) ?? ""
        let log = (try? String(contentsOfFile: logPath(host: host), encoding: .utf8)) ?? ""
        let tail = (output + log).split(separator: "\n").suffix(15).joined(separator: "\n")
        throw CorosyncClusterError.daemonExited(host: host, status: process.terminationStatus, output: tail)
    }

    /// How many nodes host `host`'s daemon counts as joined; nil while it does not answer.
    private func joinedMembers(host: Int) -> Int? {
        guard let cmapctl = Self.locate("corosync-cmapctl") else { return nil }
        let argv = clientCommandPrefix(host: host) + [cmapctl, "runtime.members"]
        guard let text = Self.capture(argv, timeout: .seconds(2)) else { return nil }
        return text.split(separator: "\n").filter { $0.hasSuffix(".status (str) = joined") }.count
    }

    /// Runs `argv`, returning its standard output if it exits 0 within `timeout`.
    private static func capture(_ argv: [String], timeout: Duration) -> String? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: argv[0])
        process.arguments = Array(argv.dropFirst())
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        let done = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in done.signal() }
        do { try process.run() } catch { return nil }
        // Output is a few hundred bytes, well under a pipe's buffer, so read after the exit.
        if done.wait(timeout: .now() + interval(timeout)) == .timedOut {
            kill(process.processIdentifier, SIGKILL)
            done.wait()
            return nil
        }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        guard process.terminationStatus == 0 else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    /// A daemon that did not exit cleanly (SIGKILL, crash) leaves its clients'
    /// libqb ring buffers, `/dev/shm/qb-<daemon pid>-<client pid>-…`, behind.
    private static func removeSharedMemory(ofDeadDaemon pid: pid_t) {
        guard kill(pid, 0) != 0, errno == ESRCH,
            let names = try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm")
        else { return }
        for name in names where name.hasPrefix("qb-\(pid)-") || name.hasPrefix("qb-corosync-\(pid)-") {
            try? FileManager.default.removeItem(atPath: "/dev/shm/\(name)")
        }
    }

    private static func readPID(_ path: String) -> pid_t? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8),
            let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 1
        else { return nil }
        return pid
    }

    private static func interval(_ duration: Duration) -> DispatchTimeInterval {
        let (seconds, attoseconds) = duration.components
        return .nanoseconds(Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000))
    }

    /// The absolute path of `program` in PATH or the sbin directories (which a
    /// non-root PATH often lacks), or nil.
    static func locate(_ program: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let directories = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        for directory in directories where !directory.isEmpty {
            let candidate = "\(directory)/\(program)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }
}
