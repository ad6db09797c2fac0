/// The donor's side of a state transfer (docs/protocol.md §15, "Joins and state
/// transfer"): which joiners of a view this member is to hand the state, the
/// state once the application provided it, and how far each joiner acknowledged it.
///
/// Pure: ``MembershipInstance`` cuts the chunks into membership frames and feeds
/// the joiners' acknowledgements back.
struct OutgoingStateTransfer: Sendable {
    /// Joiners of view ``requestedEpoch`` waiting for the application's state.
    private(set) var requested: [MemberID] = []
    private(set) var requestedEpoch: UInt32 = 0
    /// Rounds this donor waits before sending (its place among the donors: the next take over).
    private(set) var delayRounds: UInt64 = 0
    /// The state being sent and, per joiner, the bytes it acknowledged.
    private(set) var state: [UInt8] = []
    private(set) var recipients: [(member: MemberID, acked: Int)] = []
    /// Rounds in which chunks are sent: `fromRound..<untilRound`.
    private(set) var fromRound: UInt64 = 0
    private(set) var untilRound: UInt64 = 0

    /// Whether the state of view `epoch` is wanted from this member.
    func isRequested(forEpoch epoch: UInt32) -> Bool { !requested.isEmpty && requestedEpoch == epoch }

    /// Whether chunks are still to be sent or acknowledged.
    var isSending: Bool { !recipients.isEmpty }

    /// A view was installed: `joiners` (none: this member is no donor) want the
    /// state of view `epoch` from this member after `delayRounds`.
    mutating func request(_ joiners: [MemberID], epoch: UInt32, delayRounds: UInt64) {
        requested = joiners
        guard !joiners.isEmpty else { return }
        requestedEpoch = epoch
        self.delayRounds = delayRounds
    }

    /// The application's state for the requested view: sent from `round` (plus the
    /// delay) for `sendRounds` rounds. Returns false (nothing changes) if it was not requested.
    @discardableResult
    mutating func provide(_ state: [UInt8], forEpoch epoch: UInt32, round: UInt64, sendRounds: Int) -> Bool {
        guard isRequested(forEpoch: epoch) else { return false }
        self.state = state
        recipients = requested.map { ($0, 0) }
        requested = []
        fromRound = round + delayRounds
        untilRound = fromRound + UInt64(sendRounds)
        return true
    }

    /// Joiner `node` says it received `received` bytes: a joiner that has them all is done.
    mutating func acknowledge(node: UInt16, received: Int) {
        guard let index = recipients.firstIndex(where: { $0.member.node == node }) else { return }
        recipients[index].acked = max(recipients[index].acked, min(received, state.count))
        if recipients[index].acked >= state.count, received >= state.count {
            recipients.remove(at: index)
        }
    }

    /// The chunks due at `round`, at most `chunkLimit` bytes each, for the
    /// recipients still in `view`: each from where its joiner acknowledged
    /// (an empty state is sent once, as an empty chunk). Past the sending
    /// window the transfer is given up.
    mutating func chunks(round: UInt64, view: View, chunkLimit: Int) -> [(member: MemberID, range: Range<Int>)] {
        guard !recipients.isEmpty, round >= fromRound, round < untilRound else {
            if !recipients.isEmpty, round >= untilRound { recipients = [] }
            return []
        }
        var chunks: [(member: MemberID, range: Range<Int>)] = []
        for (member, acked) in recipients where acked < state.count || acked == 0 {
            guard view.members.contains(member) else { continue }
            chunks.append((member, acked..<min(state.count, acked + chunkLimit)))
        }
        return chunks
    }
}

/// The joiner's side of a state transfer: the bytes received so far, in order,
/// and the total the donor announced.
struct IncomingStateTransfer: Sendable {
    /// The round this joiner installed its first view and began waiting.
    private(set) var sinceRound: UInt64 = 0
    /// The state received so far (contiguous from offset 0).
    private(set) var bytes: [UInt8] = []
    /// The state's size, once a donor announced it.
    private(set) var total: Int?
    /// The joiner acknowledges what it received until this round (after completing).
    private(set) var acknowledgeUntilRound: UInt64 = 0

    /// Starts waiting for the state of a view installed at `round`.
    mutating func start(round: UInt64) {
        sinceRound = round
        bytes = []
        total = nil
    }

    /// A donor's frame announces the state's size.
    mutating func announce(total: Int) { self.total = total }

    /// Takes the chunk at `offset` if it continues exactly where the received bytes
    /// end; a duplicate (or an earlier) chunk and one past a gap are refused.
    mutating func receive(offset: UInt64, _ payload: UnsafeRawBufferPointer) -> Bool {
        guard offset == UInt64(bytes.count) else { return false }
        bytes.append(contentsOf: payload)
        return true
    }

    /// Whether every announced byte arrived.
    var isComplete: Bool { total.map { bytes.count >= $0 } ?? false }

    /// Complete at `round`: it keeps acknowledging for `rounds` more rounds.
    mutating func completed(round: UInt64, acknowledgeRounds: Int) {
        acknowledgeUntilRound = round + UInt64(acknowledgeRounds)
    }
}
