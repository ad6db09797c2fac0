import CarillonVerbs
import Synchronization

/// A fabric of fake UD queue pairs over plain memory: what a NIC does with
/// the few verbs ``VerbsQueue`` names, and no more. A send's bytes are read
/// when the "NIC" gets to it — at post time for an inline send, later
/// (the next poll of any queue) for the others, so a transport that reuses
/// a buffer before its send completes delivers the wrong bytes — and are
/// copied into the destination's oldest posted receive after a 40-byte GRH,
/// or dropped when none is posted, as UD does. It checks that the transport
/// only ever hands it registered memory under the right key. Sending can be
/// held (nothing leaves, nothing completes) to run the transport out of
/// send buffers.
final class FakeFabric: @unchecked Sendable {
    struct InFlight {
        var id: UInt64
        var target: UInt32
        /// Inline: copied at post time. Otherwise read from `pointer` when sent.
        var copied: [UInt8]?
        var pointer: UnsafeRawBufferPointer
    }

    struct QueueState {
        var posted: [(id: UInt64, buffer: UnsafeMutableRawBufferPointer, key: UInt32)] = []
        var sendCompletions: [VerbsCompletion] = []
        var receiveCompletions: [VerbsCompletion] = []
        var inFlight: [InFlight] = []
        var regions: [(base: UnsafeMutableRawPointer, count: Int, key: UInt32)] = []
        var outstandingSends = 0
    }

    struct Counts: Sendable {
        /// Sends dropped for want of a posted receive at the destination (UD's receiver-not-ready).
        var droppedNoReceive = 0
        /// Sends to a queue pair that does not exist.
        var droppedNoQueue = 0
        /// Buffers posted outside registered memory or under a wrong key: a transport bug.
        var unregisteredAccesses = 0
        var delivered = 0
    }

    struct State: @unchecked Sendable {
        var queues: [UInt32: QueueState] = [:]
        var counts = Counts()
        var holding = false
        var nextKey: UInt32 = 100

        /// The "NIC" sends what is in flight: each message into its
        /// destination's oldest posted receive, and a send completion.
        mutating func progress() {
            guard !holding else { return }
            for source in queues.keys.sorted() {
                let flights = queues[source]!.inFlight
                queues[source]!.inFlight = []
                for f in flights {
                    let bytes = f.copied ?? Array(f.pointer)
                    deliver(bytes, from: source, to: f.target)
                    queues[source]!.sendCompletions.append(VerbsCompletion(id: f.id, succeeded: true))
                }
            }
        }

        mutating func deliver(_ bytes: [UInt8], from source: UInt32, to target: UInt32) {
            guard queues[target] != nil else {
                counts.droppedNoQueue += 1
                return
            }
            guard !queues[target]!.posted.isEmpty else {
                counts.droppedNoReceive += 1
                return
            }
            let receive = queues[target]!.posted.removeFirst()
            guard receive.buffer.count >= 40 + bytes.count else {
                queues[target]!.receiveCompletions.append(VerbsCompletion(id: receive.id, succeeded: false, status: 1))
                return
            }
            receive.buffer.initializeMemory(as: UInt8.self, repeating: 0xEE)
            UnsafeMutableRawBufferPointer(rebasing: receive.buffer[40..<(40 + bytes.count)]).copyBytes(from: bytes)
            queues[target]!.receiveCompletions.append(
                VerbsCompletion(id: receive.id, succeeded: true, byteCount: 40 + bytes.count, sourceQueuePair: source))
            counts.delivered += 1
        }
    }

    let state = Mutex(State())
    var counts: FakeFabric.Counts { state.withLock { $0.counts } }

    /// Holds sending (nothing leaves, nothing completes) or lets it go on.
    func hold(_ holding: Bool) {
        state.withLock { s in
            s.holding = holding
            s.progress()
        }
    }

    func makeQueue(queuePair: UInt32, maxInlineBytes: Int = 64, maxMessageBytes: Int = 4096, sendQueueDepth: Int = 1024) -> FakeQueue {
        state.withLock { $0.queues[queuePair] = QueueState() }
        return FakeQueue(fabric: self, queuePair: queuePair, maxInlineBytes: maxInlineBytes, maxMessageBytes: maxMessageBytes, depth: sendQueueDepth)
    }
}

final class FakeQueue: VerbsQueue, @unchecked Sendable {
    let fabric: FakeFabric
    let address: VerbsAddress
    let maxInlineBytes: Int
    let maxMessageBytes: Int
    let depth: Int

    init(fabric: FakeFabric, queuePair: UInt32, maxInlineBytes: Int, maxMessageBytes: Int, depth: Int) {
        self.fabric = fabric
        self.maxInlineBytes = maxInlineBytes
        self.maxMessageBytes = maxMessageBytes
        self.depth = depth
        var gid = [UInt8](repeating: 0, count: 16)
        gid[10] = 0xFF
        gid[11] = 0xFF
        gid[15] = UInt8(truncatingIfNeeded: queuePair)
        address = VerbsAddress(gid: gid, lid: 0, queuePair: queuePair, queueKey: 0x4341_524C)
    }

    var me: UInt32 { address.queuePair }

    func register(_ memory: UnsafeMutableRawBufferPointer) throws(VerbsError) -> UInt32 {
        fabric.state.withLock { s in
            s.nextKey += 1
            s.queues[me]!.regions.append((memory.baseAddress!, memory.count, s.nextKey))
            return s.nextKey
        }
    }

    func addressHandle(for peer: VerbsAddress) throws(VerbsError) -> VerbsAddressHandle { VerbsAddressHandle(raw: UInt(peer.queuePair)) }

    /// The queue pair goes away: nothing posted to it lands any more, and its memory is forgotten.
    func close() {
        fabric.state.withLock { s in
            s.queues[me]?.posted = []
            s.queues[me]?.inFlight = []
            s.queues[me]?.regions = []
        }
    }
    func release(_ handle: VerbsAddressHandle) {}

    static func inside(_ regions: [(base: UnsafeMutableRawPointer, count: Int, key: UInt32)], _ start: UnsafeRawPointer?, _ count: Int, key: UInt32)
        -> Bool
    {
        guard let start else { return false }
        return regions.contains { r in
            r.key == key && start >= UnsafeRawPointer(r.base) && start + count <= UnsafeRawPointer(r.base) + r.count
        }
    }

    func postReceive(id: UInt64, into buffer: UnsafeMutableRawBufferPointer, key: UInt32) throws(VerbsError) {
        fabric.state.withLock { s in
            if !Self.inside(s.queues[me]!.regions, buffer.baseAddress, buffer.count, key: key) { s.counts.unregisteredAccesses += 1 }
            s.queues[me]!.posted.append((id, buffer, key))
        }
    }

    func postSend(id: UInt64, _ bytes: UnsafeRawBufferPointer, key: UInt32, to handle: VerbsAddressHandle, peer: VerbsAddress, inline: Bool)
        throws(VerbsError)
    {
        let full = fabric.state.withLock { s -> Bool in
            guard s.queues[me]!.outstandingSends < depth else { return true }
            if !Self.inside(s.queues[me]!.regions, bytes.baseAddress, bytes.count, key: key) { s.counts.unregisteredAccesses += 1 }
            if inline, bytes.count > maxInlineBytes { s.counts.unregisteredAccesses += 1 }
            s.queues[me]!.outstandingSends += 1
            s.queues[me]!.inFlight.append(.init(id: id, target: UInt32(handle.raw), copied: inline ? Array(bytes) : nil, pointer: bytes))
            return false
        }
        if full { throw .call("ibv_post_send (fake: send queue full)", errno: 12) }
    }

    func poll(_ which: VerbsCompletionQueue, into completions: UnsafeMutableBufferPointer<VerbsCompletion>) throws(VerbsError) -> Int {
        fabric.state.withLock { s in
            s.progress()
            var queue = s.queues[me]!
            var n = 0
            if which == .send {
                while n < completions.count, !queue.sendCompletions.isEmpty {
                    completions[n] = queue.sendCompletions.removeFirst()
                    queue.outstandingSends -= 1
                    n += 1
                }
            } else {
                while n < completions.count, !queue.receiveCompletions.isEmpty {
                    completions[n] = queue.receiveCompletions.removeFirst()
                    n += 1
                }
            }
            s.queues[me] = queue
            return n
        }
    }
}
