// A Corosync CPG (closed process group) client for the comparison benchmarks.
//
// libcpg is loaded at run time with dlopen/dlsym, so carillon-bench builds and
// runs on machines without Corosync and only the Corosync benchmarks need it.
// The C declarations below are written from the facts of Corosync 3's public
// headers (corosync/cpg.h and corosync/corotypes.h, libcpg.so.4); no header is
// needed at build time.

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// libcpg could not be loaded: Corosync's client library is not installed.
///
/// Its description names the package to install, so a command-line user can
/// act on it directly.
struct CPGUnavailable: Error, CustomStringConvertible {
    /// The Debian packages that provide the daemon, its tools and `libcpg.so.4`.
    static let installCommand = "apt-get install -y corosync libcpg4"

    /// What the dynamic loader said (`dlerror()`), or which symbol was missing.
    let detail: String

    var description: String {
        "Corosync CPG is not available: \(detail). Install it with: \(Self.installCommand)"
    }
}

/// A libcpg call returned something other than `CS_OK`.
struct CPGError: Error, CustomStringConvertible, Equatable {
    /// The libcpg function that failed, e.g. `cpg_join`.
    let operation: String
    /// The raw `cs_error_t` value.
    let code: Int32

    /// The `cs_error_t` constant's name, e.g. `CS_ERR_TRY_AGAIN`.
    var name: String { CPGStatus.name(of: code) }

    var description: String {
        var text = "\(operation) failed: \(name) (\(code))"
        if code == CPGStatus.library {
            text += "; is a corosync daemon running in this network namespace?"
        }
        return text
    }
}

/// `cs_error_t` values that the client acts on (corotypes.h).
enum CPGStatus {
    static let ok: Int32 = 1  // CS_OK
    static let library: Int32 = 2  // CS_ERR_LIBRARY: no daemon, or connection lost
    static let tryAgain: Int32 = 6  // CS_ERR_TRY_AGAIN
    static let badHandle: Int32 = 9  // CS_ERR_BAD_HANDLE

    static func name(of code: Int32) -> String {
        switch code {
        case 1: "CS_OK"
        case 2: "CS_ERR_LIBRARY"
        case 3: "CS_ERR_VERSION"
        case 4: "CS_ERR_INIT"
        case 5: "CS_ERR_TIMEOUT"
        case 6: "CS_ERR_TRY_AGAIN"
        case 7: "CS_ERR_INVALID_PARAM"
        case 8: "CS_ERR_NO_MEMORY"
        case 9: "CS_ERR_BAD_HANDLE"
        case 10: "CS_ERR_BUSY"
        case 11: "CS_ERR_ACCESS"
        case 12: "CS_ERR_NOT_EXIST"
        case 13: "CS_ERR_NAME_TOO_LONG"
        case 14: "CS_ERR_EXIST"
        case 15: "CS_ERR_NO_SPACE"
        case 16: "CS_ERR_INTERRUPT"
        case 17: "CS_ERR_NAME_NOT_FOUND"
        case 18: "CS_ERR_NO_RESOURCES"
        case 19: "CS_ERR_NOT_SUPPORTED"
        case 20: "CS_ERR_BAD_OPERATION"
        case 21: "CS_ERR_FAILED_OPERATION"
        case 22: "CS_ERR_MESSAGE_ERROR"
        case 23: "CS_ERR_QUEUE_FULL"
        case 24: "CS_ERR_QUEUE_NOT_AVAILABLE"
        case 25: "CS_ERR_BAD_FLAGS"
        case 26: "CS_ERR_TOO_BIG"
        case 27: "CS_ERR_NO_SECTIONS"
        case 28: "CS_ERR_CONTEXT_NOT_FOUND"
        case 30: "CS_ERR_TOO_MANY_GROUPS"
        case 100: "CS_ERR_SECURITY"
        default: "cs_error_t \(code)"
        }
    }
}

// MARK: - The C interface, declared by hand

/// Memory layout facts of libcpg's public types (Corosync 3, LP64).
private enum CPGLayout {
    /// `struct cpg_name { uint32_t length; char value[CPG_MAX_NAME_LENGTH]; }`
    static let nameValueOffset = 4
    static let maxNameLength = 128  // CPG_MAX_NAME_LENGTH
    static let nameSize = 4 + 128
    /// `struct cpg_address { uint32_t nodeid; uint32_t pid; uint32_t reason; }`
    static let addressSize = 12
    static let membersMax = 128  // CPG_MEMBERS_MAX
    /// `cpg_guarantee_t`: UNORDERED = 0, FIFO = 1 (documented as the same as
    /// agreed), AGREED = 2, SAFE = 3 (UNORDERED and SAFE are not implemented).
    static let guaranteeAgreed: Int32 = 2
    /// `cs_dispatch_flags_t`: ONE = 1, ALL = 2, BLOCKING = 3, ONE_NONBLOCKING = 4.
    /// ALL runs every pending callback without waiting for one.
    static let dispatchAll: Int32 = 2
    /// `cpg_flow_control_state_t`: DISABLED = 0, ENABLED = 1.
    static let flowControlEnabled: Int32 = 1
}

// cpg_handle_t is uint64_t; enums (cs_error_t and the rest) are C ints; size_t is Int.
private typealias CPGDeliverFn =
    @convention(c) (
        _ handle: UInt64, _ group: UnsafeRawPointer?, _ nodeID: UInt32, _ pid: UInt32,
        _ message: UnsafeMutableRawPointer?, _ length: Int
    ) -> Void
private typealias CPGConfchgFn =
    @convention(c) (
        _ handle: UInt64, _ group: UnsafeRawPointer?,
        _ members: UnsafeRawPointer?, _ memberCount: Int,
        _ left: UnsafeRawPointer?, _ leftCount: Int,
        _ joined: UnsafeRawPointer?, _ joinedCount: Int
    ) -> Void

/// The libcpg entry points, resolved once per process.
private final class CPGLibrary: @unchecked Sendable {
    typealias Initialize = @convention(c) (UnsafeMutablePointer<UInt64>?, UnsafeMutableRawPointer?) -> Int32
    typealias HandleOnly = @convention(c) (UInt64) -> Int32
    typealias FDGet = @convention(c) (UInt64, UnsafeMutablePointer<Int32>?) -> Int32
    typealias ContextGet = @convention(c) (UInt64, UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32
    typealias ContextSet = @convention(c) (UInt64, UnsafeMutableRawPointer?) -> Int32
    typealias Dispatch = @convention(c) (UInt64, Int32) -> Int32
    typealias Join = @convention(c) (UInt64, UnsafeRawPointer?) -> Int32
    typealias McastJoined = @convention(c) (UInt64, Int32, UnsafePointer<iovec>?, UInt32) -> Int32
    typealias MembershipGet =
        @convention(c) (
            UInt64, UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, UnsafeMutablePointer<Int32>?
        ) -> Int32
    typealias UInt32Get = @convention(c) (UInt64, UnsafeMutablePointer<UInt32>?) -> Int32
    typealias Int32Get = @convention(c) (UInt64, UnsafeMutablePointer<Int32>?) -> Int32

    let initialize: Initialize
    let finalize: HandleOnly
    let fdGet: FDGet
    let contextGet: ContextGet
    let contextSet: ContextSet
    let dispatch: Dispatch
    let join: Join
    let mcastJoined: McastJoined
    let membershipGet: MembershipGet
    let localGet: UInt32Get
    let flowControlStateGet: Int32Get
    let maxAtomicMessageSizeGet: UInt32Get

    /// The library's soname; the unversioned `libcpg.so` exists only with libcpg-dev.
    static let soname = "libcpg.so.4"

    /// Loaded on first use; a failure is kept, so every caller sees the same error.
    static let shared: Result<CPGLibrary, CPGUnavailable> = {
        do throws(CPGUnavailable) { return .success(try CPGLibrary()) } catch { return .failure(error) }
    }()

    private init() throws(CPGUnavailable) {
        guard let library = dlopen(Self.soname, RTLD_NOW | RTLD_LOCAL) else {
            let reason = dlerror().map { String(cString: $0) } ?? "dlopen failed"
            throw CPGUnavailable(detail: "\(Self.soname) could not be loaded (\(reason))")
        }
        func symbol<F>(_ name: String, as type: F.Type) throws(CPGUnavailable) -> F {
            guard let address = dlsym(library, name) else {
                throw CPGUnavailable(detail: "\(Self.soname) has no symbol \(name); Corosync 3 is required")
            }
            return unsafeBitCast(address, to: type)
        }
        initialize = try symbol("cpg_initialize", as: Initialize.self)
        finalize = try symbol("cpg_finalize", as: HandleOnly.self)
        fdGet = try symbol("cpg_fd_get", as: FDGet.self)
        contextGet = try symbol("cpg_context_get", as: ContextGet.self)
        contextSet = try symbol("cpg_context_set", as: ContextSet.self)
        dispatch = try symbol("cpg_dispatch", as: Dispatch.self)
        join = try symbol("cpg_join", as: Join.self)
        mcastJoined = try symbol("cpg_mcast_joined", as: McastJoined.self)
        membershipGet = try symbol("cpg_membership_get", as: MembershipGet.self)
        localGet = try symbol("cpg_local_get", as: UInt32Get.self)
        flowControlStateGet = try symbol("cpg_flow_control_state_get", as: Int32Get.self)
        maxAtomicMessageSizeGet = try symbol("cpg_max_atomic_msgsize_get", as: UInt32Get.self)
        // The handle is never dlclose'd: the functions are used for the process's lifetime.
    }

    /// Throws ``CPGUnavailable`` when libcpg.so.4 cannot be loaded.
    static func load() throws(CPGUnavailable) -> CPGLibrary {
        switch shared {
        case .success(let library): return library
        case .failure(let error): throw error
        }
    }
}

// MARK: - The client

/// One process's membership of a Corosync closed process group (CPG), used as
/// the comparison peer in carillon-bench.
///
/// The client talks to the corosync daemon of the network namespace it runs in
/// (libqb's IPC endpoints are abstract Unix sockets, which are scoped per network
/// namespace, plus ring buffers in `/dev/shm`). Start the process with
/// ``CorosyncCluster/clientCommandPrefix(host:)``.
///
/// Messages are sent with the agreed (totally ordered) guarantee and delivered,
/// to every member including the sender, through ``onDeliver`` while
/// ``dispatch(blocking:)`` runs. The class is not thread-safe: use one instance
/// from one thread.
///
/// ```swift
/// let client = try CPGClient(group: "bench")
/// client.onDeliver = { nodeID, pid, payload in ... }
/// while running { try client.dispatch(blocking: true) }
/// ```
///
/// libcpg is loaded at run time; without it, ``init(group:timeoutMilliseconds:)``
/// throws ``CPGUnavailable``.
///
/// Sending and delivering allocate nothing per message (checked with a
/// malloc-counting preload: 0 calls over 90,000 deliveries); what
/// ``onDeliver`` does is the caller's.
final class CPGClient {
    /// What ``multicast(_:)`` did with a message.
    enum SendResult: Equatable {
        /// Accepted by the local daemon; it will be delivered to every member in agreed order.
        case ok
        /// The daemon's queue is full (`CS_ERR_TRY_AGAIN`): dispatch pending
        /// deliveries, then send again. ``multicastRetrying(_:timeoutMilliseconds:)`` does that.
        case tryAgain
        /// Any other `cs_error_t`.
        case failed(CPGError)
    }

    /// The group this client joined.
    let group: String

    /// The descriptor that becomes readable when ``dispatch(blocking:)`` has work;
    /// poll it to multiplex the client with other descriptors.
    let fileDescriptor: Int32

    /// Called for every delivered message, in agreed order, during ``dispatch(blocking:)``.
    ///
    /// `nodeID` is the sender's Corosync node id and `pid` its process id. The
    /// buffer is libcpg's and is valid only during the call; copy what you keep.
    var onDeliver: (_ nodeID: UInt32, _ pid: UInt32, _ payload: UnsafeRawBufferPointer) -> Void = { _, _, _ in }

    /// Called when processes join or leave the group (including this one's own
    /// join), with the number of processes in the group after the change.
    var onConfigurationChange: (_ memberCount: Int) -> Void = { _ in }

    /// The number of processes in the group as of the last configuration change; 0 before the first.
    private(set) var memberCount = 0

    private let library: CPGLibrary
    private let handle: UInt64
    private var finalized = false

    /// Connects to the local corosync daemon and joins `group`.
    ///
    /// `CS_ERR_TRY_AGAIN` while the daemon is synchronising is retried until
    /// `timeoutMilliseconds` has passed.
    ///
    /// - Throws: ``CPGUnavailable`` when libcpg.so.4 is not installed, or
    ///   ``CPGError`` (`CS_ERR_LIBRARY` when no daemon is reachable from this
    ///   network namespace, `CS_ERR_NAME_TOO_LONG` for a name over 128 bytes).
    init(group: String, timeoutMilliseconds: Int = 5_000) throws {
        let library = try CPGLibrary.load()
        guard group.utf8.count <= CPGLayout.maxNameLength else {
            throw CPGError(operation: "cpg_join", code: 13)  // CS_ERR_NAME_TOO_LONG
        }
        let deadline = CPGClock.nanoseconds() + UInt64(timeoutMilliseconds) * 1_000_000

        var newHandle: UInt64 = 0
        _ = try Self.retrying("cpg_initialize", until: deadline) {
            withUnsafeTemporaryAllocation(of: UnsafeRawPointer?.self, capacity: 2) { callbacks in
                // cpg_callbacks_t: { cpg_deliver_fn_t; cpg_confchg_fn_t }; libcpg copies it.
                callbacks[0] = unsafeBitCast(CPGTrampolines.deliver, to: UnsafeRawPointer.self)
                callbacks[1] = unsafeBitCast(CPGTrampolines.confchg, to: UnsafeRawPointer.self)
                return library.initialize(&newHandle, UnsafeMutableRawPointer(callbacks.baseAddress))
            }
        }
        self.library = library
        self.handle = newHandle
        self.group = group

        var fd: Int32 = -1
        let fdStatus = library.fdGet(newHandle, &fd)
        self.fileDescriptor = fd
        // From here on deinit finalizes the handle if a later step throws.
        guard fdStatus == CPGStatus.ok else { throw CPGError(operation: "cpg_fd_get", code: fdStatus) }

        let contextStatus = library.contextSet(newHandle, Unmanaged.passUnretained(self).toOpaque())
        guard contextStatus == CPGStatus.ok else {
            throw CPGError(operation: "cpg_context_set", code: contextStatus)
        }
        _ = try Self.retrying("cpg_join", until: deadline) {
            Self.withName(group) { library.join(newHandle, $0) }
        }
    }

    deinit {
        finalize()
    }

    /// `nil` when libcpg.so.4 can be loaded, otherwise the reason (with the apt line).
    static func libraryUnavailable() -> CPGUnavailable? {
        if case .failure(let error) = CPGLibrary.shared { return error }
        return nil
    }

    /// Sends `bytes` to every member of the group, this process included, with
    /// the agreed (total order) guarantee.
    ///
    /// Each call is a synchronous round trip to the local daemon over libqb
    /// IPC. Returns ``SendResult/tryAgain`` under flow control: call
    /// ``dispatch(blocking:)`` (with `false`) and retry. Messages up to
    /// ``maxAtomicMessageSize()`` go as one unit.
    func multicast(_ bytes: UnsafeRawBufferPointer) -> SendResult {
        var vector = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
        let status = library.mcastJoined(handle, CPGLayout.guaranteeAgreed, &vector, 1)
        switch status {
        case CPGStatus.ok: return .ok
        case CPGStatus.tryAgain: return .tryAgain
        default: return .failed(CPGError(operation: "cpg_mcast_joined", code: status))
        }
    }

    /// Sends `bytes` like ``multicast(_:)``, and while flow control refuses it,
    /// dispatches pending deliveries (waiting up to 1 ms for one) and retries.
    ///
    /// - Throws: ``CPGError`` for any other failure, or `CS_ERR_TIMEOUT` when the
    ///   message was still refused after `timeoutMilliseconds`.
    func multicastRetrying(_ bytes: UnsafeRawBufferPointer, timeoutMilliseconds: Int = 10_000) throws {
        var deadline: UInt64 = 0
        while true {
            switch multicast(bytes) {
            case .ok: return
            case .failed(let error): throw error
            case .tryAgain:
                let now = CPGClock.nanoseconds()
                if deadline == 0 {
                    deadline = now + UInt64(timeoutMilliseconds) * 1_000_000
                } else if now >= deadline {
                    throw CPGError(operation: "cpg_mcast_joined", code: 5)  // CS_ERR_TIMEOUT
                }
                if waitForEvents(timeoutMilliseconds: 1) { try dispatch(blocking: false) }
            }
        }
    }

    /// Runs the callbacks for pending deliveries and configuration changes.
    ///
    /// With `blocking` false it runs everything that is pending and returns at
    /// once (possibly having run nothing). With `blocking` true it first waits
    /// until there is at least one event. For a bounded wait, call
    /// ``waitForEvents(timeoutMilliseconds:)`` first and dispatch without blocking.
    ///
    /// - Throws: ``CPGError``, e.g. `CS_ERR_LIBRARY` when the daemon has gone.
    func dispatch(blocking: Bool) throws {
        if blocking { _ = waitForEvents(timeoutMilliseconds: -1) }
        let status = library.dispatch(handle, CPGLayout.dispatchAll)
        // CS_DISPATCH_ALL reports "nothing pending" as CS_OK in Corosync 3, TRY_AGAIN in some versions.
        guard status == CPGStatus.ok || status == CPGStatus.tryAgain else {
            throw CPGError(operation: "cpg_dispatch", code: status)
        }
    }

    /// Waits until ``fileDescriptor`` is readable (an event or a hang-up is
    /// pending) or the timeout passes; -1 waits without bound. Returns whether
    /// it became ready.
    func waitForEvents(timeoutMilliseconds: Int32) -> Bool {
        var entry = pollfd(fd: fileDescriptor, events: Int16(POLLIN), revents: 0)
        while true {
            let ready = poll(&entry, 1, timeoutMilliseconds)
            if ready >= 0 { return ready > 0 }
            if errno != EINTR { return true }  // let cpg_dispatch report the failure
        }
    }

    /// This daemon's Corosync node id (the `nodeid` of its nodelist entry).
    func localNodeID() throws -> UInt32 {
        var nodeID: UInt32 = 0
        let status = library.localGet(handle, &nodeID)
        guard status == CPGStatus.ok else { throw CPGError(operation: "cpg_local_get", code: status) }
        return nodeID
    }

    /// Whether the daemon currently asks senders to hold back (`CPG_FLOW_CONTROL_ENABLED`).
    func flowControlEnabled() throws -> Bool {
        var state: Int32 = 0
        let status = library.flowControlStateGet(handle, &state)
        guard status == CPGStatus.ok else {
            throw CPGError(operation: "cpg_flow_control_state_get", code: status)
        }
        return state == CPGLayout.flowControlEnabled
    }

    /// The largest message that is sent as one unit.
    func maxAtomicMessageSize() throws -> Int {
        var size: UInt32 = 0
        let status = library.maxAtomicMessageSizeGet(handle, &size)
        guard status == CPGStatus.ok else {
            throw CPGError(operation: "cpg_max_atomic_msgsize_get", code: status)
        }
        return Int(size)
    }

    /// The group's current processes as (node id, process id) pairs, asked of the daemon.
    func members() throws -> [(nodeID: UInt32, pid: UInt32)] {
        let capacity = CPGLayout.membersMax
        let list = UnsafeMutableRawPointer.allocate(byteCount: capacity * CPGLayout.addressSize, alignment: 4)
        defer { list.deallocate() }
        var count = Int32(capacity)
        let status = Self.withName(group) { name in
            library.membershipGet(handle, UnsafeMutableRawPointer(mutating: name), list, &count)
        }
        guard status == CPGStatus.ok else { throw CPGError(operation: "cpg_membership_get", code: status) }
        return (0..<min(Int(count), capacity)).map { index in
            let base = index * CPGLayout.addressSize
            return (list.load(fromByteOffset: base, as: UInt32.self), list.load(fromByteOffset: base + 4, as: UInt32.self))
        }
    }

    /// Leaves the group and closes the connection; later calls fail with
    /// `CS_ERR_BAD_HANDLE`. Safe to call more than once; `deinit` calls it.
    func finalize() {
        guard !finalized else { return }
        finalized = true
        _ = library.finalize(handle)
    }

    // MARK: Callback routing

    fileprivate func deliver(nodeID: UInt32, pid: UInt32, message: UnsafeMutableRawPointer?, length: Int) {
        onDeliver(nodeID, pid, UnsafeRawBufferPointer(start: message, count: message == nil ? 0 : length))
    }

    fileprivate func configurationChanged(memberCount: Int) {
        self.memberCount = memberCount
        onConfigurationChange(memberCount)
    }

    /// The instance registered for `handle` with cpg_context_set: a table lookup, no allocation.
    fileprivate static func instance(for handle: UInt64) -> CPGClient? {
        guard case .success(let library) = CPGLibrary.shared else { return nil }
        var context: UnsafeMutableRawPointer?
        guard library.contextGet(handle, &context) == CPGStatus.ok, let context else { return nil }
        return Unmanaged<CPGClient>.fromOpaque(context).takeUnretainedValue()
    }

    // MARK: Helpers

    /// Calls `body` with a `struct cpg_name` holding `name` (at most 128 bytes, not NUL-terminated).
    private static func withName<R>(_ name: String, _ body: (UnsafeRawPointer) -> R) -> R {
        withUnsafeTemporaryAllocation(byteCount: CPGLayout.nameSize, alignment: 4) { buffer in
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            let bytes = Array(name.utf8.prefix(CPGLayout.maxNameLength))
            buffer.storeBytes(of: UInt32(bytes.count), toByteOffset: 0, as: UInt32.self)
            for (index, byte) in bytes.enumerated() {
                buffer[CPGLayout.nameValueOffset + index] = byte
            }
            return body(UnsafeRawPointer(buffer.baseAddress!))
        }
    }

    /// Repeats `call` while it returns CS_ERR_TRY_AGAIN, backing off up to 50 ms, until `deadline`.
    private static func retrying(_ operation: String, until deadline: UInt64, _ call: () -> Int32) throws -> Int32 {
        var pause: UInt32 = 1_000
        while true {
            let status = call()
            if status == CPGStatus.ok { return status }
            guard status == CPGStatus.tryAgain, CPGClock.nanoseconds() < deadline else {
                throw CPGError(operation: operation, code: status)
            }
            usleep(pause)
            pause = min(pause * 2, 50_000)
        }
    }
}

/// The C callbacks that libcpg calls; they find the Swift instance through the handle's context.
private enum CPGTrampolines {
    static let deliver: CPGDeliverFn = { handle, _, nodeID, pid, message, length in
        CPGClient.instance(for: handle)?.deliver(nodeID: nodeID, pid: pid, message: message, length: length)
    }

    static let confchg: CPGConfchgFn = { handle, _, _, memberCount, _, _, _, _ in
        CPGClient.instance(for: handle)?.configurationChanged(memberCount: memberCount)
    }
}

/// CLOCK_MONOTONIC in nanoseconds, for deadlines.
private enum CPGClock {
    static func nanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }
}
