@_exported import CarillonServices
import Dispatch
import Glibc
import Synchronization

/// A connection to a node's local client endpoint: one session. Its typed
/// calls (``ServiceCalls``: `acquire`, `release`, `get`, `put`, `compareAndSet`,
/// `add`, `list`, `locks`) are answered when the node's member has applied
/// them (or once stable, with `.safe`); requests may overlap.
///
/// ```swift
/// let client = try CarillonClient(path: "/tmp/carillon-7000-a.sock")
/// if let grant = try await client.acquire("printer", timeoutNanos: 5_000_000_000) {
///     defer { Task { try await client.release("printer") } }
///     print("holding printer with token", grant.token)
/// }
/// try await client.add("visits", 1)
/// ```
///
/// Closing the connection (``close()``, or the process ending) ends the
/// session: its locks are released at every member at that position.
public final class CarillonClient: ServiceCalls, @unchecked Sendable {
    /// Who serves this session (the node's first message).
    public let node: UInt16
    public let incarnation: UInt64
    public let client: UInt32
    /// Whether the node was in a primary component when the session opened.
    public let inPrimaryAtOpen: Bool

    let descriptor: Int32
    let sendLock = Mutex<Void>(())
    let waiting = Mutex<[UInt64: CheckedContinuation<ServiceResponse, any Error>]>([:])
    let watchers = Mutex<[UInt64: AsyncStream<WatchEvent>.Continuation]>([:])
    let nextID = Atomic<UInt64>(1)
    let closed = Atomic<Bool>(false)
    let readerDone = DispatchGroup()

    /// Connects and reads the node's hello; throws a clear error when no node
    /// serves `path`.
    public init(path: String) throws {
        let descriptor = try UnixSocket.connect(path)
        self.descriptor = descriptor
        var reader = ClientMessageReader()
        var hello: ClientMessage?
        var buffer = [UInt8](repeating: 0, count: 4096)
        while hello == nil {
            let n = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            guard n > 0 else {
                Glibc.close(descriptor)
                throw EndpointError(description: "the node at \(path) closed the connection before saying hello")
            }
            buffer.withUnsafeBytes { reader.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            hello = try reader.next()
        }
        guard case .hello(let node, let incarnation, let client, let inPrimary) = hello! else {
            Glibc.close(descriptor)
            throw EndpointError(description: "the node at \(path) did not start with a hello (is it a Carillon client socket?)")
        }
        self.node = node
        self.incarnation = incarnation
        self.client = client
        inPrimaryAtOpen = inPrimary
        readerDone.enter()
        let leftover = reader
        DispatchQueue(label: "carillon.client.reader").async { [self] in
            readLoop(leftover)
            readerDone.leave()
        }
    }

    deinit { close() }

    /// Whether the connection has ended (closed here, or by the node).
    public var isClosed: Bool { closed.load(ordering: .relaxed) }

    /// Ends the session and fails calls still waiting.
    public func close() {
        guard !closed.exchange(true, ordering: .relaxed) else { return }
        shutdown(descriptor, Int32(SHUT_RDWR))
        readerDone.wait()
        // Under the send lock: a send that checked `closed` before it was set
        // never writes to the descriptor number after it is reused.
        sendLock.withLock { _ in _ = Glibc.close(descriptor) }
    }

    public func request(service: UInt16, body: [UInt8], consistency: Consistency, capability: [UInt8]) async throws -> ServiceResponse {
        if capability.isEmpty { return try await send { .request(requestID: $0, consistency: consistency, service: service, body: body) } }
        return try await send {
            .capabilityRequest(requestID: $0, consistency: consistency, service: service, capability: capability, body: body)
        }
    }

    /// This node's replica's value of `key`, not ordered: it may be stale by
    /// the delivery latency, and may lag a write this client just made
    /// through another node.
    public func localRead(_ key: String) async throws -> StoredObject? {
        let r = try await send { .localRead(requestID: $0, key: key) }
        switch r.status {
        case .ok: return try ObjectStore.object(from: r.body)
        case .notFound: return nil
        default: throw ServiceCallError(r.status, "local read \(key)")
        }
    }

    /// Changes of `key` (every key starting with it when `prefix`), in bus
    /// order, from the node's next applied event on. The stream ends when the
    /// session does.
    public func watch(_ key: String, prefix: Bool = false) async throws -> AsyncStream<WatchEvent> {
        let (stream, continuation) = AsyncStream<WatchEvent>.makeStream()
        let r = try await send { id in
            watchers.withLock { $0[id] = continuation }
            return .watch(requestID: id, key: key, prefix: prefix)
        }
        guard r.status == .ok else { throw ServiceCallError(r.status, "watch \(key)") }
        return stream
    }

    /// Sends the message `make` builds for the next request id. Ids are taken
    /// and sent under one lock, so the node sees them in increasing order
    /// (it acknowledges below the lowest unanswered one).
    func send(_ make: (UInt64) -> ClientMessage) async throws -> ServiceResponse {
        try await withCheckedThrowingContinuation { continuation in
            guard !closed.load(ordering: .relaxed) else {
                continuation.resume(throwing: ServiceCallError(.sessionEnded, "the connection is closed"))
                return
            }
            let (id, ok) = sendLock.withLock { _ -> (UInt64, Bool) in
                let id = nextID.add(1, ordering: .relaxed).oldValue
                let bytes = make(id).encoded()
                waiting.withLock { $0[id] = continuation }
                // Closed meanwhile (the descriptor may be gone): fail, never write.
                if closed.load(ordering: .relaxed) { return (id, false) }
                var sent = 0
                while sent < bytes.count {
                    let n = bytes.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
                    if n < 0 { if errno == EINTR { continue }; return (id, false) }
                    sent += n
                }
                return (id, true)
            }
            if !ok, let c = waiting.withLock({ $0.removeValue(forKey: id) }) {
                c.resume(throwing: ServiceCallError(.sessionEnded, "the node closed the connection"))
            }
        }
    }

    func readLoop(_ start: ClientMessageReader) {
        var reader = start
        var buffer = [UInt8](repeating: 0, count: 65_536)
        func drain() -> Bool {
            while true {
                guard let message = try? reader.next() else { return true }
                dispatch(message)
            }
        }
        _ = drain()
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { break }
            buffer.withUnsafeBytes { reader.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            do {
                while let message = try reader.next() { dispatch(message) }
            } catch { break }
        }
        closed.store(true, ordering: .relaxed)
        let pending = waiting.withLock { w -> [CheckedContinuation<ServiceResponse, any Error>] in
            defer { w = [:] }
            return Array(w.values)
        }
        for c in pending {
            c.resume(
                throwing: ServiceCallError(
                    .sessionEnded, "the node closed the connection (stopped, or left out of a view): the session's locks are released"))
        }
        for w in watchers.withLock({ w in
            defer { w = [:] }; return Array(w.values)
        }) { w.finish() }
    }

    func dispatch(_ message: ClientMessage) {
        switch message {
        case .response(let id, let response):
            waiting.withLock { $0.removeValue(forKey: id) }?.resume(returning: response)
        case .watchEvent(let id, let kind, let key, let version, let position, let value):
            _ = watchers.withLock { $0[id] }?.yield(WatchEvent(kind: kind, key: key, version: version, position: position, value: value))
        default:
            break
        }
    }
}
