import CCarillonSys
import CarillonClient
import CarillonServices
import Dispatch
import Glibc
import Synchronization

/// A node's local client endpoint: a Unix domain socket (mode 0600 by
/// default) speaking ``/CarillonServices/ClientMessage``s. One connection is one session;
/// closing it ends the session (its locks are released at that position at
/// every member). One thread accepts, reads and writes; responses are written
/// straight from the thread that applies them when the socket takes them.
public final class ClientEndpoint: @unchecked Sendable {
    final class Connection: @unchecked Sendable {
        let descriptor: Int32
        let client: UInt32
        var reader = ClientMessageReader()
        /// Bytes the socket did not take yet; nil once the connection is
        /// closed (its descriptor may then belong to another connection, so
        /// nothing may be written to it: the lock makes closing and writing exclusive).
        let outbox = Mutex<[UInt8]?>([])
        let closed = Atomic<Bool>(false)

        init(descriptor: Int32, client: UInt32) {
            self.descriptor = descriptor
            self.client = client
        }

        /// Sends a message now if the socket takes it, else queues it.
        func send(_ message: ClientMessage, wake: Int32) {
            let bytes = message.encoded()
            let queued = outbox.withLock { box -> Bool in
                guard box != nil else { return false }
                if box!.isEmpty {
                    let n = bytes.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
                    if n == bytes.count { return false }
                    box!.append(contentsOf: n > 0 ? bytes[n...] : bytes[...])
                } else {
                    box!.append(contentsOf: bytes)
                }
                return true
            }
            if queued { var one: UInt64 = 1; _ = write(wake, &one, 8) }
        }

        /// Writes what is queued; false when the peer is gone.
        func flush() -> Bool {
            outbox.withLock { box in
                guard box != nil else { return false }
                guard !box!.isEmpty else { return true }
                let n = box!.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
                if n > 0 { box!.removeFirst(n) }
                return n >= 0 || errno == EAGAIN || errno == EWOULDBLOCK
            }
        }

        var wantsWrite: Bool { outbox.withLock { !($0?.isEmpty ?? true) } }

        /// Closes the descriptor; nothing is written to it afterwards.
        func close() {
            outbox.withLock { box in
                box = nil
                _ = Glibc.close(descriptor)
            }
        }
    }

    public let path: String
    let node: ServiceNode
    let listener: Int32
    let wake: Int32
    let running = Atomic<Bool>(false)
    let done = DispatchGroup()
    var connections: [Int32: Connection] = [:]

    /// Binds `path` (a stale socket file left by a dead node is replaced; a
    /// live node's is not) with permissions `mode`.
    public init(node: ServiceNode, path: String, mode: mode_t = 0o600) throws(EndpointError) {
        self.node = node
        self.path = path
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.utf8.count < capacity else {
            throw EndpointError(
                description:
                    "client socket path \(path) is \(path.utf8.count) bytes; Unix sockets allow \(capacity - 1): choose a shorter \"client_socket\"")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() { raw[i] = b }
        }
        if Self.someoneListens(on: path) {
            throw EndpointError(description: "another node already serves \(path): stop it, or give this one another \"client_socket\"")
        }
        unlink(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw EndpointError(description: "socket(AF_UNIX): \(String(cString: strerror(errno)))") }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw EndpointError(description: "cannot bind the client socket \(path): \(reason) (does its directory exist and is it writable?)")
        }
        chmod(path, mode)
        guard listen(fd, 64) == 0 else {
            close(fd)
            throw EndpointError(description: "listen on \(path): \(String(cString: strerror(errno)))")
        }
        listener = fd
        wake = carillon_make_wake_descriptor()
    }

    static func someoneListens(on path: String) -> Bool {
        guard let fd = try? UnixSocket.connect(path) else { return false }
        close(fd)
        return true
    }

    public func start() {
        running.store(true, ordering: .relaxed)
        done.enter()
        DispatchQueue(label: "carillon.services.endpoint").async { [self] in
            loop()
            done.leave()
        }
    }

    /// Stops accepting, ends every session, removes the socket file.
    public func stop() {
        guard running.exchange(false, ordering: .relaxed) else { return }
        var one: UInt64 = 1
        _ = write(wake, &one, 8)
        done.wait()
        for c in connections.values { drop(c) }
        close(listener)
        close(wake)
        unlink(path)
    }

    func loop() {
        while running.load(ordering: .relaxed) {
            var fds = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0), pollfd(fd: wake, events: Int16(POLLIN), revents: 0)]
            let open = Array(connections.values)
            for c in open { fds.append(pollfd(fd: c.descriptor, events: Int16(POLLIN) | (c.wantsWrite ? Int16(POLLOUT) : 0), revents: 0)) }
            let n = poll(&fds, nfds_t(fds.count), -1)
            if n < 0 { if errno == EINTR { continue } else { return } }
            if fds[1].revents != 0 { var count: UInt64 = 0; _ = read(wake, &count, 8) }
            if fds[0].revents & Int16(POLLIN) != 0 { acceptAll() }
            for (i, c) in open.enumerated() {
                let events = fds[i + 2].revents
                if events & Int16(POLLOUT) != 0 || c.wantsWrite, !c.flush() { drop(c); continue }
                if events & (Int16(POLLIN) | Int16(POLLHUP) | Int16(POLLERR)) != 0 { readFrom(c) }
            }
        }
    }

    func acceptAll() {
        while true {
            let fd = carillon_accept_nonblocking(listener)
            guard fd >= 0 else { return }
            let wake = self.wake
            let box = ConnectionBox()
            let session = node.openSession(
                sink: ServiceNode.SessionSink(
                    onWatch: { id, change in
                        box.connection?.send(
                            .watchEvent(
                                requestID: id, kind: change.kind, key: change.key, version: change.version,
                                position: change.position, value: change.value), wake: wake)
                    },
                    onEnd: { _ in
                        // The member was left out of a view: this session is over; the client reconnects.
                        if let c = box.connection { c.outbox.withLock { if $0 != nil { shutdown(c.descriptor, Int32(SHUT_RDWR)) } } }
                    }))
            let c = Connection(descriptor: fd, client: session.client)
            box.connection = c
            connections[fd] = c
            let me = node.currentMember()
            c.send(.hello(node: me.node, incarnation: me.incarnation, client: session.client, inPrimary: node.inPrimary), wake: wake)
        }
    }

    final class ConnectionBox: @unchecked Sendable { var connection: Connection? }

    func readFrom(_ c: Connection) {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(c.descriptor, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n == 0 { drop(c); return }
            if n < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { break }
                drop(c)
                return
            }
            buffer.withUnsafeBytes { c.reader.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
        while true {
            let message: ClientMessage?
            do { message = try c.reader.next() } catch {
                // The stream cannot be resynchronised: say why, then close.
                c.send(.response(requestID: 0, ServiceResponse(status: .badRequest, body: Array("\(error)".utf8))), wake: wake)
                _ = c.flush()
                drop(c)
                return
            }
            guard let message else { return }
            handle(message, from: c)
        }
    }

    func handle(_ message: ClientMessage, from c: Connection) {
        let wake = self.wake
        switch message {
        case .request(let id, let consistency, let service, let body):
            node.submit(c.client, requestID: id, service: service, body: body, consistency: consistency) { response in
                c.send(.response(requestID: id, response), wake: wake)
            }
        case .capabilityRequest(let id, let consistency, let service, let capability, let body):
            node.submit(c.client, requestID: id, service: service, body: body, consistency: consistency, capability: capability) { response in
                c.send(.response(requestID: id, response), wake: wake)
            }
        case .localRead(let id, let key):
            let response: ServiceResponse
            if let object = node.localRead(key) {
                var w = ByteWriter()
                w.u64(object.version)
                w.bytes32(object.value)
                response = ServiceResponse(status: .ok, body: w.bytes)
            } else {
                response = ServiceResponse(status: .notFound)
            }
            c.send(.response(requestID: id, response), wake: wake)
        case .watch(let id, let key, let prefix):
            node.watch(c.client, id: id, key: key, prefix: prefix)
            c.send(.response(requestID: id, ServiceResponse(status: .ok)), wake: wake)
        case .hello, .response, .watchEvent:
            c.send(
                .response(
                    requestID: 0, ServiceResponse(status: .badRequest, body: Array("clients send requests, local reads and watches only".utf8))),
                wake: wake)
        }
    }

    func drop(_ c: Connection) {
        guard !c.closed.exchange(true, ordering: .relaxed) else { return }
        connections[c.descriptor] = nil
        c.close()
        node.closeSession(c.client)
    }
}
