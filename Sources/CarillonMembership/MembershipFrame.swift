import CarillonWire

/// The membership frame (kind 3): its encoding and its size limits.
///
/// A membership frame is a header, a `viewFields` section and, as the frame
/// needs them, a `viewPositions` section (one entry per rank of the view), a
/// `viewMembers` and a `viewCut` section (the proposal: one entry per member
/// of the next view, one per rank of the current view) and a `data` section
/// (one state-transfer chunk), then the tag. Every entry is a rank entry of
/// ``Wire/rankEntryBytes`` bytes.
///
/// The largest kind is the agreement frame of a member that has promised,
/// accepted a proposal and restates everything: with `n` members in the view
/// and at most `n` in the proposal (a node appears once in a view, and node
/// indices are below the cluster's node count, which bounds `n` too),
///
///     header                          40
///     viewFields     8 + 12 · 10     128   (see `maxViewFields`)
///     viewPositions  8 + 12 · n
///     viewMembers    8 + 12 · n
///     viewCut        8 + 12 · n
///     tag                              t
///     total                 192 + 36 · n + t
///
/// Join requests (2 fields), announcements (5 fields and the proposal) and
/// state-transfer chunks (4 fields and a data section cut to fit) are smaller.
/// With 1,472-byte frames and a 16-byte tag that is `n ≤ (1472 − 208) / 36`,
/// 35 members (``MembershipConfiguration/maximumMemberCount``).
enum MembershipFrame {
    /// View fields one membership frame carries at most: incarnation, run,
    /// promised, proposing and accepted ballots, decided, holds the cut,
    /// leaving, state received (an agreement frame) and the proposal's start round.
    static let maxViewFields = 10

    /// Bytes of the largest membership frame in a cluster of `memberCount`
    /// nodes (views and proposals of up to that many members).
    static func largestFrameBytes(memberCount: Int, tagLength: Int) -> Int {
        let agreement =
            Wire.headerBytes + Wire.sectionHeaderBytes + maxViewFields * Wire.rankEntryBytes
            + 3 * (Wire.sectionHeaderBytes + memberCount * Wire.rankEntryBytes) + tagLength
        // A state-transfer chunk needs its overhead plus at least one byte.
        return max(agreement, stateChunkOverheadBytes(tagLength: tagLength) + 1)
    }

    /// Bytes of a state-transfer frame around its chunk (generous: room for 9 fields and 3 sections).
    static func stateChunkOverheadBytes(tagLength: Int) -> Int {
        Wire.headerBytes + 3 * Wire.sectionHeaderBytes + 9 * Wire.rankEntryBytes + Wire.messageHeaderBytes + tagLength
    }

    /// Encodes one membership frame into `buffer`; returns its length.
    static func encode(
        into buffer: UnsafeMutableRawBufferPointer, sender: UInt16, epoch: UInt32, round: UInt64, nowNanos: UInt64,
        fields: [RankEntry], positions: [UInt64]?, proposal: ViewProposal?, chunk: (offset: Int, bytes: [UInt8])?,
        tagLength: Int
    ) throws(WireError) -> Int {
        var encoder = try FrameEncoder(
            buffer: buffer,
            header: FrameHeader(
                kind: .membership, senderRank: sender, epoch: epoch, round: round,
                senderTimestampNanos: nowNanos))
        var all = fields
        if let proposal { all.append(RankEntry(rank: ViewField.startRound.rawValue, value: proposal.startRound)) }
        try encoder.beginSection(.viewFields)
        for field in all { try encoder.appendEntry(field) }
        try encoder.endSection()
        if let positions {
            try encoder.beginSection(.viewPositions)
            for (r, below) in positions.enumerated() { try encoder.appendEntry(RankEntry(rank: UInt16(truncatingIfNeeded: r), value: below)) }
            try encoder.endSection()
        }
        if let proposal {
            try encoder.beginSection(.viewMembers)
            for member in proposal.members {
                try encoder.appendEntry(RankEntry(rank: member.node, value: member.incarnation))
            }
            try encoder.endSection()
            try encoder.beginSection(.viewCut)
            for (r, cut) in proposal.cut.enumerated() { try encoder.appendEntry(RankEntry(rank: UInt16(truncatingIfNeeded: r), value: cut)) }
            try encoder.endSection()
        }
        if let chunk {
            try encoder.beginSection(.data)
            try chunk.bytes.withBytes { bytes throws(WireError) in
                try encoder.appendMessage(sequence: UInt64(chunk.offset), payload: bytes)
            }
            try encoder.endSection()
        }
        return try encoder.finish(tagLength: tagLength)
    }
}

extension Array where Element == UInt8 {
    @inline(__always)
    fileprivate func withBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        let result: Result<R, E> = withUnsafeBytes { bytes in
            do throws(E) { return .success(try body(bytes)) } catch { return .failure(error) }
        }
        return try result.get()
    }
}
