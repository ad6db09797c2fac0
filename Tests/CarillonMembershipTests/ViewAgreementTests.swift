@testable import CarillonMembership
import Testing

@Suite("The view agreement (ballots)")
struct ViewAgreementTests {
    static let members = (0..<3).map { MemberID(node: UInt16($0), incarnation: 1) }
    static let view = View(epoch: 1, members: members, startRound: 0)

    static func proposal(_ cut: [UInt64], members: [MemberID] = members) -> ViewProposal {
        ViewProposal(members: members, cut: cut, startRound: cut.max() ?? 0)
    }

    // Mutating calls stay out of `#expect`'s expansion.
    func promise(_ agreement: inout ViewAgreement, _ ballot: UInt64, round: UInt64) -> Bool {
        agreement.promise(ballot, round: round) { _ in false }
    }

    func accept(_ agreement: inout ViewAgreement, _ ballot: UInt64, _ proposal: ViewProposal) -> Bool {
        agreement.accept(ballot, proposal)
    }

    @Test func aLowerOrEqualBallotIsRefusedAfterAPromise() {
        var agreement = ViewAgreement(memberCount: 3)
        #expect(!agreement.isUnderway)
        #expect(promise(&agreement, 5 << 16 | 1, round: 10))
        #expect(agreement.isUnderway)
        #expect(agreement.changeSinceRound == 10)
        #expect(!promise(&agreement, 3 << 16 | 2, round: 11))
        #expect(!promise(&agreement, 5 << 16 | 1, round: 11))
        #expect(agreement.promised == 5 << 16 | 1)
        #expect(agreement.ballotsSeen == 1)
        // Nor is a value of a lower ballot accepted.
        #expect(!accept(&agreement, 3 << 16 | 2, Self.proposal([1, 1, 1])))
        #expect(agreement.accepted == nil)
        #expect(accept(&agreement, 5 << 16 | 1, Self.proposal([1, 1, 1])))
        #expect(!accept(&agreement, 5 << 16 | 1, Self.proposal([1, 1, 1])), "the same ballot again is not new")
        #expect(agreement.accepted?.ballot == 5 << 16 | 1)
    }

    @Test func aValueWhoseCutDoesNotCoverTheViewIsRefused() {
        var agreement = ViewAgreement(memberCount: 3)
        _ = agreement.promise(1 << 16, round: 0) { _ in false }
        #expect(!accept(&agreement, 1 << 16, Self.proposal([1, 1])))
        #expect(agreement.accepted == nil)
    }

    @Test func theHoldIsFrozenAtAHigherPromise() {
        var agreement = ViewAgreement(memberCount: 3)
        _ = agreement.promise(1 << 16, round: 0) { _ in false }
        agreement.accept(1 << 16, Self.proposal([4, 4, 4]))
        #expect(agreement.statesHold(false) == false)
        #expect(agreement.statesHold(true) == true, "live while no higher ballot is promised")
        var asked = 0
        _ = agreement.promise(2 << 16, round: 1) { proposal in
            asked += 1; return proposal.cut == [4, 4, 4]
        }
        #expect(asked == 1)
        #expect(agreement.statesHold(false) == true, "frozen at the higher promise")
        _ = agreement.promise(3 << 16, round: 2) { _ in
            asked += 1; return false
        }
        #expect(asked == 1, "frozen once")
    }

    @Test func theBallotCounterOutgrowsEveryBallotSeenAndSurvivesAView() {
        var agreement = ViewAgreement(memberCount: 3)
        agreement.restate(
            rank: 1, promised: 7 << 16 | 1, accepted: 0, holds: false, leaving: false, proposing: 9 << 16 | 2,
            positions: nil, proposal: nil)
        let ballot = agreement.startBallot(node: 0, round: 3)
        #expect(ballot == 10 << 16)
        #expect(agreement.proposing == ballot && agreement.proposingSinceRound == 3)
        agreement.startView(memberCount: 4)
        #expect(agreement.proposing == 0 && agreement.promised == 0 && agreement.memberCount == 4)
        #expect(agreement.startBallot(node: 3, round: 4) == 11 << 16 | 3)
    }

    @Test func theHighestAcceptedProposalIsChosen() {
        var agreement = ViewAgreement(memberCount: 3)
        let ballot = agreement.startBallot(node: 0, round: 0)
        _ = agreement.promise(ballot, round: 0) { _ in false }
        let low = Self.proposal([1, 1, 1]), high = Self.proposal([2, 2, 2])
        agreement.restate(
            rank: 1, promised: ballot, accepted: 3, holds: true, leaving: false, proposing: 0,
            positions: [1, 1, 1], proposal: low)
        agreement.restate(
            rank: 2, promised: ballot, accepted: 4, holds: false, leaving: false, proposing: 0,
            positions: [2, 2, 2], proposal: high)
        let promisers = agreement.promisers(ownRank: 0)
        #expect(promisers == [0, 1, 2])
        let best = agreement.highestAccepted(among: promisers, ownRank: 0)
        #expect(best?.ballot == 4)
        #expect(best?.proposal == high)
        // Nobody holds the highest one's cut: it cannot have been decided.
        #expect(!agreement.isHeld(high, among: promisers, ownRank: 0) { false })
        #expect(agreement.isHeld(low, among: promisers, ownRank: 0) { false })
        // Without rank 2 the lower one is the highest.
        #expect(agreement.highestAccepted(among: [0, 1], ownRank: 0)?.proposal == low)
    }

    @Test func aPromiseCountsOnlyOnceItsPositionsAreKnown() {
        var agreement = ViewAgreement(memberCount: 3)
        let ballot = agreement.startBallot(node: 0, round: 0)
        _ = agreement.promise(ballot, round: 0) { _ in false }
        agreement.restate(
            rank: 1, promised: ballot, accepted: 0, holds: false, leaving: false, proposing: 0,
            positions: nil, proposal: nil)
        agreement.restate(
            rank: 2, promised: ballot - 1, accepted: 0, holds: false, leaving: false, proposing: 0,
            positions: [0, 0, 0], proposal: nil)
        #expect(agreement.promisers(ownRank: 0) == [0])
        agreement.restate(
            rank: 1, promised: ballot, accepted: 0, holds: false, leaving: false, proposing: 0,
            positions: [0, 0, 0], proposal: nil)
        #expect(agreement.promisers(ownRank: 0) == [0, 1])
    }

    @Test func aFreshValueTakesTheHighestPositionsLeavesLeaversOutAndAdmitsFewerJoinersThanMembers() {
        var agreement = ViewAgreement(memberCount: 3)
        let ballot = agreement.startBallot(node: 0, round: 0)
        _ = agreement.promise(ballot, round: 0) { _ in false }
        agreement.restate(
            rank: 1, promised: ballot, accepted: 0, holds: false, leaving: true, proposing: 0,
            positions: [5, 9, 2], proposal: nil)
        agreement.restate(
            rank: 2, promised: ballot, accepted: 0, holds: false, leaving: false, proposing: 0,
            positions: [7, 3, 3], proposal: nil)
        let joiners = [MemberID(node: 3, incarnation: 2), MemberID(node: 4, incarnation: 2)]
        let proposal = agreement.freshProposal(
            view: Self.view, ownRank: 0, ownPositions: [6, 1, 1], ownLeaving: false,
            promisers: [0, 1, 2], pendingJoins: joiners)
        #expect(proposal.cut == [7, 9, 3])
        #expect(proposal.startRound == 9)
        // Two carried over (rank 1 leaves): one joiner.
        #expect(proposal.members == [Self.members[0], Self.members[2], joiners[0]])
    }

    @Test func aMajorityHoldingTheAcceptedBallotDecides() {
        var agreement = ViewAgreement(memberCount: 3)
        let ballot = agreement.startBallot(node: 0, round: 0)
        _ = agreement.promise(ballot, round: 0) { _ in false }
        agreement.accept(ballot, Self.proposal([1, 1, 1]))
        agreement.restate(
            rank: 1, promised: ballot, accepted: ballot, holds: false, leaving: false, proposing: 0,
            positions: [1, 1, 1], proposal: Self.proposal([1, 1, 1]))
        agreement.restate(
            rank: 2, promised: ballot, accepted: ballot - 1, holds: true, leaving: false, proposing: 0,
            positions: [1, 1, 1], proposal: Self.proposal([1, 1, 1]))
        #expect(
            !agreement.acceptedIsHeldByMajority(ownRank: 0, ownHolds: true, majority: 2),
            "rank 1 does not hold it, rank 2 holds another ballot")
        agreement.restate(
            rank: 1, promised: ballot, accepted: ballot, holds: true, leaving: false, proposing: 0,
            positions: [1, 1, 1], proposal: Self.proposal([1, 1, 1]))
        #expect(agreement.acceptedIsHeldByMajority(ownRank: 0, ownHolds: true, majority: 2))
        #expect(!agreement.acceptedIsHeldByMajority(ownRank: 0, ownHolds: false, majority: 2))
    }

    @Test func theTimeoutDoublesWithEachBallotUpTo32Times() {
        var agreement = ViewAgreement(memberCount: 3)
        #expect(agreement.backoff(10) == 10)
        for b in 1...8 { _ = agreement.promise(UInt64(b) << 16, round: 0) { _ in false } }
        #expect(agreement.backoff(10) == 320)
    }
}
