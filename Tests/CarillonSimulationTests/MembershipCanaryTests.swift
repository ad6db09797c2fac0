@_spi(Canary) import CarillonMembership
@_spi(Canary) import CarillonSimulation
import Testing

/// The membership canaries the swarm must catch: deliberately broken view
/// changes (``MembershipCanary``). Each must fail with a typed violation of an
/// expected checker within a few swarm seeds, and the same seeds must pass
/// without it — so the failure is the canary's, not the seed's.
/// (`carillon-sim --membership --swarm --canary NAME --seeds 1-200 --expect-failure`
/// runs the longer sweep in tools/test.sh.)
@Suite("Membership canaries are caught by the membership swarm")
struct MembershipCanaryTests {
    static func run(_ seed: UInt64, canary: MembershipCanary?) -> MembershipSimulationResult {
        var simulator = MembershipSimulator(seed: seed, profile: .swarm(seed: seed), canary: canary)
        return simulator.run()
    }

    @Test(arguments: [
        // Its old view's last deliveries land in the new view: digests differ at the next view.
        (MembershipCanary.installBeforeCutHeld, UInt64(1)...3, [MembershipViolation.Checker.replicaEquality, .virtualSynchrony]),
        // Members end the view at different cuts: different messages in it.
        (.skipRaggedTrim, 1...3, [.agreement, .virtualSynchrony, .replicaEquality]),
        // Both sides of a split decide a next view: two member lists, or two streams, for one epoch.
        (.halfIsMajority, 1...8, [.singlePrimary, .agreement])
    ])
    func canaryIsCaught(canary: MembershipCanary, seeds: ClosedRange<UInt64>, checkers: [MembershipViolation.Checker]) {
        var caught: (seed: UInt64, violation: MembershipViolation)?
        for seed in seeds where caught == nil {
            if let first = Self.run(seed, canary: canary).violations.first { caught = (seed, first) }
        }
        guard let caught else {
            Issue.record("\(canary.rawValue) was not caught in seeds \(seeds)")
            return
        }
        #expect(checkers.contains(caught.violation.checker), "\(canary.rawValue) caught as \(caught.violation)")
        // The same seeds pass without the canary.
        for seed in seeds.lowerBound...caught.seed {
            let clean = Self.run(seed, canary: nil)
            #expect(clean.passed, "seed \(seed) fails without the canary: \(clean.violations.first.map(String.init(describing:)) ?? "")")
        }
    }

    /// Each violation prints the line the sweep printed when violations were strings.
    @Test func violationsPrintAsBefore() {
        #expect(MembershipViolation.duplicate(node: 2, id: 7).description == "integrity: node 2 delivered 7 twice")
        #expect(
            MembershipViolation.virtualSynchrony(nodes: [1, 3], epoch: 4, counts: [10, 12]).description
                == "virtual synchrony: nodes 1 and 3 delivered 10 and 12 messages in epoch 4")
        #expect(
            MembershipViolation.liveness(boundRounds: 3_000, views: ["joining", "epoch 2"]).description
                == "liveness: not settled 3000 rounds after faults stopped; node 0: joining; node 1: epoch 2")
        #expect(MembershipViolation.counterNotZero(node: 1, counter: "sequence gaps", value: 2).checker == .counters)
    }
}
