/// Settings both ends of a bulk channel share.
public struct BulkTransferConfiguration: Sendable, Hashable {
    /// Payload bytes per data datagram (the last chunk of a transfer may be shorter).
    public var chunkBytes: Int = 1_400
    /// Most chunks of one transfer sent and not yet acknowledged.
    public var windowChunks: Int = 512
    /// The retransmission timeout before a destination's round trip is
    /// measured, and its floor after: the timeout then follows the measured
    /// round-trip time (smoothed, plus four deviations, doubled on each
    /// timeout), so a queue on the path does not cause spurious resends.
    public var retransmitTimeoutNanos: UInt64 = 20_000_000
    /// Most bytes queued for sending, over all transfers: beyond it ``BulkSender/enqueue(_:to:)``
    /// refuses (backpressure), it never drops.
    public var maxQueuedBytes: Int = 64 << 20
    /// The longest transfer a receiver accepts.
    public var maxTransferBytes: Int = 256 << 20
    /// A transfer that makes no progress for this long is given up: the sender
    /// drops it (``BulkSenderCounters/transfersAbandoned``) and goes on with
    /// the next, whose higher id makes the receiver drop its unfinished copy.
    public var abandonAfterNanos: UInt64 = 30_000_000_000

    public init() {}
}

/// Outcome of offering a transfer to the sender.
public enum BulkEnqueueResult: Sendable, Hashable {
    /// Queued under this transfer id.
    case queued(transferID: UInt64)
    /// The queue holds ``BulkTransferConfiguration/maxQueuedBytes`` already: try again later.
    case queueFull
    /// Empty, or longer than ``BulkTransferConfiguration/maxTransferBytes``.
    case invalidLength(Int)
    /// Not another member of the channel.
    case invalidDestination(Int)
}

/// A chunk the sender wants on the wire next.
public struct BulkChunk: Sendable, Hashable {
    public var destination: UInt16
    public var transferID: UInt64
    public var index: UInt32
    public var count: UInt32
    public var totalBytes: UInt64
    /// Where the chunk's bytes start in the transfer.
    public var offset: Int
    public var length: Int
    /// True when this chunk was sent before (timeout or fast retransmission).
    public var isRetransmission: Bool
}

/// The sending half of the bulk channel: reliable, unordered between
/// transfers to different destinations, one transfer at a time per
/// destination. Pure: the shell asks for the next chunk, puts it on the wire
/// when the pacer allows, and feeds acknowledgements back.
public struct BulkSender: Sendable {
    public let configuration: BulkTransferConfiguration
    public let node: UInt16
    private var queues: [UInt16: [OutgoingTransfer]] = [:]
    private var destinations: [UInt16] = []
    private var turn = 0
    private var nextTransferID: UInt64
    private var roundTrips: [UInt16: RoundTripEstimate] = [:]
    public private(set) var queuedBytes = 0
    public private(set) var counters = BulkSenderCounters()

    /// - Parameters:
    ///   - node: this sender's node, named in every datagram it sends.
    ///   - configuration: chunk size, window and retransmission settings.
    ///   - firstTransferID: transfer ids count up from here. Receivers
    ///     rely on ids growing only within one incarnation of the sender; a
    ///     restarted sender is told apart by its new incarnation, not its ids.
    public init(node: UInt16, configuration: BulkTransferConfiguration, firstTransferID: UInt64) {
        precondition(configuration.chunkBytes > 0 && configuration.chunkBytes <= Int(UInt16.max))
        self.node = node
        self.configuration = configuration
        self.nextTransferID = firstTransferID
    }

    /// Queues `bytes` for `destination`.
    public mutating func enqueue(_ bytes: [UInt8], to destination: UInt16) -> BulkEnqueueResult {
        guard !bytes.isEmpty, bytes.count <= configuration.maxTransferBytes else { return .invalidLength(bytes.count) }
        guard queuedBytes + bytes.count <= configuration.maxQueuedBytes || queuedBytes == 0 else { return .queueFull }
        let id = nextTransferID
        nextTransferID += 1
        if queues[destination] == nil { destinations.append(destination) }
        queues[destination, default: []].append(OutgoingTransfer(id: id, bytes: bytes, chunkBytes: configuration.chunkBytes))
        queuedBytes += bytes.count
        counters.transfersQueued += 1
        return .queued(transferID: id)
    }

    /// Transfers not yet fully acknowledged.
    public var pendingTransfers: Int { queues.values.reduce(0) { $0 + $1.count } }

    /// The next chunk to send at `now`, or nil when every destination's window
    /// is full or everything sent awaits acknowledgement. Destinations take
    /// turns; within one, a chunk due for retransmission goes first. A transfer
    /// without progress for ``BulkTransferConfiguration/abandonAfterNanos`` is
    /// dropped here and counted (its destination is gone or has restarted).
    ///
    /// Transfers are changed in place (`queues[d]![0]…`): taking a copy out of
    /// the dictionary and putting it back would copy their arrays on every chunk.
    ///
    /// Destinations for which `sendableTo` says false are passed over (the
    /// shell does not know which incarnation of them to address yet).
    public mutating func nextChunk(atNanos now: UInt64, sendableTo: (UInt16) -> Bool = { _ in true }) -> BulkChunk? {
        guard !destinations.isEmpty else { return nil }
        for step in 0..<destinations.count {
            let destination = destinations[(turn + step) % destinations.count]
            guard sendableTo(destination) else { continue }
            while queues[destination]?.isEmpty == false, queues[destination]![0].isStalled(atNanos: now, after: configuration.abandonAfterNanos) {
                let dropped = queues[destination]!.removeFirst()
                queuedBytes -= dropped.bytes.count
                counters.transfersAbandoned += 1
            }
            guard queues[destination]?.isEmpty == false else { continue }
            let timeout = retransmitTimeout(for: destination)
            guard
                let (index, retransmission, timedOut) = queues[destination]![0].nextChunk(
                    atNanos: now, window: configuration.windowChunks, timeoutNanos: timeout)
            else { continue }
            if timedOut { roundTrips[destination, default: RoundTripEstimate()].backOff() }
            turn = (turn + step + 1) % destinations.count
            let id = queues[destination]![0].id
            let count = queues[destination]![0].chunkCount
            let total = queues[destination]![0].bytes.count
            let offset = Int(index) * configuration.chunkBytes
            return BulkChunk(
                destination: destination, transferID: id, index: index, count: count,
                totalBytes: UInt64(total), offset: offset, length: min(configuration.chunkBytes, total - offset),
                isRetransmission: retransmission)
        }
        return nil
    }

    /// Starts the transfer in progress to `destination` over from its first
    /// chunk, under the same id: the destination restarted (it holds none of
    /// it, and refuses what was addressed to its old incarnation).
    public mutating func restartTransfers(to destination: UInt16) {
        guard let current = queues[destination]?.first else { return }
        queues[destination]![0] = OutgoingTransfer(id: current.id, bytes: current.bytes, chunkBytes: configuration.chunkBytes)
        counters.transfersRestarted += 1
    }

    /// Drops transfer `id` (queued or in progress) when its bytes are no
    /// longer wanted; true if it was still here. A receiver drops an
    /// unfinished copy when the next transfer's higher id arrives.
    @discardableResult
    public mutating func cancel(transferID id: UInt64) -> Bool {
        for destination in destinations {
            guard let index = queues[destination]?.firstIndex(where: { $0.id == id }) else { continue }
            queuedBytes -= queues[destination]![index].bytes.count
            queues[destination]!.remove(at: index)
            return true
        }
        return false
    }

    /// Starts every transfer in progress over (this member's incarnation changed).
    public mutating func restartTransfers() {
        for destination in destinations { restartTransfers(to: destination) }
    }

    /// Calls `body` with the bytes of `chunk` (valid until the transfer is acknowledged).
    public func withBytes<R>(of chunk: BulkChunk, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        guard let t = queues[chunk.destination]?.first, t.id == chunk.transferID else { return body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        return t.bytes.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[chunk.offset..<(chunk.offset + chunk.length)])) }
    }

    private func isCurrent(_ destination: UInt16, _ transferID: UInt64) -> Bool {
        queues[destination]?.first?.id == transferID
    }

    /// Records that `chunk` went on the wire at `now`.
    public mutating func didSend(_ chunk: BulkChunk, atNanos now: UInt64) {
        guard isCurrent(chunk.destination, chunk.transferID) else { return }
        queues[chunk.destination]![0].didSend(chunk.index, atNanos: now)
        counters.chunksSent += 1
        if chunk.isRetransmission { counters.chunksRetransmitted += 1 }
    }

    /// The chunk could not be sent (socket full): offer it again next time.
    public mutating func didNotSend(_ chunk: BulkChunk) {
        guard isCurrent(chunk.destination, chunk.transferID) else { return }
        queues[chunk.destination]![0].unsend(chunk.index, wasRetransmission: chunk.isRetransmission)
    }

    /// Applies an acknowledgement from `source`. Returns the transfer id when it
    /// completes that transfer.
    public mutating func handleAck(
        from source: UInt16, transferID: UInt64, receivedBelow: UInt32, bitmap: UInt64,
        atNanos now: UInt64
    ) -> UInt64? {
        counters.acksReceived += 1
        guard isCurrent(source, transferID) else {
            counters.staleAcks += 1
            return nil
        }
        let holdOff = min(
            max(roundTrips[source]?.smoothed.map { UInt64($0) } ?? configuration.retransmitTimeoutNanos / 4, 200_000),
            retransmitTimeout(for: source))
        let (sample, progressed) = queues[source]![0].acknowledge(
            below: receivedBelow, bitmap: bitmap, atNanos: now,
            holdOffNanos: holdOff)
        if let sample { roundTrips[source, default: RoundTripEstimate()].add(sampleNanos: sample) }
        if progressed { roundTrips[source]?.backoff = 1 }
        guard queues[source]![0].isComplete else { return nil }
        let done = queues[source]!.removeFirst()
        queuedBytes -= done.bytes.count
        counters.transfersCompleted += 1
        counters.bytesCompleted += done.bytes.count
        return transferID
    }

    /// The earliest time a chunk becomes due for retransmission, for the
    /// shell's wait (nil when nothing is in flight).
    public var nextRetransmissionNanos: UInt64? {
        var earliest: UInt64?
        for (destination, transfers) in queues {
            if let at = transfers.first?.nextTimeoutNanos(timeoutNanos: retransmitTimeout(for: destination)) {
                earliest = min(earliest ?? at, at)
            }
        }
        return earliest
    }
}

extension BulkSender {
    /// The retransmission timeout towards `destination` now.
    public func retransmitTimeout(for destination: UInt16) -> UInt64 {
        roundTrips[destination]?.timeoutNanos(floor: configuration.retransmitTimeoutNanos) ?? configuration.retransmitTimeoutNanos
    }
}

/// Smoothed round-trip time and its deviation (the usual 1/8 and 1/4 gains),
/// from chunks sent once (a resent chunk's acknowledgement is ambiguous).
struct RoundTripEstimate: Sendable {
    var smoothed: Double?
    var deviation = 0.0
    var backoff: UInt64 = 1

    mutating func add(sampleNanos: UInt64) {
        let sample = Double(sampleNanos)
        if let s = smoothed {
            deviation = 0.75 * deviation + 0.25 * abs(s - sample)
            smoothed = 0.875 * s + 0.125 * sample
        } else {
            smoothed = sample
            deviation = sample / 2
        }
        backoff = 1
    }

    mutating func backOff() { backoff = min(backoff * 2, 64) }

    func timeoutNanos(floor: UInt64) -> UInt64 {
        guard let smoothed else { return min(floor &* backoff, 2_000_000_000) }
        let base = max(UInt64(smoothed + 4 * deviation), floor)
        return min(base &* backoff, 2_000_000_000)
    }
}

/// What the sender has done.
public struct BulkSenderCounters: Sendable, Hashable {
    public var transfersQueued = 0
    public var transfersCompleted = 0
    public var bytesCompleted = 0
    public var chunksSent = 0
    public var chunksRetransmitted = 0
    public var acksReceived = 0
    /// Acknowledgements for a transfer that is not the one in progress (late or replayed).
    public var staleAcks = 0
    /// Transfers given up after ``BulkTransferConfiguration/abandonAfterNanos`` without progress.
    public var transfersAbandoned = 0
    /// Transfers started over because their destination (or this member) restarted.
    public var transfersRestarted = 0
    public init() {}
}

/// One transfer on its way out. Chunks are sent in index order; `sentOrder`
/// holds unacknowledged chunks by send time, so the oldest is checked first.
struct OutgoingTransfer: Sendable {
    let id: UInt64
    let bytes: [UInt8]
    let chunkCount: UInt32
    /// Per chunk: send time, 0 before the first send.
    private var sentAt: [UInt64]
    /// Per chunk: sent more than once (its acknowledgement gives no round-trip sample).
    private var resent: [Bool]
    private var acked: [Bool]
    private var ackedCount: UInt32 = 0
    /// Chunks below this are acknowledged.
    private var ackedBelow: UInt32 = 0
    /// The next chunk never sent.
    private var nextFresh: UInt32 = 0
    /// Sent, not yet acknowledged (by send order); may hold acknowledged entries, skipped lazily.
    private var sentOrder: [UInt32]
    private var sentOrderHead = 0
    private var inFlight = 0
    /// Chunks to send again at once: holes the selective acknowledgement shows
    /// (later chunks arrived, these did not, for longer than a round trip).
    private var retransmitQueue: [UInt32] = []
    private var retransmitHead = 0
    private var queuedForRetransmit: [Bool]
    /// A retransmission the socket refused, offered again first.
    private var fastRetransmit: UInt32?
    /// The last timeout retransmission: at most one per timeout, like TCP's
    /// single retransmission timer, so a lost hole does not time out every
    /// chunk behind it in turn.
    private var lastTimeoutNanos: UInt64 = 0
    /// When the transfer was first sent or last had a chunk acknowledged (0: not sent yet).
    private var lastProgressNanos: UInt64 = 0

    init(id: UInt64, bytes: [UInt8], chunkBytes: Int) {
        self.id = id
        self.bytes = bytes
        chunkCount = UInt32((bytes.count + chunkBytes - 1) / chunkBytes)
        sentAt = Array(repeating: 0, count: Int(chunkCount))
        resent = Array(repeating: false, count: Int(chunkCount))
        acked = Array(repeating: false, count: Int(chunkCount))
        queuedForRetransmit = Array(repeating: false, count: Int(chunkCount))
        sentOrder = []
        sentOrder.reserveCapacity(Int(chunkCount))
    }

    var isComplete: Bool { ackedCount == chunkCount }

    func isStalled(atNanos now: UInt64, after limit: UInt64) -> Bool {
        lastProgressNanos != 0 && now > lastProgressNanos &+ limit
    }

    /// When the retransmission timer fires next (nil: nothing in flight):
    /// the oldest unacknowledged chunk's send time plus the timeout, and not
    /// before one timeout after the last timeout retransmission.
    func nextTimeoutNanos(timeoutNanos: UInt64) -> UInt64? {
        guard let oldest = oldestSentNanos else { return nil }
        return max(oldest &+ timeoutNanos, lastTimeoutNanos &+ timeoutNanos)
    }

    var oldestSentNanos: UInt64? {
        var head = sentOrderHead
        while head < sentOrder.count {
            let chunk = sentOrder[head]
            if !acked[Int(chunk)] { return sentAt[Int(chunk)] }
            head += 1
        }
        return nil
    }

    /// The next chunk: (index, is a retransmission, timed out).
    mutating func nextChunk(atNanos now: UInt64, window: Int, timeoutNanos: UInt64) -> (UInt32, Bool, Bool)? {
        if let chunk = fastRetransmit {
            fastRetransmit = nil
            if !acked[Int(chunk)] { return (chunk, true, false) }
        }
        while retransmitHead < retransmitQueue.count {
            let chunk = retransmitQueue[retransmitHead]
            retransmitHead += 1
            queuedForRetransmit[Int(chunk)] = false
            if !acked[Int(chunk)] { return (chunk, true, false) }
        }
        if retransmitHead > 0 {
            retransmitQueue.removeAll(keepingCapacity: true)
            retransmitHead = 0
        }
        // Drop acknowledged entries from the front of the send order.
        while sentOrderHead < sentOrder.count, acked[Int(sentOrder[sentOrderHead])] { sentOrderHead += 1 }
        compactSentOrder()
        if sentOrderHead < sentOrder.count {
            let oldest = sentOrder[sentOrderHead]
            if sentAt[Int(oldest)] &+ timeoutNanos <= now, lastTimeoutNanos &+ timeoutNanos <= now {
                lastTimeoutNanos = now
                // Resend the lowest chunk not acknowledged: it is what holds the
                // receiver's cumulative acknowledgement back (chunks past the
                // 64-chunk bitmap may have arrived but cannot be acknowledged yet).
                let lowest = ackedBelow < nextFresh && !acked[Int(ackedBelow)] ? ackedBelow : oldest
                // Just resent (a hole the acknowledgements showed): give it a
                // timeout of its own before sending it again and backing off.
                if sentAt[Int(lowest)] &+ timeoutNanos <= now { return (lowest, true, true) }
            }
        }
        if nextFresh < chunkCount, inFlight < window { return (nextFresh, false, false) }
        return nil
    }

    mutating func didSend(_ chunk: UInt32, atNanos now: UInt64) {
        if lastProgressNanos == 0 { lastProgressNanos = now }
        if chunk == nextFresh {
            nextFresh += 1
            inFlight += 1
        } else {
            resent[Int(chunk)] = true
            if sentOrderHead < sentOrder.count, sentOrder[sentOrderHead] == chunk {
                sentOrderHead += 1  // a timeout retransmission: re-queued at the back
            } else if let at = sentOrder[sentOrderHead...].firstIndex(of: chunk) {
                sentOrder.remove(at: at)  // a fast retransmission (rare)
            }
        }
        sentAt[Int(chunk)] = now
        sentOrder.append(chunk)
    }

    mutating func unsend(_ chunk: UInt32, wasRetransmission: Bool) {
        if wasRetransmission { fastRetransmit = chunk }
    }

    /// Marks acknowledged chunks; returns a round-trip sample (see the end) and
    /// whether any chunk was newly acknowledged.
    ///
    /// Every chunk below the highest one the bitmap reports, not acknowledged
    /// and last sent more than `holdOffNanos` ago, is queued to be sent again
    /// at once: later chunks overtook it, so it is lost (the hold-off keeps a
    /// chunk from being resent while its previous copy may still be in flight).
    mutating func acknowledge(below: UInt32, bitmap: UInt64, atNanos now: UInt64, holdOffNanos: UInt64) -> (sample: UInt64?, progressed: Bool) {
        // An acknowledgement past what was ever sent is bogus: its bitmap would
        // name the wrong chunks, so only the sent part of it is used.
        let bogus = below > nextFresh
        let below = min(below, nextFresh)
        let bitmap = bogus ? 0 : bitmap
        var sample: UInt64?
        var coversResent = false
        let before = ackedCount
        func mark(_ chunk: UInt32) {
            guard chunk < nextFresh, !acked[Int(chunk)] else { return }
            acked[Int(chunk)] = true
            ackedCount += 1
            inFlight -= 1
            lastProgressNanos = now
            if resent[Int(chunk)] {
                coversResent = true
            } else if now >= sentAt[Int(chunk)] {
                sample = min(sample ?? .max, now - sentAt[Int(chunk)])
            }
        }
        while ackedBelow < below { mark(ackedBelow); ackedBelow += 1 }
        var bits = bitmap
        while bits != 0 {
            let i = UInt32(bits.trailingZeroBitCount)
            bits &= bits - 1
            let chunk = below &+ 1 &+ i
            if chunk < chunkCount { mark(chunk) }
        }
        // A partial acknowledgement after a timeout (the resent hole arrived,
        // the next chunk is still missing): everything sent before that timeout
        // in the next 64 chunks is as good as lost — resend it now instead of
        // one chunk per timeout.
        if coversResent, lastTimeoutNanos != 0 {
            var chunk = ackedBelow
            while chunk < min(ackedBelow &+ 64, nextFresh) {
                let c = Int(chunk)
                if !acked[c], !queuedForRetransmit[c], sentAt[c] <= lastTimeoutNanos {
                    queuedForRetransmit[c] = true
                    retransmitQueue.append(chunk)
                }
                chunk += 1
            }
        }
        if bitmap != 0 {
            let highest = below &+ 1 &+ UInt32(63 - bitmap.leadingZeroBitCount)
            var chunk = below
            while chunk < highest, chunk < nextFresh {
                let c = Int(chunk)
                if !acked[c], !queuedForRetransmit[c], now >= sentAt[c] &+ holdOffNanos {
                    queuedForRetransmit[c] = true
                    retransmitQueue.append(chunk)
                }
                chunk += 1
            }
        }
        // No sample from an acknowledgement that also covers a resent chunk:
        // it may be the hole's retransmission that released it, and the
        // chunks behind the hole (sent long ago) would make the round trip
        // look seconds long. Otherwise the most recently sent chunk it covers.
        return (coversResent ? nil : sample, ackedCount > before)
    }

    private mutating func compactSentOrder() {
        if sentOrderHead > 4096, sentOrderHead * 2 > sentOrder.count {
            sentOrder.removeFirst(sentOrderHead)
            sentOrderHead = 0
        }
    }
}
