import CarillonAuth
import CarillonMembership
import CarillonOrdering
import CarillonProcessStats
import CarillonRuntime
import CarillonServices
import Dispatch
import Glibc
import Logging
import Synchronization

/// Binds a ``/CarillonServices/ServiceHost`` to a ``/CarillonRuntime/Member``: applies the member's bus events to
/// the host, broadcasts local sessions' commands in envelopes, and answers
/// each caller when its own member has applied the command (agreed) or once
/// the command is stable (safe).
///
/// A thin shell: what a command does is decided in the host; this class only
/// moves bytes, keeps local callers' pending requests, retries a request that
/// was not delivered (the host applies a request id once), and fails requests
/// with ``/CarillonServices/ServiceStatus/noPrimary`` after ``Options/noPrimaryWaitNanos`` when
/// the member is not in a primary component.
///
/// ```swift
/// let services = ServiceNode()
/// let member = try Member(configuration: configuration, onDelivery: services.deliver)
/// services.attach(to: member)
/// try member.start()
/// let session = services.openSession()
/// if let grant = try await session.acquire("printer") { print("token", grant.token) }
/// ```
public final class ServiceNode: @unchecked Sendable {
    public struct Options: Sendable {
        /// A request not ordered within this long while the member is not in a
        /// primary component fails with ``/CarillonServices/ServiceStatus/noPrimary``.
        public var noPrimaryWaitNanos: UInt64 = 2_000_000_000
        /// A sent request not answered within this long is sent again (same
        /// request id: the host applies it once).
        public var retryAfterNanos: UInt64 = 500_000_000
        /// States up to this size go to joiners inside the membership layer's
        /// state transfer; larger ones over the bulk channel (when attached with one).
        public var inlineStateBytes = 64 << 10
        /// How often this member publishes its load on the bus for the
        /// owned objects' placement (`migrate --to auto`); 0: never.
        public var loadPublishNanos: UInt64 = 5_000_000_000
        /// The load this member publishes; nil: this process's CPU use over
        /// the last period, in permille of one core.
        public var load: (@Sendable () -> UInt32)?
        /// A load is published only when it differs from the last published
        /// by at least this much (an idle bus stays quiet).
        public var loadChangePermille: UInt32 = 50
        /// A migration this member is the source of that has not ended this
        /// long after its transfer was queued (plus ``migrationNanosPerMiB``
        /// per MiB) is aborted: the source orders the abort and keeps the
        /// object. A backstop for a target that is alive but never receives.
        public var migrationStallNanos: UInt64 = 30_000_000_000
        public var migrationNanosPerMiB: UInt64 = 1_000_000_000
        /// The nice value of the thread that copies and hashes whole objects
        /// and states (0...19; 0: normal priority): higher leaves the bus's
        /// members more of the CPU while a large object moves.
        public var backgroundNice: Int32 = 10
        public init() {}
    }

    /// What happens to a session besides its responses.
    public struct SessionSink: Sendable {
        /// A watched key changed (watch id, change).
        public var onWatch: @Sendable (UInt64, WatchedChange) -> Void = { _, _ in }
        /// The session ended under the caller (its member was left out of a view).
        public var onEnd: @Sendable (ServiceStatus) -> Void = { _ in }
        public init(
            onWatch: @escaping @Sendable (UInt64, WatchedChange) -> Void = { _, _ in },
            onEnd: @escaping @Sendable (ServiceStatus) -> Void = { _ in }
        ) {
            self.onWatch = onWatch
            self.onEnd = onEnd
        }
    }

    /// A change of a watched key, in bus order.
    public typealias WatchedChange = WatchEvent

    public typealias Callback = @Sendable (ServiceResponse) -> Void

    /// An application's own replicated state, carried to joiners beside the services'.
    public struct ApplicationState: Sendable {
        public var provide: @Sendable () -> [UInt8]
        public var receive: @Sendable ([UInt8]) -> Void
        public init(provide: @escaping @Sendable () -> [UInt8], receive: @escaping @Sendable ([UInt8]) -> Void) {
            self.provide = provide
            self.receive = receive
        }
    }

    struct Pending: Sendable {
        var service: UInt16
        var body: [UInt8]
        var consistency: Consistency
        var submittedNanos: UInt64
        /// The capability presented (``/CarillonServices/Capability/encoded``), empty when none.
        var capability: [UInt8] = []
        /// When it was last handed to the member; nil: not queued yet.
        var sentNanos: UInt64?
        var callback: Callback
    }

    struct Watch: Sendable { var id: UInt64; var key: String; var prefix: Bool }

    struct LocalSession: Sendable {
        /// The session as the bus knows it: this member's identity (its
        /// incarnation) when the session first sent, and the client number.
        var id: SessionID
        /// Whether a command of it was ever handed to the member: from then
        /// on it may be on the bus under `id`, which must not change.
        var sentOnce = false
        var pending: [UInt64: Pending] = [:]
        var nextRequest: UInt64 = 1
        var watches: [Watch] = []
        var sink: SessionSink
        var acknowledgedBelow: UInt64 { pending.keys.min() ?? nextRequest }
    }

    struct Held: Sendable { var session: UInt32; var requestID: UInt64; var response: ServiceResponse; var callback: Callback }

    struct Core: Sendable {
        var host: ServiceHost
        var output = ServiceOutput()
        var sessions: [UInt32: LocalSession] = [:]
        var nextClient: UInt32 = 1
        var safeHeld: [Held] = []
        var noPrimarySince: UInt64?
        /// A joiner waiting for its state over the bulk channel: the view and manifest.
        var awaiting: (View, StateManifest)?
        /// Events held while waiting, in order.
        var deferred: [Deferred] = []
        /// States that came over the bulk channel before their manifest, restored.
        var arrivedStates: [ServiceHost] = []
        /// The host as built, for restoring a received state into.
        var blankHost: ServiceHost
        /// Views installed while this member waited for its own state in which
        /// it is the donor: their joiners get the state taken at that view's
        /// installation once the held events reach it (epoch, joiners).
        var donationsAfterCatchUp: [(epoch: UInt32, joiners: [MemberID])] = []
        /// The last installed view, its joiners and the view before it (for the donor's choice).
        var lastInstalled: (view: View, joined: [MemberID], previous: View?)?
        /// States this member (a donor) still has to queue on the bulk channel.
        var stateSends: [(UInt16, [UInt8])] = []
        /// The counters through swift-metrics (made at attach, when the node is known).
        var metrics: ServiceMetrics?
        /// Sessions ended here whose end is not on the bus yet.
        var endsToSend: [(SessionID, UInt64)] = []
        var stateError: ServiceStateError?
        /// This member's copies of owned objects (when the host runs the owned-object service).
        var holding: ObjectHolding?
        /// Object transfers this member (a migration's source) still has to queue on the bulk channel.
        var objectSends: [(ObjectTransfer, MemberID)] = []
        /// Migrations this member is the source of, not seen to end: name,
        /// deadline, the encoded transfer until the bulk channel takes it, then its transfer id.
        var outgoing: [UInt64: OutgoingMigration] = [:]

        struct OutgoingMigration {
            var name: String
            var target: UInt16
            var deadlineNanos: UInt64
            var encoded: [UInt8]?
            var transferID: UInt64?
        }
        /// When this member last published its load, and the CPU sample then.
        var lastLoad: (nanos: UInt64, sample: ProcessSample?)?
        /// The load last published (a new one goes on the bus only when it moved by ``Options/loadChangePermille``).
        var publishedLoad: UInt32?
    }

    public let options: Options
    /// Where the node says what an operator needs to know (states received, failures).
    public let logger: Logger
    let core: Mutex<Core>
    let member = Mutex<Member?>(nil)
    let bulk = Mutex<BulkChannel?>(nil)
    let wake = DispatchSemaphore(value: 0)
    let running = Atomic<Bool>(false)
    let tickerDone = DispatchGroup()
    /// Where whole objects and states are copied and hashed: outgoing
    /// transfers encoded, arrivals from the bulk channel checked and decoded,
    /// in order. Not the channel's thread, which runs at the agents'
    /// real-time priority (a 512 MiB copy and digest there kept a core from
    /// the members for a second, and they suspected each other), nor the
    /// ticker; a thread at nice ``Options/backgroundNice`` (see ``BackgroundWork``).
    let background: BackgroundWork
    /// The key of the owned objects' capabilities: bound to the cluster key and the run at ``attach(to:bulk:applicationState:)``.
    public let capabilityAuthority = RunBoundCapabilityAuthority()

    /// A node running `machines`; nil: the lock service, the object store
    /// and the owned objects (``/CarillonServices/OwnedObjectService``, its
    /// capabilities keyed by ``capabilityAuthority``).
    public init(
        machines: [any ReplicatedStateMachine]? = nil, options: Options = Options(),
        logger: Logger = Logger(label: "carillon.services")
    ) {
        self.options = options
        self.logger = logger
        background = BackgroundWork(niceIncrement: options.backgroundNice)
        let machines = machines ?? [LockService(authority: capabilityAuthority), ObjectStore(), OwnedObjectService(authority: capabilityAuthority)]
        core = Mutex(Core(host: ServiceHost(machines: machines), blankHost: ServiceHost(machines: machines)))
    }

    /// Hooks the node to `member` (its view events and its state for joiners)
    /// and starts the retry thread. Pass ``deliver(_:_:)`` as the member's
    /// delivery handler (or call it from yours). Before ``/CarillonRuntime/Member/start()``.
    /// With `bulk`, states larger than ``Options/inlineStateBytes`` go to
    /// joiners over it (pass its transfers to ``bulkArrived(source:bytes:)``);
    /// the bus keeps delivering while they do.
    ///
    /// The membership layer's state transfer carries one state per member:
    /// with `applicationState`, the application's own state (taken and given
    /// at the same point of the stream) travels beside the services' — the
    /// provider is asked where ``/CarillonRuntime/Member/snapshotProvider`` would be, and the
    /// receiver gets it back at the joiner before the member's view event
    /// handler runs. ``/CarillonRuntime/Member/snapshotProvider`` must not be set elsewhere.
    public func attach(to member: Member, bulk: BulkChannel? = nil, applicationState: ApplicationState? = nil) {
        self.member.withLock { $0 = member }
        self.bulk.withLock { $0 = bulk }
        if case .clusterKey(let key) = member.configuration.authentication {
            capabilityAuthority.bind(key: key) { [weak member] in member?.runIdentity ?? 0 }
        } else {
            capabilityAuthority.bind(key: nil) { [weak member] in member?.runIdentity ?? 0 }
            logger.warning("no cluster key: capabilities are keyed by the run identity only and can be forged; configure a key")
        }
        let me = currentMember()
        core.withLock { core in
            core.metrics = ServiceMetrics(node: member.configuration.node)
            if core.host.machine(OwnedObjectService.serviceID) != nil {
                core.holding = ObjectHolding(me: me)
                // The member's own session: read replies, migration commits and aborts, loads.
                core.sessions[OwnedObjectService.memberClient] = LocalSession(
                    id: SessionID(member: me, client: OwnedObjectService.memberClient), sink: SessionSink())
            }
        }
        if !member.configuration.joins {
            let first = member.configuration.initialView
            core.withLock { $0.host.begin(in: first) }
        }
        let previous = member.onViewEvent
        member.onViewEvent = { [unowned self] event in
            // A joiner's state is the application's and the services' side by side.
            if case .stateReceived(let view, let state) = event {
                let (application, services) = StateBundle.split(state)
                applicationState?.receive(application)
                previous?(event)
                self.viewEvent(.stateReceived(view, state: services))
            } else {
                previous?(event)
                self.viewEvent(event)
            }
        }
        member.snapshotProvider = { [unowned self] in StateBundle.join(applicationState?.provide() ?? [], self.provideState()) }
        running.store(true, ordering: .relaxed)
        tickerDone.enter()
        DispatchQueue(label: "carillon.services.ticker").async { [unowned self] in
            self.tickLoop()
            self.tickerDone.leave()
        }
    }

    /// Stops the retry thread; pending callers get ``/CarillonServices/ServiceStatus/sessionEnded``.
    public func stop() {
        guard running.exchange(false, ordering: .relaxed) else { return }
        wake.signal()
        tickerDone.wait()
        // A copy or digest under way finishes first (a second at most for
        // hundreds of megabytes): nothing of this node runs after its stop.
        _ = background.waitUntilIdle(deadline: .now() + 30)
        let ended = core.withLock { core -> [Callback] in
            // Answers held for stability too: each caller hears once.
            var out = core.safeHeld.map(\.callback)
            for (_, s) in core.sessions { for (_, p) in s.pending { out.append(p.callback) } }
            core.sessions = [:]
            core.safeHeld = []
            return out
        }
        for callback in ended { callback(ServiceResponse(status: .sessionEnded)) }
    }

    /// Whether the member is in a primary component's view now.
    public var inPrimary: Bool { member.withLock { $0 }?.isMember ?? false }

    /// The host's counters, digest and log index now.
    public var status: (counters: ServiceCounters, digest: UInt64, appliedIndex: UInt64, sessions: Int) {
        core.withLock { ($0.host.counters, $0.host.digest, $0.host.appliedIndex, $0.sessions.count) }
    }

    /// A stale local read of the object store (this replica, as of the last applied event).
    public func localRead(_ key: String) -> StoredObject? {
        core.withLock { ($0.host.machine(ObjectStore.serviceID) as? ObjectStore)?.localValue(key) }
    }

    /// The lock table of this replica (as of the last applied event).
    public func localLocks() -> [LockState] {
        core.withLock { core in
            guard let locks = core.host.machine(LockService.serviceID) as? LockService else { return [] }
            return locks.locks.keys.sorted().map { locks.locks[$0]! }.filter { !$0.holders.isEmpty || !$0.waiters.isEmpty }
        }
    }

    /// Why the node cannot serve, if a received state could not be taken.
    public var stateError: ServiceStateError? { core.withLock { $0.stateError } }

    // MARK: - Sessions

    /// Opens a local session: its commands are the caller's, applied once each.
    public func openSession(sink: SessionSink = SessionSink()) -> Session {
        openSession(sink: sink, as: currentMember())
    }

    /// ``openSession(sink:)`` under a given identity of this member (tests:
    /// one opened while the member was being left out, under its old incarnation).
    func openSession(sink: SessionSink, as me: MemberID) -> Session {
        let client = core.withLock { core -> UInt32 in
            let client = core.nextClient
            core.nextClient &+= 1
            core.sessions[client] = LocalSession(id: SessionID(member: me, client: client), sink: sink)
            return client
        }
        return Session(node: self, client: client)
    }

    /// Ends a session: what it holds is released and its waits withdrawn at
    /// the position of its end, at every member.
    public func closeSession(_ client: UInt32) {
        guard
            let session = core.withLock({ core -> LocalSession? in
                guard let s = core.sessions.removeValue(forKey: client) else { return nil }
                core.endsToSend.append((s.id, s.nextRequest))
                return s
            })
        else { return }
        for (_, p) in session.pending { p.callback(ServiceResponse(status: .sessionEnded)) }
        sendPending(now: monotonicNanos())
    }

    /// Adds a watch to a session: changes of `key` (or keys starting with it) in bus order.
    public func watch(_ client: UInt32, id: UInt64, key: String, prefix: Bool) {
        core.withLock { $0.sessions[client]?.watches.append(Watch(id: id, key: key, prefix: prefix)) }
    }

    /// Submits a command of session `client`; `requestID` nil picks the next one.
    public func submit(
        _ client: UInt32, requestID: UInt64? = nil, service: UInt16, body: [UInt8], consistency: Consistency,
        capability: [UInt8] = [], callback: @escaping Callback
    ) {
        let now = monotonicNanos()
        let refusal = core.withLock { core -> ServiceResponse? in
            guard var s = core.sessions[client] else {
                // Ended: closed, or its member was left out of a view or not in a primary component.
                return ServiceResponse(status: .sessionEnded, body: Array("the session has ended; open a new one".utf8))
            }
            let id = requestID ?? s.nextRequest
            guard id >= s.nextRequest else {
                return ServiceResponse(status: .badRequest, body: Array("request ids must increase within a session".utf8))
            }
            s.nextRequest = id + 1
            s.pending[id] = Pending(
                service: service, body: body, consistency: consistency, submittedNanos: now, capability: capability, callback: callback)
            core.sessions[client] = s
            return nil
        }
        if let refusal {
            callback(refusal)
            return
        }
        sendPending(now: now)
    }

    func currentMember() -> MemberID {
        let m = member.withLock { $0 }
        return MemberID(node: UInt16(m?.configuration.node ?? 0), incarnation: m?.incarnation ?? 0)
    }

    /// Hands every unsent (or overdue) pending request to the member.
    func sendPending(now: UInt64) {
        guard let member = member.withLock({ $0 }) else { return }
        settleIdentities(me: currentMember())
        let ends = core.withLock { core -> [(SessionID, UInt64)] in
            defer { core.endsToSend = [] }
            return core.endsToSend
        }
        for (id, next) in ends {
            var w = ByteWriter(capacity: CommandEnvelope.headerBytes)
            CommandEnvelope.writeHeader(kind: .endSession, service: 0, session: id, requestID: next, acknowledgedBelow: next, to: &w)
            if case .queued = member.broadcast(w.bytes) { continue }
            // Not in a view yet: the end is sent when it is (or the view change that removes this member ends it).
            core.withLock { $0.endsToSend.append((id, next)) }
            wake.signal()
        }
        let due = core.withLock { core -> [(UInt32, UInt64, [UInt8])] in
            var due: [(UInt32, UInt64, [UInt8])] = []
            for (client, s) in core.sessions {
                for (id, p) in s.pending {
                    let overdue = p.sentNanos.map { now &- $0 >= options.retryAfterNanos } ?? true
                    guard overdue else { continue }
                    var w = ByteWriter(capacity: CommandEnvelope.headerBytes + p.capability.count + p.body.count)
                    CommandEnvelope.writeHeader(
                        kind: .command, service: p.service, session: s.id, requestID: id,
                        acknowledgedBelow: s.acknowledgedBelow, capability: p.capability, to: &w)
                    w.raw(p.body)
                    due.append((client, id, w.bytes))
                }
            }
            return due.sorted { ($0.0, $0.1) < ($1.0, $1.1) }
        }
        for (client, id, bytes) in due {
            let result = member.broadcast(bytes)
            switch result {
            case .queued:
                core.withLock { core in
                    core.sessions[client]?.sentOnce = true
                    core.sessions[client]?.pending[id]?.sentNanos = now
                }
            case .payloadTooLarge(let limit):
                let callback = core.withLock { $0.sessions[client]?.pending.removeValue(forKey: id)?.callback }
                callback?(
                    ServiceResponse(status: .badRequest, body: Array("the command is \(bytes.count) bytes; at most \(limit) fit a message".utf8)))
            default:
                wake.signal()
            }
        }
    }

    /// Keeps every session on this member's identity now (`me`). A session
    /// opened under an earlier incarnation (the member was left out and
    /// rejoined, and the session was opened as that happened) would send
    /// its commands under a member the view no longer has: every member
    /// refuses them (``/CarillonServices/ServiceCounters/foreignSessions``)
    /// and its caller would wait for ever. Such a session that never sent
    /// takes the new identity (nothing on the bus names it); one that did
    /// may have commands ordered under the old one, so it ends with
    /// ``/CarillonServices/ServiceStatus/outcomeUnknown`` (the view that
    /// removed the old incarnation ended it at every member). The member's
    /// own session starts again empty.
    func settleIdentities(me: MemberID) {
        let ended = core.withLock { core -> [LocalSession] in
            var ended: [LocalSession] = []
            // Only an older incarnation of this member: `me` was read before
            // the lock, and a caller that stalled across a rejoin must not
            // undo sessions already on the newer one.
            for (client, s) in core.sessions where s.id.member != me && s.id.member.incarnation < me.incarnation {
                if !s.sentOnce {
                    core.sessions[client]!.id = SessionID(member: me, client: client)
                } else if client == OwnedObjectService.memberClient {
                    ended.append(s)
                    core.sessions[client] = LocalSession(id: SessionID(member: me, client: client), sink: SessionSink())
                } else {
                    ended.append(s)
                    core.sessions[client] = nil
                }
            }
            return ended
        }
        for s in ended {
            for (_, p) in s.pending { p.callback(ServiceResponse(status: .outcomeUnknown)) }
            s.sink.onEnd(.outcomeUnknown)
        }
    }

    // MARK: - The bus stream

    /// The member's delivery handler: applies one delivered message.
    public func deliver(_ delivery: OrderingEffects.Delivery, _ payload: UnsafeRawBufferPointer) {
        apply(.delivered(delivery, payload: payload))
    }

    /// Applies one delivered message; `false` when it was not a service
    /// command of its sender's own session (other traffic on the same bus).
    @discardableResult
    public func deliverCommand(_ delivery: OrderingEffects.Delivery, _ payload: UnsafeRawBufferPointer) -> Bool {
        apply(.delivered(delivery, payload: payload))
    }

    func viewEvent(_ event: ViewEvent.Kind) {
        switch event {
        case .noPrimaryComponent:
            core.withLock { core in if core.noPrimarySince == nil { core.noPrimarySince = monotonicNanos() } }
        case .installed, .stateReceived:
            let me = currentMember()
            core.withLock { core in
                core.noPrimarySince = nil
                // Joined (or rejoined) as a new incarnation: it holds no object, and
                // its member commands come from a session 0 of its own. Checked on
                // every join and against the session itself, not only when the
                // holding's identity changed: a state transfer finished in the
                // same duty cycle as the exclusion that followed it is handed
                // over when the incarnation has already moved on, so the holding
                // took the new identity then, the exclusion ended session 0, and
                // the next join found nothing to renew — and dropped every
                // commit of a migration to this member (a netns-migration run).
                guard let holding = core.holding else { return }
                var joined = false
                if case .stateReceived = event { joined = true }
                if holding.me != me || joined {
                    core.holding = ObjectHolding(me: me)
                    core.objectSends = []
                    core.outgoing = [:]
                }
                if core.sessions[OwnedObjectService.memberClient]?.id.member != me {
                    core.sessions[OwnedObjectService.memberClient] = LocalSession(
                        id: SessionID(member: me, client: OwnedObjectService.memberClient), sink: SessionSink())
                }
            }
        case .excluded:
            break
        }
        apply(.view(event))
        if case .excluded = event { endAllSessions(.outcomeUnknown) }
    }

    /// Answers and watch events to hand out once the core's lock is released.
    struct Outgoing {
        var answers: [(Callback, ServiceResponse)] = []
        var watches: [(SessionSink, UInt64, WatchedChange)] = []
        var bulkSends: [(UInt16, [UInt8])] = []
        /// The ticker has member commands or object transfers to send.
        var wakeTicker = false
        /// An answer now waits for stability: the ticker must watch the stability line.
        var heldSafe = false
        /// States to send to joiners (this member donated while it caught up).
        var donations: [(ServiceHost, [MemberID])] = []
    }

    /// An event that came while a joiner waited for its state over the bulk channel.
    enum Deferred: Sendable {
        case delivery(OrderingEffects.Delivery, [UInt8])
        case view(ViewEvent.Kind)
    }

    @discardableResult
    func apply(_ event: BusEvent) -> Bool {
        var accepted = true
        var out = Outgoing()
        let stability = member.withLock { $0 }?.stability
        core.withLock { core in
            if core.awaiting != nil {
                if case .view(.excluded) = event {
                    core.awaiting = nil
                    core.deferred = []
                    core.donationsAfterCatchUp = []
                } else {
                    // Held until the state arrives; applied then, in order.
                    switch event {
                    case .delivered(let delivery, let payload):
                        core.deferred.append(.delivery(delivery, Array(payload)))
                        accepted = (try? CommandEnvelope.decode(payload)) != nil
                    case .view(let kind):
                        core.deferred.append(.view(kind))
                    }
                    return
                }
            }
            if case .view(.stateReceived(let view, let state)) = event, let manifest = StateManifest.decode(state) {
                core.awaiting = (view, manifest)
                if let restored = core.arrivedStates.first(where: { manifest.announces($0) }) {
                    install(restored, core: &core, stability: stability, out: &out)
                }
                return
            }
            if case .view(.installed(let view, let joined)) = event {
                core.lastInstalled = (view, joined, core.host.view)
            }
            accepted = applyLocked(event, core: &core, stability: stability, out: &out)
        }
        hand(out)
        return accepted
    }

    /// Has `state` encoded (on the ``background`` thread) and queued on the
    /// bulk channel for `joiners`. Never called under the core's lock: the
    /// job takes it.
    func donate(_ state: ServiceHost, to joiners: [MemberID]) {
        background.run { [self] in
            let transfer = StateManifest.transfer(of: state.snapshot())
            core.withLock { core in for joiner in joiners { core.stateSends.append((joiner.node, transfer)) } }
            wake.signal()
        }
    }

    func hand(_ out: Outgoing) {
        for (state, joiners) in out.donations { donate(state, to: joiners) }
        for (callback, response) in out.answers { callback(response) }
        for (sink, id, change) in out.watches { sink.onWatch(id, change) }
        // The ticker sleeps while it has nothing to watch: a held answer is something.
        if !out.bulkSends.isEmpty || out.heldSafe || out.wakeTicker { wake.signal() }
    }

    /// Applies one event to the host and collects what it answered.
    func applyLocked(
        _ event: BusEvent, core: inout Core, stability: (stableBelowRound: UInt64, nextRoundToSend: UInt64)?,
        out: inout Outgoing
    ) -> Bool {
        var accepted = true
        core.output.removeAll()
        if case .delivered(let delivery, let payload) = event {
            accepted = core.host.applyCommand(payload, at: delivery.position, fromRank: delivery.sender, output: &core.output)
        } else {
            do throws(ServiceStateError) { try core.host.apply(event, output: &core.output) } catch {
                core.stateError = error
                return accepted
            }
        }
        for c in core.output.completions where core.sessions[c.session.client]?.id == c.session {
            // A session ended here (its end is ordered after this) waits for nothing.
            guard let pending = core.sessions[c.session.client]?.pending.removeValue(forKey: c.requestID) else { continue }
            let response = ServiceResponse(status: c.status, index: c.index, position: c.position, body: core.output.body(of: c))
            if pending.consistency == .safe, !Self.isStable(c.position, stability) {
                core.safeHeld.append(Held(session: c.session.client, requestID: c.requestID, response: response, callback: pending.callback))
                out.heldSafe = true
            } else {
                out.answers.append((pending.callback, response))
            }
        }
        if !core.output.changes.isEmpty {
            for s in core.sessions.values where !s.watches.isEmpty {
                for change in core.output.changes {
                    let key = core.output.key(of: change)
                    for w in s.watches where w.prefix ? key.hasPrefix(w.key) : key == w.key {
                        out.watches.append(
                            (
                                s.sink, w.id,
                                WatchEvent(
                                    kind: change.kind, key: key, version: change.version,
                                    position: change.position, value: core.output.value(of: change))
                            ))
                    }
                }
            }
        }
        if !core.output.objectEffects.isEmpty, core.holding != nil {
            for effect in core.output.objectEffects {
                take(core.holding!.apply(effect), core: &core, out: &out)
            }
        }
        if !core.safeHeld.isEmpty { out.answers += Self.releaseStable(&core, stability) }
        if let due = core.metrics?.nextPublishNanos, monotonicNanos() >= due {
            core.metrics!.publish(core.host.counters, atNanos: monotonicNanos())
        }
        return accepted
    }

    // MARK: - Owned objects

    /// Does what this member's holding of owned objects asked: member
    /// commands go to the member's own session (sent by the ticker, never
    /// from inside a delivery), transfers to the ticker's bulk queue.
    func take(_ actions: [ObjectHolding.Action], core: inout Core, out: inout Outgoing) {
        for action in actions {
            switch action {
            case .order(let command):
                var w = ByteWriter()
                command.encode(into: &w)
                queueMemberCommand(w.bytes, core: &core)
            case .send(let transfer, let target):
                core.objectSends.append((transfer, target))
            }
            out.wakeTicker = true
        }
    }

    func queueMemberCommand(_ body: [UInt8], core: inout Core) {
        guard var s = core.sessions[OwnedObjectService.memberClient] else { return }
        let id = s.nextRequest
        s.nextRequest += 1
        s.pending[id] = Pending(
            service: OwnedObjectService.serviceID, body: body, consistency: .agreed, submittedNanos: monotonicNanos(),
            callback: { [logger] response in
                // A commit or abort that lost its race with the other (notFound) is expected.
                guard response.status != .ok, response.status != .notFound else { return }
                logger.warning(
                    "an owned-object member command was refused",
                    metadata: ["status": "\(response.status)", "detail": "\(String(decoding: response.body.dropFirst(2), as: UTF8.self))"])
            })
        core.sessions[OwnedObjectService.memberClient] = s
    }

    /// Has this member's outgoing object transfers encoded (on the
    /// ``background`` thread: a large object is copied and hashed once,
    /// there) and offers them to the bulk channel (again while its queue is
    /// full). A transfer whose migration ended (committed, aborted, or its
    /// target gone) is dropped from the channel, so a dead target's bytes
    /// never delay the next.
    func sendObjects() {
        let sends = core.withLock { core in
            defer { core.objectSends = [] }
            return core.objectSends
        }
        for (transfer, target) in sends {
            let deadline = monotonicNanos() + options.migrationStallNanos + UInt64(transfer.bytes.count >> 20) * options.migrationNanosPerMiB
            logger.info(
                "sending an owned object to its migration's target",
                metadata: [
                    "object": "\(transfer.name)", "bytes": "\(transfer.bytes.count)", "target": "\(target)", "migration": "\(transfer.migration)"
                ])
            core.withLock {
                $0.outgoing[transfer.migration] = .init(name: transfer.name, target: target.node, deadlineNanos: deadline, encoded: nil)
            }
            background.run { [self] in
                let encoded = transfer.encoded
                core.withLock { core in
                    // Still wanted (not ended, aborted or queued meanwhile).
                    guard core.outgoing[transfer.migration]?.transferID == nil else { return }
                    core.outgoing[transfer.migration]?.encoded = encoded
                }
                wake.signal()
            }
        }
        let channel = bulk.withLock { $0 }
        let (offers, cancels) = core.withLock { core -> ([(UInt64, UInt16, [UInt8])], [UInt64]) in
            var offers: [(UInt64, UInt16, [UInt8])] = [], cancels: [UInt64] = []
            for (migration, entry) in core.outgoing {
                if core.holding?.hasFinished(migration) ?? true {
                    if let id = entry.transferID { cancels.append(id) }
                    core.outgoing[migration] = nil
                } else if let bytes = entry.encoded {
                    offers.append((migration, entry.target, bytes))
                }
            }
            return (offers.sorted { $0.0 < $1.0 }, cancels)
        }
        for id in cancels { channel?.cancel(transferID: id) }
        for (migration, target, bytes) in offers {
            guard let channel else {
                logger.error("an owned object cannot migrate: this node has no bulk channel; its migration is aborted")
                orderAbort(migration)
                continue
            }
            switch channel.send(bytes, to: Int(target)) {
            case .queued(let id):
                core.withLock { core in
                    core.outgoing[migration]?.encoded = nil
                    core.outgoing[migration]?.transferID = id
                }
            case .queueFull:
                continue
            case .invalidLength(let n):
                logger.error("an owned object of \(n) bytes is larger than the bulk channel takes: its migration is aborted")
                orderAbort(migration)
            case .invalidDestination(let node):
                logger.error("an owned object's migration names node \(node), not a peer on the bulk channel: it is aborted")
                orderAbort(migration)
            }
        }
    }

    /// Orders the abort of migration `migration` (this member is its source) and forgets its transfer.
    func orderAbort(_ migration: UInt64) {
        core.withLock { core in
            guard let entry = core.outgoing.removeValue(forKey: migration) else { return }
            var w = ByteWriter()
            OwnedObjectCommand.abortMigration(name: entry.name, migration: migration).encode(into: &w)
            queueMemberCommand(w.bytes, core: &core)
        }
        wake.signal()
    }

    /// Orders the abort of this member's outgoing migrations past their deadline.
    func abortStalledMigrations(now: UInt64) {
        let stalled = core.withLock { core -> [(UInt64, String, UInt64?)] in
            core.outgoing.compactMap { migration, entry in
                now >= entry.deadlineNanos && !(core.holding?.hasFinished(migration) ?? true)
                    ? (migration, entry.name, entry.transferID) : nil
            }
        }
        for (migration, name, transferID) in stalled {
            logger.error(
                "an owned object's migration did not finish in time: its source orders the abort and keeps it",
                metadata: ["object": "\(name)", "migration": "\(migration)"])
            if let transferID { bulk.withLock { $0 }?.cancel(transferID: transferID) }
            orderAbort(migration)
        }
    }

    /// Publishes this member's load (for placement) when the period has passed.
    func publishLoad(now: UInt64) {
        guard options.loadPublishNanos > 0 else { return }
        let due = core.withLock { core -> Bool in
            guard core.holding != nil else { return false }
            guard let last = core.lastLoad else {
                core.lastLoad = (now, ProcessSample.read())
                return false
            }
            return now &- last.nanos >= options.loadPublishNanos
        }
        guard due else { return }
        let load: UInt32
        if let provider = options.load {
            load = provider()
            core.withLock { $0.lastLoad = (now, nil) }
        } else {
            let sample = ProcessSample.read()
            load = core.withLock { core -> UInt32 in
                defer { core.lastLoad = (now, sample) }
                guard let before = core.lastLoad?.sample, let sample, now > core.lastLoad!.nanos else { return 0 }
                return ServiceNode.cpuPermille(from: before, to: sample, elapsedNanos: now - core.lastLoad!.nanos)
            }
        }
        core.withLock { core in
            if let last = core.publishedLoad, (last > load ? last - load : load - last) < options.loadChangePermille { return }
            core.publishedLoad = load
            var w = ByteWriter()
            OwnedObjectCommand.publishLoad(load).encode(into: &w)
            queueMemberCommand(w.bytes, core: &core)
        }
    }

    /// The owned object `name` as this member holds it (owner or backup), nil when it holds no copy.
    public func heldObject(_ name: String) -> ObjectHolding.Copy? {
        core.withLock { $0.holding?.copy(of: name) }
    }

    /// The holding's counters (copies missing, transfers refused, migrations committed and sent here).
    public var objectCounters: ObjectHolding.Counters? { core.withLock { $0.holding?.counters } }

    // MARK: - State over the bulk channel

    /// The state for joiners at this point (Member.snapshotProvider, on the
    /// agent thread): without a bulk channel the host's snapshot itself;
    /// with one a manifest, and this member — if it is the donor — serializes
    /// a copy of the host (copy-on-write: taking it costs nothing here) on
    /// another thread and queues it to every joiner, so the agent never
    /// stops for a large state.
    func provideState() -> [UInt8] {
        let hasBulk = bulk.withLock { $0 != nil }
        let me = currentMember()
        let (bytes, frozen, joiners) = core.withLock { Self.stateToProvide(&$0, me: me, hasBulk: hasBulk) }
        if let frozen, !joiners.isEmpty { donate(frozen, to: joiners) }
        return bytes
    }

    /// What this member hands the membership layer for a view's joiners: the
    /// state itself without a bulk channel; else a manifest, and (if it is
    /// the donor) the state to send and to whom now.
    static func stateToProvide(_ core: inout Core, me: MemberID, hasBulk: Bool) -> ([UInt8], ServiceHost?, [MemberID]) {
        guard hasBulk else { return (core.host.snapshot(), nil, []) }
        if core.awaiting != nil { return (manifestWhileCatchingUp(&core, me: me), nil, []) }
        guard let installed = core.lastInstalled else { return (core.host.snapshot(), nil, []) }
        let previous = installed.previous?.members ?? []
        guard let donor = installed.view.members.first(where: { previous.contains($0) }) else { return (core.host.snapshot(), nil, []) }
        let manifest = StateManifest(epoch: installed.view.epoch, donorNode: donor.node)
        return (manifest.encoded, donor == me ? core.host : nil, installed.joined)
    }

    /// The donor's answer while it still waits for its own state (a member
    /// that rejoined, asked at the next view change): its host is not at
    /// this cut, so it takes the view and its joiners from the held events
    /// and, if it is the donor, sends the state once its held events reach
    /// this view's installation (``install(_:core:stability:out:)``). Without
    /// this it announced a stale state, sent it, and the joiners waited for
    /// ever (a fresh-clone CI run: five nodes churning at start).
    static func manifestWhileCatchingUp(_ core: inout Core, me: MemberID) -> [UInt8] {
        // The view being installed is the last one held; the one before it is
        // the previous held view, or the view this member joined.
        var current = core.awaiting!.0
        var joined: [MemberID] = []
        var previous: View? = nil
        for case .view(.installed(let v, let j)) in core.deferred {
            previous = current
            current = v
            joined = j
        }
        let old = previous?.members ?? []
        let donor = current.members.first { old.contains($0) }
        let manifest = StateManifest(epoch: current.epoch, donorNode: donor?.node ?? me.node)
        if donor == me, !joined.isEmpty { core.donationsAfterCatchUp.append((current.epoch, joined)) }
        return manifest.encoded
    }

    /// A transfer arrived on the bulk channel: the state a joiner waits for
    /// (or will), or an owned object's bytes. Returns at once: it is checked
    /// and decoded on a queue of ordinary priority, off the agent and the
    /// bulk channel's threads; the agent only swaps the host in and applies
    /// the held events.
    public func bulkArrived(source: Int, bytes: [UInt8]) {
        background.run { [self] in takeArrival(source: source, bytes: bytes) }
    }

    func takeArrival(source: Int, bytes: [UInt8]) {
        if ObjectTransfer.isTransfer(bytes) { return objectArrived(source: source, bytes: bytes) }
        guard let state = StateManifest.state(fromTransfer: bytes) else {
            logger.error(
                "a services state over the bulk channel fails its digest: ignored", metadata: ["source_node": "\(source)", "bytes": "\(bytes.count)"])
            return
        }
        var fresh = core.withLock { $0.blankHost }
        let failure: ServiceStateError? = state.withUnsafeBytes { b in
            do throws(ServiceStateError) { try fresh.restore(b); return nil } catch { return error }
        }
        if let failure {
            core.withLock { $0.stateError = failure }
            logger.critical(
                "the services state received cannot be taken: this node cannot serve (restart it with --join)",
                metadata: [
                    "source_node": "\(source)", "error": "\(failure)"
                ])
            return
        }
        logger.notice(
            "services state received over the bulk channel",
            metadata: [
                "source_node": "\(source)", "state_bytes": "\(state.count)", "applied_index": "\(fresh.appliedIndex)"
            ])
        var out = Outgoing()
        let stability = member.withLock { $0 }?.stability
        core.withLock { core in
            if let (_, manifest) = core.awaiting, manifest.announces(fresh) {
                install(fresh, core: &core, stability: stability, out: &out)
            } else {
                core.arrivedStates.append(fresh)
                if core.arrivedStates.count > 2 { core.arrivedStates.removeFirst() }
            }
        }
        hand(out)
    }

    /// An owned object's bytes for a migration to this member: checked
    /// (digest) here, off the agent thread; kept and its commit ordered.
    func objectArrived(source: Int, bytes: [UInt8]) {
        let transfer: ObjectTransfer
        do { transfer = try ObjectTransfer.decode(bytes) } catch {
            core.withLock { $0.holding?.refused() }
            logger.error("an owned object's transfer was refused: \(error)", metadata: ["source_node": "\(source)", "bytes": "\(bytes.count)"])
            return
        }
        logger.info(
            "an owned object arrived for its migration",
            metadata: [
                "object": "\(transfer.name)", "bytes": "\(transfer.bytes.count)", "source_node": "\(source)", "migration": "\(transfer.migration)"
            ])
        var out = Outgoing()
        core.withLock { core in
            guard core.holding != nil else { return }
            take(core.holding!.accept(transfer), core: &core, out: &out)
        }
        hand(out)
    }

    func install(
        _ restored: ServiceHost, core: inout Core, stability: (stableBelowRound: UInt64, nextRoundToSend: UInt64)?,
        out: inout Outgoing
    ) {
        core.awaiting = nil
        core.arrivedStates = []
        core.host = restored
        core.noPrimarySince = nil
        let held = core.deferred
        core.deferred = []
        for event in held {
            switch event {
            case .delivery(let delivery, let payload):
                payload.withUnsafeBytes { _ = applyLocked(.delivered(delivery, payload: $0), core: &core, stability: stability, out: &out) }
            case .view(let kind):
                if case .installed(let v, let joined) = kind { core.lastInstalled = (v, joined, core.host.view) }
                _ = applyLocked(.view(kind), core: &core, stability: stability, out: &out)
                // This member donated while it caught up: the state at this installation is the one announced.
                if case .installed(let v, _) = kind, let d = core.donationsAfterCatchUp.firstIndex(where: { $0.epoch == v.epoch }) {
                    out.donations.append((core.host, core.donationsAfterCatchUp.remove(at: d).joiners))
                }
            }
        }
        core.donationsAfterCatchUp = []
    }

    /// Queues the donor's pending state sends on the bulk channel (retried while its queue is full).
    func sendStates() {
        guard let channel = bulk.withLock({ $0 }) else { return }
        let sends = core.withLock { core in
            defer { core.stateSends = [] }; return core.stateSends
        }
        for (node, bytes) in sends {
            if case .queueFull = channel.send(bytes, to: Int(node)) {
                core.withLock { $0.stateSends.append((node, bytes)) }
            }
        }
    }

    static func isStable(_ p: BusPosition, _ stability: (stableBelowRound: UInt64, nextRoundToSend: UInt64)?) -> Bool {
        guard let stability else { return false }
        return p.round < stability.stableBelowRound
    }

    static func releaseStable(_ core: inout Core, _ stability: (stableBelowRound: UInt64, nextRoundToSend: UInt64)?) -> [(Callback, ServiceResponse)]
    {
        var out: [(Callback, ServiceResponse)] = []
        let epoch = core.host.view?.epoch ?? 0
        core.safeHeld.removeAll { held in
            // A later view's install agreed on everything before it: stable.
            guard held.response.position.epoch < epoch || isStable(held.response.position, stability) else { return false }
            out.append((held.callback, held.response))
            return true
        }
        return out
    }

    func endAllSessions(_ status: ServiceStatus) {
        let (ended, held) = core.withLock { core -> ([LocalSession], [Held]) in
            let all = Array(core.sessions.values)
            let held = core.safeHeld
            core.sessions = [:]
            core.safeHeld = []
            return (all, held)
        }
        // Applied here but not known to be stable when the member was left
        // out: whether the others applied it is not known either.
        for h in held { h.callback(ServiceResponse(status: status)) }
        for s in ended {
            for (_, p) in s.pending { p.callback(ServiceResponse(status: status)) }
            s.sink.onEnd(status)
        }
    }

    // MARK: - Retries, deadlines, stability

    func tickLoop() {
        while running.load(ordering: .relaxed) {
            let (busy, holds) = core.withLock { core in
                (
                    !core.safeHeld.isEmpty || !core.endsToSend.isEmpty || !core.stateSends.isEmpty || !core.objectSends.isEmpty
                        || core.outgoing.values.contains { $0.encoded != nil }
                        || core.sessions.values.contains { !$0.pending.isEmpty },
                    core.holding != nil
                )
            }
            if busy {
                _ = wake.wait(timeout: .now() + .milliseconds(1))
            } else if holds {
                // Loads are published and stalled migrations aborted at a low rate: the ticker wakes for them.
                _ = wake.wait(timeout: .now() + .seconds(1))
            } else {
                wake.wait()
            }
            guard running.load(ordering: .relaxed) else { return }
            tick(now: monotonicNanos())
        }
    }

    func tick(now: UInt64) {
        let m = member.withLock { $0 }
        let stability = m?.stability
        let inPrimary = m?.isMember ?? false
        var answers: [(Callback, ServiceResponse)] = []
        var ended: [SessionSink] = []
        core.withLock { core in
            if !core.safeHeld.isEmpty { answers += Self.releaseStable(&core, stability) }
            // A joiner whose services state has not come (its donor died, or
            // the state could not be taken) serves nothing either: its callers
            // hear noPrimary after the same wait instead of waiting for ever.
            let serving = inPrimary && core.awaiting == nil
            if serving { core.noPrimarySince = nil } else if core.noPrimarySince == nil { core.noPrimarySince = now }
            guard let since = core.noPrimarySince, now &- since >= options.noPrimaryWaitNanos else { return }
            // A session with a request older than the wait ends: the request
            // may still be ordered later, and whatever it would take is then
            // released by the session's end, ordered after it.
            for client in core.sessions.keys.sorted() where client != OwnedObjectService.memberClient || core.holding == nil {
                let s = core.sessions[client]!
                guard s.pending.values.contains(where: { now &- $0.submittedNanos >= options.noPrimaryWaitNanos }) else { continue }
                core.sessions[client] = nil
                core.endsToSend.append((s.id, s.nextRequest))
                for (_, p) in s.pending { answers.append((p.callback, ServiceResponse(status: .noPrimary))) }
                ended.append(s.sink)
            }
        }
        for (callback, response) in answers { callback(response) }
        for sink in ended { sink.onEnd(.noPrimary) }
        if inPrimary {
            publishLoad(now: now)
            abortStalledMigrations(now: now)
            sendPending(now: now)
        }
        sendStates()
        sendObjects()
    }

    /// A local session: its calls are the typed ones of ``/CarillonServices/ServiceCalls``.
    public final class Session: ServiceCalls, @unchecked Sendable {
        public let node: ServiceNode
        public let client: UInt32

        init(node: ServiceNode, client: UInt32) {
            self.node = node
            self.client = client
        }

        public func request(service: UInt16, body: [UInt8], consistency: Consistency, capability: [UInt8]) async throws -> ServiceResponse {
            await withCheckedContinuation { continuation in
                node.submit(client, service: service, body: body, consistency: consistency, capability: capability) {
                    continuation.resume(returning: $0)
                }
            }
        }

        /// Ends the session (releases its locks at every member).
        public func close() { node.closeSession(client) }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the shell's timeouts (never ordering).
func monotonicNanos() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
}

/// The state a joiner receives from the membership layer when services run:
/// a u32 length and the application's state, then the services' state (or
/// its manifest). An empty state (a first view) splits into two empty ones.
enum StateBundle {
    static func join(_ application: [UInt8], _ services: [UInt8]) -> [UInt8] {
        var w = ByteWriter(capacity: 4 + application.count + services.count)
        w.u32(UInt32(application.count))
        w.raw(application)
        w.raw(services)
        return w.bytes
    }

    static func split(_ state: [UInt8]) -> (application: [UInt8], services: [UInt8]) {
        guard state.count >= 4 else { return ([], []) }
        let n = state.withUnsafeBytes { Int(UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self))) }
        guard n <= state.count - 4 else { return ([], state) }
        return (Array(state[4..<(4 + n)]), Array(state[(4 + n)...]))
    }
}

extension ServiceNode {
    /// CPU used between two samples of this process, in permille of one core.
    static func cpuPermille(from a: ProcessSample, to b: ProcessSample, elapsedNanos: UInt64) -> UInt32 {
        let ticks = b.stat.cpuTicks &- a.stat.cpuTicks
        let hertz = UInt64(max(1, sysconf(Int32(_SC_CLK_TCK))))
        let usedNanos = ticks * 1_000_000_000 / hertz
        return UInt32(min(UInt64(UInt32.max), usedNanos * 1000 / max(1, elapsedNanos)))
    }
}

/// The key of the owned objects' capability tags: SipHash-2-4 under a subkey
/// of the cluster key bound to the run (``/CarillonAuth/FrameAuthenticator/subkeyWords(for:run:)``,
/// purpose `"capabilities"`), so a capability from an earlier run of the
/// cluster does not verify in a later one. Every member of a run derives the
/// same key; the run is read when a tag is computed (a joiner learns it when
/// it joins) and the key derived again only when it changes.
///
/// Without a cluster key the tag is keyed by the run identity alone: such
/// capabilities can be forged by anyone who knows the run (it is in every
/// frame). Configure a key where capabilities matter.
public final class RunBoundCapabilityAuthority: CapabilityAuthority, @unchecked Sendable {
    struct State {
        var key: FrameAuthenticator?
        var run: () -> UInt64 = { 0 }
        var derived: (run: UInt64, authority: SipHashAuthority)?
    }
    let state = Mutex(State())

    public init() {}

    /// Binds the authority to `key` (nil: none) and the run `run` reports.
    public func bind(key: FrameAuthenticator?, run: @escaping @Sendable () -> UInt64) {
        state.withLock {
            $0.key = key
            $0.run = run
            $0.derived = nil
        }
    }

    public func tag(_ message: UnsafeRawBufferPointer) -> (UInt64, UInt64) {
        let authority = state.withLock { s -> SipHashAuthority in
            let run = s.run()
            if let d = s.derived, d.run == run { return d.authority }
            let words = s.key?.subkeyWords(for: "capabilities", run: run) ?? (run, ~run)
            let authority = SipHashAuthority(key0: words.0, key1: words.1)
            s.derived = (run, authority)
            return authority
        }
        return authority.tag(message)
    }
}
