@_spi(Canary) import CarillonOrdering
@_spi(Canary) import CarillonSimulation
import Testing

@Suite("Cluster simulator")
struct SimulationTests {
    /// A smaller swarm profile so 500 seeds fit a debug `swift test`.
    static func sweepProfile(_ seed: UInt64) -> FaultProfile {
        var profile = FaultProfile.swarm(seed: seed)
        profile.faultRounds = min(profile.faultRounds, 120)
        return profile
    }

    /// 100 swarm seeds in 2 parallel batches (a debug build's check that the
    /// swarm runs; tools/test.sh sweeps 2,000 seeds in release right after, and
    /// `carillon-sim --swarm --seeds 1-10000` is the long version).
    @Test(arguments: 0..<2)
    func swarmSweep(batch: Int) {
        for seed in UInt64(batch * 50 + 1)...UInt64(batch * 50 + 50) {
            var simulator = ClusterSimulator(seed: seed, profile: Self.sweepProfile(seed))
            let result = simulator.run()
            #expect(
                result.passed,
                "seed \(seed): \(result.violations.first.map(String.init(describing:)) ?? "")\n  replay: swift run -c release carillon-sim --seed \(seed) --swarm -v"
            )
            #expect(result.settledAtNanos != nil || !result.passed)
        }
    }

    @Test func aSeedReplaysExactly() {
        var first = ClusterSimulator(seed: 77, profile: .swarm(seed: 77))
        var second = ClusterSimulator(seed: 77, profile: .swarm(seed: 77))
        let a = first.run(), b = second.run()
        #expect(a.events == b.events)
        #expect(a.deliveries == b.deliveries)
        #expect(a.counters == b.counters)
        #expect(a.settledAtNanos == b.settledAtNanos)
    }

    @Test func faultsAreActuallyInjected() {
        var simulator = ClusterSimulator(seed: 5, profile: .standard)
        let result = simulator.run()
        #expect(result.passed)
        #expect(result.framesDropped > 0)
        #expect(result.counters.duplicateFrames > 0)
        #expect(result.counters.naksSent > 0)
        #expect(result.counters.framesRetransmitted > 0)
        #expect(result.messagesBroadcast > 100)
    }

    /// The canaries: deliberately broken ordering variants. If the checkers
    /// could not fail, a green sweep would prove nothing.
    @Test(arguments: [
        (OrderingCanary.deliverOnArrival, Violation.Invariant.agreement),
        (.redeliverDuplicates, .integrity),
        (.ignoreNaks, .validity)
    ])
    func canaryIsCaught(canary: OrderingCanary, invariant: Violation.Invariant) {
        var caught: Violation?
        for seed in UInt64(1)...20 where caught == nil {
            var simulator = ClusterSimulator(seed: seed, profile: .standard, canary: canary)
            caught = simulator.run().violations.first
        }
        #expect(caught?.invariant == invariant, "\(canary) caught as \(caught.map(String.init(describing:)) ?? "nothing")")
    }
}

@Suite("Invariant checker")
struct InvariantCheckerTests {
    @Test func agreementIntegrityAndOrderViolationsAreReported() {
        var checker = InvariantChecker(memberCount: 2)
        checker.recordBroadcast(sender: 0, sequence: 1, payload: [1], nowNanos: 0)
        checker.recordBroadcast(sender: 1, sequence: 1, payload: [2], nowNanos: 0)
        checker.recordDelivery(member: 0, id: MessageID(sender: 0, sequence: 1), round: 0, slot: 0, index: 0, payload: [1], nowNanos: 1)
        checker.recordDelivery(member: 1, id: MessageID(sender: 1, sequence: 1), round: 0, slot: 1, index: 0, payload: [2], nowNanos: 1)
        #expect(checker.violations.map(\.invariant) == [.agreement])
        checker.recordDelivery(member: 0, id: MessageID(sender: 0, sequence: 1), round: 1, slot: 0, index: 0, payload: [1], nowNanos: 2)
        #expect(checker.violations.last?.invariant == .integrity)
        checker.recordDelivery(member: 0, id: MessageID(sender: 1, sequence: 1), round: 0, slot: 0, index: 0, payload: [9], nowNanos: 3)
        #expect(checker.violations.contains { $0.invariant == .order })
        #expect(checker.violations.contains { $0.detail.contains("payload other than") })
        checker.checkAllDelivered(nowNanos: 4)
        #expect(checker.violations.contains { $0.invariant == .validity })
    }
}
