import CarillonOrdering
import CarillonSchedule

/// One process on the bus: a node (its place in the cluster's address list)
/// in one incarnation. A restarted process is a new incarnation of its node
/// and joins as a new member.
public struct MemberID: Sendable, Hashable, CustomStringConvertible {
    /// Index of the node in the cluster's address list.
    public var node: UInt16
    /// Chosen at start, larger for every restart of the node (the shell uses
    /// the realtime clock in nanoseconds).
    public var incarnation: UInt64

    public init(node: UInt16, incarnation: UInt64) {
        self.node = node
        self.incarnation = incarnation
    }

    public var description: String { "\(node)/\(incarnation)" }
}

/// A view: an epoch, the members in rank order and the round its schedule starts.
///
/// Rank `i` owns slot `i` of every round from ``startRound`` on. Views change
/// only by a view change, which every member sees at the same point of the
/// delivered stream.
public struct View: Sendable, Hashable, CustomStringConvertible {
    /// Increases by one with every installed view.
    public var epoch: UInt32
    /// Members in rank order.
    public var members: [MemberID]
    /// First round of this view's schedule (the end round of the previous view).
    public var startRound: UInt64

    public init(epoch: UInt32, members: [MemberID], startRound: UInt64) {
        self.epoch = epoch
        self.members = members
        self.startRound = startRound
    }

    /// Rank of `member` in this view, if it is one.
    public func rank(of member: MemberID) -> Int? { members.firstIndex(of: member) }

    /// Rank of the member on `node` (any incarnation), if there is one.
    public func rank(ofNode node: UInt16) -> Int? { members.firstIndex { $0.node == node } }

    /// Members needed for a majority of this view.
    public var majority: Int { members.count / 2 + 1 }

    public var description: String {
        "epoch \(epoch) from round \(startRound): [" + members.map(\.description).joined(separator: ", ") + "]"
    }
}

/// A proposed next view and the cut that ends the current one.
public struct ViewProposal: Sendable, Hashable {
    /// The next view's members in rank order.
    public var members: [MemberID]
    /// Per rank of the current view: its rounds below this are delivered, the
    /// rest are silent by decision (the ragged trim).
    public var cut: [UInt64]
    /// The current view ends and the next starts at this round.
    public var startRound: UInt64

    public init(members: [MemberID], cut: [UInt64], startRound: UInt64) {
        self.members = members
        self.cut = cut
        self.startRound = startRound
    }
}

/// Something the membership layer tells the application, at a point in the
/// delivered stream: after the first ``deliveriesBefore`` deliveries of the
/// same effects.
public struct ViewEvent: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        /// A view was installed: every member of it sees this event at the same
        /// point of the order. `joined` lists members new in it, who need the
        /// state at this point (see ``MembershipInstance/provideSnapshot(_:forEpoch:)``).
        case installed(View, joined: [MemberID])
        /// This member was left out of the decided view (it was not among the
        /// members that answered in time): it stopped delivering and rejoins as
        /// a new incarnation. The `unsent` messages it had queued (never in a
        /// frame) are sent again once it has rejoined; messages of its frames
        /// past the cut are not delivered anywhere.
        case excluded(epoch: UInt32, unsent: Int)
        /// A view change has not been decided for this many rounds: this member
        /// may not be in the primary component (a minority side never will be;
        /// a slow change may still end), and it delivers nothing until a view
        /// is decided.
        case noPrimaryComponent(epoch: UInt32, waitingRounds: Int)
        /// This member joined a view and received the state at that view's cut
        /// (empty when the view was the first, or no service provided state).
        case stateReceived(View, state: [UInt8])
    }

    public var deliveriesBefore: Int
    public var kind: Kind
}

/// How a member builds each view's schedule and ordering configuration.
public struct MembershipConfiguration: Sendable {
    /// This process.
    public var me: MemberID
    /// The first view, or `nil` to start by joining a running cluster.
    public var initialView: View?
    /// Settings every view's ordering instance shares; `rank`, `schedule`,
    /// `epoch` and `firstRound` are set per view.
    public var ordering: OrderingConfiguration
    /// The schedule's reservation and guard share, applied to each view's member count.
    public var reservation: Double
    public var guardFraction: Double = 0.1
    /// A proposer that has not reached a decision in this many rounds is
    /// superseded (by itself with a higher ballot, or by the next live member).
    public var proposalTimeoutRounds: Int = 40
    /// Rounds a member keeps answering for the previous view after installing
    /// the next, so members still finishing it can fetch frames; and keeps
    /// announcing the decision to members that missed it.
    public var retireRounds: Int = 200
    /// Rounds a joiner waits between join requests.
    public var joinRetryRounds: Int = 20
    /// Largest state-transfer chunk per frame.
    public var stateChunkBytes: Int = 1024
    /// The run of the cluster this member's first view belongs to: every
    /// member of the first view is given the same value, a different one for
    /// every start of the cluster (the runtime uses the first view's start
    /// time). The shell binds it into every slot and repair frame's tag; every
    /// membership frame names it, and frames naming another run are ignored.
    /// A joiner may leave it 0: it adopts the run of the decision that admits it.
    public var runIdentity: UInt64 = 0
    /// A member of the first view whose first input comes this many rounds or
    /// more after the view's start round does not take part in it: it is a
    /// restart (or started too late to be waited for), and joins as a new
    /// incarnation instead. Reusing the first view would reuse its
    /// incarnation and rounds its earlier self may already have sent. A
    /// restart sooner than this is not told apart from a first start, so keep
    /// it shorter than a process restart, and long enough for every member of
    /// a fresh cluster to start (the runtime derives it from one second).
    public var lateStartRounds: Int = 20
    /// A deliberately broken variant, for showing that the simulator's checkers
    /// catch what each rule prevents (tests only).
    @_spi(Canary) public var canary: MembershipCanary? = nil

    /// Nodes in the cluster (its address list): ``OrderingConfiguration/maxMemberCount``
    /// of ``ordering``. Every node index on the wire is below it, and no view
    /// or proposal has more members.
    public var nodeCount: Int { max(ordering.maxMemberCount, 1) }

    /// The most nodes a cluster can have with `maxFrameBytes`-byte frames and
    /// `tagLength`-byte tags: every membership frame of a view of that many
    /// members fits one frame. The largest is an agreement frame,
    /// `192 + 36·n + tagLength` bytes (header 40; 10 view fields, 8 + 10·12;
    /// positions, next members and cut, 8 + 12·n each), so
    /// `n = (maxFrameBytes − 192 − tagLength) / 36`, rounded down (docs/configuration.md).
    public static func maximumMemberCount(maxFrameBytes: Int, tagLength: Int) -> Int {
        var count = max(0, (maxFrameBytes - MembershipFrame.largestFrameBytes(memberCount: 0, tagLength: tagLength)) / 36)
        // (The state-transfer frame's floor can exceed the agreement frame's for tiny counts.)
        while count > 0, MembershipFrame.largestFrameBytes(memberCount: count, tagLength: tagLength) > maxFrameBytes { count -= 1 }
        return min(count, Int(UInt16.max) + 1)
    }

    /// The most nodes with the default 1,472-byte frames (an Ethernet MTU's
    /// UDP payload) and the runtime's 16-byte tags: (1472 − 192 − 16) / 36 = 35.
    public static let maximumMemberCount = maximumMemberCount(maxFrameBytes: 1_472, tagLength: 16)

    /// Checks that every membership frame of a cluster of ``nodeCount``
    /// nodes fits ``OrderingConfiguration/maxFrameBytes``, and that this
    /// member and the first view name nodes of the cluster.
    public func validate() throws(MembershipConfigurationError) {
        let nodes = max(ordering.maxMemberCount, ordering.memberCount, initialView?.members.count ?? 0)
        let limit = Self.maximumMemberCount(maxFrameBytes: ordering.maxFrameBytes, tagLength: ordering.tagLength)
        guard nodes <= limit else {
            throw .tooManyMembers(
                memberCount: nodes, maximumMemberCount: limit, maxFrameBytes: ordering.maxFrameBytes,
                tagLength: ordering.tagLength,
                neededFrameBytes: MembershipFrame.largestFrameBytes(memberCount: nodes, tagLength: ordering.tagLength))
        }
        guard Int(me.node) < nodeCount else { throw .nodeOutOfRange(node: me.node, nodeCount: nodeCount) }
        if let initialView {
            var seen = Set<UInt16>()
            for member in initialView.members {
                guard Int(member.node) < nodeCount else { throw .nodeOutOfRange(node: member.node, nodeCount: nodeCount) }
                guard seen.insert(member.node).inserted else { throw .duplicateNode(member.node) }
            }
        }
    }

    public init(me: MemberID, initialView: View?, ordering: OrderingConfiguration) {
        self.me = me
        self.initialView = initialView
        self.ordering = ordering
        reservation = ordering.schedule.reservation
        guardFraction = Double(ordering.schedule.guardNanos) / Double(max(ordering.schedule.slotNanos, 1))
    }

    /// The ordering configuration for `view`, with this member at `rank`.
    func orderingConfiguration(view: View, rank: Int) throws(OrderingConfigurationError) -> OrderingConfiguration {
        let base = ordering.schedule
        let schedule: TDMASchedule
        do {
            schedule = try TDMASchedule(
                memberCount: view.members.count, roundPeriodNanos: base.roundPeriodNanos, reservation: reservation,
                guardFraction: guardFraction, originNanos: base.originNanos)
        } catch {
            throw .schedule(error)
        }
        var configuration = ordering
        configuration.schedule = schedule
        configuration.rank = rank
        configuration.epoch = view.epoch
        configuration.firstRound = view.startRound
        return configuration
    }
}

/// What is wrong with a ``MembershipConfiguration``.
public enum MembershipConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The first view's ordering configuration is invalid.
    case ordering(OrderingConfigurationError)
    /// A membership frame of a view this large would not fit a frame.
    case tooManyMembers(memberCount: Int, maximumMemberCount: Int, maxFrameBytes: Int, tagLength: Int, neededFrameBytes: Int)
    /// A node index at or above the cluster's node count.
    case nodeOutOfRange(node: UInt16, nodeCount: Int)
    /// The first view lists a node twice.
    case duplicateNode(UInt16)
    /// This member is not in the first view it was given.
    case notInInitialView(MemberID)

    public var description: String {
        switch self {
        case .ordering(let error): return "ordering: \(error)"
        case .tooManyMembers(let n, let limit, let frame, let tag, let needed):
            return "\(n) members is more than \(limit), the most whose membership frames fit \(frame)-byte frames with a "
                + "\(tag)-byte tag (the largest needs 192 + 36·members + tag = \(needed) bytes): list at most \(limit) members, "
                + "or raise the frame size (max_frame_bytes) to at least \(needed)"
        case .nodeOutOfRange(let node, let count): return "node \(node) is not one of the cluster's \(count) nodes (0...\(count - 1))"
        case .duplicateNode(let node): return "the first view lists node \(node) twice"
        case .notInInitialView(let me): return "member \(me) is not in the first view it was given"
        }
    }
}
