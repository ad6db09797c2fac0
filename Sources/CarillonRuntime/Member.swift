import CCarillonSys
import CarillonAuth
import CarillonMembership
import CarillonOrdering
import CarillonSchedule
import CarillonTransport
import CarillonWire
import Glibc
import Logging
import Synchronization

/// Everything one member needs to run on real sockets.
///
/// The cluster is a list of *nodes* (addresses); a member is one process on a
/// node, in one incarnation. Members of the first view start together; a
/// process that starts later (a restart, or a node added to a running
/// cluster) calls ``joinRunningCluster(incarnation:)`` and is added at the
/// next view change. A first-view member that starts more than
/// `MembershipConfiguration.lateStartRounds` rounds after the first view's
/// start joins that way by itself.
///
/// **Run identity.** Every start of a cluster is a *run*, named by the first
/// view's start time (`startNanos`, which every member of the first view is
/// given and which differs from one start to the next). The first view's
/// members take it as their incarnation, slot and repair frames are sealed
/// under a key bound to it, and membership frames name it: frames recorded
/// in an earlier run are refused in a later one.
public struct MemberConfiguration: Sendable {
    /// This process's node: its index in `nodes`.
    public var node: Int
    /// Every node's UDP endpoint, by node index. Frames go to all of them.
    public var nodes: [UDPEndpoint]
    /// Send each frame once to this IPv4 multicast group instead of to each peer.
    public var multicastGroup: UDPEndpoint?
    /// Settings every view's ordering instance shares (schedule timing,
    /// delivery mode, limits); rank, member count, epoch and first round
    /// come from the view.
    public var ordering: OrderingConfiguration
    /// Rounds without a decision before a view change is retried by the next proposer.
    public var proposalTimeoutRounds = 40
    /// Rounds a member keeps answering for a finished view.
    public var retireRounds = 200
    /// Rounds between a joiner's join requests.
    public var joinRetryRounds = 20
    /// A first-view member that starts this long after the first view's
    /// start (`startNanos`) is taken for a restart and joins as a new
    /// incarnation instead (a restart without ``joinRunningCluster(incarnation:)``
    /// would otherwise reuse the first view's incarnation and rounds). Long
    /// enough for every member of a fresh cluster to start; a restart within
    /// it is not told apart from a first start.
    public var lateStartGraceNanos: UInt64 = 1_000_000_000
    /// `true`: start as a joiner instead of as a member of the first view.
    public private(set) var joins = false
    /// This process's incarnation: the run identity for the first view's
    /// members, the realtime clock at start (larger) for each later start on the node.
    public private(set) var incarnation: UInt64
    /// The run this configuration starts (the first view's start time, at least 1).
    public let runIdentity: UInt64
    /// How the agent waits between duty cycles.
    public var idleStrategy: IdleStrategy = .default
    /// Clock estimation takes each frame's arrival time from the kernel's
    /// receive timestamp (`SO_TIMESTAMPNS`) instead of the agent's clock read
    /// for the batch, so the time a frame waited for a parked agent is not
    /// counted as network delay (``StopReport/clockEstimate`` shows the
    /// difference). On by default; off only to compare.
    public var kernelTimestamps = true
    /// Real-time policy, memory locking and CPU for the agent thread (falls back, with a notice, when not
    /// permitted). Off in the library (`.none`: a process may run many members, and real-time threads
    /// outnumbering the cores starve each other); `carillon node` turns it on (`AgentScheduling.default`).
    public var scheduling: AgentScheduling = .none
    /// Seeded loss on arrival (tests only).
    public var lossInjection: LossInjection?
    /// Frame authentication; set by `init`, and off only when said so there.
    public private(set) var authentication: MemberAuthentication
    /// Where the member logs start, stop, view changes and anomalies (never per message).
    public var logger = Logger(label: "carillon.member")

    /// A configuration whose first view is every node; the schedule's first
    /// round is the one in progress at `startNanos` on the view's timebase
    /// (every member of a view must be given the same value).
    ///
    /// `authentication` has no default: running without tags is a decision the
    /// caller writes down (`.off`).
    public init(
        node: Int, nodes: [UDPEndpoint], roundPeriodNanos: UInt64 = 100_000, reservation: Double = 0.5,
        startNanos: UInt64, authentication: MemberAuthentication
    ) throws(MemberConfigurationError) {
        guard !nodes.isEmpty else { throw .noMembers }
        guard nodes.count <= Int(UInt16.max) else { throw .rankOutOfRange(rank: node, memberCount: nodes.count) }
        guard nodes.indices.contains(node) else { throw .rankOutOfRange(rank: node, memberCount: nodes.count) }
        let schedule: TDMASchedule
        do { schedule = try TDMASchedule(memberCount: nodes.count, roundPeriodNanos: roundPeriodNanos, reservation: reservation) } catch {
            throw .schedule(error)
        }
        self.node = node
        self.nodes = nodes
        ordering = OrderingConfiguration(rank: node, schedule: schedule)
        ordering.firstRound = schedule.round(atNanos: startNanos)
        runIdentity = max(startNanos, 1)
        incarnation = runIdentity
        self.authentication = authentication
        if case .clusterKey = authentication { ordering.tagLength = FrameAuthenticator.tagBytes }
    }

    /// Starts this process as a joiner: it asks the running cluster to add it
    /// and receives the state at the view where it is added. `incarnation`
    /// must be larger than any earlier one on this node (the default, the
    /// realtime clock in nanoseconds, is).
    public mutating func joinRunningCluster(incarnation: UInt64 = MemberClock.viewNanos()) {
        joins = true
        self.incarnation = max(incarnation, 1)
    }

    /// The first view: every node, with the run identity as its incarnation, from the configured first round.
    public var initialView: View {
        View(
            epoch: ordering.epoch, members: nodes.indices.map { MemberID(node: UInt16($0), incarnation: runIdentity) },
            startRound: ordering.firstRound)
    }

    /// The pure membership layer's configuration for this member.
    public var membership: MembershipConfiguration {
        var configuration = MembershipConfiguration(
            me: MemberID(node: UInt16(node), incarnation: incarnation), initialView: joins ? nil : initialView,
            ordering: ordering)
        configuration.proposalTimeoutRounds = proposalTimeoutRounds
        configuration.retireRounds = retireRounds
        configuration.joinRetryRounds = joinRetryRounds
        configuration.runIdentity = joins ? 0 : runIdentity
        let period = max(ordering.schedule.roundPeriodNanos, 1)
        configuration.lateStartRounds = Int(clamping: max(lateStartGraceNanos / period, UInt64(max(ordering.unheardSuspicionSlots, 0))))
        return configuration
    }
}

/// Whether frames carry a tag under the cluster key.
public enum MemberAuthentication: Sendable {
    /// Every frame is sealed and checked with this key; frames that fail are dropped and counted.
    case clusterKey(FrameAuthenticator)
    /// No tags: any host that can reach the port can inject frames. Only for closed test networks.
    case off
}

/// What is wrong with a ``MemberConfiguration``.
public enum MemberConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    case noMembers
    case rankOutOfRange(rank: Int, memberCount: Int)
    case schedule(ScheduleError)
    case ordering(OrderingConfigurationError)
    case membership(MembershipConfigurationError)
    case transport(SystemCallError)
    /// A transport given to ``Member/init(configuration:transport:onDelivery:)`` that does not match the configuration.
    case transportMismatch(String)

    public var description: String {
        switch self {
        case .noMembers: return "the member list is empty: list every member's address:port, by rank"
        case .rankOutOfRange(let rank, let n): return "rank \(rank) is not in a view of \(n) members (0...\(n - 1))"
        case .schedule(let e): return "schedule: \(e)"
        case .ordering(let e): return "ordering: \(e)"
        case .membership(let e): return "membership: \(e)"
        case .transport(let e): return "socket: \(e)"
        case .transportMismatch(let what): return "transport: \(what)"
        }
    }
}

/// What was left undone when a member stopped.
public struct StopReport: Sendable, CustomStringConvertible {
    /// Messages accepted by `broadcast` that never left in a frame.
    public var unsentMessages: Int
    /// Delivery position reached in the last view: (round, slot).
    public var deliveryCursor: (round: UInt64, slot: Int)
    /// The round this member would have sent next.
    public var nextRoundToSend: UInt64
    /// The view this member was in when it stopped (nil: joining, or left out).
    public var view: View?
    /// Ordering counters summed over every view this member ran.
    public var ordering: OrderingCounters
    public var membership: MembershipCounters
    public var transport: TransportCounters
    public var runtime: RuntimeCounters
    /// How far this member's estimate of its offset to rank 0 wandered
    /// (nil at rank 0, and before the first estimate).
    public var clockEstimate: ClockEstimateSummary? = nil

    /// Every counter of the four sets, one line per set in their tables' order:
    /// `ordering: slot_frames_sent 120, repair_frames_sent 3, …` (zeros included).
    public var counterLines: [String] {
        [
            "ordering: " + ordering.report(), "membership: " + membership.report(),
            "transport: " + transport.report(), "runtime: " + runtime.report()
        ]
    }

    public var description: String {
        let where_ = view.map { "epoch \($0.epoch) with \($0.members.count) members" } ?? "no view"
        return
            "stopped in \(where_): \(unsentMessages) message(s) accepted but never sent; delivered up to round \(deliveryCursor.round) slot \(deliveryCursor.slot); next round to send \(nextRoundToSend)"
    }
}

/// One member of a Carillon bus on real UDP sockets: a ``/CarillonMembership/MembershipInstance``
/// (views, and each view's ``/CarillonOrdering/OrderingInstance``) driven by an agent thread that
/// reads the clock once per duty cycle, takes in arriving frames, sends its
/// slot frame when its slot opens, and hands deliveries and view events to the
/// application — in total order, on the agent thread.
///
/// ```swift
/// let member = try Member(configuration: configuration) { delivery, payload in
///     print(delivery.sender, delivery.sequence, payload.count)
/// }
/// member.onViewEvent = { event in print(event) }
/// try member.start()
/// _ = member.broadcast(Array("hello".utf8))
/// let report = member.stop()
/// ```
public final class Member: @unchecked Sendable {
    /// Called for each delivered message; `delivery.sender` is the sender's rank
    /// in the view current at that point of the stream. Called one at a time
    /// and in delivery order — on the member's agent thread, or in promise
    /// mode sometimes on a thread inside ``broadcast(_:)-(UnsafeRawBufferPointer)``
    /// that sends at once (never both at once). A handler may broadcast.
    public typealias DeliveryHandler = (OrderingEffects.Delivery, UnsafeRawBufferPointer) -> Void
    /// Called for each view event, at its point of the stream.
    public typealias ViewEventHandler = (ViewEvent.Kind) -> Void

    public let configuration: MemberConfiguration
    /// The member's network: UDP by default, any ``FrameTransport`` given to
    /// ``init(configuration:transport:onDelivery:)``.
    let transport: any FrameTransport
    let state: Mutex<MembershipInstance>
    let running = Atomic<Bool>(false)
    let handler: DeliveryHandler
    /// View events, on the agent thread, in stream order. Set before ``start()``.
    public var onViewEvent: ViewEventHandler?
    /// Changes in what this member suspects (failure detection), on the agent
    /// thread as they happen; ranks are in the current view. Set before ``start()``.
    public var onSuspicionChange: ((MembershipEvent) -> Void)?
    /// The application's state at the current point of the stream, asked for
    /// when a view with joiners is installed and this member may be their
    /// donor. Set before ``start()``; without it joiners receive an empty state.
    public var snapshotProvider: (() -> [UInt8])?
    var thread: pthread_t?
    /// Duty cycles that found the slot already past its send deadline (slot-timing misses).
    let lateSlots = Atomic<Int>(0)
    let badTags = Atomic<Int>(0)
    let missingTags = Atomic<Int>(0)
    let clockCorrection = Atomic<Int64>(0)
    let clockDrift = Atomic<Int64>(.min)
    let authenticator: FrameAuthenticator?
    /// Promise mode sends a broadcast at once: a broadcast from another thread
    /// wakes a parked agent through this eventfd (-1 if none could be made:
    /// the message then leaves at the next deadline, a heartbeat at most).
    let wakeDescriptor: Int32
    /// Promise mode: a broadcasting thread's frame buffer, and the run key it seals under.
    let callerEffects = Mutex(OrderingEffects())
    let callerRunKey = Mutex<FrameAuthenticator?>(nil)
    /// The transport's send path is one thread's at a time (its batch slots are shared).
    let sendLock = Mutex<Void>(())
    /// The agent is (about to be) parked in `idle`; a wake is already signalled.
    let agentParked = Atomic<Bool>(false)
    let wakeSignalled = Atomic<Bool>(false)
    /// Called once the agent has stopped (ends the delivery stream).
    var onStop: (@Sendable () -> Void)?

    /// Opens the UDP socket (``udpTransport(for:)``) and builds the instance;
    /// nothing runs until ``start()``.
    public convenience init(configuration: MemberConfiguration, onDelivery: @escaping DeliveryHandler) throws(MemberConfigurationError) {
        let transport: UDPTransport
        do { transport = try Self.udpTransport(for: configuration) } catch { throw .transport(error) }
        try self.init(configuration: configuration, transport: transport, onDelivery: onDelivery)
    }

    /// The UDP socket a member of `configuration` sends and receives on:
    /// bound to its node's endpoint, fanning out to the others (or to the multicast group).
    public static func udpTransport(for configuration: MemberConfiguration) throws(SystemCallError) -> UDPTransport {
        var options = UDPTransportOptions(members: configuration.nodes, rank: configuration.node)
        options.multicastGroup = configuration.multicastGroup
        options.lossInjection = configuration.lossInjection
        options.maxDatagramBytes = max(configuration.ordering.maxFrameBytes, 2048)
        return try UDPTransport(options: options)
    }

    /// Builds the instance over `transport` (whose ranks are the
    /// configuration's node indices); nothing runs until ``start()``.
    public init(configuration: MemberConfiguration, transport: any FrameTransport, onDelivery: @escaping DeliveryHandler)
        throws(MemberConfigurationError)
    {
        guard transport.rank == configuration.node, transport.memberCount == configuration.nodes.count else {
            throw .transportMismatch(
                "the transport is rank \(transport.rank) of \(transport.memberCount) members; the configuration is node \(configuration.node) of \(configuration.nodes.count)"
            )
        }
        guard transport.maxFrameBytes >= configuration.ordering.maxFrameBytes else {
            throw .transportMismatch(
                "the transport's frames are at most \(transport.maxFrameBytes) bytes; the configuration's are \(configuration.ordering.maxFrameBytes)"
            )
        }
        self.configuration = configuration
        do { state = Mutex(try MembershipInstance(configuration: configuration.membership)) } catch { throw .membership(error) }
        self.transport = transport
        wakeDescriptor = carillon_make_wake_descriptor()
        var descriptors: [Int32] = []
        if case .descriptor(let fd) = transport.readiness { descriptors.append(fd) }
        if wakeDescriptor >= 0 { descriptors.append(wakeDescriptor) }
        ownDescriptors = descriptors
        if case .polled(let interval) = transport.readiness { pollIntervalNanos = max(interval, 1_000) } else { pollIntervalNanos = nil }
        handler = onDelivery
        if case .clusterKey(let key) = configuration.authentication { authenticator = key } else { authenticator = nil }
    }

    deinit {
        if wakeDescriptor >= 0 { close(wakeDescriptor) }
    }

    /// The endpoint the socket is bound to (the configured one when the transport is not UDP).
    public var localEndpoint: UDPEndpoint { (transport as? UDPTransport)?.localEndpoint ?? configuration.nodes[configuration.node] }

    /// What the member's transport is, for logs (`udp 10.0.0.1:7000`).
    public var transportSummary: String { transport.summary }

    /// The installed view now (nil while joining).
    public var view: View? { state.withLock { $0.view } }

    /// The current view's stability line and the round this member sends next:
    /// when the line has passed a round, every member holds every frame below it.
    public var stability: (stableBelowRound: UInt64, nextRoundToSend: UInt64)? {
        state.withLock { instance in instance.ordering.map { ($0.stableBelowRound, $0.nextRoundToSend) } }
    }

    /// The current view's TDMA schedule (nil while joining): the bulk channel
    /// gates its sends on it. Cheap enough to read about once a millisecond.
    public var currentSchedule: TDMASchedule? { state.withLock { $0.ordering?.configuration.schedule } }

    /// Now on the view's timebase: this host's clock minus the member's
    /// correction toward rank 0's clock, the time ``currentSchedule`` is in.
    public func viewTimeNanos() -> UInt64 {
        UInt64(bitPattern: Int64(bitPattern: MemberClock.viewNanos()) &- clockCorrection.load(ordering: .relaxed))
    }

    /// The run this member belongs to (0 while a joiner has not been admitted):
    /// slot and repair frames are sealed under a key bound to it.
    public var runIdentity: UInt64 { state.withLock { $0.runIdentity } }

    /// This process's incarnation now (it changes when the member rejoins).
    public var incarnation: UInt64 { state.withLock { $0.me.incarnation } }

    /// Where the rounds of the last view change went (see ``/CarillonMembership/ChangeTimeline``).
    public var lastChange: ChangeTimeline? { state.withLock { $0.lastChange } }

    /// Whether this member is in a view and may broadcast (false while joining or waiting for state).
    public var isMember: Bool { state.withLock { $0.isMember } }

    /// What the agent thread got of ``MemberConfiguration/scheduling`` (nil before ``start()``).
    public internal(set) var schedulingReport: SchedulingReport?

    /// Starts the agent thread with the configured scheduling, then logs the start.
    public func start() throws(SystemCallError) {
        guard !running.exchange(true, ordering: .acquiringAndReleasing) else { return }
        do { thread = try startAgentThread { [self] in runAgent() } } catch {
            running.store(false, ordering: .releasing)
            throw error
        }
        schedulingReport = applyScheduling(configuration.scheduling, to: thread!)
        logStart()
    }

    var nodeLogger: Logger {
        var logger = configuration.logger
        logger[metadataKey: "node"] = "\(configuration.node)"
        return logger
    }

    func logStart() {
        let o = configuration.ordering
        let logger = nodeLogger
        logger.info(
            "member starting",
            metadata: [
                "endpoint": "\(localEndpoint)", "transport": "\(transport.summary)", "nodes": "\(configuration.nodes.count)",
                "start": "\(configuration.joins ? "join a running cluster" : "first view")",
                "incarnation": "\(configuration.incarnation)", "run": "\(configuration.runIdentity)",
                "round_period_ns": "\(o.schedule.roundPeriodNanos)", "slot_ns": "\(o.schedule.slotNanos)",
                "first_round": "\(o.firstRound)", "delivery": "\(o.deliveryMode.rawValue)",
                "suspicion_slots": "\(o.suspicionSlots)", "suspicion_floor_us": "\(o.suspicionFloorNanos / 1000)",
                "suspicion_gap_factor": "\(o.suspicionGapFactor)", "idle": "\(configuration.idleStrategy)", "ordering": "\(o.mode.rawValue)",
                "scheduling": "\(schedulingReport?.policyText ?? "normal")", "memory": "\(schedulingReport?.memoryText ?? "not locked")",
                "cpu": "\(schedulingReport?.cpu.map(String.init) ?? "any")",
                "authentication": "\(authenticator == nil ? "off" : "blake2b-128")",
                "multicast": "\(configuration.multicastGroup.map(String.init(describing:)) ?? "no")"
            ])
        if authenticator == nil { logger.warning("frame authentication is off: any host that reaches the port can inject frames") }
        if let refusals = schedulingReport?.refusals {
            logger.notice(
                "agent thread runs with less than asked: a busy host can deschedule it long enough to be suspected",
                metadata: [
                    "refused": "\(refusals)"
                ])
        }
        if configuration.idleStrategy == .busySpin, let policy = schedulingReport?.policy, policy != .normal {
            logger.warning("busy-spin at a real-time priority takes a whole core from every normal process (the kernel's RT throttling leaves 5 %)")
        }
    }

    /// Marks the member running and logs its start; false if it already ran.
    func markRunning() -> Bool {
        guard !running.exchange(true, ordering: .acquiringAndReleasing) else { return false }
        logStart()
        return true
    }

    /// Stops the agent thread and reports what was not done.
    @discardableResult
    public func stop() -> StopReport {
        let wasRunning = running.exchange(false, ordering: .acquiringAndReleasing)
        if wasRunning, let thread {
            pthread_join(thread, nil)
            self.thread = nil
        }
        onStop?()
        // The send path counts under the send lock (a broadcasting thread may be sending); never inside the state lock.
        // (Not waiting for it: `stop()` from a delivery handler runs on the agent
        // thread inside its cycle, which holds the lock; the agent has stopped
        // sending by then, so the counters are still.)
        let transportCounters = sendLock.withLockIfAvailable { _ in transport.counters } ?? transport.counters
        let report = state.withLock { instance in
            StopReport(
                unsentMessages: instance.pendingMessageCount,
                deliveryCursor: instance.ordering?.deliveryCursor ?? (0, 0),
                nextRoundToSend: instance.ordering?.nextRoundToSend ?? 0, view: instance.view,
                ordering: instance.orderingCounters, membership: instance.counters,
                transport: transportCounters, runtime: runtimeCounters,
                clockEstimate: clockEstimates.summary(kernelTimestamps: configuration.kernelTimestamps))
        }
        if wasRunning {
            nodeLogger.info(
                "member stopped",
                metadata: [
                    "unsent_messages": "\(report.unsentMessages)", "delivered": "\(report.ordering.messagesDelivered)",
                    "epoch": "\(report.view.map { String($0.epoch) } ?? "none")",
                    "views_installed": "\(report.membership.viewsInstalled)",
                    "naks_sent": "\(report.ordering.naksSent)", "bad_tags": "\(report.runtime.badTag)",
                    "late_slots": "\(report.runtime.lateSlots)"
                ])
        }
        return report
    }

    /// Asks to leave the cluster: the next view change (started at once) leaves
    /// this member out, faster than failure detection would. Keep the member
    /// running until ``hasLeft`` is true, then stop it.
    public func leave() { state.withLock { $0.leave() } }

    /// Whether a ``leave()`` has completed.
    public var hasLeft: Bool { state.withLock { $0.hasLeft } }

    /// Queues a payload for this member's next slot; never blocks. On
    /// `.sendBufferFull` nothing was queued: retry after a slot (or use the
    /// async variant). On `.notInView` the member is joining, waiting for its
    /// state, or was left out and is rejoining: retry later.
    public func broadcast(_ payload: UnsafeRawBufferPointer) -> BroadcastResult {
        let result = state.withLock { $0.broadcast(payload) }
        if case .queued = result, configuration.ordering.mode == .promises { sendAtOnce() }
        return result
    }

    /// Promise mode: the message leaves now, from the calling thread: its
    /// data frame is encoded (under the instance's lock) into the caller's own
    /// buffer, sealed and sent. Nothing is delivered here — the agent, woken,
    /// delivers in order — so the delivery handler stays on the agent thread
    /// and the calling thread never holds anything the agent waits for longer
    /// than one send.
    ///
    /// The agent is woken first: it delivers the message, and if this thread
    /// is preempted before it sends (a normal-priority thread on a loaded
    /// host), the agent — at real-time priority by default — sends it
    /// instead. Whoever takes the message first sends it; this thread never
    /// waits for the instance's lock (the agent has it: the agent sends).
    ///
    /// Frames leave in the order they were encoded: whoever encodes holds the
    /// send lock until its frames are out (the agent for its whole cycle), so
    /// a peer never sees a later frame of ours before an earlier one and NAKs
    /// the gap between them.
    func sendAtOnce() {
        wakeAgent()
        let now = viewTimeNanos()
        _ = sendLock.withLockIfAvailable { _ in
            callerEffects.withLock { effects in
                effects.removeAll()
                let sent = state.withLockIfAvailable { $0.sendAtOnce(nowNanos: now, effects: &effects) } ?? false
                guard sent else { return }
                let key = callerRunKey.withLock { $0 }
                for frame in effects.frames {
                    // Sealed in the transport's buffer (``send(_:sealedBy:)``), once.
                    effects.withBytes(of: frame) { bytes in send(bytes, sealedBy: authenticator == nil ? nil : key) }
                }
                effects.removeAll()
            }
        }
    }

    /// Wakes the agent if it is parked: at most one eventfd write per parking
    /// (the flag), none while it runs, none for a busy-spinning agent (it never
    /// waits). The agent drains the eventfd whenever its wait says it is
    /// readable, so a write that races its unparking costs one spare cycle,
    /// never a spin.
    @inline(__always) func wakeAgent() {
        if case .busySpin = configuration.idleStrategy { return }
        guard wakeDescriptor >= 0, agentParked.load(ordering: .sequentiallyConsistent),
            !wakeSignalled.exchange(true, ordering: .acquiringAndReleasing)
        else { return }
        var one: UInt64 = 1
        _ = write(wakeDescriptor, &one, 8)
    }

    /// After parking: drains the wake eventfd when the wait found it readable.
    @inline(__always) func unpark(wakeReadable: Bool) {
        agentParked.store(false, ordering: .relaxed)
        wakeSignalled.store(false, ordering: .releasing)
        if wakeReadable {
            var count: UInt64 = 0
            _ = read(wakeDescriptor, &count, 8)
        }
    }

    public func broadcast(_ payload: [UInt8]) -> BroadcastResult {
        payload.withUnsafeBytes { broadcast($0) }
    }

    /// Queues a payload, waiting (one round period at a time) while the send
    /// buffer is full or the member is not in a view.
    public func broadcast(waitingFor payload: [UInt8]) async throws -> UInt64 {
        while true {
            switch broadcast(payload) {
            case .queued(let sequence): return sequence
            case .payloadTooLarge(let limit): throw BroadcastError.payloadTooLarge(maxPayloadBytes: limit)
            case .sendBufferFull, .notInView:
                guard running.load(ordering: .relaxed) else { throw BroadcastError.stopped }
                try await Task.sleep(nanoseconds: configuration.ordering.schedule.roundPeriodNanos)
            }
        }
    }

    /// The ordering counters now, summed over every view this member ran.
    public var orderingCounters: OrderingCounters { state.withLock { $0.orderingCounters } }

    /// The membership layer's counters now.
    public var membershipCounters: MembershipCounters { state.withLock { $0.counters } }

    /// The bus socket's counters now (read under the send lock: a broadcasting thread may be sending).
    public var transportCounters: TransportCounters { sendLock.withLock { _ in transport.counters } }

    /// The shell's own counters now.
    public var runtimeCounters: RuntimeCounters {
        let drift = clockDrift.load(ordering: .relaxed)
        return RuntimeCounters(
            badTag: badTags.load(ordering: .relaxed), missingTag: missingTags.load(ordering: .relaxed),
            lateSlots: lateSlots.load(ordering: .relaxed),
            clockCorrectionNanos: Int(clockCorrection.load(ordering: .relaxed)),
            clockDriftPPB: drift == .min ? 0 : Int(drift))
    }

    // MARK: The agent

    /// What the agent keeps between duty cycles; touched only by the thread running them.
    struct AgentLocal {
        var effects = MembershipEffects()
        var metrics: MemberMetrics
        var logger: Logger
        var badTagsLogged = 0
        /// The view's timebase is rank 0's clock: others follow it by the offset
        /// their frames' timestamps show (ClockSync), through a bounded corrector.
        var corrector: ClockCorrector
        /// `corrector.correctionNanos`, read every duty cycle.
        var correction: Int64 = 0
        /// Slot and repair frames are sealed and checked under the run's key.
        var run: UInt64 = 0
        var runKey: FrameAuthenticator?
        var lateStartsLogged = 0
    }
    var agent: AgentLocal!
    /// The estimates of the offset to rank 0, for the stop report: written by
    /// the agent thread when it corrects its clock, read by `stop()` after the
    /// agent has stopped (or on the agent thread itself, from a handler). Not
    /// in `agent`: `stop()` from a delivery handler runs while `agent.effects`
    /// is being carried out.
    var clockEstimates = ClockEstimateLog()
    /// What `idle` polls, built once (no allocation per cycle): the
    /// transport's descriptor when it has one, then the wake eventfd (last).
    let ownDescriptors: [Int32]
    /// A polled transport (no descriptor): the longest a parked agent waits before polling it again.
    let pollIntervalNanos: UInt64?

    /// Writes one frame into the transport's send buffer, seals it there
    /// under `key` (nil: no authentication, or a joiner without a run), and
    /// sends it to every other member. Called under the send lock.
    @inline(__always) func send(_ frame: UnsafeRawBufferPointer, sealedBy key: FrameAuthenticator?) {
        try? transport.sendToAll { buffer in
            guard frame.count <= buffer.count else { return 0 }
            buffer.copyMemory(from: frame)
            key?.seal(UnsafeMutableRawBufferPointer(rebasing: buffer[0..<frame.count]))
            return frame.count
        }
    }

    /// Prepares the agent state; called on the thread that will run the duty cycles.
    func prepareAgent() {
        agent = AgentLocal(
            metrics: MemberMetrics(node: configuration.node), logger: nodeLogger,
            corrector: ClockCorrector(settings: .init(schedule: configuration.ordering.schedule)))
        updateRunKey(state.withLock { $0.runIdentity })
    }

    /// The member's own agent thread: duty cycles until stopped.
    func runAgent() {
        _ = carillon_set_timer_slack(1)
        prepareAgent()
        while running.load(ordering: .relaxed) {
            let wait = dutyCycle()
            let readable = idle(forNanos: wait, descriptors: ownDescriptors, strategy: configuration.idleStrategy)
            unpark(wakeReadable: wakeDescriptor >= 0 && readable & (1 << (ownDescriptors.count - 1)) != 0)  // the eventfd is last
        }
    }

    /// View time now: the local clock minus the correction toward rank 0's.
    @inline(__always) func viewNow() -> UInt64 {
        UInt64(bitPattern: Int64(bitPattern: MemberClock.viewNanos()) &- agent.correction)
    }

    /// One duty cycle: read the clock once, take in arrived frames, send the
    /// slot frame if the slot has opened, carry out the effects, publish
    /// counters now and then. Returns nanoseconds until the next deadline.
    func dutyCycle() -> UInt64 {
        let now = sendLock.withLock { _ in dutyCycleSteps() }
        if now >= agent.metrics.nextPublishNanos { publishAndCorrect(now: now) }
        // Carrying out may have changed the view (and so the next deadline).
        // Parked from here on: a broadcast after this reads wakes us.
        agentParked.store(true, ordering: .sequentiallyConsistent)
        let deadline = state.withLock { $0.nextDeadlineNanos }
        let after = viewNow()
        return deadline > after ? deadline - after : 0
    }

    /// The duty cycle's receiving, timeout and carrying out, under the send
    /// lock (see ``sendAtOnce()``). Returns the cycle's time.
    func dutyCycleSteps() -> UInt64 {
        let now = viewNow()
        // Take in everything that has arrived (after a late wake-up that is
        // several batches: judging silence before reading them would suspect
        // members that did speak).
        var batches = 0
        repeat {
            batches += 1
            receiveOneBatch(now: batches == 1 ? now : viewNow())  // a fresh time per batch: clock samples stay honest
        } while transport.lastBatchFilled && batches < 64
        // Our slot (and any other deadline: joins, the previous view's answers).
        state.withLock { instance in
            guard now >= instance.nextDeadlineNanos else { return }
            let round = instance.ordering?.nextRoundToSend
            instance.onTimeout(nowNanos: now, effects: &agent.effects)
            // Slot timing misses mean something in slot mode only (promise mode sends at will).
            if let round, let ordering = instance.ordering, ordering.configuration.mode == .slots,
                ordering.nextRoundToSend > round
            {
                let window = ordering.configuration.schedule.slotWindow(
                    round: ordering.nextRoundToSend - 1,
                    rank: ordering.configuration.rank)
                if now > window.sendDeadlineNanos { lateSlots.add(1, ordering: .relaxed) }
            }
        }
        let logger = agent.logger
        let runKey = agent.runKey
        carryOut(&agent.effects, logger: logger, runKey: runKey)
        return now
    }

    /// Derives the run key when the member's run changes (a joiner adopts the run that admits it).
    func updateRunKey(_ run: UInt64) {
        guard run != agent.run || (agent.runKey == nil && run != 0) else { return }
        agent.run = run
        agent.runKey = run == 0 ? nil : authenticator?.bound(toRun: run)
        callerRunKey.withLock { $0 = agent.runKey }
    }

    /// The key a frame of this kind is sealed and checked under: membership
    /// frames under the cluster key (a joiner reads them before it knows the
    /// run; they name the run inside), slot and repair frames under the run's key.
    @inline(__always) func key(forKind kind: UInt8) -> FrameAuthenticator? {
        kind == FrameKind.membership.rawValue ? authenticator : agent.runKey
    }

    /// One recvmmsg batch: each datagram authenticated, then handed to the instance.
    func receiveOneBatch(now: UInt64) {
        do {
            let kernelTimestamps = configuration.kernelTimestamps, correction = agent.correction
            try transport.receiveFrames { bytes, datagram in
                if authenticator != nil {
                    guard bytes.count > 5 else { missingTags.add(1, ordering: .relaxed); return }
                    // No run yet (a joiner): its slot frames cannot be checked, nor are they needed.
                    guard let key = key(forKind: bytes[5]) else { return }
                    switch key.verify(bytes) {
                    case .authentic: break
                    case .badTag: badTags.add(1, ordering: .relaxed); return
                    case .missingTag, .malformed: missingTags.add(1, ordering: .relaxed); return
                    }
                }
                let run = state.withLock { instance in
                    let arrival =
                        kernelTimestamps
                        ? KernelArrival.viewNanos(kernelNanos: datagram.kernelTimestampNanos, correctionNanos: correction, nowNanos: now) : nil
                    _ = instance.onFrameReceived(bytes, nowNanos: now, arrivalNanos: arrival, effects: &agent.effects)
                    return instance.runIdentity
                }
                if run != agent.run { updateRunKey(run) }
            }
        } catch {
            // A receive error other than would-block is not expected on UDP;
            // keep running, the protocol repairs anything lost.
        }
    }

    /// Counters out through swift-metrics, anomalies to the log, the clock
    /// correction updated: a few times a second, never per frame.
    func publishAndCorrect(now: UInt64) {
        // The send path counts under the send lock (a broadcasting thread may be sending); never inside the state lock.
        let transportCounters = sendLock.withLock { _ in transport.counters }
        let (ordering, membership, residual, epoch, timebase) = state.withLock { instance in
            let ordering = instance.ordering
            // Rank 0 is the timebase; the others follow it.
            let residual = ordering.flatMap { $0.configuration.rank == 0 ? nil : $0.clockOffsetNanos(from: 0) }
            let timebase = instance.view.flatMap(\.members.first).map { UInt64($0.node) << 48 ^ $0.incarnation }
            return (instance.orderingCounters, instance.counters, residual, instance.view?.epoch, timebase)
        }
        // The pure corrector decides (docs/protocol.md §13): steps bounded, none
        // from a scattered estimate, a fresh start at each view. Local time, so
        // its own steps do not move its clock.
        let step = agent.corrector.update(
            nowNanos: MemberClock.viewNanos(), epoch: epoch, timebase: timebase,
            estimateNanos: residual)
        if let residual { clockEstimates.record(residual) }
        agent.correction = agent.corrector.correctionNanos
        clockCorrection.store(agent.correction, ordering: .relaxed)
        clockDrift.store(agent.corrector.driftPPB ?? .min, ordering: .relaxed)
        if step.magnitude >= 1_000_000 {
            agent.logger.notice(
                "clock corrected toward the view's timebase",
                metadata: [
                    "step_ns": "\(step)", "correction_ns": "\(agent.correction)", "estimate_ns": "\(residual ?? 0)"
                ])
        }
        let runtime = runtimeCounters
        agent.metrics.publish(ordering, membership, transportCounters, runtime)
        agent.metrics.nextPublishNanos = now + MemberMetrics.publishIntervalNanos
        if membership.lateStarts > agent.lateStartsLogged {
            agent.lateStartsLogged = membership.lateStarts
            agent.logger.notice(
                "started after the first view began: joining the running cluster as a new incarnation",
                metadata: [
                    "run": "\(configuration.runIdentity)", "first_round": "\(configuration.ordering.firstRound)",
                    "hint": "a restart should use --join; a fresh cluster needs a fresh start time (start_at_ns)"
                ])
        }
        if runtime.badTag + runtime.missingTag > agent.badTagsLogged {
            agent.logger.warning(
                "refused frames that failed authentication",
                metadata: [
                    "bad_tag_total": "\(runtime.badTag)", "missing_tag_total": "\(runtime.missingTag)"
                ])
            agent.badTagsLogged = runtime.badTag + runtime.missingTag
        }
    }

    /// Carries out one batch of effects: frames out first, then deliveries with
    /// view events at their points of the stream. `logger` is passed in because
    /// `effects` is usually `agent.effects`: touching `agent` here again would
    /// overlap that access (so is `runKey`, the run's sealing key).
    func carryOut(_ effects: inout MembershipEffects, logger: Logger, runKey: FrameAuthenticator?) {
        guard !effects.ordering.isEmpty || !effects.events.isEmpty else { return }
        for frame in effects.ordering.frames {
            // The send lock is held: the duty cycle's (`dutyCycleSteps`).
            effects.ordering.withBytes(of: frame) { bytes in
                // Membership frames under the cluster key, the others under
                // the run's (a joiner without a run sends only membership frames).
                send(bytes, sealedBy: bytes.count > 5 && bytes[5] == FrameKind.membership.rawValue ? authenticator : runKey)
            }
        }
        effects.forEachBusEvent { event in
            switch event {
            case .delivered(let delivery, let payload): handler(delivery, payload)
            case .view(let kind): handle(kind, logger: logger)
            }
        }
        for event in effects.ordering.membershipEvents {
            onSuspicionChange?(event)
            switch event {
            case .suspected(let peer, let since):
                let threshold = state.withLock { $0.ordering?.suspicionThresholdNanos(for: peer, nowNanos: viewTimeNanos()) }
                logger.warning(
                    "member suspected: nothing heard",
                    metadata: [
                        "peer_rank": "\(peer)", "silent_since_round": "\(since)",
                        "threshold_us": "\(threshold.map { String($0 / 1000) } ?? "-")"
                    ])
            case .cleared(let peer):
                logger.notice("member heard again", metadata: ["peer_rank": "\(peer)"])
            }
        }
        effects.removeAll()
    }

    /// Logs a view event, hands it to the application, and gives joiners their
    /// state when this member is asked to.
    func handle(_ event: ViewEvent.Kind, logger: Logger) {
        switch event {
        case .installed(let view, let joined):
            let change = state.withLock { $0.lastChange }
            logger.notice(
                "view installed",
                metadata: [
                    "change_rounds": "\(change.map(String.init(describing:)) ?? "-")",
                    "epoch": "\(view.epoch)", "members": "\(view.members.map(\.description).joined(separator: " "))",
                    "start_round": "\(view.startRound)", "joined": "\(joined.map(\.description).joined(separator: " "))"
                ])
        case .excluded(let epoch, let unsent):
            logger.warning(
                "left out of the next view: rejoining as a new incarnation",
                metadata: [
                    "epoch": "\(epoch)", "unsent_messages_kept_for_after_rejoin": "\(unsent)"
                ])
        case .noPrimaryComponent(let epoch, let rounds):
            logger.error(
                "not in the primary component: no majority of the view answers; delivery stopped until it does",
                metadata: [
                    "epoch": "\(epoch)", "waiting_rounds": "\(rounds)"
                ])
        case .stateReceived(let view, let state):
            logger.notice("joined: state received", metadata: ["epoch": "\(view.epoch)", "state_bytes": "\(state.count)"])
        }
        onViewEvent?(event)
        // The state at exactly this point of the stream, for this view's joiners.
        if case .installed(let view, _) = event, state.withLock({ $0.isSnapshotRequested(forEpoch: view.epoch) }) {
            let snapshot = snapshotProvider?() ?? []
            state.withLock { $0.provideSnapshot(snapshot, forEpoch: view.epoch) }
        }
    }

    /// Waits per the idle strategy for at most `wait` nanoseconds, waking early
    /// when any of `descriptors` becomes readable.
    /// Returns which descriptors were readable (bit `i` for `descriptors[i]`,
    /// the first 31), 0 when it did not wait or nothing was.
    @discardableResult
    func idle(forNanos wait: UInt64, descriptors: [Int32], strategy: IdleStrategy, pollIntervalNanos poll: UInt64? = nil) -> Int32 {
        guard wait > 0 else { return 0 }
        // A polled transport cannot wake a parked thread: wake to poll it
        // (`poll`: the shortest interval of the members sharing this thread).
        let capped = Int64(min(wait, poll ?? pollIntervalNanos ?? 1_000_000_000, 1_000_000_000))
        switch strategy {
        case .busySpin:
            return 0
        case .blocking:
            return waitReadable(descriptors, timeoutNanos: capped)
        case .spinThenPark(let spin):
            return wait > spin ? waitReadable(descriptors, timeoutNanos: capped - Int64(spin)) : 0
        }
    }
}

/// ppoll on every descriptor (no allocation); returns the readable ones as a
/// bit mask (first 31), 0 on timeout or error.
@discardableResult
func waitReadable(_ descriptors: [Int32], timeoutNanos: Int64) -> Int32 {
    descriptors.withUnsafeBufferPointer { fds in
        max(carillon_wait_readable_mask(fds.baseAddress, Int32(fds.count), timeoutNanos), 0)
    }
}

/// Why an async broadcast gave up.
public enum BroadcastError: Error, Sendable, Hashable {
    case payloadTooLarge(maxPayloadBytes: Int)
    case stopped
}

/// A delivered message, copied out for the asynchronous interface.
public struct DeliveredMessage: Sendable, Hashable {
    /// Rank of the member that broadcast it.
    public var sender: Int
    /// The sender's sequence number for it.
    public var sequence: UInt64
    /// Its delivery key: round, slot (the sender's rank) and index in the batch.
    public var round: UInt64
    public var index: Int
    public var payload: [UInt8]
}

extension Member {
    /// A member whose deliveries arrive as an `AsyncSequence`, in total order.
    ///
    /// Convenient, not the fast path: each delivery is copied into a
    /// ``DeliveredMessage`` (one allocation for the payload) and buffered in an
    /// `AsyncStream` (unbounded: a consumer that falls behind holds memory).
    /// Latency-sensitive code uses the handler initializer instead.
    public static func withDeliveryStream(
        configuration: MemberConfiguration
    ) throws(MemberConfigurationError) -> (Member, AsyncStream<DeliveredMessage>) {
        let (stream, continuation) = AsyncStream<DeliveredMessage>.makeStream()
        let member = try Member(configuration: configuration) { delivery, payload in
            continuation.yield(
                DeliveredMessage(
                    sender: delivery.sender, sequence: delivery.sequence, round: delivery.round,
                    index: delivery.index, payload: Array(payload)))
        }
        member.onStop = { continuation.finish() }
        return (member, stream)
    }
}
