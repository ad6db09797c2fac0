import CarillonMembership
import CarillonOrdering
import CarillonServices
import Testing

/// Members that each run a host with the owned-object machine and an
/// ``ObjectHolding``, fed the same commands in one order; what their
/// holdings ask to send is queued until the test delivers it (bus orders,
/// bulk transfers), so a test can fail a member at any step.
struct ObjectCluster {
    static let authority = SipHashAuthority(key0: 0x0706_0504_0302_0100, key1: 0x0f0e_0d0c_0b0a_0908)

    struct Node {
        var host: ServiceHost
        var holding: ObjectHolding
        var alive = true
    }

    var nodes: [Node]
    var view: View
    var round: UInt64 = 10
    var output = ServiceOutput()
    /// Answers by (session, request), from node 0's stream (every stream computes the same).
    var answers: [String: (ServiceStatus, [UInt8])] = [:]
    /// Commands the holders asked to order, with their sender node.
    var memberOrders: [(node: Int, command: OwnedObjectCommand)] = []
    var transfers: [(from: Int, to: MemberID, bytes: [UInt8])] = []
    var nextMemberRequest: UInt64 = 1

    init(members: Int = 3, maximumConcurrentMigrations: Int = 2) {
        view = View(epoch: 1, members: (0..<members).map { MemberID(node: UInt16($0), incarnation: 1) }, startRound: 0)
        nodes = view.members.map { me in
            var host = ServiceHost(machines: [
                OwnedObjectService(authority: Self.authority, maximumConcurrentMigrations: maximumConcurrentMigrations, maximumReadBytes: 64)
            ])
            host.begin(in: View(epoch: 1, members: (0..<members).map { MemberID(node: UInt16($0), incarnation: 1) }, startRound: 0))
            return Node(host: host, holding: ObjectHolding(me: me))
        }
    }

    static func session(_ node: Int, _ client: UInt32 = 1) -> SessionID {
        SessionID(member: MemberID(node: UInt16(node), incarnation: 1), client: client)
    }

    static func key(_ s: SessionID, _ r: UInt64) -> String { "\(s)#\(r)" }

    var machine: OwnedObjectService { nodes.first { $0.alive }!.host.machine(OwnedObjectService.serviceID) as! OwnedObjectService }

    func object(_ name: String) -> OwnedObject? { machine.objects[name] }

    /// Orders `command` from `session` (with `capability`) at every live member.
    mutating func send(_ s: SessionID, _ request: UInt64, _ command: OwnedObjectCommand, capability: Capability? = nil) {
        var w = ByteWriter()
        CommandEnvelope.writeHeader(
            kind: .command, service: OwnedObjectService.serviceID, session: s, requestID: request, acknowledgedBelow: 0,
            capability: capability?.encoded ?? [], to: &w)
        command.encode(into: &w)
        deliver(w.bytes, fromNode: Int(s.member.node))
    }

    mutating func deliver(_ payload: [UInt8], fromNode node: Int) {
        round += 1
        let rank = view.rank(ofNode: UInt16(node))!
        let position = BusPosition(epoch: view.epoch, round: round, slot: rank, index: 0)
        var first = true
        for i in nodes.indices where nodes[i].alive {
            output.removeAll()
            payload.withUnsafeBytes { _ = nodes[i].host.applyCommand($0, at: position, fromRank: rank, output: &output) }
            take(i, recordAnswers: first)
            first = false
        }
    }

    mutating func take(_ i: Int, recordAnswers: Bool) {
        if recordAnswers {
            for c in output.completions { answers[Self.key(c.session, c.requestID)] = (c.status, output.body(of: c)) }
        }
        for e in output.objectEffects {
            for action in nodes[i].holding.apply(e) {
                switch action {
                case .order(let command): memberOrders.append((i, command))
                case .send(let transfer, let to): transfers.append((i, to, transfer.encoded))
                }
            }
        }
    }

    /// Orders every queued member command (from its member's session 0).
    mutating func flushOrders() {
        while !memberOrders.isEmpty {
            let (node, command) = memberOrders.removeFirst()
            guard nodes[node].alive else { continue }
            nextMemberRequest += 1
            send(Self.session(node, 0), nextMemberRequest, command)
        }
    }

    /// Delivers every queued bulk transfer to its (live) target.
    mutating func deliverTransfers() {
        let pending = transfers
        transfers = []
        for t in pending {
            let to = Int(t.to.node)
            guard nodes[t.from].alive, nodes[to].alive else { continue }
            if case .success(let actions) = nodes[to].holding.received(t.bytes) {
                for case .order(let command) in actions { memberOrders.append((to, command)) }
            }
        }
    }

    /// `dead` fail: the others install a view without them.
    mutating func fail(_ dead: [Int]) {
        for d in dead { nodes[d].alive = false }
        view = View(epoch: view.epoch + 1, members: view.members.filter { !dead.contains(Int($0.node)) }, startRound: round + 1)
        var first = true
        for i in nodes.indices where nodes[i].alive {
            output.removeAll()
            try! nodes[i].host.apply(.view(.installed(view, joined: [])), output: &output)
            take(i, recordAnswers: first)
            first = false
        }
    }

    func answer(_ s: SessionID, _ r: UInt64) -> (status: ServiceStatus, body: [UInt8])? {
        answers[Self.key(s, r)].map { ($0.0, $0.1) }
    }
}

@Suite("Owned objects (the state machine and the holders)")
struct OwnedObjectTests {
    let a = ObjectCluster.session(0), b = ObjectCluster.session(1), c = ObjectCluster.session(2)

    func makeCluster(members: Int = 3, concurrent: Int = 2) -> (ObjectCluster, Capability) {
        var cluster = ObjectCluster(members: members, maximumConcurrentMigrations: concurrent)
        cluster.send(a, 1, .create(name: "obj", size: 16, backups: 0, owner: nil))
        let cap = try! OwnedObjectService.capability(from: cluster.answer(a, 1)!.body)
        return (cluster, cap)
    }

    @Test func sipHash128MatchesTheReferenceVector() {
        // SipHash-2-4-128, key 00 01 … 0f, empty message: a3 81 7f 04 ba 25 a8 e6 6d f6 72 14 c7 55 02 93.
        let tag = [UInt8]().withUnsafeBytes { ObjectCluster.authority.tag($0) }
        #expect(tag.0 == 0xe6a8_25ba_047f_81a3)
        #expect(tag.1 == 0x9302_55c7_1472_f66d)
    }

    @Test func createWriteAndReadThroughTheOwner() throws {
        var (cluster, cap) = makeCluster()
        #expect(cap.rights == .all && cap.name == "obj")
        #expect(cluster.object("obj")?.owner == MemberID(node: 0, incarnation: 1))
        // Only the owner holds the bytes.
        #expect(cluster.nodes[0].holding.copy(of: "obj")?.bytes.count == 16)
        #expect(cluster.nodes[1].holding.copy(of: "obj") == nil)
        cluster.send(b, 1, .write(name: "obj", offset: 2, bytes: [7, 8, 9]), capability: cap)
        #expect(cluster.answer(b, 1)?.status == .ok)
        cluster.send(c, 1, .read(name: "obj", offset: 0, length: 6), capability: cap)
        #expect(cluster.answer(c, 1) == nil, "a read waits for the owner's reply")
        cluster.flushOrders()
        let read = try OwnedObjectService.readAnswer(from: cluster.answer(c, 1)!.body)
        #expect(read.bytes == [0, 0, 7, 8, 9, 0])
        #expect(read.version == (try ObjectStoreVersion.of(cluster.answer(b, 1)!.body)))
    }

    @Test func requestsWithoutTheRightAreRefusedWithAReason() throws {
        var (cluster, cap) = makeCluster()
        cluster.send(b, 1, .write(name: "obj", offset: 0, bytes: [1]))
        #expect(cluster.answer(b, 1)?.status == .forbidden)
        #expect(OwnedObjectService.reason(from: cluster.answer(b, 1)!.body)?.contains("no capability") == true)
        // A forged capability: more rights than granted, same tag.
        cluster.send(a, 2, .grant(name: "obj", rights: [.read]), capability: cap)
        var readOnly = try OwnedObjectService.capability(from: cluster.answer(a, 2)!.body)
        #expect(readOnly.rights == [.read])
        cluster.send(b, 2, .write(name: "obj", offset: 0, bytes: [1]), capability: readOnly)
        #expect(cluster.answer(b, 2)?.status == .forbidden)
        #expect(OwnedObjectService.reason(from: cluster.answer(b, 2)!.body)?.contains("lacks the rights w") == true)
        readOnly.rights = .all
        cluster.send(b, 3, .write(name: "obj", offset: 0, bytes: [1]), capability: readOnly)
        #expect(OwnedObjectService.reason(from: cluster.answer(b, 3)!.body)?.contains("forged") == true)
        // A capability made with another key.
        let other = Capability(kind: .object, id: cap.id, rights: .all, name: "obj", authority: SipHashAuthority(key0: 1, key1: 2))
        cluster.send(b, 4, .write(name: "obj", offset: 0, bytes: [1]), capability: other)
        #expect(cluster.answer(b, 4)?.status == .forbidden)
        // A capability cannot delegate rights it lacks.
        cluster.send(
            b, 5, .grant(name: "obj", rights: [.read, .write]), capability: try OwnedObjectService.capability(from: cluster.answer(a, 2)!.body))
        #expect(cluster.answer(b, 5)?.status == .forbidden)
        #expect(cluster.object("obj")?.version == cap.id, "nothing was written")
    }

    @Test func revocationIsOrderedAndCoversWhatWasDelegated() throws {
        var (cluster, cap) = makeCluster()
        cluster.send(a, 2, .grant(name: "obj", rights: [.read, .write, .grant]), capability: cap)
        let child = try OwnedObjectService.capability(from: cluster.answer(a, 2)!.body)
        cluster.send(b, 1, .grant(name: "obj", rights: [.write]), capability: child)
        let grandchild = try OwnedObjectService.capability(from: cluster.answer(b, 1)!.body)
        cluster.send(c, 1, .write(name: "obj", offset: 0, bytes: [1]), capability: grandchild)
        #expect(cluster.answer(c, 1)?.status == .ok)
        // The grandchild cannot revoke its parent; the root revokes the child and with it the grandchild.
        cluster.send(c, 2, .revoke(name: "obj", id: child.id), capability: grandchild)
        #expect(cluster.answer(c, 2)?.status == .forbidden)
        cluster.send(a, 3, .revoke(name: "obj", id: child.id), capability: cap)
        #expect(cluster.answer(a, 3)?.status == .ok)
        cluster.send(c, 3, .write(name: "obj", offset: 0, bytes: [2]), capability: grandchild)
        #expect(cluster.answer(c, 3)?.status == .forbidden)
        #expect(OwnedObjectService.reason(from: cluster.answer(c, 3)!.body)?.contains("revoked") == true)
        cluster.send(a, 4, .write(name: "obj", offset: 0, bytes: [3]), capability: cap)
        #expect(cluster.answer(a, 4)?.status == .ok, "the root still works")
        // Every member holds the same table: equal digests.
        #expect(Set(cluster.nodes.map(\.host.digest)).count == 1)
    }

    @Test func aMigrationFreezesQueuesAndCommitsInBusOrder() throws {
        var (cluster, cap) = makeCluster()
        cluster.send(a, 2, .write(name: "obj", offset: 0, bytes: [1, 1]), capability: cap)
        cluster.send(a, 3, .migrate(name: "obj", to: .node(2)), capability: cap)
        guard case .migrating(let m) = cluster.object("obj")?.state else { Issue.record("not frozen"); return }
        #expect(m.target.node == 2)
        // Writes while frozen queue; reads are still served by the source.
        cluster.send(b, 1, .write(name: "obj", offset: 1, bytes: [5]), capability: cap)
        cluster.send(b, 2, .write(name: "obj", offset: 2, bytes: [6]), capability: cap)
        #expect(cluster.answer(b, 1) == nil && cluster.object("obj")?.queued.count == 2)
        cluster.send(c, 1, .read(name: "obj", offset: 0, length: 4), capability: cap)
        cluster.flushOrders()
        #expect(try OwnedObjectService.readAnswer(from: cluster.answer(c, 1)!.body).bytes == [1, 1, 0, 0])
        cluster.deliverTransfers()
        cluster.flushOrders()  // the target's commit
        #expect(cluster.object("obj")?.owner.node == 2)
        #expect(cluster.object("obj")?.state == .active)
        #expect(cluster.answer(a, 3)?.status == .ok)
        #expect(cluster.answer(b, 1)?.status == .ok && cluster.answer(b, 2)?.status == .ok)
        // The new owner applied the queue in order; the source dropped its copy.
        #expect(cluster.nodes[2].holding.copy(of: "obj").map { Array($0.bytes.prefix(4)) } == [1, 5, 6, 0])
        #expect(cluster.nodes[0].holding.copy(of: "obj") == nil)
        #expect(cluster.nodes.map(\.holding.counters.missingCopies) == [0, 0, 0])
    }

    @Test func theTargetFailingBeforeTheCommitAbortsToTheSource() throws {
        var (cluster, cap) = makeCluster()
        cluster.send(a, 2, .migrate(name: "obj", to: .node(2)), capability: cap)
        cluster.send(b, 1, .write(name: "obj", offset: 0, bytes: [4]), capability: cap)
        cluster.fail([2])
        #expect(cluster.answer(a, 2)?.status == .aborted)
        #expect(cluster.object("obj")?.owner.node == 0 && cluster.object("obj")?.state == .active)
        #expect(cluster.answer(b, 1)?.status == .ok, "the queued write applied at the abort")
        #expect(cluster.nodes[0].holding.copy(of: "obj")?.bytes.first == 4)
        // A late transfer and commit change nothing.
        cluster.deliverTransfers()
        cluster.flushOrders()
        #expect(cluster.object("obj")?.owner.node == 0)
    }

    @Test func theSourceFailingPromotesABackup() throws {
        var cluster = ObjectCluster()
        cluster.send(a, 1, .create(name: "obj", size: 8, backups: 1, owner: nil))
        let cap = try OwnedObjectService.capability(from: cluster.answer(a, 1)!.body)
        #expect(cluster.object("obj")?.backups.map(\.node) == [1])
        cluster.send(a, 2, .write(name: "obj", offset: 0, bytes: [9]), capability: cap)
        #expect(cluster.nodes[1].holding.copy(of: "obj")?.bytes.first == 9, "the backup applies every write")
        cluster.send(a, 3, .migrate(name: "obj", to: .node(2)), capability: cap)
        cluster.deliverTransfers()  // the target holds the bytes, its commit not ordered yet
        cluster.fail([0])
        #expect(cluster.object("obj")?.owner.node == 1, "the backup owns it")
        cluster.flushOrders()  // the target's commit comes too late: ignored
        #expect(cluster.object("obj")?.owner.node == 1)
        #expect(cluster.nodes[2].holding.copy(of: "obj") == nil)
    }

    @Test func theSourceFailingWithoutBackupsLetsTheTargetFinish() throws {
        // The target holds the bytes: it commits.
        var (cluster, cap) = makeCluster()
        cluster.send(a, 2, .write(name: "obj", offset: 0, bytes: [3]), capability: cap)
        cluster.send(a, 3, .migrate(name: "obj", to: .node(1)), capability: cap)
        cluster.deliverTransfers()
        cluster.memberOrders.removeAll()  // its first commit was lost with the view change
        cluster.fail([0])
        cluster.flushOrders()
        #expect(cluster.object("obj")?.owner.node == 1 && cluster.object("obj")?.state == .active)
        #expect(cluster.nodes[1].holding.copy(of: "obj")?.bytes.first == 3, "no committed write lost")
        // The target never got the bytes: it aborts, and the object is lost (no copy survives).
        var (lost, cap2) = makeCluster()
        lost.send(a, 3, .migrate(name: "obj", to: .node(1)), capability: cap2)
        lost.send(b, 1, .write(name: "obj", offset: 0, bytes: [1]), capability: cap2)
        lost.transfers.removeAll()
        lost.fail([0])
        lost.flushOrders()
        #expect(lost.object("obj")?.state == .lost)
        #expect(lost.answer(b, 1)?.status == .objectLost)
        lost.send(c, 1, .read(name: "obj", offset: 0, length: 1), capability: cap2)
        #expect(lost.answer(c, 1)?.status == .objectLost)
    }

    @Test func theTargetFailingAfterTheSourceLeftLosesTheObject() throws {
        // The source leaves (no backups): only the target could finish. It fails too
        // before its commit or abort is ordered: no copy survives.
        var (cluster, cap) = makeCluster()
        cluster.send(a, 2, .migrate(name: "obj", to: .node(1)), capability: cap)
        cluster.transfers.removeAll()
        cluster.fail([0])
        guard case .migrating(let m) = cluster.object("obj")?.state, m.sourceGone else {
            Issue.record("the migration should wait for its target")
            return
        }
        cluster.memberOrders.removeAll()  // the target's abort, lost with it
        cluster.fail([1])
        #expect(cluster.object("obj")?.state == .lost, "the source left in an earlier view: it cannot keep the object")
        #expect(cluster.answer(a, 2)?.status == .aborted)
        cluster.send(c, 1, .read(name: "obj", offset: 0, length: 1), capability: cap)
        #expect(cluster.answer(c, 1)?.status == .objectLost)
    }

    @Test func aLostObjectCanBeDeletedAndItsNameReused() throws {
        var (cluster, cap) = makeCluster()
        cluster.send(a, 2, .migrate(name: "obj", to: .node(1)), capability: cap)
        cluster.transfers.removeAll()
        cluster.fail([0])
        cluster.flushOrders()  // the target never got the bytes: it aborts
        #expect(cluster.object("obj")?.state == .lost)
        cluster.send(b, 1, .delete(name: "obj"), capability: cap)
        #expect(cluster.answer(b, 1)?.status == .ok)
        #expect(cluster.object("obj") == nil)
        cluster.send(b, 2, .create(name: "obj", size: 4, backups: 0, owner: nil))
        #expect(cluster.answer(b, 2)?.status == .ok)
        cluster.send(b, 3, .write(name: "obj", offset: 0, bytes: [1]), capability: cap)
        #expect(cluster.answer(b, 3)?.status == .forbidden, "the deleted object's capability does not open the new one")
    }

    @Test func deletingAnObjectAnswersItsWaitingMigration() throws {
        var cluster = ObjectCluster(maximumConcurrentMigrations: 1)
        cluster.send(a, 1, .create(name: "x", size: 4, backups: 0, owner: nil))
        cluster.send(a, 2, .create(name: "y", size: 4, backups: 0, owner: nil))
        let x = try OwnedObjectService.capability(from: cluster.answer(a, 1)!.body)
        let y = try OwnedObjectService.capability(from: cluster.answer(a, 2)!.body)
        cluster.send(a, 3, .migrate(name: "x", to: .node(1)), capability: x)
        cluster.send(a, 4, .migrate(name: "y", to: .node(2)), capability: y)
        #expect(cluster.machine.waitingMigrations.count == 1)
        cluster.send(a, 5, .delete(name: "y"), capability: y)
        #expect(cluster.answer(a, 5)?.status == .ok)
        #expect(cluster.answer(a, 4)?.status == .notFound, "the waiting migrate is answered, not left pending")
        #expect(cluster.machine.waitingMigrations.isEmpty)
    }

    @Test func memberCommandsComeOnlyFromAMembersOwnSession() throws {
        var (cluster, cap) = makeCluster()
        cluster.send(a, 2, .migrate(name: "obj", to: .node(1)), capability: cap)
        guard case .migrating(let m) = cluster.object("obj")?.state else {
            Issue.record("not frozen")
            return
        }
        // A client of the target cannot commit a migration whose bytes never came.
        cluster.send(b, 1, .commitMigration(name: "obj", migration: m.id, digest: 0))
        #expect(cluster.answer(b, 1)?.status == .forbidden)
        #expect(cluster.object("obj")?.owner.node == 0)
        // A client of the owner cannot answer another client's read.
        cluster.send(c, 1, .read(name: "obj", offset: 0, length: 2), capability: cap)
        cluster.send(a, 3, .readReply(name: "obj", session: c, requestID: 1, version: 99, bytes: [6, 6]))
        #expect(cluster.answer(a, 3)?.status == .forbidden)
        #expect(cluster.answer(c, 1) == nil)
        cluster.flushOrders()
        #expect(try OwnedObjectService.readAnswer(from: cluster.answer(c, 1)!.body).bytes == [0, 0])
    }

    @Test func mostUsedTiesGoToTheLowestRank() throws {
        var (cluster, cap) = makeCluster()
        // Used as much from the owner (node 0) as from node 1: the owner is the lowest rank, nothing moves.
        for r in UInt64(2)...3 { cluster.send(a, r, .write(name: "obj", offset: 0, bytes: [1]), capability: cap) }
        for r in UInt64(1)...2 { cluster.send(b, r, .write(name: "obj", offset: 0, bytes: [1]), capability: cap) }
        cluster.send(a, 4, .migrate(name: "obj", to: .mostUsed), capability: cap)
        #expect(cluster.answer(a, 4)?.status == .ok, "already where it is used most: answered, nothing moves")
        #expect(cluster.object("obj")?.state == .active && cluster.object("obj")?.owner.node == 0)
        // An object nobody used has no "most used" member: a clear refusal.
        cluster.send(a, 5, .create(name: "unused", size: 4, backups: 0, owner: nil))
        let unused = try OwnedObjectService.capability(from: cluster.answer(a, 5)!.body)
        cluster.send(a, 6, .migrate(name: "unused", to: .mostUsed), capability: unused)
        #expect(cluster.answer(a, 6)?.status == .notFound)
    }

    @Test func aCapabilityRequestCrossesTheClientProtocol() throws {
        let (_, cap) = makeCluster()
        let message = ClientMessage.capabilityRequest(
            requestID: 9, consistency: .safe, service: OwnedObjectService.serviceID, capability: cap.encoded, body: [1, 2, 3])
        var reader = ClientMessageReader()
        message.encoded().withUnsafeBytes { reader.append($0) }
        #expect(try reader.next() == message)
        // A capability longer than its length field is cut, never trapped on.
        let long = ClientMessage.capabilityRequest(
            requestID: 1, consistency: .agreed, service: 3, capability: [UInt8](repeating: 1, count: 70_000), body: [])
        var r2 = ClientMessageReader()
        long.encoded().withUnsafeBytes { r2.append($0) }
        guard case .capabilityRequest(_, _, _, let cut, _) = try r2.next() else {
            Issue.record("not decoded as a capability request")
            return
        }
        #expect(cut.count == Int(UInt16.max))
    }

    @Test func migrationsBeyondTheLimitWaitTheirTurn() throws {
        var cluster = ObjectCluster(maximumConcurrentMigrations: 1)
        cluster.send(a, 1, .create(name: "x", size: 4, backups: 0, owner: nil))
        cluster.send(a, 2, .create(name: "y", size: 4, backups: 0, owner: nil))
        let x = try OwnedObjectService.capability(from: cluster.answer(a, 1)!.body)
        let y = try OwnedObjectService.capability(from: cluster.answer(a, 2)!.body)
        cluster.send(a, 3, .migrate(name: "x", to: .node(1)), capability: x)
        cluster.send(a, 4, .migrate(name: "y", to: .node(2)), capability: y)
        #expect(cluster.machine.migrationsInFlight == 1 && cluster.machine.waitingMigrations.count == 1)
        #expect(cluster.object("y")?.state == .active, "a waiting object stays available")
        cluster.deliverTransfers()
        cluster.flushOrders()
        #expect(cluster.object("x")?.owner.node == 1)
        #expect(cluster.machine.waitingMigrations.isEmpty)
        cluster.deliverTransfers()
        cluster.flushOrders()
        #expect(cluster.object("y")?.owner.node == 2)
        #expect(cluster.answer(a, 4)?.status == .ok)
    }

    @Test func placementPolicies() throws {
        var (cluster, cap) = makeCluster()
        // Loads: node 1 busy, node 2 idle.
        cluster.send(ObjectCluster.session(1, 0), 1, .publishLoad(90))
        cluster.send(ObjectCluster.session(2, 0), 1, .publishLoad(10))
        cluster.send(a, 2, .migrate(name: "obj", to: .leastLoaded), capability: cap)
        cluster.deliverTransfers()
        cluster.flushOrders()
        #expect(cluster.object("obj")?.owner.node == 2)
        // Used most from node 1.
        for r in UInt64(1)...3 { cluster.send(b, r, .write(name: "obj", offset: 0, bytes: [1]), capability: cap) }
        cluster.send(a, 3, .migrate(name: "obj", to: .mostUsed), capability: cap)
        cluster.deliverTransfers()
        cluster.flushOrders()
        #expect(cluster.object("obj")?.owner.node == 1)
    }

    @Test func snapshotsRestoreEveryField() throws {
        var cluster = ObjectCluster()
        cluster.send(a, 1, .create(name: "obj", size: 8, backups: 1, owner: nil))
        let cap = try OwnedObjectService.capability(from: cluster.answer(a, 1)!.body)
        cluster.send(a, 2, .grant(name: "obj", rights: [.read]), capability: cap)
        cluster.send(a, 3, .migrate(name: "obj", to: .node(2)), capability: cap)
        cluster.send(b, 1, .write(name: "obj", offset: 0, bytes: [1]), capability: cap)
        cluster.send(c, 1, .read(name: "obj", offset: 0, length: 2), capability: cap)
        cluster.send(ObjectCluster.session(1, 0), 1, .publishLoad(5))
        let bytes = cluster.nodes[1].host.snapshot()
        var copy = ServiceHost(machines: [OwnedObjectService(authority: ObjectCluster.authority)])
        try bytes.withUnsafeBytes { try copy.restore($0) }
        #expect(copy.snapshot() == bytes)
        #expect((copy.machine(OwnedObjectService.serviceID) as! OwnedObjectService).objects == cluster.machine.objects)
    }

    @Test func capabilitiesHaveATextForm() throws {
        let cap = Capability(kind: .object, id: 42, rights: [.read, .grant], name: "db/part-7", authority: ObjectCluster.authority)
        #expect(try Capability(text: cap.text) == cap)
        #expect(cap.text.hasPrefix("cap1-"))
        #expect(throws: ServiceDecodeError.self) { try Capability(text: "cap1-zz") }
        #expect(throws: ServiceDecodeError.self) { try Capability(text: "hello") }
        #expect(throws: ServiceDecodeError.self) { try Capability(text: String(cap.text.dropLast(2))) }
    }

    @Test func transfersWithABadDigestAreRefused() {
        var holding = ObjectHolding(me: MemberID(node: 1, incarnation: 1))
        var bytes = ObjectTransfer(name: "obj", migration: 5, version: 3, bytes: [1, 2, 3]).encoded
        bytes[bytes.count - 1] ^= 1
        guard case .failure(.digestMismatch) = holding.received(bytes) else {
            Issue.record("a corrupted transfer was taken")
            return
        }
        #expect(holding.incoming.isEmpty && holding.counters.refusedTransfers == 1)
        guard case .failure(.unreadable) = holding.received([1, 2, 3]) else {
            Issue.record("garbage was taken")
            return
        }
    }
}

/// The version in a write's answer.
enum ObjectStoreVersion {
    static func of(_ body: [UInt8]) throws -> UInt64 {
        try ByteReader.reading(body) { (r) throws(ServiceDecodeError) -> UInt64 in try r.u64() }
    }
}

/// Locks behind capabilities (`LockCommand.protect`): the same checks, on the lock service.
struct LockCapabilityTests {
    let authority = SipHashAuthority(key0: 0x0123_4567_89ab_cdef, key1: 0xfedc_ba98_7654_3210)

    func harness() -> Harness {
        var h = Harness()
        h.host = ServiceHost(machines: [LockService(authority: authority), ObjectStore()])
        h.host.begin(in: h.view)
        return h
    }

    func send(_ h: inout Harness, _ s: SessionID, _ r: UInt64, _ command: LockCommand, capability: Capability? = nil) {
        var w = ByteWriter()
        CommandEnvelope.writeHeader(
            kind: .command, service: LockService.serviceID, session: s, requestID: r, acknowledgedBelow: 0,
            capability: capability?.encoded ?? [], to: &w)
        command.encode(into: &w)
        h.deliver(w.bytes, fromRank: h.view.rank(ofNode: s.member.node)!)
    }

    static func capability(_ body: [UInt8]) throws -> Capability {
        try ByteReader.reading(body) { (r) throws(ServiceDecodeError) -> Capability in
            _ = try r.u64()
            return try Capability.decode(try r.bytes32())
        }
    }

    @Test func aProtectedLockNeedsItsCapabilityAtEveryStep() throws {
        var h = harness()
        let a = Harness.session(0), b = Harness.session(1)
        // Unprotected: anyone takes it, as before.
        send(&h, b, 1, .acquire(name: "L", mode: .exclusive, wait: false))
        #expect(h.answer(b, 1)?.status == .granted)
        send(&h, b, 2, .release(name: "L"))
        send(&h, a, 1, .protect(name: "L"))
        #expect(h.answer(a, 1)?.status == .ok)
        let owner = try Self.capability(h.answer(a, 1)!.body)
        #expect(owner.kind == .lock && owner.rights == .all)
        send(&h, a, 2, .protect(name: "L"))
        #expect(h.answer(a, 2)?.status == .exists, "protected once")
        // Without a capability, or with a forged one, nothing happens.
        send(&h, b, 3, .acquire(name: "L", mode: .exclusive, wait: false))
        #expect(h.answer(b, 3)?.status == .forbidden)
        var forged = owner
        forged.name = "M"
        send(&h, b, 4, .acquire(name: "L", mode: .exclusive, wait: false), capability: forged)
        #expect(h.answer(b, 4)?.status == .forbidden)
        // A delegated read-only capability cannot take it; a write one can.
        send(&h, a, 3, .grant(name: "L", rights: .read), capability: owner)
        let reader = try Self.capability(h.answer(a, 3)!.body)
        send(&h, b, 5, .acquire(name: "L", mode: .exclusive, wait: false), capability: reader)
        #expect(h.answer(b, 5)?.status == .forbidden)
        send(&h, a, 4, .grant(name: "L", rights: .write), capability: owner)
        let taker = try Self.capability(h.answer(a, 4)!.body)
        send(&h, b, 6, .acquire(name: "L", mode: .exclusive, wait: false), capability: taker)
        #expect(h.answer(b, 6)?.status == .granted)
        // Revoked: the holder cannot release with it any more (its session's end still releases it).
        send(&h, a, 5, .revoke(name: "L", id: taker.id), capability: owner)
        #expect(h.answer(a, 5)?.status == .ok)
        send(&h, b, 7, .release(name: "L"), capability: taker)
        #expect(h.answer(b, 7)?.status == .forbidden)
        // The protection and the table survive a snapshot (a joiner decides alike).
        var joiner = ServiceHost(machines: [LockService(authority: authority), ObjectStore()])
        let state = h.host.snapshot()
        try state.withUnsafeBytes { try joiner.restore($0) }
        #expect(joiner.digest == h.host.digest)
        #expect((joiner.machine(LockService.serviceID) as? LockService)?.protected["L"] == owner.id)
    }

    @Test func withoutAKeyLocksCannotBeProtected() {
        var h = Harness()
        let a = Harness.session(0)
        send(&h, a, 1, .protect(name: "L"))
        #expect(h.answer(a, 1)?.status == .badRequest)
    }
}
