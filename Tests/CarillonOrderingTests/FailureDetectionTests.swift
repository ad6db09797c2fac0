import CarillonOrdering
import Testing

@Suite("Failure detection")
struct FailureDetectionTests {
    /// Runs `rounds` with only `alive` members sending; every frame reaches every alive member.
    func run(_ cluster: inout TestCluster, rounds: ClosedRange<UInt64>, alive: [Int]) -> [Int: [MembershipEvent]] {
        var events: [Int: [MembershipEvent]] = [:]
        for round in rounds {
            for member in alive {
                cluster.openSlot(member, round: round)
                events[member, default: []] += cluster.effects.membershipEvents
                cluster.flush(member, to: alive.filter { $0 != member })
            }
        }
        return events
    }

    @Test func aSilentMemberIsSuspectedWithinItsSlotsAndClearedWhenHeard() {
        var cluster = TestCluster(memberCount: 3)
        let limit = cluster.members[0].configuration.suspicionSlots
        // Everyone alive: nobody suspected.
        var events = run(&cluster, rounds: 0...20, alive: [0, 1, 2])
        #expect(events.values.allSatisfy { $0.isEmpty })
        // Member 2 falls silent at round 21.
        events = run(&cluster, rounds: 21...UInt64(21 + limit + 2), alive: [0, 1])
        #expect(events[0] == [.suspected(rank: 2, silentSinceRound: 21)])
        #expect(events[1] == [.suspected(rank: 2, silentSinceRound: 21)])
        #expect(cluster.members[0].suspectedMembers == [2])
        // Suspicions travel in frames: each survivor knows the other suspects 2, not 0 or 1.
        #expect(cluster.members[0].suspects(1, 2))
        #expect(cluster.members[1].suspects(0, 2))
        #expect(!cluster.members[0].suspects(1, 0))
        // Member 2 comes back: its frame declares the rounds it missed silent; the suspicion clears.
        let back = UInt64(21 + limit + 3)
        events = run(&cluster, rounds: back...(back + 2), alive: [0, 1, 2])
        #expect(events[0] == [.cleared(rank: 2)])
        #expect(events[1] == [.cleared(rank: 2)])
        #expect(cluster.members[0].suspectedMembers.isEmpty)
        #expect(cluster.members[0].counters.suspicionsRaised == 1)
        #expect(cluster.members[0].counters.suspicionsCleared == 1)
    }

    @Test func noSuspicionBeforeTheLimit() {
        var cluster = TestCluster(memberCount: 3)
        let limit = cluster.members[0].configuration.suspicionSlots
        _ = run(&cluster, rounds: 0...5, alive: [0, 1, 2])
        // Silent for fewer slots than the limit (the grace covers one more round).
        let events = run(&cluster, rounds: 6...UInt64(6 + limit - 2), alive: [0, 1])
        #expect(events.values.allSatisfy { $0.isEmpty })
    }
}
