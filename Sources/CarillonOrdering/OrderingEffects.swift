import CarillonWire

/// What an ``OrderingInstance`` asks its shell to do after one input.
///
/// The shell owns one `OrderingEffects`, passes it to every input method and
/// clears it (``removeAll()``, which keeps capacity) after carrying it out, so
/// the steady state allocates nothing. Carry the effects out in this order:
/// 1. fill in each frame's authentication tag, if the configuration reserves one;
/// 2. send ``frames`` in order, each to every other member of the view — the
///    slot frame first, then repair frames;
/// 3. hand ``deliveries`` to the application in order.
/// Sending before delivering keeps the bus's latency independent of how long
/// the application takes.
public struct OrderingEffects: Sendable {
    /// A frame to send, stored in ``frameBytes``.
    public struct Frame: Sendable, Hashable {
        public var offset: Int
        public var length: Int
        public var kind: FrameKind
        /// The round the frame was built for.
        public var round: UInt64
    }

    /// A message to hand to the application, its payload stored in ``deliveryBytes``.
    public struct Delivery: Sendable, Hashable {
        /// Epoch of the view the message was delivered in.
        public var epoch: UInt32
        /// Rank of the member that broadcast the message.
        public var sender: Int
        /// The sender's sequence number for it.
        public var sequence: UInt64
        /// Delivery key: round, slot (= sender's rank) and index in the batch.
        public var round: UInt64
        public var index: Int
        public var payloadOffset: Int
        public var payloadLength: Int
    }

    /// Frames to send, in order.
    public internal(set) var frames: [Frame] = []
    /// Backing bytes of ``frames``.
    public internal(set) var frameBytes: [UInt8] = []
    var frameBytesUsed = 0
    /// Messages to deliver, in total order.
    public internal(set) var deliveries: [Delivery] = []
    /// Backing bytes of delivered payloads.
    public internal(set) var deliveryBytes: [UInt8] = []
    /// Changes in what this member suspects (failure detection), in order.
    public internal(set) var membershipEvents: [MembershipEvent] = []

    public init() {}

    /// `true` when there is nothing to do.
    public var isEmpty: Bool { frames.isEmpty && deliveries.isEmpty && membershipEvents.isEmpty }

    /// Forgets all effects, keeping every buffer's capacity.
    public mutating func removeAll() {
        frames.removeAll(keepingCapacity: true)
        frameBytesUsed = 0
        deliveries.removeAll(keepingCapacity: true)
        deliveryBytes.removeAll(keepingCapacity: true)
        membershipEvents.removeAll(keepingCapacity: true)
    }

    /// Calls `body` with a frame's bytes.
    public func withBytes<R, E: Error>(of frame: Frame, _ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        let result: Result<R, E> = frameBytes.withUnsafeBytes { all in
            do throws(E) { return .success(try body(UnsafeRawBufferPointer(rebasing: all[frame.offset..<(frame.offset + frame.length)]))) } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// Calls `body` with a frame's bytes, writable (for filling in its tag).
    public mutating func withMutableBytes<R>(of frame: Frame, _ body: (UnsafeMutableRawBufferPointer) -> R) -> R {
        frameBytes.withUnsafeMutableBytes { all in
            body(UnsafeMutableRawBufferPointer(rebasing: all[frame.offset..<(frame.offset + frame.length)]))
        }
    }

    /// Calls `body` with a delivery's payload.
    public func withPayload<R, E: Error>(of delivery: Delivery, _ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        let result: Result<R, E> = deliveryBytes.withUnsafeBytes { all in
            do throws(E) {
                return .success(
                    try body(UnsafeRawBufferPointer(rebasing: all[delivery.payloadOffset..<(delivery.payloadOffset + delivery.payloadLength)])))
            } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// A delivery's payload as a slice of ``deliveryBytes`` (no copy).
    public func payload(of delivery: Delivery) -> ArraySlice<UInt8> {
        deliveryBytes[delivery.payloadOffset..<(delivery.payloadOffset + delivery.payloadLength)]
    }

    /// Makes room for `bytes` more frame bytes (allocates only when it must grow).
    mutating func reserveFrameBytes(_ bytes: Int) {
        let needed = frameBytesUsed + bytes
        if frameBytes.count < needed {
            frameBytes.append(contentsOf: repeatElement(0, count: needed - frameBytes.count))
        }
    }

    /// Encodes one frame into up to `maxBytes` fresh frame bytes and lists it
    /// for sending (used by layers above ordering, such as membership). `encode`
    /// returns the frame's length, 0 for "nothing to send". Returns whether a
    /// frame was added.
    @discardableResult
    public mutating func appendFrame(
        kind: FrameKind, round: UInt64, maxBytes: Int,
        _ encode: (UnsafeMutableRawBufferPointer) throws(WireError) -> Int
    ) throws(WireError) -> Bool {
        reserveFrameBytes(maxBytes)
        let start = frameBytesUsed
        let result: Result<Int, WireError> = frameBytes.withUnsafeMutableBytes { all in
            do throws(WireError) {
                return .success(try encode(UnsafeMutableRawBufferPointer(rebasing: all[start..<(start + maxBytes)])))
            } catch { return .failure(error) }
        }
        let length = try result.get()
        guard length > 0 else { return false }
        frames.append(Frame(offset: start, length: length, kind: kind, round: round))
        frameBytesUsed += length
        return true
    }

    mutating func appendDelivery(epoch: UInt32, sender: Int, sequence: UInt64, round: UInt64, index: Int, payload: UnsafeRawBufferPointer) {
        let offset = deliveryBytes.count
        deliveryBytes.append(contentsOf: payload)
        deliveries.append(
            Delivery(
                epoch: epoch, sender: sender, sequence: sequence, round: round, index: index,
                payloadOffset: offset, payloadLength: payload.count))
    }
}

/// A change in this member's view of who is alive.
public enum MembershipEvent: Sendable, Hashable {
    /// Nothing heard from `rank` for the configured number of slots, since `silentSinceRound`.
    case suspected(rank: Int, silentSinceRound: UInt64)
    /// `rank` was heard from again.
    case cleared(rank: Int)
}

/// Result of offering a payload to ``OrderingInstance/broadcast(_:)-(UnsafeRawBufferPointer)``.
public enum BroadcastResult: Sendable, Hashable {
    /// Queued for this member's next slot with this sequence number.
    case queued(sequence: UInt64)
    /// The send buffer is full: nothing was queued. Retry after a slot has
    /// passed (backpressure, never a silent drop).
    case sendBufferFull
    /// The payload can never fit one frame; the limit is given.
    case payloadTooLarge(maxPayloadBytes: Int)
    /// This member is not in an installed view (joining, or excluded and
    /// rejoining): nothing was queued. Retry once a view is installed.
    case notInView
}

/// What happened to one received datagram.
public enum FrameDisposition: Sendable, Hashable {
    /// The frame was new and has been taken in.
    case accepted
    /// A copy of a frame already taken in.
    case duplicate
    /// Well-formed but not for this instance: wrong epoch, unknown sender, or our own.
    case ignored
    /// Rounds too far ahead of this member's window; the sender repeats them on NAK.
    case beyondWindow
    /// Not a valid frame.
    case malformed(WireError)
}
