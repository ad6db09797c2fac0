@testable import CarillonMembership
import CarillonOrdering
import CarillonSchedule
import CarillonWire
import Testing

@Suite("Join requests")
struct JoinRequestsTests {
    static let run: UInt64 = 1_000
    static let view = View(
        epoch: 1, members: [MemberID(node: 0, incarnation: 1_000), MemberID(node: 1, incarnation: 1_000)],
        startRound: 0)

    // A mutating call stays out of `#expect`'s expansion.
    func hear(_ joins: inout JoinRequests, _ joiner: MemberID, round: UInt64, view: View, runIdentity: UInt64) -> JoinRequests.Verdict {
        joins.hear(joiner, round: round, view: view, runIdentity: runIdentity)
    }

    @Test func aStaleIncarnationIsDroppedAndANewerOneRecorded() {
        var joins = JoinRequests()
        joins.installed(Self.view)
        // Node 1's incarnation in the view, or an older one: a replay or a dead process.
        #expect(hear(&joins, MemberID(node: 1, incarnation: 999), round: 5, view: Self.view, runIdentity: Self.run) == .stale)
        #expect(hear(&joins, MemberID(node: 1, incarnation: 1_000), round: 5, view: Self.view, runIdentity: Self.run) == .alreadyMember)
        // Older than the run: from an earlier run.
        #expect(hear(&joins, MemberID(node: 2, incarnation: 999), round: 5, view: Self.view, runIdentity: Self.run) == .stale)
        #expect(joins.pending.isEmpty)
        #expect(hear(&joins, MemberID(node: 1, incarnation: 1_001), round: 5, view: Self.view, runIdentity: Self.run) == .pending)
        #expect(joins.pending == [MemberID(node: 1, incarnation: 1_001)])
        // Installing a view with that incarnation forgets it, and makes it known.
        let next = View(epoch: 2, members: [MemberID(node: 0, incarnation: 1_000), MemberID(node: 1, incarnation: 1_001)], startRound: 9)
        joins.installed(next)
        #expect(joins.pending.isEmpty)
        #expect(hear(&joins, MemberID(node: 1, incarnation: 1_001), round: 6, view: Self.view, runIdentity: Self.run) == .stale)
    }

    @Test func aNewerIncarnationReplacesAnOlderPendingOneNeverTheReverse() {
        var joins = JoinRequests()
        _ = joins.hear(MemberID(node: 2, incarnation: 2_000), round: 1, view: Self.view, runIdentity: Self.run)
        _ = joins.hear(MemberID(node: 3, incarnation: 2_000), round: 1, view: Self.view, runIdentity: Self.run)
        _ = joins.hear(MemberID(node: 2, incarnation: 3_000), round: 2, view: Self.view, runIdentity: Self.run)
        #expect(joins.pending == [MemberID(node: 3, incarnation: 2_000), MemberID(node: 2, incarnation: 3_000)])
        _ = joins.hear(MemberID(node: 2, incarnation: 2_500), round: 3, view: Self.view, runIdentity: Self.run)
        #expect(joins.pending.filter { $0.node == 2 } == [MemberID(node: 2, incarnation: 3_000)])
    }

    @Test func aJoinerThatStopsAskingIsForgotten() {
        var joins = JoinRequests()
        _ = joins.hear(MemberID(node: 2, incarnation: 2_000), round: 10, view: Self.view, runIdentity: Self.run)
        _ = joins.hear(MemberID(node: 3, incarnation: 2_000), round: 14, view: Self.view, runIdentity: Self.run)
        joins.expire(round: 16, silentRounds: 6)
        #expect(joins.pending.count == 2)
        joins.expire(round: 17, silentRounds: 6)
        #expect(joins.pending == [MemberID(node: 3, incarnation: 2_000)])
    }

    @Test func aJoinerAsksEveryRetryAndRefreshesItsIncarnationAfterAskingInVain() {
        var attempt = JoinAttempt()
        var requests: [UInt64] = []
        var refreshes: [UInt64] = []
        for round in UInt64(100)..<130 {
            let (refresh, request) = attempt.tick(round: round, refreshRounds: 12, retryRounds: 5)
            if refresh { refreshes.append(round) }
            if request { requests.append(round) }
        }
        #expect(requests == [100, 105, 110, 115, 120, 125])
        #expect(refreshes == [112, 124])
        attempt.restart()
        let tick = attempt.tick(round: 130, refreshRounds: 12, retryRounds: 5)
        #expect(!tick.refresh && tick.request)
        #expect(attempt.sinceRound == 130)
    }
}

/// Join requests as a member takes them from the wire.
@Suite("Join requests from the wire")
struct JoinRequestFrameTests {
    static let origin: UInt64 = 1_000_000_000

    static func member() -> MembershipInstance {
        let schedule = try! TDMASchedule(
            memberCount: 3, roundPeriodNanos: 100_000, reservation: 0.9, guardFraction: 0.1,
            originNanos: origin)
        let view = View(epoch: 1, members: (0..<3).map { MemberID(node: UInt16($0), incarnation: origin) }, startRound: 0)
        var configuration = MembershipConfiguration(
            me: view.members[0], initialView: view,
            ordering: OrderingConfiguration(rank: 0, schedule: schedule))
        configuration.runIdentity = origin
        return try! MembershipInstance(configuration: configuration)
    }

    /// A join request of `node`'s `incarnation`, as a joiner sends it.
    static func joinRequest(node: UInt16, incarnation: UInt64) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 1_472)
        let fields = [
            RankEntry(rank: ViewField.incarnation.rawValue, value: incarnation),
            RankEntry(rank: ViewField.joinRequest.rawValue, value: incarnation)
        ]
        let length = try! bytes.withUnsafeMutableBytes { buffer in
            try MembershipFrame.encode(
                into: buffer, sender: node, epoch: 0, round: 1, nowNanos: origin, fields: fields,
                positions: nil, proposal: nil, chunk: nil, tagLength: 0)
        }
        return Array(bytes[..<length])
    }

    @Test func aRequestFromAnUnknownNodeOrAStaleIncarnationIsDroppedANewOneIsPending() {
        var instance = Self.member()
        var effects = MembershipEffects()
        let now = Self.origin + 150_000
        func receive(_ frame: [UInt8]) { frame.withUnsafeBytes { _ = instance.onFrameReceived($0, nowNanos: now, effects: &effects) } }
        receive(Self.joinRequest(node: 9, incarnation: Self.origin + 5))
        #expect(instance.counters.outOfRangeFrames == 1)
        receive(Self.joinRequest(node: 2, incarnation: Self.origin - 1))
        #expect(instance.counters.staleJoinRequests == 1)
        #expect(instance.joins.pending.isEmpty)
        receive(Self.joinRequest(node: 2, incarnation: Self.origin + 5))
        #expect(instance.joins.pending == [MemberID(node: 2, incarnation: Self.origin + 5)])
        #expect(instance.counters.staleJoinRequests == 1 && instance.counters.outOfRangeFrames == 1)
    }
}
