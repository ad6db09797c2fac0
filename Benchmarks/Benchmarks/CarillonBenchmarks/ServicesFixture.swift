import CarillonMembership
import CarillonServices

/// A services host (locks and objects) in a 3-member view, and the envelopes
/// of three steady workloads, encoded once: a lock acquired and released by
/// one session, a counter incremented, and a key overwritten with a value of
/// the same size. One `apply` is one command applied, as every member does
/// for every delivered command.
final class ServicesFixture {
    enum Workload: String, CaseIterable { case lockCycle = "lock-acquire+release", counter = "counter-add", put = "put-overwrite" }

    var host = ServiceHost(machines: [LockService(), ObjectStore()])
    var output = ServiceOutput()
    let workload: Workload
    let session = SessionID(member: MemberID(node: 0, incarnation: 1), client: 1)
    /// Envelopes to cycle through; their request ids are rewritten in place.
    var envelopes: [[UInt8]] = []
    var next = 0
    var requestID: UInt64 = 1
    var round: UInt64 = 1
    private(set) var answered = 0

    init(_ workload: Workload) {
        self.workload = workload
        let view = View(epoch: 1, members: (0..<3).map { MemberID(node: UInt16($0), incarnation: 1) }, startRound: 0)
        host.begin(in: view)
        let bodies: [[UInt8]]
        switch workload {
        case .lockCycle:
            bodies = [
                Self.body(LockCommand.acquire(name: "printer", mode: .exclusive, wait: true)),
                Self.body(LockCommand.release(name: "printer"))
            ]
        case .counter: bodies = [Self.body(ObjectCommand.add(key: "visits", delta: 1))]
        case .put: bodies = [Self.body(ObjectCommand.put(key: "config/mode", value: Array(repeating: 7, count: 64)))]
        }
        for body in bodies {
            var w = ByteWriter()
            CommandEnvelope.writeHeader(
                kind: .command, service: workload == .lockCycle ? LockService.serviceID : ObjectStore.serviceID,
                session: session, requestID: 0, acknowledgedBelow: 0, to: &w)
            w.raw(body)
            envelopes.append(w.bytes)
        }
    }

    static func body(_ c: LockCommand) -> [UInt8] { var w = ByteWriter(); c.encode(into: &w); return w.bytes }
    static func body(_ c: ObjectCommand) -> [UInt8] { var w = ByteWriter(); c.encode(into: &w); return w.bytes }

    /// Applies the next command (request id and acknowledgement advanced, so
    /// the session's memory stays bounded as a real client's does).
    func apply() {
        let id = requestID
        requestID += 1
        let e = next
        next = (next + 1) % envelopes.count
        envelopes[e].withUnsafeMutableBytes { b in
            b.storeBytes(of: id.littleEndian, toByteOffset: 18, as: UInt64.self)
            b.storeBytes(of: id.littleEndian, toByteOffset: 26, as: UInt64.self)
        }
        round += 1
        output.removeAll()
        envelopes[e].withUnsafeBytes { payload in
            _ = host.applyCommand(payload, at: BusPosition(epoch: 1, round: round, slot: 0, index: 0), fromRank: 0, output: &output)
        }
        answered += output.completions.count
    }
}
