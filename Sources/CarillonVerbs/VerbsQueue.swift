/// Where a member's unreliable-datagram queue pair is reached: what a peer
/// needs to build an address handle and send to it. Exchanged over the UDP
/// rendezvous (``VerbsHello``).
public struct VerbsAddress: Sendable, Hashable, CustomStringConvertible {
    /// The port's GID (16 bytes, network order), used for RoCE and routed InfiniBand.
    public var gid: [UInt8]
    /// The port's LID (InfiniBand; 0 on RoCE).
    public var lid: UInt16
    /// The queue pair number.
    public var queuePair: UInt32
    /// The queue key every datagram to this queue pair carries.
    public var queueKey: UInt32

    public init(gid: [UInt8], lid: UInt16, queuePair: UInt32, queueKey: UInt32) {
        precondition(gid.count == 16, "a GID is 16 bytes")
        self.gid = gid
        self.lid = lid
        self.queuePair = queuePair
        self.queueKey = queueKey
    }

    public static let encodedBytes = 26

    public var description: String {
        let hex = stride(from: 0, to: 16, by: 2).map { i in
            String(UInt16(gid[i]) << 8 | UInt16(gid[i + 1]), radix: 16)
        }
        return "gid \(hex.joined(separator: ":")) lid \(lid) qpn \(queuePair)"
    }
}

/// An address handle for one peer, made by ``VerbsQueue/addressHandle(for:)``
/// (an `ibv_ah` pointer's bits for libibverbs, an index for a fake).
public struct VerbsAddressHandle: Sendable, Hashable {
    public let raw: UInt
    public init(raw: UInt) { self.raw = raw }
}

/// One work completion, as ``VerbsQueue/poll(_:into:)`` reports it.
public struct VerbsCompletion: Sendable, Hashable {
    /// The work request's id (the transport's buffer slot).
    public var id: UInt64
    /// Whether the work request completed successfully (`IBV_WC_SUCCESS`).
    public var succeeded: Bool
    /// The `ibv_wc_status` value, for counters and logs.
    public var status: UInt32
    /// Bytes received (the 40-byte GRH included), for a receive.
    public var byteCount: Int
    /// The sending queue pair, for a receive.
    public var sourceQueuePair: UInt32

    public init(id: UInt64, succeeded: Bool, status: UInt32 = 0, byteCount: Int = 0, sourceQueuePair: UInt32 = 0) {
        self.id = id
        self.succeeded = succeeded
        self.status = status
        self.byteCount = byteCount
        self.sourceQueuePair = sourceQueuePair
    }
}

/// Which of a queue pair's two completion queues to poll.
public enum VerbsCompletionQueue: Sendable, Hashable {
    case send
    case receive
}

/// The few verbs a ``VerbsTransport`` calls: one unreliable-datagram queue
/// pair with its protection domain and its two completion queues. The real
/// one is ``LibVerbsQueue`` (libibverbs); tests drive the transport's
/// buffer pool, receive ring and completion handling through a fake of this
/// protocol over plain memory, so that logic runs on a machine without an
/// RDMA device.
public protocol VerbsQueue: AnyObject {
    /// This queue pair's address, for peers.
    var address: VerbsAddress { get }
    /// The longest send the NIC copies at post time (`max_inline_data`); such a send frees its buffer at once.
    var maxInlineBytes: Int { get }
    /// The longest datagram: the port's active MTU (a UD message is one packet).
    var maxMessageBytes: Int { get }
    /// Registers `memory` for sends and receives; returns its local key.
    func register(_ memory: UnsafeMutableRawBufferPointer) throws(VerbsError) -> UInt32
    /// An address handle for sending to `peer`.
    func addressHandle(for peer: VerbsAddress) throws(VerbsError) -> VerbsAddressHandle
    /// Releases a handle made by ``addressHandle(for:)``.
    func release(_ handle: VerbsAddressHandle)
    /// Posts a receive into `buffer` (registered under `key`); its completion carries `id`.
    func postReceive(id: UInt64, into buffer: UnsafeMutableRawBufferPointer, key: UInt32) throws(VerbsError)
    /// Posts a signalled send of `bytes` (registered under `key`) to `peer`
    /// through `handle`, copied at post time when `inline`; its completion carries `id`.
    func postSend(id: UInt64, _ bytes: UnsafeRawBufferPointer, key: UInt32, to handle: VerbsAddressHandle, peer: VerbsAddress, inline: Bool)
        throws(VerbsError)
    /// Takes up to `completions.count` completions from one queue without blocking.
    func poll(_ queue: VerbsCompletionQueue, into completions: UnsafeMutableBufferPointer<VerbsCompletion>) throws(VerbsError) -> Int
    /// Destroys the queue pair, then every address handle not yet released,
    /// and deregisters memory: after it returns the NIC touches none of the
    /// registered buffers, so they may be freed. Calls after it do nothing.
    func close()
}

/// What went wrong opening or driving RDMA, said so that an operator knows what to do.
public enum VerbsError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kernel has no RDMA support (`ibv_get_device_list` failed with ENOSYS).
    case noKernelSupport
    /// libibverbs found no device.
    case noDevice
    /// The configured device is not among those found.
    case deviceNotFound(name: String, available: [String])
    /// The port is not on the device, or not active.
    case portNotActive(device: String, port: Int, state: String)
    /// Opening or registering was refused (permissions, or the locked-memory limit for registration).
    case permissionDenied(call: String, errno: Int32)
    /// The configured GID index is not in the port's table.
    case noGID(device: String, port: Int, index: Int?)
    /// A bus frame does not fit one datagram on this port.
    case frameLargerThanMTU(frameBytes: Int, mtuBytes: Int)
    /// Any other verb that failed, with its errno.
    case call(String, errno: Int32)

    /// What to do when RDMA is unavailable and the configuration allows UDP instead.
    public static let fallbackHint = "Set \"rdma\": {\"fallback\": \"udp\"} in the configuration to run over UDP instead"

    public var description: String {
        switch self {
        case .noKernelSupport:
            return
                "no RDMA support in this kernel (ibv_get_device_list: ENOSYS): load the NIC's RDMA driver (for example mlx5_ib) or soft-RoCE (modprobe rdma_rxe; rdma link add rxe0 type rxe netdev IFACE)"
        case .noDevice:
            return
                "no RDMA device: libibverbs found none (check `carillon devices`, the NIC's RDMA driver, or add soft-RoCE: rdma link add rxe0 type rxe netdev IFACE)"
        case .deviceNotFound(let name, let available):
            return "no RDMA device named \(name) (found: \(available.isEmpty ? "none" : available.joined(separator: ", ")))"
        case .portNotActive(let device, let port, let state):
            return "port \(port) of \(device) is \(state), not active: check the link (ibv_devinfo, rdma link)"
        case .permissionDenied(let call, let errno):
            return
                "\(call) was refused (errno \(errno)): run as a user with access to /dev/infiniband, and raise the locked-memory limit (ulimit -l, LimitMEMLOCK=) for memory registration"
        case .noGID(let device, let port, let index):
            return "port \(port) of \(device) has no usable GID\(index.map { " at index \($0)" } ?? "") (list them with `carillon devices`)"
        case .frameLargerThanMTU(let frame, let mtu):
            return
                "frames of \(frame) bytes do not fit one datagram on this port (active MTU \(mtu) bytes): lower max_frame_bytes to \(mtu) or raise the link's MTU"
        case .call(let call, let errno):
            return "\(call) failed (errno \(errno))"
        }
    }
}
