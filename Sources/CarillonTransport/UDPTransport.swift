import CCarillonSys
import Glibc

/// How a member's UDP socket is set up.
public struct UDPTransportOptions: Sendable {
    /// Local address and port to bind.
    public var bind: UDPEndpoint
    /// Every other member's endpoint (unicast fan-out). Ignored when `multicastGroup` is set.
    public var peers: [UDPEndpoint]
    /// Send every frame once to this group and receive from it.
    public var multicastGroup: UDPEndpoint?
    /// Interface address (network byte order) for multicast; 0 lets the kernel choose.
    public var multicastInterface: UInt32 = 0
    public var multicastTTL: UInt8 = 1
    /// Whether this host's other sockets in the group hear our multicast sends.
    public var multicastLoopback = true
    /// Receive buffer per datagram; longer datagrams are dropped and counted.
    public var maxDatagramBytes = 9216
    /// Datagrams taken per `recvmmsg` call.
    public var receiveBatch = 32
    /// SO_RCVBUF / SO_SNDBUF request.
    public var socketBufferBytes = 4 << 20
    /// Seeded loss on arrival, for tests.
    public var lossInjection: LossInjection?

    /// Every member's endpoint by rank (this member's own included): what
    /// the rank-addressed ``FrameTransport`` API maps ranks to. With
    /// ``init(bind:peers:)`` it is `[bind] + peers` and this member is rank 0.
    public private(set) var members: [UDPEndpoint]
    /// This member's rank in ``members``.
    public private(set) var rank: Int

    /// A socket bound to `bind` that fans out to `peers` (rank 0 is `bind`, then the peers in order).
    public init(bind: UDPEndpoint, peers: [UDPEndpoint]) {
        self.bind = bind
        self.peers = peers
        members = [bind] + peers
        rank = 0
    }

    /// The socket of member `rank` of `members` (bound to `members[rank]`,
    /// fanning out to every other).
    public init(members: [UDPEndpoint], rank: Int) {
        precondition(members.indices.contains(rank), "rank \(rank) is not in the \(members.count) members")
        self.init(bind: members[rank], peers: members.enumerated().filter { $0.offset != rank }.map(\.element))
        self.members = members
        self.rank = rank
    }
}

/// Non-blocking UDP with batched I/O (`recvmmsg`/`sendmmsg`), kernel receive
/// timestamps, unicast fan-out or IP multicast. All buffers are allocated in
/// `init`; sending and receiving allocate nothing.
public final class UDPTransport: FrameTransport {
    public let options: UDPTransportOptions
    public let descriptor: Int32
    public private(set) var counters = TransportCounters()
    /// The bound endpoint (with the kernel's port when `bind.port` was 0).
    public let localEndpoint: UDPEndpoint

    let receiveSlots: UnsafeMutablePointer<carillon_datagram>
    let receiveMemory: UnsafeMutableRawPointer
    let sendSlots: UnsafeMutablePointer<carillon_datagram>
    let destinations: [sockaddr_in]
    /// Every member's address by rank, for `send(toRank:)` and for naming a frame's source.
    let memberAddresses: [sockaddr_in]
    /// The transport's own send buffers (``FrameTransport``): one for fan-out, one for point-to-point.
    let broadcastBuffer: UnsafeMutableRawBufferPointer
    let directBuffer: UnsafeMutableRawBufferPointer
    var loss: LossInjector?

    public var pollDescriptor: Int32 { descriptor }
    public var readiness: TransportReadiness { .descriptor(descriptor) }
    public var rank: Int { options.rank }
    public var memberCount: Int { options.members.count }
    public var maxFrameBytes: Int { options.maxDatagramBytes }
    public var summary: String { "udp \(localEndpoint)" + (options.multicastGroup.map { " multicast \($0)" } ?? "") }

    public init(options: UDPTransportOptions) throws(SystemCallError) {
        self.options = options
        let fd = try SystemCall.must(
            "socket", { socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) })
        descriptor = fd
        do {
            var one: Int32 = 1
            var size = Int32(options.socketBufferBytes)
            // Best effort: the kernel caps these at net.core.{r,w}mem_max.
            _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            try SystemCall.must("setsockopt(SO_TIMESTAMPNS)", { carillon_enable_rx_timestamps(fd) })

            var bindAddress = options.bind.socketAddress
            if let group = options.multicastGroup {
                // Several members on one host share the group's port; unicast sockets
                // never share (a second bind of a member's port is an error).
                try SystemCall.must(
                    "setsockopt(SO_REUSEADDR)", { setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size)) })
                try SystemCall.must(
                    "setsockopt(SO_REUSEPORT)", { setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size)) })
                bindAddress = UDPEndpoint(address: 0, port: group.port).socketAddress
                var request = ip_mreq(imr_multiaddr: in_addr(s_addr: group.address), imr_interface: in_addr(s_addr: options.multicastInterface))
                try SystemCall.must(
                    "setsockopt(IP_ADD_MEMBERSHIP)",
                    { setsockopt(fd, Int32(IPPROTO_IP), IP_ADD_MEMBERSHIP, &request, socklen_t(MemoryLayout<ip_mreq>.size)) })
                var interface = in_addr(s_addr: options.multicastInterface)
                try SystemCall.must(
                    "setsockopt(IP_MULTICAST_IF)",
                    { setsockopt(fd, Int32(IPPROTO_IP), IP_MULTICAST_IF, &interface, socklen_t(MemoryLayout<in_addr>.size)) })
                var ttl = UInt8(options.multicastTTL)
                try SystemCall.must("setsockopt(IP_MULTICAST_TTL)", { setsockopt(fd, Int32(IPPROTO_IP), IP_MULTICAST_TTL, &ttl, socklen_t(1)) })
                var loop: UInt8 = options.multicastLoopback ? 1 : 0
                try SystemCall.must("setsockopt(IP_MULTICAST_LOOP)", { setsockopt(fd, Int32(IPPROTO_IP), IP_MULTICAST_LOOP, &loop, socklen_t(1)) })
            }
            _ = try withUnsafePointer(to: &bindAddress) { pointer throws(SystemCallError) in
                try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address throws(SystemCallError) in
                    try SystemCall.must("bind(\(options.bind))", { Glibc.bind(fd, address, socklen_t(MemoryLayout<sockaddr_in>.size)) })
                }
            }
            var bound = sockaddr_in()
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = try withUnsafeMutablePointer(to: &bound) { pointer throws(SystemCallError) in
                try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address throws(SystemCallError) in
                    try SystemCall.must("getsockname", { getsockname(fd, address, &length) })
                }
            }
            localEndpoint = UDPEndpoint(
                address: options.multicastGroup == nil ? bound.sin_addr.s_addr : options.bind.address,
                port: UInt16(bigEndian: bound.sin_port))
        } catch {
            close(fd)
            throw error
        }

        let batch = max(1, min(options.receiveBatch, 64))
        receiveSlots = .allocate(capacity: batch)
        receiveMemory = .allocate(byteCount: batch * options.maxDatagramBytes, alignment: 64)
        for i in 0..<batch {
            receiveSlots[i] = carillon_datagram()
            receiveSlots[i].buffer = receiveMemory + i * options.maxDatagramBytes
            receiveSlots[i].capacity = options.maxDatagramBytes
        }
        if let group = options.multicastGroup {
            destinations = [group.socketAddress]
        } else {
            destinations = options.peers.map(\.socketAddress)
        }
        memberAddresses = options.members.map(\.socketAddress)
        broadcastBuffer = .allocate(byteCount: options.maxDatagramBytes, alignment: 64)
        directBuffer = .allocate(byteCount: options.maxDatagramBytes, alignment: 64)
        sendSlots = .allocate(capacity: max(1, destinations.count))
        for i in destinations.indices {
            sendSlots[i] = carillon_datagram()
            sendSlots[i].address = destinations[i]
        }
        loss = options.lossInjection.map(LossInjector.init)
    }

    deinit {
        close(descriptor)
        receiveSlots.deallocate()
        receiveMemory.deallocate()
        sendSlots.deallocate()
        broadcastBuffer.deallocate()
        directBuffer.deallocate()
    }

    // MARK: - FrameTransport (ranks and the transport's own buffers)

    public func sendToAll(filling fill: (UnsafeMutableRawBufferPointer) -> Int) throws(SystemCallError) {
        let length = fill(broadcastBuffer)
        guard length > 0 else { return }
        precondition(length <= broadcastBuffer.count, "a frame longer than the send buffer it was written into")
        try sendToAll(UnsafeRawBufferPointer(start: broadcastBuffer.baseAddress, count: length))
    }

    public func send(toRank rank: Int, filling fill: (UnsafeMutableRawBufferPointer) -> Int) throws(SystemCallError) -> Bool {
        precondition(memberAddresses.indices.contains(rank), "rank \(rank) is not one of the \(memberAddresses.count) members")
        let length = fill(directBuffer)
        guard length > 0 else { return true }
        precondition(length <= directBuffer.count, "a frame longer than the send buffer it was written into")
        return try send(UnsafeRawBufferPointer(start: directBuffer.baseAddress, count: length), to: options.members[rank])
    }

    @discardableResult
    public func receiveFrames(_ handler: (UnsafeRawBufferPointer, ReceivedFrame) -> Void) throws(SystemCallError) -> Int {
        try receive { bytes, address, kernelTimestampNanos in
            handler(bytes, ReceivedFrame(sourceRank: rank(of: address), kernelTimestampNanos: kernelTimestampNanos))
        }
    }

    /// The rank whose address sent a datagram (nil: none, this member's
    /// own, or a multicast sender, whose source port is the group's and may be
    /// shared by several members of one host). An exact match first, then a
    /// member bound to 0.0.0.0 on that port. A linear scan: at most 35
    /// members, no allocation.
    @inline(__always) func rank(of address: sockaddr_in) -> Int? {
        guard options.multicastGroup == nil else { return nil }
        var wildcard: Int?
        for (rank, member) in memberAddresses.enumerated() where rank != options.rank && member.sin_port == address.sin_port {
            if member.sin_addr.s_addr == address.sin_addr.s_addr { return rank }
            if member.sin_addr.s_addr == 0, wildcard == nil { wildcard = rank }
        }
        return wildcard
    }

    public func sendToAll(_ frame: UnsafeRawBufferPointer) throws(SystemCallError) {
        let count = destinations.count
        guard count > 0 else { return }
        for i in 0..<count {
            sendSlots[i].buffer = UnsafeMutableRawPointer(mutating: frame.baseAddress)
            sendSlots[i].capacity = frame.count
        }
        var sent = 0
        while sent < count {
            counters.sendCalls += 1
            let slots = sendSlots + sent
            let remaining = UInt32(count - sent)
            let fd = descriptor
            do {
                guard let n = try SystemCall.run("sendmmsg", { carillon_send_batch(fd, slots, remaining) }), n > 0 else {
                    // Socket buffer full: what is not sent now is lost to the peers
                    // and comes back through NAK and repair, like any other loss.
                    counters.datagramsNotSent += count - sent
                    return
                }
                sent += Int(n)
                counters.datagramsSent += Int(n)
            } catch  where error.errno == ENOBUFS || error.errno == ECONNREFUSED {
                // ECONNREFUSED: an ICMP port-unreachable from an earlier send to a peer that is not up yet.
                counters.datagramsNotSent += 1
                sent += 1
            }
        }
    }

    /// Sends one datagram to `destination` (the bulk channel's point-to-point
    /// path). Returns false when the socket's buffer is full (`EAGAIN`): the
    /// caller keeps the datagram and tries again later — backpressure, not a drop.
    public func send(_ datagram: UnsafeRawBufferPointer, to destination: UDPEndpoint) throws(SystemCallError) -> Bool {
        var address = destination.socketAddress
        let fd = descriptor
        counters.sendCalls += 1
        let result = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, datagram.baseAddress, datagram.count, Int32(MSG_DONTWAIT), $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if result >= 0 {
            counters.datagramsSent += 1
            return true
        }
        switch errno {
        case EAGAIN, EWOULDBLOCK, EINTR:
            return false
        case ENOBUFS, ECONNREFUSED:
            // As for sendToAll: lost to the peer, recovered by the sender's retransmission.
            counters.datagramsNotSent += 1
            return true
        case let code:
            throw SystemCallError(call: "sendto(\(destination))", errno: code)
        }
    }

    /// Whether the last ``receiveBatch(_:)`` took a full batch (more may be waiting).
    public private(set) var lastBatchFilled = false

    /// Takes in up to one batch of datagrams without blocking, naming each one's source address.
    @discardableResult
    public func receiveBatch(_ handler: (UnsafeRawBufferPointer, ReceivedDatagram) -> Void) throws(SystemCallError) -> Int {
        try receive { bytes, address, kernelTimestampNanos in
            handler(bytes, ReceivedDatagram(source: UDPEndpoint(address), kernelTimestampNanos: kernelTimestampNanos))
        }
    }

    /// One `recvmmsg` batch: each whole datagram not dropped by injection to
    /// `body`, with its source address and kernel receive time (nil: none given).
    @inline(__always)
    func receive(_ body: (UnsafeRawBufferPointer, sockaddr_in, Int64?) -> Void) throws(SystemCallError) -> Int {
        let fd = descriptor, slots = receiveSlots
        let batch = UInt32(max(1, min(options.receiveBatch, 64)))
        counters.receiveCalls += 1
        lastBatchFilled = false
        let received: Int32
        do {
            guard let n = try SystemCall.run("recvmmsg", { carillon_recv_batch(fd, slots, batch) }) else { return 0 }
            received = n
        } catch  where error.errno == ECONNREFUSED {
            return 0  // a stale ICMP error from an earlier send; nothing to read
        }
        var handed = 0
        lastBatchFilled = Int(received) == Int(batch)
        for i in 0..<Int(received) {
            counters.datagramsReceived += 1
            let slot = slots[i]
            if slot.truncated != 0 { counters.datagramsTruncated += 1; continue }
            if loss != nil, loss!.shouldDrop() { counters.datagramsDroppedByInjection += 1; continue }
            body(
                UnsafeRawBufferPointer(start: slot.buffer, count: slot.length), slot.address,
                slot.kernel_timestamp_ns >= 0 ? slot.kernel_timestamp_ns : nil)
            handed += 1
        }
        return handed
    }
}
