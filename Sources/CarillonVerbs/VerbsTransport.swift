import CCarillonSys
import CarillonTransport
import Glibc

/// How a ``VerbsTransport`` is laid out.
public struct VerbsTransportOptions: Sendable {
    /// This member's rank.
    public var rank: Int
    /// Every member's UDP endpoint, by rank: where hellos (``VerbsHello``)
    /// are exchanged. The bus's own endpoints; nothing else is sent there.
    public var rendezvous: [UDPEndpoint]
    /// The longest frame (the bus's `max_frame_bytes`); at most the port's MTU.
    public var maxFrameBytes: Int
    /// Send buffers in the registered pool (a buffer is in use until every
    /// send from it completes, or only while posting for an inline send).
    public var sendBuffers = 128
    /// Receive buffers kept posted (each a 40-byte GRH and a frame).
    public var receiveBuffers = 512
    /// Completions taken per poll.
    public var completionBatch = 32
    /// How often a parked thread wakes to poll the completion queue (no descriptor to wait on).
    public var pollIntervalNanos: UInt64 = 50_000
    /// How often a hello goes out while a peer's address is unknown.
    public var helloIntervalNanos: UInt64 = 100_000_000
    /// How often the rendezvous socket is read once every address is known
    /// (a restarted peer announces a new queue pair).
    public var rendezvousCheckNanos: UInt64 = 10_000_000

    public init(rank: Int, rendezvous: [UDPEndpoint], maxFrameBytes: Int) {
        self.rank = rank
        self.rendezvous = rendezvous
        self.maxFrameBytes = maxFrameBytes
    }
}

/// The bus over RDMA: one unreliable-datagram queue pair per member, frames
/// sent to each peer through an address handle (the same fan-out and the
/// same loss model as UDP, so the ordering protocol is unchanged;
/// docs/rdma.md says why UD and not RC rings).
///
/// Memory: one region allocated and registered at start, cut into
/// ``VerbsTransportOptions/sendBuffers`` send buffers of `maxFrameBytes`
/// and ``VerbsTransportOptions/receiveBuffers`` receive buffers of 40 + `maxFrameBytes`
/// (a UD receive starts with the GRH). A sender writes its frame straight
/// into a send buffer (``sendToAll(filling:)``); frames up to the NIC's
/// inline limit are copied at post time and free their buffer at once.
/// Receives are handed over where they landed and the buffer is posted
/// again. Nothing is allocated per frame.
///
/// The completion queues have no descriptor here: ``readiness`` is
/// `.polled`, and the member's duty cycle polls them.
public final class VerbsTransport: FrameTransport {
    /// Bytes of the global routing header at the start of every UD receive.
    public static let grhBytes = 40

    public let options: VerbsTransportOptions
    public private(set) var counters = TransportCounters()
    /// Verbs-specific counts, beside ``counters``.
    public private(set) var verbsCounters = VerbsCounters()
    public private(set) var peers: VerbsPeerTable
    public var lastBatchFilled = false

    let queue: any VerbsQueue
    let region: UnsafeMutableRawBufferPointer
    let key: UInt32
    let sendStride: Int
    let receiveStride: Int
    /// Free send buffers (a stack of indices) and, per buffer, sends still posted from it.
    var freeSends: [Int]
    var sendsPosted: [Int]
    var handles: [VerbsAddressHandle?]
    /// Handles of addresses a peer has replaced, released once no send is outstanding (a send in flight may still use one).
    var replacedHandles: [VerbsAddressHandle] = []
    /// Sends posted and not yet completed (each is signalled).
    var outstandingSends = 0
    /// Receive completions, and send completions apart: a handler that sends while receives are being handed over must not overwrite them.
    let completions: UnsafeMutableBufferPointer<VerbsCompletion>
    let sendCompletions: UnsafeMutableBufferPointer<VerbsCompletion>
    let rendezvousSocket: UDPTransport
    let start: UInt64
    let clock: () -> UInt64
    var nextHelloNanos: UInt64 = 0
    var nextRendezvousNanos: UInt64 = 0

    /// Receive work requests carry this bit; sends carry their buffer index (or ``inlineSend``).
    static let receiveBit: UInt64 = 1 << 63
    static let inlineSend: UInt64 = (1 << 62)

    public var rank: Int { options.rank }
    public var memberCount: Int { options.rendezvous.count }
    public var maxFrameBytes: Int { options.maxFrameBytes }
    public var readiness: TransportReadiness { .polled(intervalNanos: options.pollIntervalNanos) }
    public var summary: String { "rdma ud \(queue.address) (rendezvous \(rendezvousSocket.localEndpoint))" }

    /// Registers the buffers, posts every receive and opens the rendezvous
    /// socket; sends the first hello. `clock` is monotonic nanoseconds (an input, for tests).
    public init(queue: any VerbsQueue, options: VerbsTransportOptions, clock: @escaping () -> UInt64 = VerbsTransport.monotonicNanos)
        throws(VerbsError)
    {
        precondition(options.rendezvous.indices.contains(options.rank), "rank \(options.rank) is not one of the \(options.rendezvous.count) members")
        precondition(options.sendBuffers > 0 && options.receiveBuffers > 0 && options.completionBatch > 0, "a verbs transport needs buffers")
        guard options.maxFrameBytes <= queue.maxMessageBytes else {
            throw .frameLargerThanMTU(frameBytes: options.maxFrameBytes, mtuBytes: queue.maxMessageBytes)
        }
        self.options = options
        self.queue = queue
        self.clock = clock
        sendStride = (options.maxFrameBytes + 63) & ~63
        receiveStride = (Self.grhBytes + options.maxFrameBytes + 63) & ~63
        region = .allocate(byteCount: sendStride * options.sendBuffers + receiveStride * options.receiveBuffers, alignment: 4096)
        region.initializeMemory(as: UInt8.self, repeating: 0)
        completions = .allocate(capacity: options.completionBatch)
        completions.initialize(repeating: VerbsCompletion(id: 0, succeeded: false))
        sendCompletions = .allocate(capacity: options.completionBatch)
        sendCompletions.initialize(repeating: VerbsCompletion(id: 0, succeeded: false))
        freeSends = Array((0..<options.sendBuffers).reversed())
        sendsPosted = Array(repeating: 0, count: options.sendBuffers)
        handles = Array(repeating: nil, count: options.rendezvous.count)
        peers = VerbsPeerTable(rank: options.rank, memberCount: options.rendezvous.count)
        // CLOCK_REALTIME: a later start of a member is a larger value, across
        // processes and reboots (peers keep the largest they heard).
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        start = UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
        do {
            key = try queue.register(region)
            rendezvousSocket = try UDPTransport(
                options: {
                    var o = UDPTransportOptions(members: options.rendezvous, rank: options.rank)
                    o.maxDatagramBytes = 256
                    o.receiveBatch = 8
                    o.socketBufferBytes = 256 << 10
                    return o
                }())
        } catch let error as VerbsError {
            queue.close()
            region.deallocate()
            completions.deallocate()
            sendCompletions.deallocate()
            throw error
        } catch {
            queue.close()
            region.deallocate()
            completions.deallocate()
            sendCompletions.deallocate()
            throw .call("the rendezvous socket on \(options.rendezvous[options.rank]): \(error)", errno: 0)
        }
        for slot in 0..<options.receiveBuffers { try postReceive(slot) }
        announce(answerMe: true)
        nextHelloNanos = clock() + options.helloIntervalNanos
    }

    deinit {
        // The NIC must be done with the region before it is freed: closing
        // destroys the queue pair, then its address handles and registrations.
        queue.close()
        region.deallocate()
        completions.deallocate()
        sendCompletions.deallocate()
    }

    public static func monotonicNanos() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
    }

    // MARK: - Buffers

    @inline(__always) func sendBuffer(_ slot: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: region[(slot * sendStride)..<(slot * sendStride + options.maxFrameBytes)])
    }

    @inline(__always) func receiveBuffer(_ slot: Int) -> UnsafeMutableRawBufferPointer {
        let base = sendStride * options.sendBuffers + slot * receiveStride
        return UnsafeMutableRawBufferPointer(rebasing: region[base..<(base + Self.grhBytes + options.maxFrameBytes)])
    }

    func postReceive(_ slot: Int) throws(VerbsError) {
        try queue.postReceive(id: Self.receiveBit | UInt64(slot), into: receiveBuffer(slot), key: key)
    }

    /// Takes in every waiting send completion: a buffer is free again once
    /// every send from it has completed; replaced address handles go once
    /// nothing is outstanding.
    func reclaimSends() {
        var n = 0
        repeat {
            n = (try? queue.poll(.send, into: sendCompletions)) ?? 0
            outstandingSends = max(0, outstandingSends - n)
            for i in 0..<n {
                let c = sendCompletions[i]
                if !c.succeeded {
                    verbsCounters.sendFailures += 1
                    counters.datagramsNotSent += 1
                }
                guard c.id & Self.inlineSend == 0 else { continue }
                let slot = Int(c.id)
                guard sendsPosted.indices.contains(slot), sendsPosted[slot] > 0 else { continue }
                sendsPosted[slot] -= 1
                if sendsPosted[slot] == 0 { freeSends.append(slot) }
            }
        } while n == sendCompletions.count
        if outstandingSends == 0, !replacedHandles.isEmpty {
            for handle in replacedHandles { queue.release(handle) }
            replacedHandles.removeAll(keepingCapacity: true)
        }
    }

    /// What became of one post.
    enum Posted { case posted, unknownPeer, queueFull }

    /// Posts the frame in buffer `slot` (`length` bytes) to `rank`.
    @inline(__always) func post(slot: Int, length: Int, to rank: Int) -> Posted {
        guard let handle = handles[rank], let peer = peers.peers[rank] else {
            verbsCounters.unknownPeer += 1
            counters.datagramsNotSent += 1
            return .unknownPeer
        }
        let inline = length <= queue.maxInlineBytes
        do {
            try queue.postSend(
                id: inline ? Self.inlineSend | UInt64(slot) : UInt64(slot), UnsafeRawBufferPointer(rebasing: sendBuffer(slot)[0..<length]), key: key,
                to: handle, peer: peer.address, inline: inline)
        } catch {
            // A full send queue: for a fan-out, lost to this peer and repaired like any loss.
            verbsCounters.sendQueueFull += 1
            counters.datagramsNotSent += 1
            return .queueFull
        }
        if inline { verbsCounters.inlineSends += 1 } else { sendsPosted[slot] += 1 }
        outstandingSends += 1
        counters.datagramsSent += 1
        return .posted
    }

    // MARK: - FrameTransport

    public func sendToAll(filling fill: (UnsafeMutableRawBufferPointer) -> Int) throws(SystemCallError) {
        counters.sendCalls += 1
        reclaimSends()
        guard let slot = freeSends.popLast() else {
            verbsCounters.noSendBuffer += 1
            counters.datagramsNotSent += memberCount - 1
            return
        }
        let length = fill(sendBuffer(slot))
        if length > 0 {
            precondition(length <= options.maxFrameBytes, "a frame longer than the send buffer it was written into")
            for peer in 0..<memberCount where peer != rank { _ = post(slot: slot, length: length, to: peer) }
        }
        if sendsPosted[slot] == 0 { freeSends.append(slot) }
    }

    public func send(toRank target: Int, filling fill: (UnsafeMutableRawBufferPointer) -> Int) throws(SystemCallError) -> Bool {
        precondition((0..<memberCount).contains(target), "rank \(target) is not one of the \(memberCount) members")
        counters.sendCalls += 1
        // Completions free send-queue entries as well as buffers.
        reclaimSends()
        // No free buffer: backpressure (the caller offers the frame again).
        guard let slot = freeSends.popLast() else {
            verbsCounters.noSendBuffer += 1
            return false
        }
        let length = fill(sendBuffer(slot))
        var taken = true
        if length > 0 {
            precondition(length <= options.maxFrameBytes, "a frame longer than the send buffer it was written into")
            // A full send queue is backpressure here; an unknown peer is a loss (its retransmission recovers it).
            taken = post(slot: slot, length: length, to: target) != .queueFull
        }
        if sendsPosted[slot] == 0 { freeSends.append(slot) }
        return taken
    }

    @discardableResult
    public func receiveFrames(_ handler: (UnsafeRawBufferPointer, ReceivedFrame) -> Void) throws(SystemCallError) -> Int {
        counters.receiveCalls += 1
        let now = clock()
        if now >= nextRendezvousNanos { serviceRendezvous(now: now) }
        lastBatchFilled = false
        let n: Int
        do { n = try queue.poll(.receive, into: completions) } catch {
            throw SystemCallError(call: "ibv_poll_cq (receive)", errno: EIO)
        }
        lastBatchFilled = n == completions.count
        var handed = 0
        for i in 0..<n {
            let c = completions[i]
            let slot = Int(c.id & ~Self.receiveBit)
            guard c.id & Self.receiveBit != 0, (0..<options.receiveBuffers).contains(slot) else { continue }
            counters.datagramsReceived += 1
            if c.succeeded {
                if c.byteCount < Self.grhBytes || c.byteCount > Self.grhBytes + options.maxFrameBytes {
                    counters.datagramsTruncated += 1
                } else {
                    let frame = UnsafeRawBufferPointer(rebasing: receiveBuffer(slot)[Self.grhBytes..<c.byteCount])
                    handler(frame, ReceivedFrame(sourceRank: peers.rank(ofQueuePair: c.sourceQueuePair), kernelTimestampNanos: nil))
                    handed += 1
                }
            } else {
                verbsCounters.receiveFailures += 1
            }
            do { try postReceive(slot) } catch { verbsCounters.repostFailures += 1 }
        }
        // Send completions too, so that buffers come back while nothing is sent.
        reclaimSends()
        return handed
    }

    // MARK: - Rendezvous

    /// Sends this member's hello to every peer (`answerMe`: while some address is unknown).
    func announce(answerMe: Bool) {
        let hello = VerbsHello(rank: rank, memberCount: memberCount, answerMe: answerMe, start: start, address: queue.address).encoded
        hello.withUnsafeBytes { bytes in try? rendezvousSocket.sendToAll(copying: bytes) }
        verbsCounters.hellosSent += 1
    }

    /// Reads waiting hellos and learns from them; re-announces while a peer is unknown.
    func serviceRendezvous(now: UInt64) {
        var answerTo: [Int] = []
        repeat {
            _ = try? rendezvousSocket.receiveFrames { bytes, _ in
                guard let hello = VerbsHello(bytes) else {
                    verbsCounters.strayRendezvous += 1
                    return
                }
                switch peers.learn(hello) {
                case .ignored:
                    verbsCounters.strayRendezvous += 1
                case .unchanged(let answer):
                    if answer { answerTo.append(hello.rank) }
                case .learnt(let rank, _):
                    if let old = handles[rank] { replacedHandles.append(old) }
                    handles[rank] = try? queue.addressHandle(for: hello.address)
                    if handles[rank] == nil {
                        // Not reachable yet (a RoCE neighbour not resolved): forgotten, so its next hello tries again.
                        verbsCounters.addressHandleFailures += 1
                        peers.forget(rank)
                    }
                    verbsCounters.addressesLearnt += 1
                    answerTo.append(rank)
                }
            }
        } while rendezvousSocket.lastBatchFilled
        if !answerTo.isEmpty {
            let hello = VerbsHello(rank: rank, memberCount: memberCount, answerMe: false, start: start, address: queue.address).encoded
            for peer in Set(answerTo) {
                _ = try? rendezvousSocket.send(toRank: peer) { buffer in
                    buffer.copyBytes(from: hello)
                    return hello.count
                }
            }
        }
        if !peers.complete, now >= nextHelloNanos {
            announce(answerMe: true)
            nextHelloNanos = now + options.helloIntervalNanos
        }
        nextRendezvousNanos = now + (peers.complete ? options.rendezvousCheckNanos : options.pollIntervalNanos)
    }

    /// Exchanges hellos until every peer's address is known or `timeoutNanos`
    /// pass (receiving nothing else meanwhile); true when all are known.
    public func awaitPeers(timeoutNanos: UInt64) -> Bool {
        let deadline = clock() + timeoutNanos
        while !peers.complete {
            let now = clock()
            guard now < deadline else { return false }
            serviceRendezvous(now: now)
            if !peers.complete { _ = carillon_wait_readable(rendezvousSocket.descriptor, Int64(min(options.helloIntervalNanos, deadline - now))) }
        }
        return true
    }
}

/// What a ``VerbsTransport`` counts besides ``TransportCounters``.
public struct VerbsCounters: Sendable, Hashable {
    /// Sends copied at post time (their buffer was free again at once).
    public var inlineSends = 0
    /// Frames not sent for want of a free send buffer.
    public var noSendBuffer = 0
    /// Posts refused (a full send queue).
    public var sendQueueFull = 0
    /// Frames not sent to a peer whose address is not known yet.
    public var unknownPeer = 0
    /// Completions with an error status.
    public var sendFailures = 0
    public var receiveFailures = 0
    /// Receive buffers that could not be posted again (the ring shrank).
    public var repostFailures = 0
    /// Hellos sent, addresses learnt or changed, address handles that could not be made, and datagrams on the rendezvous port that were not hellos for this bus.
    public var hellosSent = 0
    public var addressesLearnt = 0
    public var addressHandleFailures = 0
    public var strayRendezvous = 0
    public init() {}
}
