/// What the runtime needs from a network: send a frame to every peer, take
/// in whatever has arrived, and a descriptor to wait on. The UDP transport
/// implements it for real sockets; the simulator keeps its own in-memory
/// network and never stands in for this one.
public protocol FrameTransport: AnyObject {
    /// Sends one frame to every other member (unicast fan-out or one multicast send).
    func sendToAll(_ frame: UnsafeRawBufferPointer) throws(SystemCallError)
    /// Takes in up to one batch of waiting datagrams without blocking, calling
    /// `handler` for each; returns how many were handed over.
    @discardableResult
    func receiveBatch(_ handler: (UnsafeRawBufferPointer, ReceivedDatagram) -> Void) throws(SystemCallError) -> Int
    /// A descriptor that becomes readable when datagrams wait (for blocking idle strategies).
    var pollDescriptor: Int32 { get }
    /// Counters of the transport itself.
    var counters: TransportCounters { get }
}

/// Facts about one received datagram besides its bytes.
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
