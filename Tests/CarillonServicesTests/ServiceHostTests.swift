import CarillonMembership
import CarillonOrdering
import CarillonServices
import Testing

/// A host driven by hand: members by node, commands by session.
struct Harness {
    var host = ServiceHost(machines: [LockService(), ObjectStore()])
    var output = ServiceOutput()
    var round: UInt64 = 10
    var view: View
    var answers: [(SessionID, UInt64, ServiceStatus, [UInt8])] = []

    init(members: Int = 3) {
        view = View(epoch: 1, members: (0..<members).map { MemberID(node: UInt16($0), incarnation: 1) }, startRound: 0)
        host.begin(in: view)
    }

    static func session(_ node: Int, _ client: UInt32 = 1) -> SessionID {
        SessionID(member: MemberID(node: UInt16(node), incarnation: 1), client: client)
    }

    static func payload(
        _ session: SessionID, _ request: UInt64, service: UInt16, ack: UInt64 = 0,
        kind: EnvelopeKind = .command, _ body: (inout ByteWriter) -> Void
    ) -> [UInt8] {
        var w = ByteWriter()
        CommandEnvelope.writeHeader(kind: kind, service: service, session: session, requestID: request, acknowledgedBelow: ack, to: &w)
        body(&w)
        return w.bytes
    }

    /// Delivers a payload as sent by `rank`, collects the answers.
    mutating func deliver(_ payload: [UInt8], fromRank rank: Int) {
        round += 1
        output.removeAll()
        let position = BusPosition(epoch: view.epoch, round: round, slot: rank, index: 0)
        payload.withUnsafeBytes { host.applyCommand($0, at: position, fromRank: rank, output: &output) }
        collect()
    }

    mutating func collect() {
        for c in output.completions { answers.append((c.session, c.requestID, c.status, output.body(of: c))) }
    }

    mutating func lock(_ s: SessionID, _ request: UInt64, _ command: LockCommand, ack: UInt64 = 0) {
        deliver(
            Self.payload(s, request, service: LockService.serviceID, ack: ack) { command.encode(into: &$0) },
            fromRank: view.rank(ofNode: s.member.node)!)
    }

    mutating func object(_ s: SessionID, _ request: UInt64, _ command: ObjectCommand, ack: UInt64 = 0) {
        deliver(
            Self.payload(s, request, service: ObjectStore.serviceID, ack: ack) { command.encode(into: &$0) },
            fromRank: view.rank(ofNode: s.member.node)!)
    }

    mutating func install(_ members: [MemberID]) {
        view = View(epoch: view.epoch + 1, members: members, startRound: round + 1)
        output.removeAll()
        try! host.apply(.view(.installed(view, joined: [])), output: &output)
        collect()
    }

    func answer(_ s: SessionID, _ request: UInt64) -> (status: ServiceStatus, body: [UInt8])? {
        answers.last { $0.0 == s && $0.1 == request }.map { ($0.2, $0.3) }
    }

    func token(_ s: SessionID, _ request: UInt64) -> UInt64? {
        guard let a = answer(s, request), a.status == .granted else { return nil }
        return try? LockService.token(fromGrant: a.body)
    }
}

@Suite struct EnvelopeTests {
    @Test func roundTripsEveryField() throws {
        let s = SessionID(member: MemberID(node: 7, incarnation: 0x1122_3344_5566_7788), client: 9)
        var w = ByteWriter()
        CommandEnvelope.writeHeader(
            kind: .command, service: 258, session: s, requestID: 42, acknowledgedBelow: 40,
            capability: [1, 2, 3], to: &w)
        w.raw([0xAA, 0xBB])
        let e = try w.bytes.withUnsafeBytes { b in
            let e = try CommandEnvelope.decode(b)
            return (e.kind, e.service, e.session, e.requestID, e.acknowledgedBelow, Array(e.capability), Array(e.body))
        }
        #expect(e.0 == .command && e.1 == 258 && e.2 == s && e.3 == 42 && e.4 == 40)
        #expect(e.5 == [1, 2, 3] && e.6 == [0xAA, 0xBB])
        #expect(w.bytes.count == CommandEnvelope.headerBytes + 3 + 2)
    }

    @Test func everyTruncationIsATypedErrorNeverACrash() {
        var w = ByteWriter()
        CommandEnvelope.writeHeader(
            kind: .command, service: 1, session: Harness.session(0), requestID: 1, acknowledgedBelow: 0,
            capability: [5, 5], to: &w)
        for n in 0..<(CommandEnvelope.headerBytes + 2) {
            let prefix = Array(w.bytes[0..<n])
            #expect(throws: ServiceDecodeError.self) { try prefix.withUnsafeBytes { _ = try CommandEnvelope.decode($0) } }
        }
    }

    @Test func unknownVersionAndKindAreNamed() {
        var w = ByteWriter()
        CommandEnvelope.writeHeader(kind: .command, service: 1, session: Harness.session(0), requestID: 1, acknowledgedBelow: 0, to: &w)
        var v = w.bytes
        v[0] = 2
        #expect(throws: ServiceDecodeError.unsupportedVersion(2)) { try v.withUnsafeBytes { _ = try CommandEnvelope.decode($0) } }
        var k = w.bytes
        k[1] = 9
        #expect(throws: ServiceDecodeError.unknownKind(9)) { try k.withUnsafeBytes { _ = try CommandEnvelope.decode($0) } }
    }
}

@Suite struct LockServiceTests {
    let a = Harness.session(0), b = Harness.session(1), c = Harness.session(2)

    @Test func waitersAreGrantedInArrivalOrderWithLargerTokens() {
        var h = Harness()
        h.lock(a, 1, .acquire(name: "L", mode: .exclusive, wait: true))
        h.lock(c, 1, .acquire(name: "L", mode: .exclusive, wait: true))
        h.lock(b, 1, .acquire(name: "L", mode: .exclusive, wait: true))
        #expect(h.token(a, 1) != nil && h.answer(b, 1) == nil && h.answer(c, 1) == nil)
        h.lock(a, 2, .release(name: "L"))
        #expect(h.answer(a, 2)?.status == .ok)
        #expect(h.token(c, 1)! > h.token(a, 1)!)
        #expect(h.answer(b, 1) == nil)
        h.lock(c, 2, .release(name: "L"))
        #expect(h.token(b, 1)! > h.token(c, 1)!)
    }

    @Test func tryAcquireIsBusyAndReleaseOfAnUnheldLockIsRefused() {
        var h = Harness()
        h.lock(a, 1, .acquire(name: "L", mode: .exclusive, wait: false))
        h.lock(b, 1, .acquire(name: "L", mode: .exclusive, wait: false))
        #expect(h.answer(b, 1)?.status == .busy)
        h.lock(b, 2, .release(name: "L"))
        #expect(h.answer(b, 2)?.status == .notHeld)
        h.lock(a, 2, .acquire(name: "L", mode: .exclusive, wait: true))
        #expect(h.answer(a, 2)?.status == .alreadyHeld)
    }

    @Test func sharedHoldersShareButDoNotOvertakeAnExclusiveWaiter() {
        var h = Harness()
        h.lock(a, 1, .acquire(name: "L", mode: .shared, wait: true))
        h.lock(b, 1, .acquire(name: "L", mode: .shared, wait: true))
        #expect(h.answer(b, 1)?.status == .granted)
        h.lock(c, 1, .acquire(name: "L", mode: .exclusive, wait: true))
        let d = Harness.session(0, 2)
        h.lock(d, 1, .acquire(name: "L", mode: .shared, wait: true))
        #expect(h.answer(c, 1) == nil && h.answer(d, 1) == nil, "FIFO: the later shared request waits behind the exclusive one")
        h.lock(a, 2, .release(name: "L"))
        #expect(h.answer(c, 1) == nil)
        h.lock(b, 2, .release(name: "L"))
        #expect(h.answer(c, 1)?.status == .granted && h.answer(d, 1) == nil)
        h.lock(c, 2, .release(name: "L"))
        #expect(h.answer(d, 1)?.status == .granted)
    }

    @Test func aHolderRemovedFromTheViewReleasesAtThatPosition() {
        var h = Harness()
        h.lock(a, 1, .acquire(name: "L", mode: .exclusive, wait: true))
        h.lock(b, 1, .acquire(name: "L", mode: .exclusive, wait: true))
        h.install([b.member, c.member])
        #expect(h.token(b, 1)! > h.token(a, 1)!)
        h.lock(b, 2, .inspect(name: "L"))
        let state = try! LockService.lockState(from: h.answer(b, 2)!.body)
        #expect(state.holders.map(\.session) == [b] && state.waiters.isEmpty)
    }

    @Test func anEndedSessionReleasesAndCancelWithdrawsAWait() {
        var h = Harness()
        h.lock(a, 1, .acquire(name: "L", mode: .exclusive, wait: true))
        h.lock(b, 1, .acquire(name: "L", mode: .exclusive, wait: true))
        h.lock(c, 1, .acquire(name: "L", mode: .exclusive, wait: true))
        h.lock(b, 2, .cancel(name: "L"))
        #expect(h.answer(b, 2)?.status == .cancelled)
        h.deliver(Harness.payload(a, 2, service: 0, kind: .endSession) { _ in }, fromRank: 0)
        #expect(h.answer(c, 1)?.status == .granted && h.answer(b, 1)?.status == .cancelled, "b's withdrawn wait is never granted")
        h.lock(c, 2, .cancel(name: "L"))
        #expect(h.answer(c, 2)?.status == .notWaiting)
    }

    /// Found by `carillon-sim --services` (seed 1): a cancel withdrew the
    /// waiting acquire without answering it, so the acquire stayed pending in
    /// its session for good (its retries ignored, the window filling up).
    @Test func aCancelAnswersTheAcquireItWithdraws() {
        var h = Harness()
        h.lock(a, 1, .acquire(name: "L", mode: .exclusive, wait: true))
        h.lock(b, 1, .acquire(name: "L", mode: .exclusive, wait: true))
        h.lock(b, 2, .cancel(name: "L"))
        #expect(h.answer(b, 1)?.status == .cancelled && h.answer(b, 2)?.status == .cancelled)
        let answers = h.answers.count
        h.lock(b, 1, .acquire(name: "L", mode: .exclusive, wait: true))
        #expect(
            h.answers.count == answers + 1 && h.answer(b, 1)?.status == .cancelled,
            "a retry of the withdrawn acquire is answered from the session's memory, not ignored as pending")
        #expect(h.host.counters.duplicatesIgnored == 0)
        // Withdrawn waits no longer pile up in the session's window: a client
        // that times out more acquires than the window holds can still ask.
        for k in UInt64(1)...UInt64(ServiceHost.sessionWindow + 6) {
            h.lock(b, 2 * k + 1, .acquire(name: "L", mode: .exclusive, wait: true), ack: 2 * k + 1)
            h.lock(b, 2 * k + 2, .cancel(name: "L"), ack: 2 * k + 1)
        }
        #expect(h.host.counters.windowsFull == 0 && h.answer(b, UInt64(2 * ServiceHost.sessionWindow + 14))?.status == .cancelled)
    }
}

@Suite struct ObjectStoreTests {
    let a = Harness.session(0), b = Harness.session(1)

    @Test func compareAndSetTakesOnlyTheVersionItNames() throws {
        var h = Harness()
        h.object(a, 1, .compareAndSet(key: "k", expectedVersion: 0, value: [1]))
        let v1 = try ObjectStore.version(from: h.answer(a, 1)!.body)
        h.object(b, 1, .compareAndSet(key: "k", expectedVersion: 0, value: [2]))
        #expect(h.answer(b, 1)?.status == .versionMismatch)
        #expect(try ObjectStore.version(from: h.answer(b, 1)!.body) == v1)
        h.object(b, 2, .compareAndSet(key: "k", expectedVersion: v1, value: [3]))
        #expect(h.answer(b, 2)?.status == .ok)
        h.object(a, 2, .get(key: "k"))
        #expect(try ObjectStore.object(from: h.answer(a, 2)!.body).value == [3])
        h.object(a, 3, .delete(key: "k"))
        h.object(a, 4, .get(key: "k"))
        #expect(h.answer(a, 4)?.status == .notFound)
    }

    @Test func aRetriedCommandIsAppliedOnceAndAnsweredAgain() throws {
        var h = Harness()
        h.object(a, 1, .add(key: "n", delta: 5))
        h.object(a, 1, .add(key: "n", delta: 5))
        #expect(h.answers.filter { $0.0 == a && $0.1 == 1 }.count == 2, "the retry is answered")
        #expect(try ObjectStore.sum(from: h.answer(a, 1)!.body).sum == 5)
        h.object(a, 2, .add(key: "n", delta: 1), ack: 2)
        h.object(a, 1, .add(key: "n", delta: 5), ack: 2)
        #expect(h.host.counters.duplicatesIgnored == 1, "below the acknowledged id: forgotten, ignored, never applied")
        h.object(b, 1, .get(key: "n"))
        let value = try ObjectStore.object(from: h.answer(b, 1)!.body).value
        #expect(value.withUnsafeBytes { Int64(littleEndian: $0.loadUnaligned(as: Int64.self)) } == 6)
    }

    @Test func aCommandForAnotherMembersSessionIsRefused() {
        var h = Harness()
        h.deliver(
            Harness.payload(a, 1, service: ObjectStore.serviceID) { ObjectCommand.put(key: "k", value: [1]).encode(into: &$0) },
            fromRank: 1)
        #expect(h.host.counters.foreignSessions == 1 && h.answers.isEmpty)
    }

    @Test func badBodiesAreAnsweredBadRequestAndChangeNothing() {
        var h = Harness()
        let before = h.host.digest
        h.deliver(
            Harness.payload(a, 1, service: ObjectStore.serviceID) {
                $0.u8(2); $0.u16(500)
            }, fromRank: 0)
        #expect(h.answer(a, 1)?.status == .badRequest)
        h.deliver(Harness.payload(a, 2, service: 999) { $0.u8(1) }, fromRank: 0)
        #expect(h.answer(a, 2)?.status == .unknownService)
        h.deliver([1, 2, 3], fromRank: 0)
        #expect(h.host.counters.badRequests == 2)
        _ = before
    }
}

@Suite struct ServiceCountersTests {
    /// The two gauges are read from the host when its counters are: open
    /// sessions and the applied index as they are now, not as first counted.
    @Test func theGaugesFollowTheHost() {
        var h = Harness()
        let a = Harness.session(0), b = Harness.session(1)
        #expect(h.host.counters.sessionsOpen == 0 && h.host.counters.appliedIndex == 0)
        h.object(a, 1, .put(key: "k", value: [1]))
        h.object(b, 1, .get(key: "k"))
        #expect(h.host.counters.sessionsOpen == 2 && h.host.openSessionCount == 2)
        #expect(h.host.counters.appliedIndex == 2 && h.host.appliedIndex == 2)
        h.deliver(Harness.payload(a, 2, service: 0, kind: .endSession) { _ in }, fromRank: 0)
        #expect(h.host.counters.sessionsOpen == 1 && h.host.counters.sessionsEnded == 1)
        #expect(h.host.counters.appliedIndex == Int(h.host.appliedIndex) && h.host.appliedIndex == 3)
        #expect(h.host.counters.commandsApplied == 2)
    }

    /// A sum keeps a gauge's later value and adds the counters.
    @Test func aSumAddsCountersAndKeepsTheLaterGauge() {
        var earlier = ServiceCounters(), later = ServiceCounters()
        earlier.commandsApplied = 5; earlier.sessionsOpen = 7; earlier.appliedIndex = 40
        later.commandsApplied = 2; later.sessionsOpen = 3; later.appliedIndex = 44
        let sum = earlier + later
        #expect(sum.commandsApplied == 7 && sum.sessionsOpen == 3 && sum.appliedIndex == 44)
    }
}

@Suite struct SnapshotTests {
    @Test func aRestoredReplicaHasTheSameDigestAndStaysEqual() throws {
        var h = Harness()
        let a = Harness.session(0), b = Harness.session(1)
        h.lock(a, 1, .acquire(name: "L", mode: .exclusive, wait: true))
        h.lock(b, 1, .acquire(name: "L", mode: .exclusive, wait: true))
        h.object(a, 2, .put(key: "x", value: [1, 2, 3]))
        let state = h.host.snapshot()
        var joiner = ServiceHost(machines: [LockService(), ObjectStore()])
        var out = ServiceOutput()
        try joiner.apply(.view(.stateReceived(h.view, state: state)), output: &out)
        #expect(joiner.digest == h.host.digest)
        var copy = h
        copy.host = joiner
        h.lock(a, 3, .release(name: "L"))
        copy.lock(a, 3, .release(name: "L"))
        #expect(copy.token(b, 1) == h.token(b, 1) && h.token(b, 1) != nil)
        #expect(copy.host.digest == h.host.digest)
    }

    @Test func aStateThatCannotBeReadIsATypedError() {
        var joiner = ServiceHost(machines: [LockService(), ObjectStore()])
        var out = ServiceOutput()
        let view = View(epoch: 1, members: [], startRound: 0)
        #expect(throws: ServiceStateError.self) { try joiner.apply(.view(.stateReceived(view, state: [1, 0, 0])), output: &out) }
        let other = ServiceHost(machines: [ObjectStore()]).snapshot()
        #expect(throws: ServiceStateError.servicesDiffer(state: [2], host: [1, 2])) {
            try joiner.apply(.view(.stateReceived(view, state: other)), output: &out)
        }
    }
}
