/// The Carillon wire format, version 1.
///
/// Every datagram on the bus is one frame: a fixed 40-byte little-endian header,
/// then `bodyLength` bytes of sections, then `tagLength` bytes of authentication
/// tag. Sections are length-delimited, so a decoder can check every count against
/// every length before it hands out a single byte. docs/wire-format.md has the bit
/// diagrams; this file is the single source of the numbers in them.
public enum Wire {
    /// `"CRLN"` read as a little-endian `UInt32` (bytes 0x43 0x52 0x4C 0x4E on the wire).
    public static let magic: UInt32 = 0x4E4C_5243
    /// The only version this codec reads and writes.
    public static let version: UInt8 = 1
    /// Bytes in the fixed frame header.
    public static let headerBytes = 40
    /// Bytes in every section header: kind (2), entry count (2), length (4).
    public static let sectionHeaderBytes = 8
    /// Bytes before each message's payload in a data batch: sequence (8), length (4).
    public static let messageHeaderBytes = 12
    /// Bytes of the entry layout positions, suspicions and clock samples share:
    /// rank (2), reserved zero (2), a 64-bit value (8).
    public static let rankEntryBytes = 12
    /// Bytes per entry in a positions section: rank (2), reserved (2), round (8).
    public static let positionEntryBytes = rankEntryBytes
    /// Bytes per entry in a NAK section: rank (2), reserved (2), first round (8), last round (8).
    public static let nakEntryBytes = 20
    /// Bytes per entry in a silent-rounds section: first round (8), last round (8).
    public static let silentEntryBytes = 16
    /// Bytes per entry in a clock-samples section: rank (2), reserved (2), signed nanoseconds (8).
    public static let clockEntryBytes = rankEntryBytes
    /// Bytes per entry in a suspicions section: rank (2), reserved (2), silent-since round (8).
    public static let suspicionEntryBytes = rankEntryBytes
    /// Bytes before each embedded frame in a retransmission section: its length (4).
    public static let retransmissionEntryHeaderBytes = 4
    /// The longest authentication tag a frame may carry.
    public static let maxTagBytes = 64
    /// The longest frame the codec accepts: the largest UDP payload over IPv4.
    public static let maxFrameBytes = 65_507
}

/// What a frame is for. Code 4 (bulk) is reserved for the bulk channel; the
/// decoder rejects it as unknown until it exists.
public enum FrameKind: UInt8, Sendable, CaseIterable {
    /// The one frame a member sends in its own slot of a round.
    case slot = 1
    /// Retransmissions and silent-round statements answering NAKs, sent in the
    /// repairing member's slot after its slot frame.
    case repair = 2
    /// View-change state (ballots, positions, proposed view, cut) and join
    /// requests and state-transfer chunks; see docs/protocol.md, "Membership".
    case membership = 3
}

/// Section kind codes. A kind with ``SectionKind/skippableBit`` set may be
/// skipped by a decoder that does not know it; any other unknown kind is an error.
public enum SectionKind: UInt16, Sendable, CaseIterable {
    /// Messages: per-sender sequence, length, payload.
    case data = 0x0001
    /// Received-below positions (acknowledgements) feeding the stability line.
    case positions = 0x0002
    /// Negative acknowledgements: ranges of rounds missing from a sender.
    case naks = 0x0003
    /// Whole frames re-sent to fill gaps (only in repair frames, never nested).
    case retransmissions = 0x0004
    /// Ranges of the frame sender's rounds in which it sent no messages.
    case silentRounds = 0x0005
    /// Suspicions: the members the frame's sender has heard nothing from for
    /// its configured number of slots. Each frame restates the full set.
    case suspicions = 0x0010
    /// Membership frames: key/value fields (``ViewField`` key, 64-bit value).
    case viewFields = 0x0020
    /// Membership frames: the sender's received-below round per old-view rank,
    /// as of the frame (restated while it has promised; never below what it
    /// had when it wedged).
    case viewPositions = 0x0021
    /// Membership frames: the proposed view's members in rank order (node, incarnation).
    case viewMembers = 0x0022
    /// Membership frames: the proposed cut, per old-view rank the first round not delivered.
    case viewCut = 0x0023
    /// Repair frames: silent rounds of *another* member, relayed during a view
    /// change (NAK-shaped entries: rank, first, last).
    case relayedSilence = 0x0024
    /// Clock samples: per peer, the smallest `receive − send` timestamp
    /// difference the frame's sender saw on that peer's frames. Skippable:
    /// decoders that do not know it lose only clock estimates.
    case clockSamples = 0x8006

    /// Set on kinds that a decoder may skip when it does not know them. Later
    /// layers (membership, bulk) allocate codes 0x0010–0x00FF, skippable or not.
    public static let skippableBit: UInt16 = 0x8000
}

/// Header flag bits.
public struct FrameFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// The frame ends with a `tagLength`-byte authentication tag over header and body.
    public static let authenticated = FrameFlags(rawValue: 1 << 0)

    /// Every bit version 1 defines; any other set bit is rejected.
    public static let known: FrameFlags = [.authenticated]
}

/// The fixed frame header, decoded.
public struct FrameHeader: Sendable, Hashable {
    public var kind: FrameKind
    public var flags: FrameFlags
    /// Rank of the sending member in the view named by `epoch`.
    public var senderRank: UInt16
    /// Number of sections in the body.
    public var sectionCount: UInt16
    /// Bytes of sections after the header (the "payload length").
    public var bodyLength: UInt32
    /// View number: frames from another epoch belong to another membership.
    public var epoch: UInt32
    /// Bytes of authentication tag after the body.
    public var tagLength: UInt16
    /// TDMA round the frame belongs to (for a repair frame: the round it was sent in).
    public var round: UInt64
    /// Sender's clock, nanoseconds on the view's timebase, when the frame was built.
    public var senderTimestampNanos: UInt64

    public init(
        kind: FrameKind, flags: FrameFlags = [], senderRank: UInt16, sectionCount: UInt16 = 0,
        bodyLength: UInt32 = 0, epoch: UInt32, tagLength: UInt16 = 0, round: UInt64,
        senderTimestampNanos: UInt64
    ) {
        self.kind = kind
        self.flags = flags
        self.senderRank = senderRank
        self.sectionCount = sectionCount
        self.bodyLength = bodyLength
        self.epoch = epoch
        self.tagLength = tagLength
        self.round = round
        self.senderTimestampNanos = senderTimestampNanos
    }

    /// Header field byte offsets (see docs/wire-format.md).
    enum Offset {
        static let magic = 0
        static let version = 4
        static let kind = 5
        static let flags = 6
        static let senderRank = 8
        static let sectionCount = 10
        static let bodyLength = 12
        static let epoch = 16
        static let tagLength = 20
        static let reserved = 22
        static let round = 24
        static let senderTimestamp = 32
    }
}

/// A message of a data batch, read in place.
public struct WireMessage {
    /// The sender's per-member sequence number (first message is 1).
    public var sequence: UInt64
    /// The payload bytes, inside the buffer the frame was decoded from.
    public var payload: UnsafeRawBufferPointer
}

/// A received-below position: `rank` has received every frame of every member
/// for all rounds below `receivedBelowRound`.
public struct PositionEntry: Sendable, Hashable {
    public var rank: UInt16
    public var receivedBelowRound: UInt64
    public init(rank: UInt16, receivedBelowRound: UInt64) {
        self.rank = rank
        self.receivedBelowRound = receivedBelowRound
    }
}

/// A negative acknowledgement: rounds `firstRound...lastRound` of member `rank` are missing.
public struct NakRange: Sendable, Hashable {
    public var rank: UInt16
    public var firstRound: UInt64
    public var lastRound: UInt64
    public init(rank: UInt16, firstRound: UInt64, lastRound: UInt64) {
        self.rank = rank
        self.firstRound = firstRound
        self.lastRound = lastRound
    }
}

/// Rounds `firstRound...lastRound` in which the frame's sender sent no messages.
public struct SilentRange: Sendable, Hashable {
    public var firstRound: UInt64
    public var lastRound: UInt64
    public init(firstRound: UInt64, lastRound: UInt64) {
        self.firstRound = firstRound
        self.lastRound = lastRound
    }
}

/// A clock sample: the smallest `receive − send` (nanoseconds, signed) the
/// frame's sender saw on frames from member `rank`.
public struct ClockSample: Sendable, Hashable {
    public var rank: UInt16
    public var minOneWayNanos: Int64
    public init(rank: UInt16, minOneWayNanos: Int64) {
        self.rank = rank
        self.minOneWayNanos = minOneWayNanos
    }
}

/// A suspicion: nothing has been heard from member `rank` since round `silentSinceRound`.
public struct Suspicion: Sendable, Hashable {
    public var rank: UInt16
    public var silentSinceRound: UInt64
    public init(rank: UInt16, silentSinceRound: UInt64) {
        self.rank = rank
        self.silentSinceRound = silentSinceRound
    }
}

/// A 12-byte rank entry read generically: a 16-bit key (a rank, a node or a
/// ``ViewField``) and a 64-bit value.
public struct RankEntry: Sendable, Hashable {
    public var rank: UInt16
    public var value: UInt64
    public init(rank: UInt16, value: UInt64) {
        self.rank = rank
        self.value = value
    }
}

/// Keys of a membership frame's `viewFields` section.
public enum ViewField: UInt16, Sendable, CaseIterable {
    /// Highest ballot the sender promised (0: none).
    case promisedBallot = 1
    /// Ballot of the proposal the sender accepted (0: none); the proposal is in
    /// the frame's `viewMembers`/`viewCut` sections.
    case acceptedBallot = 2
    /// Set (1) when the accepted proposal is known to be decided.
    case decided = 3
    /// The sender's incarnation.
    case incarnation = 4
    /// Ballot the sender is proposing as proposer (0: none).
    case proposingBallot = 5
    /// The proposal's first round of the new view.
    case startRound = 6
    /// Set (1) when the sender holds every frame below the accepted cut.
    case holdsCut = 7
    /// A join request: the joiner's incarnation (the frame's sender field is its node).
    case joinRequest = 8
    /// State transfer: total snapshot bytes; the data section holds one chunk
    /// whose sequence field is its byte offset.
    case stateBytes = 9
    /// State transfer: the node the snapshot is for.
    case stateFor = 10
    /// State transfer acknowledgement: snapshot bytes received so far.
    case stateReceived = 11
    /// The sender left gracefully (1) or asks to leave.
    case leaving = 12
    /// The run identity the sender's view belongs to (every membership frame
    /// but a join request): a frame recorded in an earlier run of the same
    /// cluster under the same key names another run and is ignored.
    case run = 13
}
