import ArgumentParser
import CarillonClient
import CarillonServices
import Dispatch
import Foundation
import Glibc

/// How a client command finds its node: the same --config and --member as
/// `carillon node`, or --socket.
struct EndpointOptions: ParsableArguments {
    @Option(help: "The bus's JSON configuration file (with --member: finds that node's client socket).") var config: String?
    @Option(help: "The member whose node to talk to (its \"client_socket\", default /tmp/carillon-PORT-MEMBER.sock).") var member: String?
    @Option(help: ArgumentHelp("The node's client socket, instead of --config/--member.", valueName: "path")) var socket: String?
    @Flag(help: "Answer once the command is stable (every member holds it), not when this node applied it.") var safe = false

    func validate() throws {
        if socket == nil, config == nil || member == nil {
            throw ValidationError("say which node to talk to: --config FILE --member NAME (as for carillon node), or --socket PATH")
        }
        if socket != nil, config != nil || member != nil { throw ValidationError("give --socket, or --config and --member, not both") }
    }

    func path() throws -> String {
        if let socket { return socket }
        let file: ConfigFile
        do { file = try ConfigFile.load(path: config!) } catch { throw ValidationError(error.description) }
        guard let path = file.clientSocketPath(member: member!) else {
            throw ValidationError("\(config!) has no member named \"\(member!)\" (names: \(file.members.map(\.name).joined(separator: ", ")))")
        }
        return path
    }

    var consistency: Consistency { safe ? .safe : .agreed }

    /// A member named in the configuration (with --config), or a node index.
    func node(named name: String) throws -> UInt16 {
        if let index = UInt16(name) { return index }
        guard let config else { throw ValidationError("\(name) is not a node index; name members with --config FILE, or give the index") }
        let file: ConfigFile
        do { file = try ConfigFile.load(path: config) } catch { throw ValidationError(error.description) }
        guard let index = file.members.firstIndex(where: { $0.name == name }) else {
            throw ValidationError("\(config) has no member named \"\(name)\" (names: \(file.members.map(\.name).joined(separator: ", ")))")
        }
        return UInt16(index)
    }

    func connect() throws -> CarillonClient {
        do { return try CarillonClient(path: try path()) } catch let error as EndpointError {
            throw CleanExit.message("carillon: \(error.description)", code: 69)
        }
    }
}

extension CleanExit {
    /// An error line on standard error and an exit status (CleanExit itself only exits 0).
    static func message(_ text: String, code: Int32) -> ExitCode {
        FileHandle.standardError.write(Data((text + "\n").utf8))
        return ExitCode(code)
    }
}

/// Runs async client code from a synchronous command, mapping service errors to messages.
func runClient<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let done = DispatchSemaphore(value: 0)
    let box = ResultBox<T>()
    Task {
        do { box.result = .success(try await body()) } catch { box.result = .failure(error) }
        done.signal()
    }
    done.wait()
    switch box.result! {
    case .success(let value): return value
    case .failure(let error as ServiceCallError): throw CleanExit.message("carillon: \(error.description)", code: exitStatus(error.status))
    case .failure(let error): throw error
    }
}

/// The exit status for a request that did not succeed: 1 the answer was "no";
/// 75 (EX_TEMPFAIL) not in a primary component, or an owned object was lost or
/// its migration aborted; 77 (EX_NOPERM) the capability did not allow it.
func exitStatus(_ status: ServiceStatus) -> Int32 {
    switch status {
    case .noPrimary, .objectLost, .aborted: 75
    case .forbidden: 77
    case .ok, .granted, .busy, .notHeld, .alreadyHeld, .cancelled, .notWaiting, .notFound, .versionMismatch, .notACounter, .badRequest,
        .unknownService, .foreignSession, .windowFull, .outcomeUnknown, .timedOut, .sessionEnded, .exists:
        1
    }
}

final class ResultBox<T>: @unchecked Sendable { var result: Result<T, any Error>? }

struct Lock: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Hold a cluster-wide lock while a command runs (like flock and etcdctl lock).",
        discussion: """
            Takes the named lock through the node's client socket, runs COMMAND with CARILLON_LOCK_TOKEN \
            set to the grant's fencing token, releases the lock when COMMAND ends, and exits with \
            COMMAND's status. Waiters are served first come, first served. If the node goes away while \
            COMMAND runs, the lock is released at every member: COMMAND is sent SIGTERM and the exit status is 75.

            Exit status: COMMAND's; 1 if --try found the lock held (or --timeout passed) and nothing ran; \
            69 if no node serves the socket; 75 if the node is not in a primary component.

            Examples:
              carillon lock --config bus.json --member a backup -- rsync -a /data /backup
              carillon lock --config bus.json --member b --try backup -- echo got it
              carillon lock --socket /tmp/carillon-7000-a.sock --timeout 5 backup -- ./job.sh
              carillon lock --config bus.json --member a --shared readers -- cat /data/file
            """)

    @OptionGroup var endpoint: EndpointOptions
    @Flag(help: "Do not wait: exit 1 at once if the lock is held.") var `try` = false
    @Flag(help: "Take the lock shared (with other shared holders) instead of exclusive.") var shared = false
    @Option(help: "Wait at most this many seconds for the lock (exit 1 if not granted).") var timeout: Double?
    @Option(
        help: ArgumentHelp(
            "The lock's capability (cap1-… or @FILE), for a lock put behind capabilities with `carillon cap lock`.", valueName: "cap"))
    var cap: String?
    @Argument(help: "The lock's name.") var name: String
    @Argument(parsing: .postTerminator, help: "The command to run while holding the lock (after --).") var command: [String] = []

    func validate() throws {
        if command.isEmpty { throw ValidationError("give the command to run after --, for example: carillon lock … \(name) -- echo held") }
        if let timeout, !(timeout > 0) { throw ValidationError("--timeout must be positive") }
        if `try`, timeout != nil { throw ValidationError("--try and --timeout exclude each other") }
    }

    func run() throws {
        let capability = try cap.map { try readCapability($0) }
        let client = try endpoint.connect()
        let name = self.name, mode: LockMode = shared ? .shared : .exclusive, consistency = endpoint.consistency
        let wait = !`try`, timeout = self.timeout
        let grant: LockGrant? = try runClient {
            if let timeout {
                return try await client.acquire(
                    name, mode: mode, timeoutNanos: UInt64(timeout * 1e9), consistency: consistency, capability: capability)
            }
            return try await client.acquire(name, mode: mode, wait: wait, consistency: consistency, capability: capability)
        }
        guard let grant else {
            FileHandle.standardError.write(Data("carillon: lock \(name) is held\(timeout.map { " (waited \($0) s)" } ?? ""); nothing ran\n".utf8))
            throw ExitCode(1)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = command
        var environment = ProcessInfo.processInfo.environment
        environment["CARILLON_LOCK_TOKEN"] = String(grant.token)
        environment["CARILLON_LOCK_NAME"] = name
        process.environment = environment
        do { try process.run() } catch {
            _ = try? runClient { try await client.release(name, capability: capability) }
            throw ValidationError("cannot run \(command[0]): \(error.localizedDescription)")
        }
        // The session is the lock: if the connection ends, the lock is gone.
        while process.isRunning {
            if client.isClosed {
                FileHandle.standardError.write(
                    Data("carillon: lock \(name) lost (the node went away, its sessions ended); stopping the command\n".utf8))
                process.terminate()
                process.waitUntilExit()
                throw ExitCode(75)
            }
            usleep(20_000)
        }
        process.waitUntilExit()
        _ = try? runClient { try await client.release(name, consistency: consistency, capability: capability) }
        client.close()
        throw ExitCode(process.terminationStatus)
    }
}

struct Locks: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the lock table: each lock's mode, holders with fencing tokens, and waiters in order.",
        discussion: """
            The table is read through the bus (ordered): every member would answer the same at that point.

            Examples:
              carillon locks --config bus.json --member a
              carillon locks --socket /tmp/carillon-7000-a.sock
            """)

    @OptionGroup var endpoint: EndpointOptions

    func run() throws {
        let client = try endpoint.connect()
        let table = try runClient { try await client.locks() }
        if table.isEmpty { print("no locks held or waited for") }
        for lock in table {
            let holders = lock.holders.map { "\($0.session) token=\($0.token)" }.joined(separator: ", ")
            let waiters = lock.waiters.map { "\($0.session) \($0.mode)" }.joined(separator: ", ")
            print("\(lock.name)\t\(lock.mode)\tholders: \(holders.isEmpty ? "-" : holders)\twaiters: \(waiters.isEmpty ? "-" : waiters)")
        }
    }
}

struct KV: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv",
        abstract: "Read and write the replicated object store.",
        discussion: """
            Every command is ordered on the bus (linearizable) except `get --stale`, which reads this \
            node's replica as it is (it may lag the newest write by the delivery latency).

            Examples:
              carillon kv put --config bus.json --member a greeting hello
              carillon kv get --config bus.json --member b greeting
              carillon kv get --config bus.json --member b --stale greeting
              carillon kv cas --config bus.json --member a greeting 7 "hello again"   (only if its version is 7)
              carillon kv add --config bus.json --member a visits 1
              carillon kv watch --config bus.json --member c --prefix app/
              carillon kv list --config bus.json --member a app/
              carillon kv del --config bus.json --member a greeting
              carillon kv load --config bus.json --member a --keys 10000 --bytes 1024 bulk/   (fill for tests)
            """,
        subcommands: [KVGet.self, KVPut.self, KVDel.self, KVCas.self, KVAdd.self, KVList.self, KVWatch.self, KVLoad.self])
}

func text(_ value: [UInt8]) -> String {
    String(decoding: value, as: UTF8.self)
}

struct KVGet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get", abstract: "Print a key's value (exit 1 if absent); --version prints its version too.")
    @OptionGroup var endpoint: EndpointOptions
    @Flag(help: "Read this node's replica without ordering (may be stale).") var stale = false
    @Flag(help: "Print the version before the value.") var version = false
    @Argument var key: String

    func run() throws {
        let client = try endpoint.connect()
        let key = self.key, stale = self.stale, consistency = endpoint.consistency
        let object = try runClient { stale ? try await client.localRead(key) : try await client.get(key, consistency: consistency) }
        guard let object else {
            FileHandle.standardError.write(Data("carillon: \(key) not found\n".utf8))
            throw ExitCode(1)
        }
        print(version ? "\(object.version) \(text(object.value))" : text(object.value))
    }
}

struct KVPut: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "put", abstract: "Set a key; prints the new version.")
    @OptionGroup var endpoint: EndpointOptions
    @Argument var key: String
    @Argument var value: String

    func run() throws {
        let client = try endpoint.connect()
        let key = self.key, value = Array(self.value.utf8), consistency = endpoint.consistency
        print(try runClient { try await client.put(key, value, consistency: consistency) })
    }
}

struct KVDel: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "del", abstract: "Delete a key (exit 1 if absent).")
    @OptionGroup var endpoint: EndpointOptions
    @Argument var key: String

    func run() throws {
        let client = try endpoint.connect()
        let key = self.key, consistency = endpoint.consistency
        guard try runClient({ try await client.delete(key, consistency: consistency) }) else {
            FileHandle.standardError.write(Data("carillon: \(key) not found\n".utf8))
            throw ExitCode(1)
        }
    }
}

struct KVCas: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cas",
        abstract: "Set a key only if its version is EXPECTED (0: only if absent); prints the new version, or exits 1 with the current one.")
    @OptionGroup var endpoint: EndpointOptions
    @Argument var key: String
    @Argument var expected: UInt64
    @Argument var value: String

    func run() throws {
        let client = try endpoint.connect()
        let key = self.key, expected = self.expected, value = Array(self.value.utf8), consistency = endpoint.consistency
        let result = try runClient { try await client.compareAndSet(key, expected: expected, value, consistency: consistency) }
        guard result.swapped else {
            FileHandle.standardError.write(Data("carillon: \(key) is at version \(result.version), not \(expected)\n".utf8))
            throw ExitCode(1)
        }
        print(result.version)
    }
}

struct KVAdd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add", abstract: "Add DELTA to the counter at a key (absent counts as 0); prints the sum.")
    @OptionGroup var endpoint: EndpointOptions
    @Argument var key: String
    @Argument(help: "A signed 64-bit integer.") var delta: Int64

    func run() throws {
        let client = try endpoint.connect()
        let key = self.key, delta = self.delta, consistency = endpoint.consistency
        print(try runClient { try await client.add(key, delta, consistency: consistency) })
    }
}

struct KVList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List keys (starting with PREFIX) with versions and sizes.")
    @OptionGroup var endpoint: EndpointOptions
    @Argument var prefix: String = ""

    func run() throws {
        let client = try endpoint.connect()
        let prefix = self.prefix
        for entry in try runClient({ try await client.list(prefix: prefix) }) {
            print("\(entry.key)\tversion \(entry.version)\t\(entry.bytes) B")
        }
    }
}

struct KVWatch: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch", abstract: "Print changes of a key (or of keys under a prefix) in bus order until interrupted or --count changes.")
    @OptionGroup var endpoint: EndpointOptions
    @Flag(help: "Watch every key starting with KEY.") var prefix = false
    @Option(help: "Stop after this many changes.") var count: Int?
    @Argument var key: String

    func run() throws {
        let client = try endpoint.connect()
        let key = self.key, prefix = self.prefix, count = self.count
        try runClient {
            var seen = 0
            for await event in try await client.watch(key, prefix: prefix) {
                let what = event.kind == .put ? "put" : "del"
                let line = "\(what) \(event.key) version \(event.version) at \(event.position)\(event.kind == .put ? " " + text(event.value) : "")\n"
                FileHandle.standardOutput.write(Data(line.utf8))
                seen += 1
                if let count, seen >= count { return }
            }
            throw ServiceCallError(.sessionEnded, "the node closed the connection")
        }
    }
}

struct KVLoad: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Fill the store: put --keys keys PREFIX0…PREFIXn-1 of --bytes bytes each (a load generator for tests), --window in flight.",
        discussion:
            "Prints the number of keys written and the time taken. Example: carillon kv load --socket /tmp/carillon-7000-a.sock --keys 10000 --bytes 1024 bulk/"
    )
    @OptionGroup var endpoint: EndpointOptions
    @Option(help: "Keys to write.") var keys = 1000
    @Option(help: "Bytes per value.") var bytes = 1024
    @Option(help: "Puts in flight at once.") var window = 32
    @Argument var prefix: String

    func validate() throws {
        if keys < 1 { throw ValidationError("--keys must be at least 1") }
        if !(0...1200).contains(bytes) { throw ValidationError("--bytes must be in 0...1200 (a command fits one bus message)") }
        if !(1...ServiceHostWindow.limit).contains(window) { throw ValidationError("--window must be in 1...\(ServiceHostWindow.limit)") }
    }

    func run() throws {
        let client = try endpoint.connect()
        let keys = self.keys, bytes = self.bytes, window = self.window, prefix = self.prefix, consistency = endpoint.consistency
        let started = DispatchTime.now().uptimeNanoseconds
        try runClient {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for k in 0..<keys {
                    if k >= window { try await group.next() }
                    let value = (0..<bytes).map { UInt8(truncatingIfNeeded: $0 &+ k) }
                    group.addTask { try await client.put("\(prefix)\(k)", value, consistency: consistency) }
                }
                try await group.waitForAll()
            }
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        print("\(keys) keys of \(bytes) B in \(String(format: "%.2f", seconds)) s")
    }
}

/// The session window as the CLI may use it.
enum ServiceHostWindow { static let limit = ServiceHost.sessionWindow / 2 }
