import CarillonMembership

/// A client session: one client of one member (a process connected to a
/// node's endpoint, or an in-process caller). The member is named by node and
/// incarnation, so a session ends — deterministically, at the same position
/// everywhere — when the view change that removes its member is delivered,
/// and a restarted node's clients never inherit the sessions of the one before.
public struct SessionID: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The member that broadcasts the session's commands.
    public var member: MemberID
    /// Chosen by that member, unique among its sessions.
    public var client: UInt32

    public init(member: MemberID, client: UInt32) {
        self.member = member
        self.client = client
    }

    public static func < (a: SessionID, b: SessionID) -> Bool {
        (a.member.node, a.member.incarnation, a.client) < (b.member.node, b.member.incarnation, b.client)
    }

    public var description: String { "\(member)#\(client)" }

    func write(to w: inout ByteWriter) {
        w.u16(member.node)
        w.u64(member.incarnation)
        w.u32(client)
    }

    static func read(from r: inout ByteReader) throws(ServiceDecodeError) -> SessionID {
        let node = try r.u16()
        let incarnation = try r.u64()
        let client = try r.u32()
        return SessionID(member: MemberID(node: node, incarnation: incarnation), client: client)
    }
}

/// What kind of message an envelope carries.
public enum EnvelopeKind: UInt8, Sendable {
    /// A command for the service named in the envelope.
    case command = 1
    /// The session ends (its client went away): every service lets go of
    /// what the session held and waited for.
    case endSession = 2
}

/// The command envelope: the bus payload of every service command (version 1,
/// little-endian; docs/wire-format.md, "Service envelope").
///
/// ```
/// 0   u8   version (1)
/// 1   u8   kind (1 command, 2 end session)
/// 2   u16  service id
/// 4   u16  session member's node
/// 6   u64  session member's incarnation
/// 14  u32  session client
/// 18  u64  request id (per session, increasing)
/// 26  u64  acknowledged below: the client has every response below this id
/// 34  u16  capability length, then the capability (empty when none is presented)
/// ..  body: the service's command, to the end of the payload
/// ```
public struct CommandEnvelope {
    public static let version: UInt8 = 1
    /// Bytes before the capability.
    public static let headerBytes = 36

    public var kind: EnvelopeKind
    public var service: UInt16
    public var session: SessionID
    public var requestID: UInt64
    public var acknowledgedBelow: UInt64
    /// The presented capability's bytes (``Capability/encoded``), empty when
    /// none is; the owned-object service checks it, the others ignore it.
    public var capability: UnsafeRawBufferPointer
    /// The service's command, borrowed from the payload.
    public var body: UnsafeRawBufferPointer

    /// Reads an envelope from a delivered payload (borrowed, no copy).
    public static func decode(_ payload: UnsafeRawBufferPointer) throws(ServiceDecodeError) -> CommandEnvelope {
        var r = ByteReader(payload)
        let version = try r.u8()
        guard version == Self.version else { throw .unsupportedVersion(version) }
        let rawKind = try r.u8()
        guard let kind = EnvelopeKind(rawValue: rawKind) else { throw .unknownKind(rawKind) }
        let service = try r.u16()
        let session = try SessionID.read(from: &r)
        let requestID = try r.u64()
        let acknowledged = try r.u64()
        let capabilityLength = Int(try r.u16())
        let capability = try r.raw(capabilityLength)
        let body = r.rest()
        return CommandEnvelope(
            kind: kind, service: service, session: session, requestID: requestID,
            acknowledgedBelow: acknowledged, capability: capability, body: body)
    }

    /// Appends an envelope's header (and `capability`, empty by default) to
    /// `w`; the caller appends the body.
    public static func writeHeader(
        kind: EnvelopeKind, service: UInt16, session: SessionID, requestID: UInt64,
        acknowledgedBelow: UInt64, capability: [UInt8] = [], to w: inout ByteWriter
    ) {
        w.u8(version)
        w.u8(kind.rawValue)
        w.u16(service)
        session.write(to: &w)
        w.u64(requestID)
        w.u64(acknowledgedBelow)
        w.u16(UInt16(capability.count))
        w.raw(capability)
    }
}

/// The outcome of a request, first byte of every response.
public enum ServiceStatus: UInt8, Sendable, Hashable, CustomStringConvertible {
    case ok = 0
    /// Locks: granted; the body holds the fencing token.
    case granted = 1
    /// Locks: a try-acquire found the lock held (or others waiting before it).
    case busy = 2
    /// Locks: the session does not hold the lock it released.
    case notHeld = 3
    /// Locks: the session already holds the lock (locks are not reentrant).
    case alreadyHeld = 4
    /// Locks: a wait was withdrawn (timeout); nothing was granted.
    case cancelled = 5
    /// Locks: nothing to withdraw (the grant came first: the session holds the lock).
    case notWaiting = 6
    /// Objects: no such key.
    case notFound = 7
    /// Objects: compare-and-set found another version (the body holds it).
    case versionMismatch = 8
    /// Objects: the key holds a value that is not a counter.
    case notACounter = 9
    /// The command could not be read; nothing was applied.
    case badRequest = 10
    /// No state machine serves the envelope's service id.
    case unknownService = 11
    /// The session's command came from another member than the session's own
    /// (sessions cannot be borrowed); nothing was applied.
    case foreignSession = 12
    /// The session's window of remembered responses is full: the client must
    /// acknowledge responses before sending more.
    case windowFull = 13
    /// The member is not in a primary component (returned by the shell, never
    /// by a state machine): nothing was ordered within the bounded wait.
    case noPrimary = 14
    /// The request's outcome is unknown: its member was left out of a view
    /// (returned by the shell) before the request was delivered locally.
    case outcomeUnknown = 15
    /// The request timed out in the shell.
    case timedOut = 16
    /// The session ended before the request completed.
    case sessionEnded = 17
    /// The capability is missing, forged, revoked, for another object, or lacks the right (the body says which).
    case forbidden = 18
    /// An object of that name exists.
    case exists = 19
    /// Every copy of the object was lost (its owner and backups failed).
    case objectLost = 20
    /// The migration aborted; the object stays where it was (or at a promoted backup).
    case aborted = 21

    public var description: String {
        switch self {
        case .ok: "ok"
        case .granted: "granted"
        case .busy: "busy"
        case .notHeld: "not held"
        case .alreadyHeld: "already held"
        case .cancelled: "cancelled"
        case .notWaiting: "not waiting"
        case .notFound: "not found"
        case .versionMismatch: "version mismatch"
        case .notACounter: "not a counter"
        case .badRequest: "bad request"
        case .unknownService: "unknown service"
        case .foreignSession: "foreign session"
        case .windowFull: "window full"
        case .noPrimary: "no primary component"
        case .outcomeUnknown: "outcome unknown"
        case .timedOut: "timed out"
        case .sessionEnded: "session ended"
        case .forbidden: "forbidden"
        case .exists: "exists"
        case .objectLost: "object lost"
        case .aborted: "aborted"
        }
    }
}
