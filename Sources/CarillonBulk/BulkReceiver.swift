/// The receiving half of the bulk channel: reassembles each sender's current
/// transfer, acknowledges progress, hands over a transfer once, when complete.
/// Pure: the shell decodes and authenticates datagrams and sends the
/// acknowledgements it is told to.
public struct BulkReceiver: Sendable {
    public let node: UInt16
    public let maxTransferBytes: Int
    /// The sender's chunk size; chunks of any other size are refused, so a
    /// header cannot make the receiver size a buffer for 1-byte chunks.
    public let chunkBytes: Int
    /// Acknowledge at least every this many new chunks.
    public let ackEveryChunks: UInt32
    /// An unfinished transfer silent this long may be replaced by an older-looking one (its sender restarted).
    public let abandonAfterNanos: UInt64
    private var sources: [UInt16: SourceState] = [:]
    public private(set) var counters = BulkReceiverCounters()

    public init(node: UInt16, chunkBytes: Int = BulkTransferConfiguration().chunkBytes, maxTransferBytes: Int = 256 << 20,
                ackEveryChunks: UInt32 = 16, abandonAfterNanos: UInt64 = BulkTransferConfiguration().abandonAfterNanos) {
        self.node = node
        self.chunkBytes = chunkBytes
        self.maxTransferBytes = maxTransferBytes
        self.ackEveryChunks = max(1, ackEveryChunks)
        self.abandonAfterNanos = abandonAfterNanos
    }

    /// What to do after a data datagram.
    public enum Outcome: Sendable {
        /// Stored; send an acknowledgement when `ackDue`.
        case stored(ackDue: Bool)
        /// The transfer is complete: these are its bytes (handed over once); acknowledge.
        case completed(transferID: UInt64, bytes: [UInt8])
        /// Already held or already delivered: acknowledge again (the sender missed an acknowledgement).
        case duplicate
        /// From a transfer older than the one in progress: ignore.
        case stale
        /// Refused; nothing stored.
        case refused(String)
    }

    /// Takes in one data chunk (`header` decoded and authenticated by the shell) at `now`.
    ///
    /// Each source's state is changed in place: a copy taken out of the
    /// dictionary would copy the whole reassembly buffer on every chunk.
    public mutating func receive(_ header: BulkHeader, payload: UnsafeRawBufferPointer, atNanos now: UInt64) -> Outcome {
        guard header.kind == .data else { return .refused("not a data datagram") }
        guard header.receiver == node else {
            counters.refused += 1
            return .refused("addressed to node \(header.receiver), this is node \(node)")
        }
        guard Int(header.chunkBytes) == chunkBytes else {
            counters.refused += 1
            return .refused("chunks of \(header.chunkBytes) B, this channel uses \(chunkBytes) B")
        }
        let total = header.totalBytesOrBitmap
        guard total <= UInt64(maxTransferBytes) else {
            counters.refused += 1
            return .refused("transfer of \(total) bytes exceeds the receiver's limit of \(maxTransferBytes)")
        }
        let outcome = sources[header.sender, default: SourceState()].receive(
            header, payload: payload, atNanos: now, ackEvery: ackEveryChunks, abandonAfter: abandonAfterNanos, counters: &counters)
        return outcome
    }

    /// The acknowledgement to send `source` for `transferID`: chunks below
    /// `receivedBelow` and the bitmap of the 64 after it.
    public func acknowledgement(for source: UInt16, transferID: UInt64, chunkCount: UInt32) -> (receivedBelow: UInt32, bitmap: UInt64) {
        guard let state = sources[source] else { return (0, 0) }
        if state.hasCompleted(transferID) { return (chunkCount, 0) }
        guard let incoming = state.incoming, incoming.id == transferID else { return (0, 0) }
        return (incoming.receivedBelow, incoming.bitmapAfterReceivedBelow())
    }
}

/// What the receiver has done.
public struct BulkReceiverCounters: Sendable, Hashable {
    public var chunksReceived = 0
    public var bytesReceived = 0
    public var transfersCompleted = 0
    public var duplicateChunks = 0
    public var staleChunks = 0
    public var transfersAbandoned = 0
    /// Chunks refused as inconsistent, misaddressed or too long.
    public var refused = 0
    public init() {}
}

struct SourceState: Sendable {
    /// Ids of the last transfers completed from this source (a ring): their
    /// chunks are duplicates, acknowledged and never handed over again. A set
    /// rather than "every id up to the last": a restarted sender whose clock
    /// stepped back starts with smaller ids, and those are new transfers.
    var recentlyCompleted: [UInt64] = []
    var nextSlot = 0
    /// The highest id that fell out of the ring: lower-or-equal ids are taken
    /// for replays unless the source has been silent for the abandon time (a
    /// restart whose clock stepped back).
    var evictedThrough: UInt64?
    var incoming: IncomingTransfer?
    var lastChunkNanos: UInt64 = 0

    static let remembered = 64

    func hasCompleted(_ id: UInt64) -> Bool { recentlyCompleted.contains(id) }

    mutating func remember(_ id: UInt64) {
        if recentlyCompleted.count < Self.remembered {
            recentlyCompleted.append(id)
        } else {
            evictedThrough = max(evictedThrough ?? 0, recentlyCompleted[nextSlot])
            recentlyCompleted[nextSlot] = id
        }
        nextSlot = (nextSlot + 1) % Self.remembered
    }

    mutating func receive(_ header: BulkHeader, payload: UnsafeRawBufferPointer, atNanos now: UInt64, ackEvery: UInt32,
                          abandonAfter: UInt64, counters: inout BulkReceiverCounters) -> BulkReceiver.Outcome {
        if hasCompleted(header.transferID) {
            counters.duplicateChunks += 1
            return .duplicate
        }
        if let evicted = evictedThrough, header.transferID <= evicted, incoming?.id != header.transferID,
           now < lastChunkNanos &+ abandonAfter {
            counters.duplicateChunks += 1
            return .duplicate
        }
        if let current = incoming, header.transferID != current.id {
            // An older transfer's straggler is ignored while the current one
            // progresses; a transfer silent for `abandonAfter` gives way.
            if header.transferID < current.id, now < lastChunkNanos &+ abandonAfter {
                counters.staleChunks += 1
                return .stale
            }
            counters.transfersAbandoned += 1
            incoming = nil
        }
        if incoming == nil { incoming = IncomingTransfer(header: header) }
        guard incoming!.matches(header) else {
            counters.refused += 1
            return .refused("chunk \(header.chunkIndex) does not match transfer \(header.transferID)'s length or chunking")
        }
        // A chunk after a pause in arrivals is most likely a resend of a
        // hole: acknowledge at once, so the sender does not wait a timeout.
        let afterPause = now > lastChunkNanos &+ 1_000_000
        lastChunkNanos = now
        guard incoming!.store(header, payload: payload) else {
            counters.duplicateChunks += 1
            return .duplicate
        }
        counters.chunksReceived += 1
        counters.bytesReceived += payload.count
        if incoming!.isComplete {
            let done = incoming!
            incoming = nil
            remember(done.id)
            counters.transfersCompleted += 1
            return .completed(transferID: done.id, bytes: done.bytes)
        }
        let outOfOrder = header.chunkIndex &+ 1 != incoming!.receivedBelow
        return .stored(ackDue: outOfOrder || afterPause || incoming!.receivedCount % ackEvery == 0)
    }
}

struct IncomingTransfer: Sendable {
    let id: UInt64
    let chunkCount: UInt32
    let chunkBytes: Int
    let totalBytes: UInt64
    var bytes: [UInt8]
    var have: [UInt64]
    var receivedCount: UInt32 = 0
    var receivedBelow: UInt32 = 0

    init(header: BulkHeader) {
        id = header.transferID
        chunkCount = header.chunkCount
        chunkBytes = Int(header.chunkBytes)
        totalBytes = header.totalBytesOrBitmap
        bytes = Array(repeating: 0, count: Int(header.totalBytesOrBitmap))
        have = Array(repeating: 0, count: (Int(header.chunkCount) + 63) / 64)
    }

    var isComplete: Bool { receivedCount == chunkCount }

    func matches(_ header: BulkHeader) -> Bool {
        header.chunkCount == chunkCount && Int(header.chunkBytes) == chunkBytes && header.totalBytesOrBitmap == totalBytes
    }

    func holds(_ chunk: UInt32) -> Bool { have[Int(chunk) / 64] & (1 << UInt64(chunk % 64)) != 0 }

    /// Stores a chunk; false when it was already held.
    mutating func store(_ header: BulkHeader, payload: UnsafeRawBufferPointer) -> Bool {
        let chunk = header.chunkIndex
        guard !holds(chunk) else { return false }
        have[Int(chunk) / 64] |= 1 << UInt64(chunk % 64)
        let offset = Int(chunk) * chunkBytes
        bytes.withUnsafeMutableBytes { $0.baseAddress!.advanced(by: offset).copyMemory(from: payload.baseAddress!, byteCount: payload.count) }
        receivedCount += 1
        while receivedBelow < chunkCount, holds(receivedBelow) { receivedBelow += 1 }
        return true
    }

    func bitmapAfterReceivedBelow() -> UInt64 {
        var bitmap: UInt64 = 0
        var chunk = receivedBelow &+ 1
        var bit: UInt64 = 0
        while bit < 64, chunk < chunkCount {
            if holds(chunk) { bitmap |= 1 << bit }
            chunk += 1
            bit += 1
        }
        return bitmap
    }
}
