import CarillonMembership

/// Where and for whom a command is applied.
public struct ApplyContext {
    /// The command's place in the bus order.
    public var position: BusPosition
    /// The service log's index of this event: one more for every command and
    /// view change applied, the same at every member. Fencing tokens and
    /// object versions are log indices.
    public var index: UInt64
    /// The session that sent the command and its request id.
    public var session: SessionID
    public var requestID: UInt64
    /// The envelope's capability bytes (empty when none was presented; ``Capability``).
    public var capability: UnsafeRawBufferPointer
    /// The view the command is applied in.
    public var view: View
}

/// A deterministic state machine replicated by applying the bus's commands in
/// bus order at every member.
///
/// Determinism rules — every member must compute the same state and the same
/// responses from the same commands:
/// - no clocks and no randomness: time enters only as commands (a timeout is a
///   client's cancel command, not a timer);
/// - no iteration over a `Dictionary` or `Set` whose order reaches the state,
///   a response or a snapshot: sort keys first;
/// - no floating-point state whose rounding could differ;
/// - nothing read from outside the command, the context and the state.
///
/// A machine answers a command by calling ``ServiceOutput/complete(_:_:status:body:)``
/// for it — at once, or later at another command's position (a queued lock
/// acquire is answered when it is granted) — at most once per request.
public protocol ReplicatedStateMachine: Sendable {
    /// The service id in the envelope; 1–255 are Carillon's, 256 and up are applications'.
    var serviceID: UInt16 { get }

    /// Applies one command; `command` is the envelope's body.
    mutating func apply(_ command: inout ByteReader, context: ApplyContext, output: inout ServiceOutput) throws(ServiceDecodeError)

    /// A view was installed at log index `index`; `removed` were in the last
    /// view and are not in this one (their sessions have already ended).
    mutating func applyViewChange(_ view: View, removed: [MemberID], index: UInt64, output: inout ServiceOutput)

    /// A session ended at log index `index`: release what it held, drop what it waited for.
    mutating func endSession(_ session: SessionID, index: UInt64, output: inout ServiceOutput)

    /// The whole state, deterministically encoded (equal states give equal bytes).
    func snapshot(into writer: inout ByteWriter)

    /// Replaces the state by a snapshot's.
    mutating func restore(from reader: inout ByteReader) throws(ServiceDecodeError)
}

extension ReplicatedStateMachine {
    public mutating func applyViewChange(_ view: View, removed: [MemberID], index: UInt64, output: inout ServiceOutput) {}
}

/// What applying events produced: responses to requests (``completions``,
/// their bodies in ``bodies``) and changes to watch (``changes``). Reused
/// between events; ``removeAll()`` keeps capacity.
public struct ServiceOutput: Sendable {
    /// A response to one request.
    public struct Completion: Sendable, Hashable {
        public var service: UInt16
        public var session: SessionID
        public var requestID: UInt64
        public var status: ServiceStatus
        /// Where the response was decided (the command's position, or the
        /// position of the event that granted a queued request).
        public var position: BusPosition
        public var index: UInt64
        public var bodyOffset: Int
        public var bodyLength: Int
    }

    /// A change an application may watch (the object store's keys).
    public struct Change: Sendable, Hashable {
        public enum Kind: UInt8, Sendable { case put = 1, delete = 2 }
        public var service: UInt16
        public var kind: Kind
        public var version: UInt64
        public var position: BusPosition
        public var keyOffset: Int
        public var keyLength: Int
        public var valueOffset: Int
        public var valueLength: Int
    }

    public internal(set) var completions: [Completion] = []
    public internal(set) var changes: [Change] = []
    /// What the holders of owned objects' bytes must do (``OwnedObjectService``), in order.
    public internal(set) var objectEffects: [ObjectEffect] = []
    /// Backing bytes of completion bodies and changes' keys and values.
    public var bodies = ByteWriter(capacity: 4096)

    /// Filled in by the host for each event.
    public internal(set) var position = BusPosition(epoch: 0, round: 0, slot: 0, index: 0)
    public internal(set) var index: UInt64 = 0
    var service: UInt16 = 0

    public init() {}

    public var isEmpty: Bool { completions.isEmpty && changes.isEmpty && objectEffects.isEmpty }

    public mutating func removeAll() {
        completions.removeAll(keepingCapacity: true)
        changes.removeAll(keepingCapacity: true)
        objectEffects.removeAll(keepingCapacity: true)
        bodies.removeAll()
    }

    /// Answers `requestID` of `session` with `status`; `body` appends the response's fields.
    public mutating func complete(
        _ session: SessionID, _ requestID: UInt64, status: ServiceStatus,
        body: (inout ByteWriter) -> Void = { _ in }
    ) {
        let start = bodies.count
        body(&bodies)
        completions.append(
            Completion(
                service: service, session: session, requestID: requestID, status: status,
                position: position, index: index, bodyOffset: start, bodyLength: bodies.count - start))
    }

    /// Records what the holders of an owned object must do.
    public mutating func objectEffect(_ effect: ObjectEffect) { objectEffects.append(effect) }

    /// Records a change of `key` for watchers.
    public mutating func changed(_ kind: Change.Kind, key: String, version: UInt64, value: UnsafeRawBufferPointer) {
        var key = key
        let keyStart = bodies.count
        key.withUTF8 { bodies.raw(UnsafeRawBufferPointer($0)) }
        let valueStart = bodies.count
        bodies.raw(value)
        changes.append(
            Change(
                service: service, kind: kind, version: version, position: position,
                keyOffset: keyStart, keyLength: valueStart - keyStart,
                valueOffset: valueStart, valueLength: value.count))
    }

    /// A completion's body, borrowed.
    public func withBody<R>(of c: Completion, _ f: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try bodies.bytes.withUnsafeBytes { try f(UnsafeRawBufferPointer(rebasing: $0[c.bodyOffset..<(c.bodyOffset + c.bodyLength)])) }
    }

    /// A completion's body, copied.
    public func body(of c: Completion) -> [UInt8] { Array(bodies.bytes[c.bodyOffset..<(c.bodyOffset + c.bodyLength)]) }

    public func key(of c: Change) -> String { String(decoding: bodies.bytes[c.keyOffset..<(c.keyOffset + c.keyLength)], as: UTF8.self) }
    public func value(of c: Change) -> [UInt8] { Array(bodies.bytes[c.valueOffset..<(c.valueOffset + c.valueLength)]) }
}
