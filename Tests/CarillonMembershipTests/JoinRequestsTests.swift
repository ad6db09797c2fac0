@testable import CarillonMembership
import Testing

@Suite("Join requests")
struct JoinRequestsTests {
    static let run: UInt64 = 1_000
    static let view = View(epoch: 1, members: [MemberID(node: 0, incarnation: 1_000), MemberID(node: 1, incarnation: 1_000)],
                           startRound: 0)

    @Test func aStaleIncarnationIsDroppedAndANewerOneRecorded() {
        var joins = JoinRequests()
        joins.installed(Self.view)
        // Node 1's incarnation in the view, or an older one: a replay or a dead process.
        let r1 = joins.hear(MemberID(node: 1, incarnation: 999), round: 5, view: Self.view, runIdentity: Self.run)
        #expect(r1 == .stale)
        let r2 = joins.hear(MemberID(node: 1, incarnation: 1_000), round: 5, view: Self.view, runIdentity: Self.run)
        #expect(r2 == .alreadyMember)
        // Older than the run: from an earlier run.
        let r3 = joins.hear(MemberID(node: 2, incarnation: 999), round: 5, view: Self.view, runIdentity: Self.run)
        #expect(r3 == .stale)
        #expect(joins.pending.isEmpty)
        let r4 = joins.hear(MemberID(node: 1, incarnation: 1_001), round: 5, view: Self.view, runIdentity: Self.run)
        #expect(r4 == .pending)
        #expect(joins.pending == [MemberID(node: 1, incarnation: 1_001)])
        // Installing a view with that incarnation forgets it, and makes it known.
        let next = View(epoch: 2, members: [MemberID(node: 0, incarnation: 1_000), MemberID(node: 1, incarnation: 1_001)], startRound: 9)
        joins.installed(next)
        #expect(joins.pending.isEmpty)
        let r5 = joins.hear(MemberID(node: 1, incarnation: 1_001), round: 6, view: Self.view, runIdentity: Self.run)
        #expect(r5 == .stale)
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
        let r6 = attempt.tick(round: 130, refreshRounds: 12, retryRounds: 5)
        #expect(!r6.refresh && r6.request)
        #expect(attempt.sinceRound == 130)
    }
}
