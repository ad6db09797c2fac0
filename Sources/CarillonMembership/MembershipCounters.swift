import CarillonOrdering

/// Counters of the membership layer. What each counts, its unit and its metric
/// name are in ``descriptors``, the one place a counter is defined (see ``CounterSet``).
public struct MembershipCounters: CounterSet, Hashable {
    public var viewsInstalled = 0
    public var ballotsStarted = 0
    public var promisesMade = 0
    public var proposalsAccepted = 0
    public var exclusions = 0
    public var joinRequestsHeard = 0
    public var stateBytesSent = 0
    public var stateBytesReceived = 0
    public var membershipFramesSent = 0
    public var membershipFramesReceived = 0
    public var staleEpochFrames = 0
    public var otherRunFrames = 0
    public var staleJoinRequests = 0
    public var refusedDecisions = 0
    public var lateStarts = 0
    public var incarnationRefreshes = 0
    public var undecidedValuesDropped = 0
    /// Membership frames naming a node index, a member list or a cut outside
    /// the cluster's limits: dropped. Zero unless a peer is broken or misconfigured.
    public var outOfRangeFrames = 0
    /// Membership frames that did not fit `maxFrameBytes` and were not sent.
    /// Zero by construction: ``MembershipConfiguration/validate()`` refuses
    /// a node count whose largest frame could overflow.
    public var oversizedFrames = 0
    /// Decided views whose ordering configuration could not be built: the
    /// member rejoins instead. Zero by construction.
    public var uninstallableViews = 0
    public init() {}

    /// Every membership counter. The names exported before this table existed are kept as they were
    /// (`carillon_view_ballots_started`).
    public static let descriptors: [CounterDescriptor<MembershipCounters>] = [
        .init("carillon_views_installed", .events, \.viewsInstalled, "views installed"),
        .init("carillon_view_ballots_started", .events, \.ballotsStarted, "view-change ballots this member started"),
        .init("carillon_promises_made", .events, \.promisesMade, "view-change ballots this member promised (it wedged: no more data in the view)"),
        .init("carillon_proposals_accepted", .events, \.proposalsAccepted, "view proposals this member accepted"),
        .init(
            "carillon_exclusions", .events, \.exclusions,
            "times this member found itself excluded from a view (it then rejoins as a new incarnation)"),
        .init("carillon_join_requests_heard", .frames, \.joinRequestsHeard, "join requests received"),
        .init("carillon_state_bytes_sent", .bytes, \.stateBytesSent, "replicated-state bytes sent to joiners"),
        .init("carillon_state_bytes_received", .bytes, \.stateBytesReceived, "replicated-state bytes received on joining"),
        .init(
            "carillon_membership_frames_sent", .frames, \.membershipFramesSent,
            "membership frames sent (ballots, proposals, decisions, join requests, state)"),
        .init("carillon_membership_frames_received", .frames, \.membershipFramesReceived, "membership frames received"),
        .init(
            "carillon_stale_epoch_frames", .frames, \.staleEpochFrames,
            "frames of an epoch other than this member's view (an old one, or a later one not installed here): ignored"),
        .init(
            "carillon_other_run_frames", .frames, \.otherRunFrames,
            "membership frames naming another run of the cluster (replayed from an earlier run): ignored"),
        .init(
            "carillon_stale_join_requests", .frames, \.staleJoinRequests,
            "join requests of an incarnation no newer than one already seen in a view (a replay, or a dead incarnation): ignored"),
        .init(
            "carillon_refused_decisions", .events, \.refusedDecisions,
            "decisions not adopted: nothing promised in the view, or the cut lies below what was delivered (it rejoins instead)"),
        .init(
            "carillon_late_starts", .events, \.lateStarts,
            "starts as a member of the first view that came too late, joined as a new incarnation instead"),
        .init(
            "carillon_incarnation_refreshes", .events, \.incarnationRefreshes,
            "joins retried under a fresh incarnation after asking in vain for `joinRefreshRounds`"),
        .init(
            "carillon_undecided_values_dropped", .events, \.undecidedValuesDropped,
            "accepted values a proposer set aside because no promiser held their cut (no majority can have decided them)"),
        .init(
            "carillon_out_of_range_membership_frames", .frames, \.outOfRangeFrames,
            "membership frames naming a node index, member list or cut outside the cluster's limits, dropped (zero unless a peer is broken)"),
        .init(
            "carillon_oversized_membership_frames", .frames, \.oversizedFrames,
            "membership frames that did not fit the largest frame and were not sent (zero by construction)"),
        .init(
            "carillon_uninstallable_views", .events, \.uninstallableViews,
            "decided views whose ordering configuration could not be built; the member rejoins (zero by construction)")
    ]
}
