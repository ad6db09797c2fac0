// etcd as the comparison peer of `carillon-bench services`: a private
// single-node etcd per measurement, an HTTP/1.1 keep-alive client for its v3
// JSON gateway over a plain TCP socket, and `etcdctl lock` processes for the
// takeover after kill -9. Framing and JSON are in CarillonBench (EtcdGateway.swift).

import CarillonBench
import Dispatch
import Foundation
import Glibc

/// CLOCK_MONOTONIC in nanoseconds (one clock for the bench and its children).
func monotonicNanos() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

// MARK: - HTTP/1.1 over TCP

/// A failure of the socket under an ``HTTPConnection``.
struct SocketError: Error, CustomStringConvertible {
    var description: String
    init(_ what: String, errno code: Int32 = errno) {
        description = "\(what): \(String(cString: strerror(code)))"
    }
    init(message: String) { description = message }
}

/// One keep-alive HTTP/1.1 connection to an IPv4 address: one request at a
/// time, each answered before the next is sent. Blocking; every receive gives
/// up after `timeoutSeconds` (a lock request waits at most that long for the lock).
/// Not thread-safe: one connection per thread.
final class HTTPConnection {
    let host: String
    let port: Int
    private var fd: Int32
    private var parser = HTTPResponseParser()
    private var buffer = [UInt8](repeating: 0, count: 65_536)

    init(host: String = "127.0.0.1", port: Int, timeoutSeconds: Double = 30) throws {
        self.host = host
        self.port = port
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError("socket") }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var timeout = timeval(tv_sec: Int(timeoutSeconds), tv_usec: Int((timeoutSeconds - timeoutSeconds.rounded(.down)) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
            close(fd)
            throw SocketError(message: "not an IPv4 address: \(host)")
        }
        let status = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard status == 0 else {
            let code = errno
            close(fd)
            throw SocketError("connect to \(host):\(port)", errno: code)
        }
    }

    deinit { close(fd) }

    /// Sends one request (a JSON body when given) and returns its response.
    func request(_ method: String, _ path: String, body: String? = nil) throws -> HTTPResponse {
        var message = "\(method) \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\n"
        if let body { message += "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)" } else { message += "\r\n" }
        try sendAll(Array(message.utf8))
        while true {
            if let response = try parser.next() { return response }
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count > 0 {
                parser.append(buffer[0..<count])
            } else if count == 0 {
                throw SocketError(message: "\(host):\(port) closed the connection during \(method) \(path)")
            } else if errno == EINTR {
                continue
            } else if errno == EAGAIN || errno == EWOULDBLOCK {
                throw SocketError(message: "no response to \(method) \(path) from \(host):\(port) in time")
            } else {
                throw SocketError("recv from \(host):\(port)")
            }
        }
    }

    private func sendAll(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            if sent < 0 {
                if errno == EINTR { continue }
                throw SocketError("send to \(host):\(port)")
            }
            offset += sent
        }
    }
}

/// Free TCP ports on 127.0.0.1 (bound to port 0 together, then released): distinct, and free a moment ago.
func freeLoopbackPorts(_ count: Int) throws -> [Int] {
    var sockets: [Int32] = []
    defer { sockets.forEach { close($0) } }
    var ports: [Int] = []
    for _ in 0..<count {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError("socket") }
        sockets.append(fd)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Bool in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw SocketError("bind 127.0.0.1:0") }
        ports.append(Int(UInt16(bigEndian: address.sin_port)))
    }
    return ports
}

// MARK: - the client

/// etcd's v3 API through its JSON gateway, on one keep-alive connection.
final class EtcdClient {
    let connection: HTTPConnection

    init(port: Int, timeoutSeconds: Double = 30) throws {
        connection = try HTTPConnection(port: port, timeoutSeconds: timeoutSeconds)
    }

    private func call(_ path: String, _ body: String) throws -> [String: Any] {
        try EtcdGateway.object(connection.request("POST", path, body: body))
    }

    /// `GET /health`: whether etcd says it is healthy (it has a leader and applies writes).
    func healthy() throws -> Bool {
        let response = try connection.request("GET", "/health")
        guard response.status == 200, let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any] else {
            return false
        }
        return EtcdGateway.field(["health"], in: object) == "true"
    }

    /// A new lease; returns its ID (decimal). etcd raises a TTL below its minimum (2 s with the default 100 ms heartbeat).
    func grantLease(ttlSeconds: Int) throws -> (id: String, ttlSeconds: Int) {
        let reply = try call("/v3/lease/grant", EtcdGateway.leaseGrantBody(ttlSeconds: ttlSeconds))
        let id = try EtcdGateway.required(["ID"], in: reply, reply: "lease/grant")
        return (id, Int(EtcdGateway.field(["TTL"], in: reply) ?? "") ?? ttlSeconds)
    }

    /// The TTL the lease was granted with (seconds), or nil when it has expired.
    func grantedTTL(lease: String) throws -> Int? {
        let reply = try call("/v3/lease/timetolive", EtcdGateway.leaseTimeToLiveBody(lease: lease))
        return EtcdGateway.field(["grantedTTL"], in: reply).flatMap { Int($0) }
    }

    /// Blocks until the lock `name` is held under `lease`; returns the lock's key (base64), for ``unlock(key:)``.
    func lock(name: String, lease: String) throws -> String {
        try EtcdGateway.required(["key"], in: call("/v3/lock/lock", EtcdGateway.lockBody(name: name, lease: lease)), reply: "lock/lock")
    }

    func unlock(key: String) throws {
        _ = try call("/v3/lock/unlock", EtcdGateway.unlockBody(key: key))
    }

    func put(key: String, value: String) throws {
        _ = try call("/v3/kv/put", EtcdGateway.putBody(key: key, value: value))
    }

    /// The value of `key` (nil when absent); linearizable unless `serializable`.
    func get(key: String, serializable: Bool = false) throws -> String? {
        let reply = try call("/v3/kv/range", EtcdGateway.rangeBody(key: key, serializable: serializable))
        return EtcdGateway.field(["kvs", "0", "value"], in: reply).flatMap(EtcdGateway.decodeBase64)
    }

    /// How many keys start with `prefix`, and the lease of the first (e.g. a lock's holder and waiters: `name/`).
    func keys(prefix: String) throws -> (count: Int, firstLease: String?) {
        let end = Data(EtcdGateway.prefixRangeEnd(prefix)).base64EncodedString()
        let body = "{\"key\":\"\(EtcdGateway.base64(prefix))\",\"range_end\":\"\(end)\",\"keys_only\":true,\"sort_target\":\"CREATE\"}"
        let reply = try call("/v3/kv/range", body)
        return (Int(EtcdGateway.field(["count"], in: reply) ?? "0") ?? 0, EtcdGateway.field(["kvs", "0", "lease"], in: reply))
    }
}

// MARK: - the server

/// Where an etcd keeps its data: its label in results, the directory and what an acknowledged write survives.
struct EtcdStorage {
    var name: String
    var directory: String
    var durability: String

    /// `tmpfs`: /dev/shm. `disk`: /var/tmp. The data directory is made unique per process.
    static func named(_ name: String) throws -> EtcdStorage {
        let pid = getpid()
        switch name {
        case "tmpfs":
            let directory = "/dev/shm/carillon-bench-etcd-\(pid)"
            let fs = filesystem(of: "/dev/shm")
            return EtcdStorage(
                name: name, directory: directory,
                durability:
                    "WAL fsync'd before each write is acknowledged, on \(fs.type) (/dev/shm, memory): survives an etcd crash, not a reboot or power loss; one node, no replica"
            )
        case "disk":
            let directory = "/var/tmp/carillon-bench-etcd-\(pid)"
            let fs = filesystem(of: "/var/tmp")
            return EtcdStorage(
                name: name, directory: directory,
                durability:
                    "WAL fsync'd before each write is acknowledged, on \(fs.type) (/var/tmp on \(fs.device)): survives an etcd crash and a power loss; one node, no replica"
            )
        default:
            throw BenchError("unknown etcd storage \(name): tmpfs or disk")
        }
    }

    /// The file system type and device of the mount that holds `path`, from /proc/mounts.
    static func filesystem(of path: String) -> (type: String, device: String) {
        let resolved = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        var best: (point: String, type: String, device: String) = ("", "unknown", "unknown")
        let mounts = (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? ""
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 3 else { continue }
            let point = String(fields[1])
            let inside = point == "/" || resolved == point || resolved.hasPrefix(point + "/")
            if inside, point.count >= best.point.count { best = (point, String(fields[2]), String(fields[0])) }
        }
        return (best.type, best.device)
    }
}

/// A private single-node etcd on 127.0.0.1 (free client and peer ports), with
/// its own data directory; killed and its directory removed by ``stop()`` or
/// on any exit path (``Cleanup``). Never the system's etcd service.
final class EtcdServer {
    let dataDirectory: String
    let clientPort: Int
    let peerPort: Int
    private let child: Child
    private let directoryToken: Int

    /// The apt line that installs etcd 3.4's server and `etcdctl`, or nil when both are on PATH.
    static func missingPackages() -> String? {
        which("etcd") != nil && which("etcdctl") != nil ? nil : "apt-get install -y etcd-server etcd-client"
    }

    /// Installs etcd (as root) when it is missing; otherwise says how.
    static func ensureInstalled() throws {
        guard let line = missingPackages() else { return }
        guard getuid() == 0 else {
            throw BenchError("etcd is not installed. Install it with: sudo \(line)")
        }
        FileHandle.standardError.write(Data("carillon-bench: etcd is missing; running: \(line)\n".utf8))
        do {
            try run(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "etcd-server", "etcd-client"])
        } catch {
            throw BenchError("installing etcd failed (\(line)):\n\(error)")
        }
        guard missingPackages() == nil else { throw BenchError("`\(line)` ran but etcd or etcdctl is still not on PATH") }
        FileHandle.standardError.write(
            Data("carillon-bench: installed etcd; the bench does not use the package's system service (it starts etcd processes of its own)\n".utf8))
    }

    /// `etcd --version`'s version, e.g. 3.4.23.
    static func version() -> String {
        let text = (try? run(["etcd", "--version"])) ?? ""
        return text.split(separator: "\n").first { $0.hasPrefix("etcd Version:") }.map {
            $0.dropFirst("etcd Version:".count).trimmingCharacters(in: .whitespaces)
        } ?? "unknown"
    }

    /// Starts etcd (not yet ready: ``waitUntilHealthy(seconds:)``).
    init(dataDirectory: String, log: String) throws {
        self.dataDirectory = dataDirectory
        try? FileManager.default.removeItem(atPath: dataDirectory)
        directoryToken = Cleanup.register { try? FileManager.default.removeItem(atPath: dataDirectory) }
        let ports = try freeLoopbackPorts(2)
        clientPort = ports[0]
        peerPort = ports[1]
        let client = "http://127.0.0.1:\(clientPort)", peer = "http://127.0.0.1:\(peerPort)"
        do {
            child = try Child(
                [
                    "etcd", "--name", "bench", "--data-dir", dataDirectory,
                    "--listen-client-urls", client, "--advertise-client-urls", client,
                    "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                    "--initial-cluster", "bench=\(peer)", "--initial-cluster-state", "new",
                    "--initial-cluster-token", "carillon-bench-\(getpid())",
                    "--logger", "zap", "--log-outputs", "stderr"
                ],
                stderr: log)
        } catch {
            Cleanup.run(directoryToken)
            throw error
        }
    }

    deinit { stop() }

    /// host:port for `etcdctl --endpoints`.
    var endpoint: String { "127.0.0.1:\(clientPort)" }

    /// Polls `GET /health` every 50 ms until etcd answers healthy; throws with its log after `seconds`.
    func waitUntilHealthy(seconds: Double = 20) throws {
        let deadline = monotonicNanos() + UInt64(seconds * 1e9)
        var last = "no answer"
        while monotonicNanos() < deadline {
            guard child.process.isRunning else {
                throw BenchError(
                    "etcd exited with status \(child.process.terminationStatus) during start-up (data dir \(dataDirectory)):\n\(child.stderrTail)")
            }
            do {
                if try EtcdClient(port: clientPort, timeoutSeconds: 2).healthy() { return }
                last = "not healthy yet"
            } catch {
                last = "\(error)"
            }
            usleep(50_000)
        }
        throw BenchError("etcd on \(endpoint) was not healthy within \(Int(seconds)) s (last: \(last)); its log:\n\(child.stderrTail)")
    }

    /// Kills etcd (SIGKILL) and removes its data directory.
    func stop() {
        child.kill9()
        Cleanup.run(directoryToken)
    }
}

// MARK: - etcdctl lock

/// `etcdctl lock NAME --ttl T`: acquires the lock in a session of its own
/// (a lease kept alive every TTL/3), prints the lock's key and holds it until
/// it dies. Killed on every exit path.
final class EtcdctlLock: @unchecked Sendable {
    let process = Process()
    private let output = Pipe()
    private let exited = DispatchSemaphore(value: 0)
    private var token = 0
    private var printed: [UInt8] = []

    init(endpoint: String, name: String, ttlSeconds: Int, stderr: String) throws {
        guard let etcdctl = which("etcdctl") else { throw BenchError("etcdctl not found: apt-get install -y etcd-client") }
        process.executableURL = URL(fileURLWithPath: etcdctl)
        process.arguments = ["--endpoints", endpoint, "lock", name, "--ttl", "\(ttlSeconds)"]
        var environment = ProcessInfo.processInfo.environment
        environment["ETCDCTL_API"] = "3"
        process.environment = environment
        process.standardOutput = output
        _ = FileManager.default.createFile(atPath: stderr, contents: nil)
        process.standardError = FileHandle(forWritingAtPath: stderr)
        process.terminationHandler = { [exited] _ in exited.signal() }
        try process.run()
        let pid = process.processIdentifier
        token = Cleanup.register { [process] in if process.isRunning { kill(pid, SIGKILL) } }
    }

    deinit { kill9() }

    /// Waits until etcdctl prints the lock's key (it holds the lock); returns
    /// CLOCK_MONOTONIC ns when the line was read, nil on timeout or when it exited first.
    func waitAcquired(seconds: Double) -> UInt64? {
        let fd = output.fileHandleForReading.fileDescriptor
        let deadline = monotonicNanos() + UInt64(seconds * 1e9)
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let now = monotonicNanos()
            guard now < deadline else { return nil }
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, Int32(min(1_000, max(1, (deadline - now) / 1_000_000))))
            if ready < 0, errno == EINTR { continue }
            guard ready > 0 else { continue }
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            let at = monotonicNanos()
            if count <= 0 { return nil }
            printed += chunk[0..<count]
            if printed.contains(10) { return at }
        }
    }

    /// What it printed (the lock's key).
    var key: String { String(decoding: printed, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) }

    /// Sends SIGKILL and returns at once with CLOCK_MONOTONIC ns just before
    /// the signal (``kill9()`` after, to reap it).
    func sendKill() -> UInt64 {
        let at = monotonicNanos()
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        return at
    }

    /// Ends it now (SIGKILL) if it still runs and waits for its exit (at most 5 s).
    func kill9() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            _ = exited.wait(timeout: .now() + 5)
        }
        Cleanup.run(token)
    }
}
