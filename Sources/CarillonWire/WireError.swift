/// Why a buffer is not a valid frame, or why a frame does not fit a buffer.
///
/// The decoder returns one of these for every malformed input; it never traps and
/// never reads outside the buffer it was given.
public enum WireError: Error, Sendable, Hashable {
    /// The buffer ends before `needed` bytes; it has `available`.
    case truncated(needed: Int, available: Int)
    /// The first four bytes are not the Carillon magic.
    case badMagic(UInt32)
    /// A version this decoder does not read.
    case unsupportedVersion(UInt8)
    /// A frame kind code version 1 does not define (3 and 4 are reserved).
    case unknownFrameKind(UInt8)
    /// A section kind code that is neither known nor marked skippable.
    case unknownSectionKind(UInt16)
    /// Header flag bits version 1 does not define.
    case unknownFlags(UInt16)
    /// The reserved header field or an entry's reserved field is not zero.
    case reservedFieldNotZero
    /// `authenticated` and `tagLength` disagree, or the tag is longer than ``Wire/maxTagBytes``.
    case badTag(tagLength: Int)
    /// Declared lengths add up to more than a frame may hold.
    case lengthOverflow
    /// Header plus body plus tag is not the size of the datagram.
    case frameLengthMismatch(declared: Int, actual: Int)
    /// More or fewer sections than the header declares. (Body bytes left over
    /// that cannot hold a section header are reported as ``truncated(needed:available:)``.)
    case sectionCountMismatch(declared: Int, found: Int)
    /// A section's entries do not fill its declared length exactly.
    case entryCountMismatch(section: UInt16, declaredEntries: Int)
    /// A section kind appears twice in one frame.
    case duplicateSection(UInt16)
    /// A section that is not allowed in this frame kind (data in a repair frame,
    /// retransmissions in a slot frame or inside an embedded frame).
    case sectionNotAllowed(section: UInt16, kind: UInt8)
    /// A round range whose first round is after its last.
    case invalidRange(first: UInt64, last: UInt64)
    /// An embedded frame is itself malformed.
    case malformedEmbeddedFrame
    /// The encoder ran out of room in the caller's buffer.
    case bufferTooSmall(needed: Int, available: Int)
    /// The encoder was used out of order (a section left open, an entry with no section).
    case encoderMisuse
}
