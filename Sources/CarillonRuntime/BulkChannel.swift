import CCarillonSys
import CarillonAuth
import CarillonBulk
import CarillonSchedule
import CarillonTransport
import Glibc
import Logging
import Synchronization

/// How a bulk channel authenticates its datagrams. There is no default:
/// running without tags is a decision written down (``off``), and logged.
public enum BulkAuthentication: Sendable {
    /// Every datagram is sealed and checked under a subkey of this cluster key
    /// bound to the run; datagrams that fail are dropped and counted.
    case clusterKey(FrameAuthenticator)
    /// No tags: any host that reaches the port can inject transfers, and
    /// replay recorded ones. Only for closed test networks; logged as a warning.
    case off
}

/// Settings of one member's bulk channel.
///
/// Beside a ``Member``, ``init(member:)`` takes everything from it: endpoints,
/// the cluster key, the run identity and the incarnations. Alone, give the
/// authentication, this process's incarnation and how to learn each peer's.
public struct BulkChannelConfiguration: Sendable {
    /// This member's index in ``nodes``.
    public var node: Int
    /// Every member's bulk endpoint (by convention the bus port + 1).
    public var nodes: [UDPEndpoint]
    /// Datagram authentication; set by `init`, off only when said so there.
    public var authentication: BulkAuthentication
    /// The run the channel's datagrams belong to: the tag's key is derived
    /// from the cluster key and it, so datagrams of another run fail the tag.
    /// Read every millisecond; the key follows a change.
    public var runIdentity: @Sendable () -> UInt64
    /// This process's current incarnation (fresh on every start). Datagrams
    /// carry it, and a receiver refuses datagrams addressed to any other
    /// incarnation of itself. Read every millisecond.
    public var incarnation: @Sendable () -> UInt64
    /// A peer's current incarnation (from the membership view), or nil when
    /// unknown: nothing is sent to a peer of unknown incarnation (transfers
    /// to it wait), and a transfer in flight to a peer that restarted starts
    /// over. Read every millisecond.
    public var peerIncarnation: @Sendable (_ node: Int) -> UInt64?
    /// Where the channel logs its start and its warnings.
    public var logger = Logger(label: "carillon.bulk")
    public var pacing: BulkPacing = .gated
    /// The rate of the link the bulk channel shares with the bus (the
    /// bottleneck: the sender's interface or the switch port beyond it).
    public var linkBitsPerSecond: UInt64 = 1_000_000_000
    /// The bus's share of the link; ``/CarillonBulk/BulkPacing/paced`` takes 1 − this.
    public var reservation: Double = 0.5
    /// See ``/CarillonBulk/BulkPacer/marginNanos``.
    public var marginNanos: UInt64 = 20_000
    public var transfer = BulkTransferConfiguration()
    /// Drops received datagrams at random (tests of the channel's reliability).
    public var lossInjection: LossInjection?

    /// A channel of its own: `authentication` has no default; `incarnation`
    /// is this process's (fresh on every start), `runIdentity` the run's, and
    /// `peerIncarnation` says which incarnation of each peer to address.
    public init(
        node: Int, nodes: [UDPEndpoint], authentication: BulkAuthentication, runIdentity: UInt64 = 0,
        incarnation: UInt64, peerIncarnation: @escaping @Sendable (_ node: Int) -> UInt64?
    ) {
        self.node = node
        self.nodes = nodes
        self.authentication = authentication
        self.runIdentity = { runIdentity }
        self.incarnation = { incarnation }
        self.peerIncarnation = peerIncarnation
    }

    /// The channel beside `member`: its node, the bus endpoints with the port
    /// one higher, its reservation, and — taken from the member, so the
    /// channel authenticates whenever the bus does — its cluster key (or
    /// `.off` when the member runs without one), run identity, incarnation, and
    /// each peer's incarnation from the member's current view.
    public init(member: Member) {
        let configuration = member.configuration
        node = configuration.node
        nodes = Self.endpoints(besideBus: configuration.nodes)
        switch configuration.authentication {
        case .clusterKey(let key): authentication = .clusterKey(key)
        case .off: authentication = .off
        }
        reservation = configuration.ordering.schedule.reservation
        runIdentity = { [weak member] in member?.runIdentity ?? 0 }
        incarnation = { [weak member] in member?.incarnation ?? configuration.incarnation }
        peerIncarnation = { [weak member] node in
            member?.view?.members.first { Int($0.node) == node }?.incarnation
        }
    }

    /// Checks that a full datagram of these settings fits the unreserved
    /// part of `schedule`'s rounds when ``pacing`` is gated (a gated channel
    /// that cannot fit one never sends).
    public func validate(against schedule: TDMASchedule) throws(BulkPacingError) {
        let pacer = BulkPacer(pacing: pacing, linkBitsPerSecond: linkBitsPerSecond, reservation: reservation, marginNanos: marginNanos)
        let tag = clusterKey == nil ? 0 : FrameAuthenticator.tagBytes
        try pacer.validate(datagramBytes: BulkWire.headerBytes + transfer.chunkBytes + tag, schedule: schedule)
    }

    /// The cluster key, when the channel authenticates.
    public var clusterKey: FrameAuthenticator? {
        if case .clusterKey(let key) = authentication { return key }
        return nil
    }

    /// Each node's bus endpoint with the port one higher.
    public static func endpoints(besideBus nodes: [UDPEndpoint]) -> [UDPEndpoint] {
        nodes.map { UDPEndpoint(address: $0.address, port: $0.port &+ 1) }
    }
}

/// What a bulk channel has done, for operators and benchmarks.
public struct BulkChannelCounters: Sendable, Hashable {
    public var sender = BulkSenderCounters()
    public var receiver = BulkReceiverCounters()
    public var transport = TransportCounters()
    public var acksSent = 0
    /// Acknowledgements refused because they were addressed to another
    /// incarnation of this member, or came from another incarnation of the
    /// peer than the one this member sends to (replays across a restart).
    public var acksWrongIncarnation = 0
    /// Datagrams refused: malformed, with a bad tag, or without one.
    public var malformed = 0
    public var badTag = 0
    public var missingTag = 0
    /// Times the socket buffer was full (the datagram waited; nothing was dropped).
    public var socketFull = 0
    /// Sends that waited for the unreserved part of a round (gated) or for the pacer.
    public var pacedWaits = 0
    /// Datagrams the kernel refused with an error other than a full buffer (counted as lost).
    public var sendErrors = 0
    public init() {}

    /// Datagrams refused as replays across a restart: addressed to another
    /// incarnation of this member, or from an incarnation of the sender older
    /// than the newest known (data and acknowledgements).
    public var replaysRefused: Int { receiver.wrongIncarnation + receiver.staleIncarnation + acksWrongIncarnation }
}

/// Reliable, unordered, point-to-point transfer of large data between
/// members, paced around the bus's reserved slots (docs/protocol.md, "Bulk
/// channel"). It has its own socket and thread; with a ``Member`` it gates on
/// that member's current schedule and clock.
///
/// Datagrams are authenticated under the run's subkey of the cluster key and
/// bound to both ends' incarnations, so one recorded before either end
/// restarted is refused and counted (``BulkChannelCounters/replaysRefused``).
///
/// ```swift
/// let bulk = try BulkChannel(member: member) { source, id, bytes in … }
/// try bulk.start()
/// if case .queueFull = bulk.send(snapshot, to: 2) { /* try again later */ }
/// ```
public final class BulkChannel: @unchecked Sendable {
    public typealias TransferHandler = (_ source: Int, _ transferID: UInt64, _ bytes: [UInt8]) -> Void

    public let configuration: BulkChannelConfiguration
    /// The channel's network: its own UDP socket by default, any ``FrameTransport`` given to
    /// ``init(configuration:transport:scheduleSource:clock:onTransfer:)``.
    let transport: any FrameTransport
    let sender: Mutex<BulkSender>
    let running = Atomic<Bool>(false)
    let published = Mutex(BulkChannelCounters())
    let scheduleSource: @Sendable () -> TDMASchedule?
    let clock: @Sendable () -> UInt64
    let onTransfer: TransferHandler
    var thread: pthread_t?

    /// - Parameters:
    ///   - configuration: the channel's socket, peers, key and pacing.
    ///   - scheduleSource: the bus's current schedule (nil: not in a view; gating falls back to pacing).
    ///   - clock: now, on the schedule's timebase.
    ///   - onTransfer: called on the channel's thread with each transfer received whole.
    public convenience init(
        configuration: BulkChannelConfiguration, scheduleSource: @escaping @Sendable () -> TDMASchedule?,
        clock: @escaping @Sendable () -> UInt64, onTransfer: @escaping TransferHandler
    ) throws(SystemCallError) {
        precondition(configuration.nodes.indices.contains(configuration.node), "node is not in nodes")
        try self.init(
            configuration: configuration, transport: try Self.udpTransport(for: configuration), scheduleSource: scheduleSource,
            clock: clock, onTransfer: onTransfer)
    }

    /// The UDP socket a bulk channel of `configuration` uses: bound to its
    /// node's endpoint, datagrams of a chunk with header and tag.
    public static func udpTransport(for configuration: BulkChannelConfiguration) throws(SystemCallError) -> UDPTransport {
        var options = UDPTransportOptions(members: configuration.nodes, rank: configuration.node)
        options.maxDatagramBytes = datagramBytes(for: configuration)
        options.socketBufferBytes = 4 << 20
        options.lossInjection = configuration.lossInjection
        return try UDPTransport(options: options)
    }

    /// The longest datagram a channel of `configuration` sends: a chunk with its header and tag.
    public static func datagramBytes(for configuration: BulkChannelConfiguration) -> Int {
        BulkWire.headerBytes + configuration.transfer.chunkBytes + FrameAuthenticator.tagBytes
    }

    /// A channel over `transport`, whose ranks are the configuration's node
    /// indices and whose frames take ``datagramBytes(for:)``.
    public init(
        configuration: BulkChannelConfiguration, transport: any FrameTransport,
        scheduleSource: @escaping @Sendable () -> TDMASchedule?,
        clock: @escaping @Sendable () -> UInt64, onTransfer: @escaping TransferHandler
    ) throws(SystemCallError) {
        precondition(configuration.nodes.indices.contains(configuration.node), "node is not in nodes")
        precondition(
            transport.rank == configuration.node && transport.memberCount == configuration.nodes.count
                && transport.maxFrameBytes >= Self.datagramBytes(for: configuration),
            "the bulk channel's transport does not match its configuration (rank, members, frame size)")
        self.configuration = configuration
        if case .off = configuration.authentication {
            configuration.logger.warning(
                "bulk channel runs WITHOUT authentication (.off): any host that reaches its port can inject transfers or replay recorded ones; give it the cluster key",
                metadata: [
                    "endpoint": "\(configuration.nodes[configuration.node])"
                ])
        }
        self.transport = transport
        sender = Mutex(
            BulkSender(
                node: UInt16(configuration.node), configuration: configuration.transfer,
                firstTransferID: MemberClock.viewNanos()))
        self.scheduleSource = scheduleSource
        self.clock = clock
        self.onTransfer = onTransfer
    }

    /// A bulk channel beside `member` with ``BulkChannelConfiguration/init(member:)``'s
    /// settings (the member's key, run and incarnations), gated on its schedule and clock.
    public convenience init(member: Member, onTransfer: @escaping TransferHandler) throws(SystemCallError) {
        try self.init(configuration: BulkChannelConfiguration(member: member), member: member, onTransfer: onTransfer)
    }

    /// A bulk channel beside `member`, gated on its schedule and clock; start
    /// `configuration` from ``BulkChannelConfiguration/init(member:)``.
    public convenience init(
        configuration: BulkChannelConfiguration, member: Member,
        onTransfer: @escaping TransferHandler
    ) throws(SystemCallError) {
        try self.init(
            configuration: configuration, scheduleSource: { [weak member] in member?.currentSchedule },
            clock: { [weak member] in member?.viewTimeNanos() ?? MemberClock.viewNanos() }, onTransfer: onTransfer)
    }

    /// Checks that a full datagram fits the unreserved part of `schedule`'s rounds (gated pacing).
    public func validate(against schedule: TDMASchedule) throws(BulkPacingError) { try configuration.validate(against: schedule) }

    /// Queues `bytes` for `node`. Never blocks and never drops: a full queue says so.
    public func send(_ bytes: [UInt8], to node: Int) -> BulkEnqueueResult {
        guard configuration.nodes.indices.contains(node), node != configuration.node else { return .invalidDestination(node) }
        return sender.withLock { $0.enqueue(bytes, to: UInt16(node)) }
    }

    /// Drops transfer `id` (from ``send(_:to:)``'s `.queued`) if it is still queued or in flight; true if it was.
    @discardableResult
    public func cancel(transferID id: UInt64) -> Bool { sender.withLock { $0.cancel(transferID: id) } }

    /// Transfers queued or in flight.
    public var pendingTransfers: Int { sender.withLock { $0.pendingTransfers } }

    /// Counters as of the thread's last publication (a few times a second, and at stop).
    public var counters: BulkChannelCounters { published.withLock { $0 } }

    /// The endpoint the channel's socket is bound to (the configured one when the transport is not UDP).
    public var localEndpoint: UDPEndpoint { (transport as? UDPTransport)?.localEndpoint ?? configuration.nodes[configuration.node] }

    public func start() throws(SystemCallError) {
        guard !running.exchange(true, ordering: .acquiringAndReleasing) else { return }
        do { thread = try startAgentThread { [self] in run() } } catch {
            running.store(false, ordering: .releasing)
            throw error
        }
    }

    /// Stops the thread and returns the final counters.
    @discardableResult
    public func stop() -> BulkChannelCounters {
        if running.exchange(false, ordering: .acquiringAndReleasing), let thread {
            pthread_join(thread, nil)
            self.thread = nil
        }
        return counters
    }

    deinit { _ = stop() }

    /// CLOCK_MONOTONIC in nanoseconds: the sender's and receiver's timers.
    static func monotonicNanos() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
    }

    /// The longest sleep of an idle channel (no transfer queued, no acknowledgement owed).
    static let idleWaitNanos: UInt64 = 20_000_000

    /// How long before a paced start the thread stops sleeping and spins.
    static let spinNanos: UInt64 = 30_000

    /// One datagram out; false when the socket is full (try again). Other
    /// send errors count as a loss (the sender's retransmission recovers it).
    /// `write` fills the first `size` bytes of a transport send buffer.
    private func send(
        to node: Int, size: Int, counters: inout BulkChannelCounters, _ write: (UnsafeMutableRawBufferPointer) -> Void
    ) -> Bool {
        do {
            return try transport.send(toRank: node) { buffer in
                let datagram = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<size])
                write(datagram)
                return size
            }
        } catch {
            counters.sendErrors += 1
            return true
        }
    }

    private var tagBytes: Int { configuration.clusterKey == nil ? 0 : FrameAuthenticator.tagBytes }
    private func datagramBytes(payload: Int) -> Int { BulkWire.headerBytes + payload + tagBytes }

    // MARK: - The channel's thread

    private func monotonicNanos() -> UInt64 { Self.monotonicNanos() }

    private func run() {
        _ = carillon_set_timer_slack(1)
        let node = UInt16(configuration.node)
        var receiver = BulkReceiver(
            node: node, incarnation: configuration.incarnation(), chunkBytes: configuration.transfer.chunkBytes,
            maxTransferBytes: configuration.transfer.maxTransferBytes)
        var pacer = BulkPacer(
            pacing: configuration.pacing, linkBitsPerSecond: configuration.linkBitsPerSecond,
            reservation: configuration.reservation, marginNanos: configuration.marginNanos)
        var local = BulkChannelCounters()
        // Acknowledgements owed: (destination, transfer, chunk count, the
        // destination's incarnation that sent the data); a few at a time.
        var acksOwed: [(UInt16, UInt64, UInt32, UInt64)] = []
        acksOwed.reserveCapacity(64)
        var schedule = scheduleSource()
        var scheduleReadAt: UInt64 = 0
        var publishAt: UInt64 = 0
        let tag = tagBytes
        // The run's subkey, this member's incarnation and each peer's: read
        // with the schedule, once a millisecond (the subkey derived again
        // only when the run changes).
        var run = configuration.runIdentity()
        var sealer = configuration.clusterKey?.subkey(for: "bulk", run: run)
        var peers: [UInt64?] = configuration.nodes.indices.map { $0 == configuration.node ? nil : configuration.peerIncarnation($0) }

        func refreshIdentities() {
            let newRun = configuration.runIdentity()
            if newRun != run {
                run = newRun
                sealer = configuration.clusterKey?.subkey(for: "bulk", run: run)
            }
            let me = configuration.incarnation()
            if me != receiver.incarnation {
                // A new incarnation of this member: what it sent as the old
                // one is refused by now, so every transfer in flight starts over.
                receiver.incarnation = me
                sender.withLock { $0.restartTransfers() }
            }
            for peer in peers.indices where peer != configuration.node {
                let now = configuration.peerIncarnation(peer)
                if let before = peers[peer], let now, now != before {
                    // The peer restarted: it refuses datagrams addressed to
                    // its old incarnation and holds none of the transfer.
                    sender.withLock { $0.restartTransfers(to: UInt16(peer)) }
                }
                peers[peer] = now
            }
        }

        func publish() {
            local.sender = sender.withLock { $0.counters }
            local.receiver = receiver.counters
            local.transport = transport.counters
            published.withLock { $0 = local }
        }

        while running.load(ordering: .relaxed) {
            // Two clocks: the view's (slot windows, for the pacer) and the
            // monotonic one (timeouts, round trips, abandonment), so a step of
            // the wall clock neither stalls nor abandons a transfer.
            var now = clock()
            var tick = monotonicNanos()
            if now >= scheduleReadAt {
                schedule = scheduleSource()
                refreshIdentities()
                scheduleReadAt = now + 1_000_000
            }
            // 1. Take in everything waiting.
            repeat {
                _ = try? transport.receiveFrames { bytes, _ in
                    if let authenticator = sealer {
                        switch authenticator.verify(bytes) {
                        case .authentic: break
                        case .badTag: local.badTag += 1; return
                        case .missingTag: local.missingTag += 1; return
                        case .malformed: local.malformed += 1; return
                        }
                    }
                    let header: BulkHeader
                    do { header = try BulkHeader.decode(bytes, expectedTagLength: tag) } catch {
                        local.malformed += 1
                        return
                    }
                    guard header.receiver == node, configuration.nodes.indices.contains(Int(header.sender)) else {
                        local.malformed += 1
                        return
                    }
                    switch header.kind {
                    case .ack:
                        // For this incarnation, from the incarnation of the peer it sends to.
                        guard header.receiverIncarnation == receiver.incarnation,
                            header.senderIncarnation == peers[Int(header.sender)]
                        else {
                            local.acksWrongIncarnation += 1
                            return
                        }
                        _ = sender.withLock {
                            $0.handleAck(
                                from: header.sender, transferID: header.transferID, receivedBelow: header.chunkIndex,
                                bitmap: header.totalBytesOrBitmap, atNanos: tick)
                        }
                    case .data:
                        let payload = UnsafeRawBufferPointer(
                            rebasing: bytes[BulkWire.headerBytes..<(BulkWire.headerBytes + Int(header.payloadLength))])
                        switch receiver.receive(
                            header, payload: payload, atNanos: tick,
                            senderIncarnationAtLeast: peers[Int(header.sender)] ?? 0)
                        {
                        case .stored(let due):
                            if due { owe(header) }
                        case .completed(let id, let data):
                            owe(header)
                            onTransfer(Int(header.sender), id, data)
                        case .duplicate:
                            owe(header)
                        case .stale, .refused:
                            break
                        }
                    }
                }
            } while transport.lastBatchFilled
            now = clock()
            tick = monotonicNanos()

            // 2. Send acknowledgements, then chunks, as the pacer allows.
            // Idle (nothing to send or acknowledge): wake for arrivals, else
            // every idleWaitNanos only, so an idle channel costs ~50 wake-ups/s;
            // a transfer queued meanwhile starts within that.
            let idle = acksOwed.isEmpty && sender.withLock { $0.pendingTransfers == 0 }
            let waitCap: UInt64 = idle ? Self.idleWaitNanos : 1_000_000
            var waitNanos: UInt64 = waitCap
            var burst = 0
            sending: while burst < 64 {
                if let (destination, transferID, chunkCount, destinationIncarnation) = acksOwed.first {
                    let size = datagramBytes(payload: 0)
                    let release = pacer.releaseTime(bytes: size, atNanos: now, schedule: schedule)
                    if release > now { waitNanos = min(waitNanos, release == .max ? 1_000_000 : release - now); local.pacedWaits += 1; break sending }
                    let (below, bitmap) = receiver.acknowledgement(for: destination, transferID: transferID, chunkCount: chunkCount)
                    let header = BulkHeader(
                        kind: .ack, sender: node, receiver: destination, chunkBytes: 0, chunkIndex: below,
                        chunkCount: chunkCount, tagLength: UInt16(tag), payloadLength: 0,
                        transferID: transferID, totalBytesOrBitmap: bitmap,
                        senderIncarnation: receiver.incarnation, receiverIncarnation: destinationIncarnation)
                    let sent = send(to: Int(destination), size: size, counters: &local) { datagram in
                        header.encode(into: datagram)
                        sealer?.seal(datagram)
                    }
                    guard sent else {
                        local.socketFull += 1
                        waitNanos = 50_000
                        break sending
                    }
                    acksOwed.removeFirst()
                    local.acksSent += 1
                    pacer.didSend(bytes: size, atNanos: now, schedule: schedule)
                    burst += 1
                    continue
                }
                let sent: Bool? = sender.withLock { sender -> Bool? in
                    // Only to peers whose incarnation is known: the datagram is addressed to it.
                    guard let chunk = sender.nextChunk(atNanos: tick, sendableTo: { peers[Int($0)] != nil }) else { return nil }
                    guard let destinationIncarnation = peers[Int(chunk.destination)] else {
                        sender.didNotSend(chunk)
                        return nil
                    }
                    let size = datagramBytes(payload: chunk.length)
                    let release = pacer.releaseTime(bytes: size, atNanos: now, schedule: schedule)
                    if release > now {
                        sender.didNotSend(chunk)
                        waitNanos = min(waitNanos, release == .max ? 1_000_000 : release - now)
                        local.pacedWaits += 1
                        return false
                    }
                    let header = BulkHeader(
                        kind: .data, sender: node, receiver: chunk.destination,
                        chunkBytes: UInt16(configuration.transfer.chunkBytes), chunkIndex: chunk.index,
                        chunkCount: chunk.count, tagLength: UInt16(tag), payloadLength: UInt16(chunk.length),
                        transferID: chunk.transferID, totalBytesOrBitmap: chunk.totalBytes,
                        senderIncarnation: receiver.incarnation, receiverIncarnation: destinationIncarnation)
                    let sent = send(to: Int(chunk.destination), size: size, counters: &local) { datagram in
                        header.encode(into: datagram)
                        sender.withBytes(of: chunk) { bytes in
                            UnsafeMutableRawBufferPointer(rebasing: datagram[BulkWire.headerBytes...]).copyMemory(from: bytes)
                        }
                        sealer?.seal(datagram)
                    }
                    guard sent else {
                        sender.didNotSend(chunk)
                        local.socketFull += 1
                        waitNanos = 50_000
                        return false
                    }
                    sender.didSend(chunk, atNanos: tick)
                    pacer.didSend(bytes: size, atNanos: now, schedule: schedule)
                    return true
                }
                guard sent == true else {
                    if sent == nil, let due = sender.withLock({ $0.nextRetransmissionNanos }) {
                        waitNanos = min(waitNanos, due > tick ? due - tick : 0)
                    }
                    break sending
                }
                burst += 1
                if configuration.pacing != .unpaced { now = clock(); tick = monotonicNanos() }
            }
            if burst == 64 { waitNanos = 0 }

            if now >= publishAt {
                publish()
                publishAt = now + 200_000_000
            }
            // Sleep until shortly before the pacer's next start, then spin to it:
            // a gated window is short, and a late wake-up costs its capacity.
            switch transport.readiness {
            case .descriptor(let fd):
                if waitNanos > Self.spinNanos {
                    _ = carillon_wait_readable(fd, Int64(min(waitNanos - Self.spinNanos, waitCap)))
                } else if waitNanos > 0 {
                    let until = clock() &+ waitNanos
                    while clock() < until, carillon_wait_readable(fd, 0) == 0 {}
                }
            case .polled(let interval):
                // No descriptor to wake on: sleep at most the poll interval, then poll.
                if waitNanos > 0 { _ = carillon_wait_readable(-1, Int64(min(waitNanos, max(interval, 1_000)))) }
            }
        }
        publish()

        func owe(_ header: BulkHeader) {
            if let last = acksOwed.last, last.0 == header.sender, last.1 == header.transferID, last.3 == header.senderIncarnation { return }
            if acksOwed.count < 64 { acksOwed.append((header.sender, header.transferID, header.chunkCount, header.senderIncarnation)) }
        }
    }
}
