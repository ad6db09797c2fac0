/// What a member and its bulk channel need from a network. The seam speaks
/// in member ranks (indices into the configured member list, this member's
/// own included) and in buffers the transport owns: a sender writes its
/// frame straight into a buffer the transport hands out (registered memory
/// for a verbs transport, a `sendmmsg` slot for UDP), and a receiver reads
/// each frame where the transport received it. Nothing in it is a socket
/// type: a transport without a file descriptor (verbs polls its completion
/// queue) says so through ``readiness``.
///
/// ``UDPTransport`` implements it for real sockets and `VerbsTransport`
/// (CarillonVerbs) for libibverbs; the simulator keeps its own in-memory
/// network and never stands in for either.
///
/// Calls come from one thread at a time (the runtime's send lock and agent
/// thread); a transport needs no locking of its own.
public protocol FrameTransport: AnyObject {
    /// This member's rank.
    var rank: Int { get }
    /// Members the transport addresses (ranks `0..<memberCount`).
    var memberCount: Int { get }
    /// The longest frame a send buffer takes.
    var maxFrameBytes: Int { get }
    /// Hands `fill` a send buffer of ``maxFrameBytes`` the transport owns;
    /// `fill` writes one frame at its start and returns its length (0: send
    /// nothing). The frame then goes to every other member (a fan-out or one
    /// multicast send). A frame the network cannot take now is lost to its
    /// peers and counted (``TransportCounters/datagramsNotSent``): the
    /// ordering protocol repairs it like any loss.
    func sendToAll(filling fill: (UnsafeMutableRawBufferPointer) -> Int) throws(SystemCallError)
    /// As ``sendToAll(filling:)``, to the member of rank `rank` only (the bulk
    /// channel's point-to-point path). Returns false when the transport cannot
    /// take the frame now (a full socket buffer, no free send buffer): nothing
    /// was sent and the caller offers it again later — backpressure, not a drop.
    func send(toRank rank: Int, filling fill: (UnsafeMutableRawBufferPointer) -> Int) throws(SystemCallError) -> Bool
    /// Takes in up to one batch of arrived frames without blocking, calling
    /// `handler` for each (its bytes are valid only during the call); returns
    /// how many were handed over.
    @discardableResult
    func receiveFrames(_ handler: (UnsafeRawBufferPointer, ReceivedFrame) -> Void) throws(SystemCallError) -> Int
    /// Whether the last ``receiveFrames(_:)`` took a full batch (more may be waiting).
    var lastBatchFilled: Bool { get }
    /// How an idle thread waits for frames.
    var readiness: TransportReadiness { get }
    /// Counters of the transport itself.
    var counters: TransportCounters { get }
    /// What the transport is, for logs (`udp 10.0.0.1:7000`, `rdma mlx5_0 port 1`).
    var summary: String { get }
}

extension FrameTransport {
    /// Sends a frame already encoded elsewhere (copied into a transport buffer).
    public func sendToAll(copying frame: UnsafeRawBufferPointer) throws(SystemCallError) {
        try sendToAll { buffer in
            guard frame.count <= buffer.count else { return 0 }
            buffer.copyMemory(from: frame)
            return frame.count
        }
    }
}

/// How a thread with nothing to do waits for a transport's frames.
public enum TransportReadiness: Sendable, Hashable {
    /// The descriptor becomes readable when frames wait (`ppoll`).
    case descriptor(Int32)
    /// No descriptor: frames are seen only by polling (a verbs completion
    /// queue). A parked thread wakes at least every `intervalNanos` to poll.
    case polled(intervalNanos: UInt64)
}

/// Facts about one received frame besides its bytes.
public struct ReceivedFrame: Sendable, Hashable {
    /// The sender's rank, when the transport can tell (nil: an unknown
    /// source, or several members behind one address); frames name their
    /// sender inside, and authentication decides whether to believe it.
    public var sourceRank: Int?
    /// Kernel receive time (CLOCK_REALTIME, SO_TIMESTAMPNS), when the transport gave one.
    public var kernelTimestampNanos: Int64?

    public init(sourceRank: Int?, kernelTimestampNanos: Int64?) {
        self.sourceRank = sourceRank
        self.kernelTimestampNanos = kernelTimestampNanos
    }
}

/// Facts about one received UDP datagram besides its bytes (``UDPTransport``'s
/// address-level API, for raw baselines and tools).
public struct ReceivedDatagram: Sendable {
    public var source: UDPEndpoint
    /// Kernel receive time (CLOCK_REALTIME, SO_TIMESTAMPNS), when the kernel gave one.
    public var kernelTimestampNanos: Int64?
}

/// Transport-level counters (the protocol's are in `OrderingCounters`).
public struct TransportCounters: Sendable, Hashable {
    public var datagramsSent = 0
    public var sendCalls = 0
    /// Datagrams the kernel refused for lack of buffer space (EAGAIN/ENOBUFS): the
    /// protocol repairs them like loss.
    public var datagramsNotSent = 0
    public var datagramsReceived = 0
    public var receiveCalls = 0
    /// Datagrams longer than the receive buffer, dropped.
    public var datagramsTruncated = 0
    /// Datagrams dropped on purpose by ``LossInjection``.
    public var datagramsDroppedByInjection = 0
    public init() {}
}

/// Seeded loss at the transport seam, for real-network tests that cannot use
/// nftables: drops arriving datagrams in bursts so that about `rate` of them
/// are lost. Deterministic for a seed and an arrival sequence.
public struct LossInjection: Sendable, Hashable {
    public var rate: Double
    /// Mean length of a burst of consecutive drops.
    public var meanBurst: Int
    public var seed: UInt64

    public init(rate: Double, meanBurst: Int = 1, seed: UInt64) {
        self.rate = rate
        self.meanBurst = max(1, meanBurst)
        self.seed = seed
    }
}

/// The state of a ``LossInjection``.
struct LossInjector {
    let startProbability: Double
    let meanBurst: Int
    var state: UInt64
    var burstLeft = 0

    init(_ injection: LossInjection) {
        let rate = min(max(injection.rate, 0), 0.99)
        // A burst of mean B starts with probability p per datagram outside a burst:
        // dropped fraction p·B / (1 + p·B) = rate.
        startProbability = rate / (Double(injection.meanBurst) * (1 - rate))
        meanBurst = injection.meanBurst
        state = injection.seed | 1
    }

    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }

    mutating func shouldDrop() -> Bool {
        if burstLeft > 0 { burstLeft -= 1; return true }
        guard Double(next() >> 11) * 0x1.0p-53 < startProbability else { return false }
        // Burst length uniform in 1...(2B − 1), mean B.
        burstLeft = Int(next() % UInt64(2 * meanBurst - 1))
        return true
    }
}

/// Exposes ``LossInjection``'s decisions without a socket, for tests.
public struct LossInjectorProbe {
    var injector: LossInjector
    public init(_ injection: LossInjection) { injector = LossInjector(injection) }
    public mutating func drop() -> Bool { injector.shouldDrop() }
}
