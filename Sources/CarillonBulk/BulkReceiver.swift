/// The receiving half of the bulk channel: reassembles each sender's current
/// transfer, acknowledges progress, hands over a transfer once, when complete.
/// Pure: the shell decodes and authenticates datagrams and sends the
/// acknowledgements it is told to.
///
/// Replays: a chunk addressed to another incarnation of this member is
/// refused (``BulkReceiverCounters/wrongIncarnation``), and so is one from an
/// incarnation of its sender older than the newest seen or known
/// (``BulkReceiverCounters/staleIncarnation``). Within one sender
/// incarnation transfer ids only grow (a sender works on one transfer per
/// destination at a time, in id order), so a chunk of a transfer at or below
/// the last one completed is a duplicate however long ago that was.
public struct BulkReceiver: Sendable {
    public let node: UInt16
    /// This member's current incarnation: chunks addressed to another are refused.
    public var incarnation: UInt64
    public let maxTransferBytes: Int
    /// The sender's chunk size; chunks of any other size are refused, so a
    /// header cannot make the receiver size a buffer for 1-byte chunks.
    public let chunkBytes: Int
    /// Acknowledge at least every this many new chunks.
    public let ackEveryChunks: UInt32
    private var sources: [UInt16: SourceState] = [:]
    public private(set) var counters = BulkReceiverCounters()

    public init(
        node: UInt16, incarnation: UInt64, chunkBytes: Int = BulkTransferConfiguration().chunkBytes, maxTransferBytes: Int = 256 << 20,
        ackEveryChunks: UInt32 = 16
    ) {
        self.node = node
        self.incarnation = incarnation
        self.chunkBytes = chunkBytes
        self.maxTransferBytes = maxTransferBytes
        self.ackEveryChunks = max(1, ackEveryChunks)
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
    /// `floor`: the sender's incarnation in this member's view, when known —
    /// chunks from older incarnations are refused even before a newer one is heard.
    ///
    /// Each source's state is changed in place: a copy taken out of the
    /// dictionary would copy the whole reassembly buffer on every chunk.
    public mutating func receive(
        _ header: BulkHeader, payload: UnsafeRawBufferPointer, atNanos now: UInt64,
        senderIncarnationAtLeast floor: UInt64 = 0
    ) -> Outcome {
        guard header.kind == .data else { return .refused("not a data datagram") }
        guard header.receiver == node else {
            counters.refused += 1
            return .refused("addressed to node \(header.receiver), this is node \(node)")
        }
        guard header.receiverIncarnation == incarnation else {
            counters.wrongIncarnation += 1
            return .refused("addressed to incarnation \(header.receiverIncarnation) of node \(node), this is incarnation \(incarnation)")
        }
        let newest = max(floor, sources[header.sender]?.senderIncarnation ?? 0)
        guard header.senderIncarnation >= newest else {
            counters.staleIncarnation += 1
            return .refused("from incarnation \(header.senderIncarnation) of node \(header.sender), which has restarted since (\(newest))")
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
        if let known = sources[header.sender]?.senderIncarnation, header.senderIncarnation > known {
            // The sender restarted: its old transfers are gone, its ids start afresh.
            if sources[header.sender]?.incoming != nil { counters.transfersAbandoned += 1 }
            sources[header.sender] = nil
        }
        let outcome = sources[header.sender, default: SourceState(senderIncarnation: header.senderIncarnation)].receive(
            header, payload: payload, atNanos: now, ackEvery: ackEveryChunks, counters: &counters)
        return outcome
    }

    /// The acknowledgement to send `source` for `transferID`: chunks below
    /// `receivedBelow` and the bitmap of the 64 after it.
    public func acknowledgement(for source: UInt16, transferID: UInt64, chunkCount: UInt32) -> (receivedBelow: UInt32, bitmap: UInt64) {
        guard let state = sources[source] else { return (0, 0) }
        if let incoming = state.incoming, incoming.id == transferID {
            return (incoming.receivedBelow, incoming.bitmapAfterReceivedBelow())
        }
        guard state.hasCompleted(transferID) else { return (0, 0) }
        return (chunkCount, 0)
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
    /// Chunks addressed to another incarnation of this member: replays of
    /// datagrams recorded before it restarted.
    public var wrongIncarnation = 0
    /// Chunks from an incarnation of their sender older than the newest seen
    /// from it or named in the view: replays of a sender that has restarted.
    public var staleIncarnation = 0
    public init() {}
}

/// What the receiver holds for one sender incarnation.
struct SourceState: Sendable {
    /// The sender's incarnation these ids belong to (a newer one replaces the state).
    let senderIncarnation: UInt64
    /// The highest id completed from this incarnation. Ids only grow within
    /// an incarnation, so every id at or below it is done: a chunk of one is
    /// a duplicate (acknowledged, never handed over again), however old.
    var completedThrough: UInt64?
    var incoming: IncomingTransfer?
    var lastChunkNanos: UInt64 = 0

    init(senderIncarnation: UInt64) { self.senderIncarnation = senderIncarnation }

    func hasCompleted(_ id: UInt64) -> Bool { completedThrough.map { id <= $0 } ?? false }

    mutating func receive(
        _ header: BulkHeader, payload: UnsafeRawBufferPointer, atNanos now: UInt64, ackEvery: UInt32,
        counters: inout BulkReceiverCounters
    ) -> BulkReceiver.Outcome {
        if incoming?.id != header.transferID, hasCompleted(header.transferID) {
            counters.duplicateChunks += 1
            return .duplicate
        }
        if let current = incoming, header.transferID != current.id {
            // An older transfer's straggler is ignored; a newer one means the
            // sender gave up on the current one (no progress for its abandon
            // time) and moved on.
            if header.transferID < current.id {
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
            completedThrough = max(completedThrough ?? 0, done.id)
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
