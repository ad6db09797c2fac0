import CarillonMembership
import CarillonOrdering

/// What a host counted, for operators, and two levels (open sessions, the
/// applied log index). Every field is described in ``descriptors``
/// (`carillon_services_*`), which drives the sums, the swift-metrics export
/// and the table in docs/operations.md.
public struct ServiceCounters: Sendable, Hashable {
    /// Commands a state machine applied.
    public var commandsApplied = 0
    /// Retries of requests already answered, answered again from the session's memory.
    public var retriesAnswered = 0
    /// Retries of requests applied but not yet answered, or already forgotten: ignored.
    public var duplicatesIgnored = 0
    /// Payloads that were not envelopes, or bodies a service could not read.
    public var badRequests = 0
    /// Commands naming a session of another member than their sender.
    public var foreignSessions = 0
    /// Requests refused because their session's window was full.
    public var windowsFull = 0
    /// Client sessions ended (their client went, or their member left the view).
    public var sessionsEnded = 0
    /// Views the services applied.
    public var viewChanges = 0
    /// Client sessions open now (a gauge; the same at every replica at the same point of the log).
    public var sessionsOpen = 0
    /// The log index applied last (a gauge; ``ServiceHost/appliedIndex``).
    public var appliedIndex = 0

    public init() {}
}

extension ServiceCounters: CounterSet {
    public static let descriptors: [CounterDescriptor<ServiceCounters>] = [
        .init(
            "carillon_services_commands_applied", .commands, \.commandsApplied, "service commands applied by this member's replica (docs/services.md)"
        ),
        .init(
            "carillon_services_retries_answered", .requests, \.retriesAnswered,
            "retried requests answered from the session's memory (not applied again)"),
        .init(
            "carillon_services_duplicates_ignored", .requests, \.duplicatesIgnored,
            "retries of requests still pending or already acknowledged: ignored"),
        .init(
            "carillon_services_bad_requests", .messages, \.badRequests,
            "bus payloads that were not service envelopes, or commands that could not be read"),
        .init("carillon_services_foreign_sessions", .commands, \.foreignSessions, "commands naming another member's session: refused"),
        .init(
            "carillon_services_windows_full", .requests, \.windowsFull,
            "requests refused because their session had \(ServiceHost.sessionWindow) unacknowledged"),
        .init("carillon_services_sessions_ended", .sessions, \.sessionsEnded, "client sessions ended (client gone, or its member left the view)"),
        .init("carillon_services_view_changes", .events, \.viewChanges, "views applied by the services"),
        .init("carillon_services_sessions_open", .sessions, \.sessionsOpen, "client sessions open at every replica", kind: .gauge),
        .init(
            "carillon_services_applied_index", .events, \.appliedIndex,
            "the services' log index applied here (equal at every member at the same point)", kind: .gauge)
    ]
}

/// Why a host could not take a state.
public enum ServiceStateError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The state's bytes could not be read.
    case undecodable(ServiceDecodeError)
    /// The state names services this host does not run, or lacks some it runs.
    case servicesDiffer(state: [UInt16], host: [UInt16])

    public var description: String {
        switch self {
        case .undecodable(let e): "the received state cannot be read: \(e)"
        case .servicesDiffer(let s, let h): "the received state holds services \(s), this member runs \(h)"
        }
    }
}

/// Runs registered state machines on the bus's event stream: decodes each
/// delivered envelope, applies its command exactly once per (session,
/// request id), ends sessions whose member left, and snapshots / restores
/// everything for joiners. Pure: the same events give the same state, the
/// same responses and the same digest at every member.
public struct ServiceHost: Sendable {
    /// Responses a session's client has not acknowledged are kept for retries;
    /// a session may have at most this many requests applied and not
    /// acknowledged.
    public static let sessionWindow = 64

    struct Answer {
        var requestID: UInt64
        var service: UInt16
        var status: ServiceStatus
        var position: BusPosition
        var index: UInt64
        var body: [UInt8]
    }

    struct Session {
        var acknowledgedBelow: UInt64 = 0
        /// Applied, not answered yet (a queued lock acquire).
        var pending: [UInt64] = []
        /// Answered; slots with requestID below acknowledgedBelow are free.
        var answers: [Answer] = []

        var inWindow: Int {
            pending.count + answers.reduce(0) { $0 + ($1.requestID >= acknowledgedBelow ? 1 : 0) }
        }
    }

    public private(set) var machines: [any ReplicatedStateMachine]
    /// The view the last event was applied in.
    public private(set) var view: View?
    /// The log index of the last applied event.
    public private(set) var appliedIndex: UInt64 = 0
    /// What the host counted so far, with the gauges as they are now.
    public var counters: ServiceCounters {
        var now = counted
        now.sessionsOpen = sessions.count
        now.appliedIndex = Int(clamping: appliedIndex)
        return now
    }
    /// The counters the host increments (``counters`` adds the gauges).
    var counted = ServiceCounters()
    var sessions: [SessionID: Session] = [:]
    /// A deliberately broken variant (tests only); not part of the state.
    @_spi(Canary) public var canary: ServiceCanary?

    public init(machines: [any ReplicatedStateMachine]) {
        precondition(Set(machines.map(\.serviceID)).count == machines.count, "service ids must be unique")
        self.machines = machines
    }

    /// Starts a member of the cluster's first view in that view (a first view
    /// is configured, not installed: no event announces it). Joiners start
    /// from the state they receive instead.
    public mutating func begin(in first: View) {
        precondition(view == nil && appliedIndex == 0, "begin(in:) is for a fresh host")
        view = first
    }

    /// How many sessions are open now.
    public var openSessionCount: Int { sessions.count }

    /// Sessions open now, in order.
    public var openSessions: [SessionID] { sessions.keys.sorted() }

    /// The machine serving `serviceID`, for local (stale) reads.
    public func machine(_ serviceID: UInt16) -> (any ReplicatedStateMachine)? {
        machines.first { $0.serviceID == serviceID }
    }

    /// Applies one event of the bus stream. Throws only when a received state
    /// cannot be taken (the member cannot serve: the shell should stop it).
    public mutating func apply(_ event: BusEvent, output: inout ServiceOutput) throws(ServiceStateError) {
        switch event {
        case .delivered(let delivery, let payload):
            applyCommand(payload, at: delivery.position, fromRank: delivery.sender, output: &output)
        case .view(let kind):
            switch kind {
            case .installed(let next, _):
                applyView(next, output: &output)
            case .stateReceived(let next, let state):
                if state.isEmpty {
                    reset()
                    view = next
                } else {
                    let result: Result<Void, ServiceStateError> = state.withUnsafeBytes { b in
                        do throws(ServiceStateError) { try restore(b); return .success(()) } catch { return .failure(error) }
                    }
                    try result.get()
                }
            case .excluded:
                // This incarnation is over: its state is replaced when it rejoins.
                view = nil
            case .noPrimaryComponent:
                break
            }
        }
    }

    /// Applies one delivered payload, sent by the member at rank `sender` of
    /// the current view, at `position` (``apply(_:output:)`` for a delivery).
    /// Returns whether it was a service envelope of its sender's own session
    /// (anything else on the bus is counted and left alone).
    @discardableResult
    public mutating func applyCommand(
        _ payload: UnsafeRawBufferPointer, at position: BusPosition, fromRank sender: Int,
        output: inout ServiceOutput
    ) -> Bool {
        let envelope: CommandEnvelope
        do { envelope = try CommandEnvelope.decode(payload) } catch {
            counted.badRequests += 1
            return false
        }
        // A session belongs to its member: another member's command for it is refused.
        guard let view, sender < view.members.count, view.members[sender] == envelope.session.member else {
            counted.foreignSessions += 1
            return false
        }
        applyEnvelope(envelope, in: view, position: position, output: &output)
        return true
    }

    mutating func applyEnvelope(_ envelope: CommandEnvelope, in view: View, position: BusPosition, output: inout ServiceOutput) {
        appliedIndex += 1
        output.position = position
        output.index = appliedIndex
        output.service = envelope.service
        let id = envelope.session
        if envelope.kind == .endSession {
            endSession(id, output: &output)
            return
        }
        // Sessions are changed in place (through their index), never copied
        // out and back: a copy would duplicate their arrays on every command.
        if sessions[id] == nil || canary == .forgetSessions { sessions[id] = Session() }
        let i = sessions.index(forKey: id)!
        sessions.values[i].acknowledgedBelow = max(sessions.values[i].acknowledgedBelow, envelope.acknowledgedBelow)
        if envelope.requestID < sessions.values[i].acknowledgedBelow || sessions.values[i].pending.contains(envelope.requestID) {
            counted.duplicatesIgnored += 1
            return
        }
        if let a = sessions.values[i].answers.firstIndex(where: { $0.requestID == envelope.requestID }) {
            counted.retriesAnswered += 1
            let answer = sessions.values[i].answers[a]
            output.service = answer.service
            output.position = answer.position
            output.index = answer.index
            output.complete(id, answer.requestID, status: answer.status) { $0.raw(answer.body) }
            output.position = position
            output.index = appliedIndex
            return
        }
        if sessions.values[i].inWindow >= Self.sessionWindow {
            counted.windowsFull += 1
            output.complete(id, envelope.requestID, status: .windowFull)
            return
        }
        guard let m = machines.firstIndex(where: { $0.serviceID == envelope.service }) else {
            output.complete(id, envelope.requestID, status: .unknownService)
            record(from: output.completions.count - 1, current: (id, envelope.requestID), output: output)
            return
        }
        let start = output.completions.count
        let context = ApplyContext(
            position: position, index: appliedIndex, session: id, requestID: envelope.requestID,
            capability: envelope.capability, view: view)
        var reader = ByteReader(envelope.body)
        do {
            try machines[m].apply(&reader, context: context, output: &output)
            counted.commandsApplied += 1
        } catch {
            counted.badRequests += 1
            if !output.completions[start...].contains(where: { $0.session == id && $0.requestID == envelope.requestID }) {
                output.complete(id, envelope.requestID, status: .badRequest)
            }
        }
        record(from: start, current: (id, envelope.requestID), output: output)
    }

    /// Remembers the answers given since completion `start` in their sessions
    /// (for retries), and the current request as pending if it was not answered.
    mutating func record(from start: Int, current: (SessionID, UInt64)?, output: ServiceOutput) {
        var answeredCurrent = false
        for c in output.completions[start...] {
            if let current, c.session == current.0, c.requestID == current.1 { answeredCurrent = true }
            guard let i = sessions.index(forKey: c.session) else { continue }
            sessions.values[i].pending.removeAll { $0 == c.requestID }
            let acknowledged = sessions.values[i].acknowledgedBelow
            let body = output.bodies.bytes[c.bodyOffset..<(c.bodyOffset + c.bodyLength)]
            if let slot = sessions.values[i].answers.firstIndex(where: { $0.requestID < acknowledged }) {
                // A forgotten answer's slot, its body's storage reused.
                sessions.values[i].answers[slot].requestID = c.requestID
                sessions.values[i].answers[slot].service = c.service
                sessions.values[i].answers[slot].status = c.status
                sessions.values[i].answers[slot].position = c.position
                sessions.values[i].answers[slot].index = c.index
                sessions.values[i].answers[slot].body.removeAll(keepingCapacity: true)
                sessions.values[i].answers[slot].body.append(contentsOf: body)
            } else {
                sessions.values[i].answers.append(
                    Answer(
                        requestID: c.requestID, service: c.service, status: c.status,
                        position: c.position, index: c.index, body: Array(body)))
            }
        }
        if let current, !answeredCurrent { sessions[current.0]?.pending.append(current.1) }
    }

    mutating func endSession(_ id: SessionID, output: inout ServiceOutput) {
        guard sessions[id] != nil else { return }
        let start = output.completions.count
        for m in machines.indices {
            output.service = machines[m].serviceID
            machines[m].endSession(id, index: appliedIndex, output: &output)
        }
        sessions[id] = nil
        counted.sessionsEnded += 1
        // Answers to other sessions (a waiter granted what this one let go).
        record(from: start, current: nil, output: output)
    }

    mutating func applyView(_ next: View, output: inout ServiceOutput) {
        appliedIndex += 1
        counted.viewChanges += 1
        output.position = BusPosition(epoch: next.epoch, round: next.startRound, slot: 0, index: 0)
        output.index = appliedIndex
        let removed = (view?.members ?? []).filter { !next.members.contains($0) }
        view = next
        // Sessions of members that left end here, in session order.
        for id in sessions.keys.sorted() where removed.contains(id.member) {
            endSession(id, output: &output)
        }
        let start = output.completions.count
        for m in machines.indices {
            output.service = machines[m].serviceID
            machines[m].applyViewChange(next, removed: removed, index: appliedIndex, output: &output)
        }
        record(from: start, current: nil, output: output)
    }

    /// A joiner given no state starts empty in `next`.
    mutating func reset() {
        sessions = [:]
        appliedIndex = 0
    }

    // MARK: - Snapshots

    /// The host's whole state (view, log index, sessions, every machine),
    /// deterministic: equal states give equal bytes.
    public func snapshot() -> [UInt8] {
        var w = ByteWriter(capacity: 1024)
        w.u8(1)
        w.u64(appliedIndex)
        if let view {
            w.u8(1)
            w.u32(view.epoch)
            w.u64(view.startRound)
            w.u16(UInt16(view.members.count))
            for m in view.members { w.u16(m.node); w.u64(m.incarnation) }
        } else {
            w.u8(0)
        }
        let ids = sessions.keys.sorted()
        w.u32(UInt32(ids.count))
        for id in ids {
            let s = sessions[id]!
            id.write(to: &w)
            w.u64(s.acknowledgedBelow)
            w.u16(UInt16(s.pending.count))
            for p in s.pending { w.u64(p) }
            let answers = s.answers.filter { $0.requestID >= s.acknowledgedBelow }.sorted { $0.requestID < $1.requestID }
            w.u16(UInt16(answers.count))
            for a in answers {
                w.u64(a.requestID); w.u16(a.service); w.u8(a.status.rawValue)
                w.u32(a.position.epoch); w.u64(a.position.round); w.u32(UInt32(a.position.slot)); w.u32(UInt32(a.position.index))
                w.u64(a.index)
                w.bytes32(a.body)
            }
        }
        w.u16(UInt16(machines.count))
        for m in machines {
            w.u16(m.serviceID)
            let lengthAt = w.count
            w.u64(0)
            let start = w.count
            m.snapshot(into: &w)
            let length = UInt64(w.count - start)
            for i in 0..<8 { w.bytes[lengthAt + i] = UInt8(truncatingIfNeeded: length >> UInt64(8 * i)) }
        }
        return w.bytes
    }

    /// The digest of ``snapshot()``: equal at every replica at the same position.
    public var digest: UInt64 { Digest64.of(snapshot()) }

    /// Replaces the whole state by a snapshot's.
    public mutating func restore(_ bytes: UnsafeRawBufferPointer) throws(ServiceStateError) {
        let decoded: Decoded
        do { decoded = try Self.decode(bytes) } catch { throw .undecodable(error) }
        guard decoded.machines.map(\.0) == machines.map(\.serviceID) else {
            throw .servicesDiffer(state: decoded.machines.map(\.0), host: machines.map(\.serviceID))
        }
        var next = machines
        do throws(ServiceDecodeError) {
            for (m, body) in decoded.machines.enumerated() {
                var reader = ByteReader(body.1)
                try next[m].restore(from: &reader)
                try reader.expectEnd()
            }
        } catch { throw .undecodable(error) }
        machines = next
        sessions = decoded.sessions
        appliedIndex = decoded.index
        view = decoded.view
    }

    struct Decoded {
        var index: UInt64
        var view: View?
        var sessions: [SessionID: Session]
        var machines: [(UInt16, UnsafeRawBufferPointer)]
    }

    static func decode(_ bytes: UnsafeRawBufferPointer) throws(ServiceDecodeError) -> Decoded {
        var r = ByteReader(bytes)
        let version = try r.u8()
        guard version == 1 else { throw .unsupportedVersion(version) }
        let index = try r.u64()
        var restoredView: View?
        if try r.u8() == 1 {
            let epoch = try r.u32()
            let start = try r.u64()
            let n = Int(try r.u16())
            var members: [MemberID] = []
            for _ in 0..<n { members.append(MemberID(node: try r.u16(), incarnation: try r.u64())) }
            restoredView = View(epoch: epoch, members: members, startRound: start)
        }
        var restored: [SessionID: Session] = [:]
        let sessionCount = Int(try r.u32())
        for _ in 0..<sessionCount {
            let id = try SessionID.read(from: &r)
            var s = Session()
            s.acknowledgedBelow = try r.u64()
            let pendingCount = Int(try r.u16())
            for _ in 0..<pendingCount { s.pending.append(try r.u64()) }
            let answerCount = Int(try r.u16())
            for _ in 0..<answerCount {
                let requestID = try r.u64()
                let service = try r.u16()
                let rawStatus = try r.u8()
                guard let status = ServiceStatus(rawValue: rawStatus) else { throw .invalidField("status \(rawStatus)") }
                let position = BusPosition(epoch: try r.u32(), round: try r.u64(), slot: Int(try r.u32()), index: Int(try r.u32()))
                let answerIndex = try r.u64()
                let body = Array(try r.bytes32())
                s.answers.append(
                    Answer(
                        requestID: requestID, service: service, status: status, position: position,
                        index: answerIndex, body: body))
            }
            restored[id] = s
        }
        let machineCount = Int(try r.u16())
        var bodies: [(UInt16, UnsafeRawBufferPointer)] = []
        for _ in 0..<machineCount {
            let id = try r.u16()
            let length = try r.u64()
            guard length <= UInt64(r.remaining) else { throw .truncated(offset: r.offset, needed: Int(clamping: length), available: r.remaining) }
            bodies.append((id, try r.raw(Int(length))))
        }
        try r.expectEnd()
        return Decoded(index: index, view: restoredView, sessions: restored, machines: bodies)
    }
}

/// What donors hand the membership layer instead of the state itself: which
/// state — the one taken at the installation of the view of `epoch` — and the
/// node that sends it over the bulk channel (docs/wire-format.md, "State
/// manifest"). Every donor writes the same bytes (the membership layer may
/// take a transfer's chunks from more than one donor), even one that is
/// itself still waiting for its own state and does not know the state's log
/// index yet. The bulk transfer carries the state's digest before the
/// state; the joiner checks both, and delivers on from the view's start at
/// once, holding the services' events until the state is restored.
public struct StateManifest: Sendable, Hashable {
    /// Version 2 (version 1 also carried the log index, which a donor still
    /// catching up cannot know): a joiner of version 1 reads this as a state
    /// and says it cannot be taken, rather than waiting for ever.
    public static let magic: [UInt8] = Array("CSM2".utf8)
    public static let encodedBytes = 4 + 4 + 2

    /// The epoch of the view whose installation the state was taken at.
    public var epoch: UInt32
    /// The node that sends the state (the first member of the new view in
    /// rank order that was in the old one).
    public var donorNode: UInt16

    public init(epoch: UInt32, donorNode: UInt16) {
        self.epoch = epoch
        self.donorNode = donorNode
    }

    public var encoded: [UInt8] {
        var w = ByteWriter(capacity: Self.encodedBytes)
        w.raw(Self.magic)
        w.u32(epoch)
        w.u16(donorNode)
        return w.bytes
    }

    /// A manifest, or nil when `bytes` is a state itself (a state starts with its version, 1).
    public static func decode(_ bytes: [UInt8]) -> StateManifest? {
        guard bytes.count == encodedBytes, Array(bytes[0..<4]) == magic else { return nil }
        return try? ByteReader.reading(bytes) { (r) throws(ServiceDecodeError) -> StateManifest in
            _ = try r.raw(4)
            return StateManifest(epoch: try r.u32(), donorNode: try r.u16())
        }
    }

    /// Whether `host` (a state received) is the one this manifest announces:
    /// taken at this epoch's installation. Donors take states only right
    /// after applying an installation, so one epoch names one state.
    public func announces(_ host: ServiceHost) -> Bool { host.view?.epoch == epoch }

    /// The bulk transfer of a state: its digest (``Digest64``, 8 bytes), then the state.
    public static func transfer(of state: [UInt8]) -> [UInt8] {
        var w = ByteWriter(capacity: state.count + 8)
        w.u64(Digest64.of(state))
        w.raw(state)
        return w.bytes
    }

    /// The state of a transfer whose digest matches, else nil.
    public static func state(fromTransfer bytes: [UInt8]) -> ArraySlice<UInt8>? {
        guard bytes.count > 8 else { return nil }
        let digest = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        var d = Digest64()
        bytes.withUnsafeBytes { d.add(UnsafeRawBufferPointer(rebasing: $0[8...])) }
        return d.value == digest ? bytes[8...] : nil
    }
}
