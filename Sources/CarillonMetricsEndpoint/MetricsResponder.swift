import CCarillonSys
import CarillonTransport
import Glibc
import Synchronization

/// Why the scrape endpoint could not start: the address, and what to do.
public struct MetricsEndpointError: Error, Sendable, CustomStringConvertible {
    public var address: UDPEndpoint
    public var failure: SystemCallError

    public var description: String {
        switch (failure.call, failure.errno) {
        case ("bind", EADDRINUSE):
            return
                "cannot listen on \(address): the port is in use (EADDRINUSE) — another process, or another member on this host, listens there; choose another port"
        case ("bind", EACCES):
            return "cannot listen on \(address): ports below 1024 need root or CAP_NET_BIND_SERVICE (EACCES); choose a port above 1023"
        case ("bind", EADDRNOTAVAIL):
            return "cannot listen on \(address): the address is not one of this host's (EADDRNOTAVAIL)"
        default:
            return "cannot listen on \(address): \(failure)"
        }
    }
}

/// A minimal HTTP/1.1 server for `GET /metrics`, on a listening TCP socket
/// served by one thread of its own (poll, non-blocking sockets, Glibc only).
///
/// Everything is bounded (``Limits``): connections at once, the request head's
/// size, the time a request may take to arrive and its answer to leave, and
/// requests per connection. A client that breaks a bound gets a 4xx status
/// where one can still be sent, then the connection is closed; none can stop
/// the thread, and writes never raise SIGPIPE (`MSG_NOSIGNAL`). Keep-alive and
/// pipelined requests are answered in order. The thread sleeps in `poll`
/// until a client or ``stop()`` wakes it: an idle endpoint costs no wake-ups.
///
/// `metrics` is called on the responder's thread, once per `GET`/`HEAD /metrics`.
public final class MetricsResponder: @unchecked Sendable {
    public struct Limits: Sendable {
        /// Connections served at once; further ones wait in the listen backlog.
        public var maxConnections = 16
        /// Time for a whole request head to arrive (from accept, or from the
        /// previous answer on a kept-alive connection), and for an answer to be
        /// written: a slow or idle client loses its connection then.
        public var requestNanos: UInt64 = 5_000_000_000
        /// Requests answered on one connection before it is closed.
        public var maxRequestsPerConnection = 1000
        /// After an answer that closes the connection: how long unread input
        /// is still read and dropped, so the close does not reset the
        /// connection before the client has read the answer.
        public var lingerNanos: UInt64 = 1_000_000_000

        public init() {}
    }

    /// The address listened on (with the port the kernel chose, if 0 was asked for).
    public let address: UDPEndpoint
    public let limits: Limits
    private let listenFD: Int32
    private let wakeFD: Int32
    private let metrics: @Sendable () -> [UInt8]
    private let stopping = Atomic<Bool>(false)
    private var thread = pthread_t()

    /// Binds `address` (IPv4; port 0 for any free port), listens, and starts
    /// the responder's thread.
    public init(listen address: UDPEndpoint, limits: Limits = Limits(), metrics: @escaping @Sendable () -> [UInt8]) throws(MetricsEndpointError) {
        self.limits = limits
        self.metrics = metrics
        func fail(_ error: SystemCallError) -> MetricsEndpointError { MetricsEndpointError(address: address, failure: error) }
        let fd: Int32
        do {
            fd = try SystemCall.must(
                "socket", { socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) })
        } catch { throw fail(error) }
        do {
            // A restarted node rebinds at once despite connections of the
            // previous process in TIME_WAIT; on Linux this never lets two
            // listeners share the port, so a running one is still EADDRINUSE.
            var one: Int32 = 1
            try SystemCall.must("setsockopt(SO_REUSEADDR)", { setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size)) })
            var socketAddress = address.socketAddress
            try SystemCall.must(
                "bind",
                {
                    withUnsafePointer(to: &socketAddress) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                    }
                })
            try SystemCall.must("listen", { Glibc.listen(fd, 64) })
            var bound = sockaddr_in()
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            try SystemCall.must(
                "getsockname",
                {
                    withUnsafeMutablePointer(to: &bound) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
                })
            self.address = UDPEndpoint(bound)
        } catch {
            close(fd)
            throw fail(error)
        }
        listenFD = fd
        wakeFD = carillon_make_wake_descriptor()
        guard wakeFD >= 0 else {
            close(fd)
            throw fail(SystemCallError(call: "eventfd", errno: errno))
        }
        let box = Unmanaged.passRetained(ResponderThreadBody { [self] in serve() }).toOpaque()
        let result = pthread_create(&thread, nil, responderThreadEntry, box)
        guard result == 0 else {
            Unmanaged<ResponderThreadBody>.fromOpaque(box).release()
            close(fd)
            close(wakeFD)
            throw fail(SystemCallError(call: "pthread_create", errno: result))
        }
    }

    /// Stops the thread, closes every connection and the listening socket.
    /// Idempotent; must be called (the thread holds the responder).
    public func stop() {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        var one: UInt64 = 1
        _ = write(wakeFD, &one, MemoryLayout<UInt64>.size)
        pthread_join(thread, nil)
        close(listenFD)
        close(wakeFD)
    }

    // MARK: The responder's thread (everything below runs on it alone)

    private struct Connection {
        enum Phase { case reading, writing, lingering }
        let fd: Int32
        var phase = Phase.reading
        var input: [UInt8] = []
        var output: [UInt8] = []
        var written = 0
        /// Close once `output` is written (after lingering).
        var closeAfterWrite = false
        var requests = 0
        /// When the current phase must be over.
        var deadline: UInt64
        var lingered = 0
        var closed = false
    }

    private func serve() {
        var connections: [Connection] = []
        var polled: [pollfd] = []
        var scratch = [UInt8](repeating: 0, count: 16_384)
        var acceptPausedUntil: UInt64 = 0
        while !stopping.load(ordering: .acquiring) {
            var now = Self.monotonicNanos()
            let accepting = connections.count < limits.maxConnections && now >= acceptPausedUntil
            polled.removeAll(keepingCapacity: true)
            polled.append(pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0))
            // A negative descriptor is skipped by poll: not accepting leaves clients in the backlog.
            polled.append(pollfd(fd: accepting ? listenFD : -1, events: Int16(POLLIN), revents: 0))
            for c in connections {
                polled.append(pollfd(fd: c.fd, events: Int16(c.phase == .writing ? POLLOUT : POLLIN), revents: 0))
            }
            var wakeAt = connections.map(\.deadline).min()
            if !accepting, connections.count < limits.maxConnections { wakeAt = min(wakeAt ?? acceptPausedUntil, acceptPausedUntil) }
            let timeout: Int32 = wakeAt.map { $0 <= now ? 0 : Int32(clamping: ($0 - now + 999_999) / 1_000_000) } ?? -1
            if poll(&polled, nfds_t(polled.count), timeout) < 0 {
                if errno == EINTR || errno == EAGAIN || errno == ENOMEM { continue }
                break
            }
            if polled[0].revents != 0 { continue }  // stop() woke us: the loop condition ends it
            now = Self.monotonicNanos()
            for i in connections.indices {
                let events = polled[2 + i].revents
                if events != 0 { service(&connections[i], events: events, scratch: &scratch, now: now) }
                if !connections[i].closed, now >= connections[i].deadline { expire(&connections[i]) }
            }
            connections.removeAll { $0.closed }
            if polled[1].revents != 0 {
                acceptPausedUntil = acceptClients(into: &connections, now: now)
            }
        }
        for c in connections where !c.closed { close(c.fd) }
    }

    /// Accepts waiting clients up to the connection limit. Returns until when
    /// accepting should pause (now: no pause): out of descriptors or memory,
    /// the listen socket stays readable, and polling it again at once would spin.
    private func acceptClients(into connections: inout [Connection], now: UInt64) -> UInt64 {
        while connections.count < limits.maxConnections {
            let fd = carillon_accept_nonblocking(listenFD)
            if fd >= 0 {
                connections.append(Connection(fd: fd, deadline: now + limits.requestNanos))
                continue
            }
            switch errno {
            case EINTR, ECONNABORTED, EPROTO, EPERM: continue
            case EAGAIN, EWOULDBLOCK: return now
            default: return now + 100_000_000  // EMFILE, ENFILE, ENOBUFS, ENOMEM: try again in 100 ms
            }
        }
        return now
    }

    private func service(_ c: inout Connection, events: Int16, scratch: inout [UInt8], now: UInt64) {
        switch c.phase {
        case .writing:
            flush(&c, now: now)
        case .lingering:
            // Drop what the client still sends; close at its end of stream, the deadline, or a bound.
            let n = scratch.withUnsafeMutableBytes { recv(c.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n > 0 { c.lingered += n }
            if n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) || c.lingered > 65_536 { finish(&c) }
        case .reading:
            let room = HTTPRequestParser.maxHeadBytes - c.input.count
            let n = scratch.withUnsafeMutableBytes { recv(c.fd, $0.baseAddress, min(room, $0.count), Int32(MSG_DONTWAIT)) }
            if n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) { return finish(&c) }
            if n > 0 { c.input.append(contentsOf: scratch[0..<n]) }
            answerBuffered(&c, now: now)
        }
    }

    /// Answers the complete requests in `c.input`, in order, while each answer
    /// leaves at once (pipelining); stops at an incomplete one or a blocked write.
    private func answerBuffered(_ c: inout Connection, now: UInt64) {
        while c.phase == .reading, !c.closed {
            switch HTTPRequestParser.parse(c.input[...]) {
            case .incomplete:
                return
            case .invalid(let status):
                c.input.removeAll()
                queue(&c, HTTPResponse.refusal(status), close: true, now: now)
            case .request(let head, let consumed):
                c.input.removeFirst(consumed)
                c.requests += 1
                let (bytes, close) = HTTPResponse.answer(head, metrics: metrics)
                queue(&c, bytes, close: close || c.requests >= limits.maxRequestsPerConnection, now: now)
            }
        }
    }

    private func queue(_ c: inout Connection, _ bytes: [UInt8], close: Bool, now: UInt64) {
        c.output = bytes
        c.written = 0
        c.closeAfterWrite = close
        c.phase = .writing
        c.deadline = now + limits.requestNanos
        flush(&c, now: now)
    }

    /// Writes what it can of the pending answer; when it is all out, reads
    /// the next request or begins the closing linger.
    private func flush(_ c: inout Connection, now: UInt64) {
        while c.written < c.output.count {
            let n = c.output.withUnsafeBytes {
                send(c.fd, $0.baseAddress! + c.written, $0.count - c.written, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
            }
            if n > 0 { c.written += n; continue }
            if n < 0, errno == EINTR { continue }
            if n < 0, errno == EAGAIN || errno == EWOULDBLOCK { return }  // poll for POLLOUT
            return finish(&c)  // EPIPE, ECONNRESET, …: the client is gone
        }
        c.output.removeAll(keepingCapacity: true)
        c.written = 0
        if c.closeAfterWrite {
            shutdown(c.fd, Int32(SHUT_WR))
            c.phase = .lingering
            c.deadline = now + limits.lingerNanos
        } else {
            c.phase = .reading
            c.deadline = now + limits.requestNanos
        }
    }

    /// A phase ran out of time: a request that had begun to arrive gets 408 (best effort).
    private func expire(_ c: inout Connection) {
        if c.phase == .reading, !c.input.isEmpty {
            let refusal = HTTPResponse.refusal(.requestTimeout)
            _ = refusal.withUnsafeBytes { send(c.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }
        }
        finish(&c)
    }

    private func finish(_ c: inout Connection) {
        guard !c.closed else { return }
        close(c.fd)
        c.closed = true
    }

    private static func monotonicNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

private final class ResponderThreadBody {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

/// A plain function, not a closure: closures handed to pthread_create can pick
/// up actor isolation (NOTES.md).
private func responderThreadEntry(_ context: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    Unmanaged<ResponderThreadBody>.fromOpaque(context!).takeRetainedValue().body()
    return nil
}
