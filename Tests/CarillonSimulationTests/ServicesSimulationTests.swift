import CarillonMembership
@_spi(Canary) import CarillonServices
@_spi(Canary) import CarillonSimulation
import Testing

/// The services on the membership simulator (`carillon-sim --services`):
/// clean seeds pass with real work done, a seed replays exactly, and each
/// canary is caught by the checker it breaks.
@Suite("Services simulator")
struct ServicesSimulationTests {
    /// The services swarm of a seed, with a shorter fault phase so a debug `swift test` stays quick.
    static func run(_ seed: UInt64, canary: ServiceCanary? = nil) -> MembershipSimulationResult {
        var profile = MembershipFaultProfile.servicesSwarm(seed: seed)
        profile.faultRounds = min(profile.faultRounds, 600)
        var simulator = MembershipSimulator(seed: seed, profile: profile, services: .swarm(seed: seed), serviceCanary: canary)
        return simulator.run()
    }

    @Test(arguments: 0..<4)
    func cleanSeedsHaveNoViolations(batch: Int) {
        var total = ServicesStatistics()
        for seed in UInt64(batch * 8 + 1)...UInt64(batch * 8 + 8) {
            let result = Self.run(seed)
            let first = (result.violations.map(\.description) + result.serviceViolations.map(\.description)).first ?? ""
            #expect(result.passed, "seed \(seed): \(first)\n  replay: swift run -c release carillon-sim --services --swarm --seed \(seed) -v")
            let s = result.services!
            total.requests += s.requests
            total.answered += s.answered
            total.grants += s.grants
            total.retries += s.retries
            total.duplicates += s.duplicates
            total.registerOperations += s.registerOperations
            total.adds += s.adds
            total.digestsCompared += s.digestsCompared
            total.sessionsEnded += s.sessionsEnded
            total.ownedOperations += s.ownedOperations
            total.migrationsCommitted += s.migrationsCommitted
            total.migrationsAborted += s.migrationsAborted
        }
        // The checkers saw real work: requests answered, locks granted,
        // registers and counters used, retries and duplicates, states compared at views.
        #expect(total.requests > 500 && total.answered > total.requests / 2)
        #expect(total.grants > 50 && total.registerOperations > 100 && total.adds > 50)
        #expect(total.retries + total.duplicates > 10 && total.sessionsEnded > 5 && total.digestsCompared > 20)
        // Owned objects were used and moved.
        #expect(total.ownedOperations > 40 && total.migrationsCommitted > 0, "\(total)")
    }

    /// Liveness failures the 10,000-seed services sweep found, kept as they
    /// were (the full fault phase). 6171: a member paused through the end of
    /// its view needed frames the others had already dropped, left the new
    /// view of two, and took its majority with it; 8844: a member deaf from
    /// the round its view was decided left it the moment it heard again;
    /// 7385: a member died while two others were deaf, its last report pinned
    /// every receive window, and the deaf ones, once hearing, asked for its
    /// rounds only up to their window's end — the cut lay past it, and no
    /// view change could decide.
    @Test(arguments: [6171, 8844, 7385] as [UInt64])
    func sweepSeedsSettle(seed: UInt64) {
        var simulator = MembershipSimulator(seed: seed, profile: .servicesSwarm(seed: seed), services: .swarm(seed: seed))
        let result = simulator.run()
        let first = (result.violations.map(\.description) + result.serviceViolations.map(\.description)).first ?? ""
        #expect(result.passed, "seed \(seed): \(first)\n  replay: swift run -c release carillon-sim --services --swarm --seed \(seed) -v")
    }

    @Test func aSeedReplaysExactly() {
        let a = Self.run(12), b = Self.run(12)
        #expect(a.services == b.services && a.serviceViolations == b.serviceViolations)
        #expect(a.messagesBroadcast == b.messagesBroadcast && a.deliveries == b.deliveries && a.log == b.log)
    }

    /// Each canary breaks what one checker guards; that checker must report it within 20 seeds.
    @Test(arguments: [
        (ServiceCanary.grantWhileHeld, ServiceViolation.Checker.lockSafety),
        (.divergentTokens, .lockSafety),
        (.forgetSessions, .exactlyOnce),
        (.divergentReplica, .replicaEquality),
        (.staleLocalReads, .linearizability),
        (.unfrozenMigration, .objectOwnership),
        (.ignoreRights, .capabilities)
    ])
    func canaryIsCaught(canary: ServiceCanary, checker: ServiceViolation.Checker) {
        var caught: (UInt64, ServiceViolation)?
        for seed in UInt64(1)...20 where caught == nil {
            if let violation = Self.run(seed, canary: canary).serviceViolations.first(where: { $0.checker == checker }) {
                caught = (seed, violation)
            }
        }
        #expect(caught != nil, "\(canary) was not caught by \(checker.rawValue) in seeds 1-20")
    }
}

/// The linearizability checker on hand-made histories of one register.
@Suite struct RegisterLinearizabilityTests {
    static func op(_ call: RegisterOperation.Call, _ outcome: RegisterOperation.Outcome?, _ invoked: UInt64, _ responded: UInt64?)
        -> RegisterOperation
    {
        RegisterOperation(call: call, outcome: outcome, invokedNanos: invoked, respondedNanos: responded, label: "")
    }

    @Test func sequentialHistoriesFollowTheRegister() {
        let ok = [
            Self.op(.get, .absent, 0, 1),
            Self.op(.put(write: 1), .written(version: 5), 2, 3),
            Self.op(.get, .value(write: 1, version: 5), 4, 5),
            Self.op(.compareAndSet(expected: 5, write: 2), .written(version: 9), 6, 7),
            Self.op(.compareAndSet(expected: 5, write: 3), .mismatch(current: 9), 8, 9),
            Self.op(.delete, .written(version: 11), 10, 11),
            Self.op(.get, .absent, 12, 13),
            Self.op(.compareAndSet(expected: 0, write: 4), .written(version: 14), 14, 15)
        ]
        #expect(RegisterLinearizability.isLinearizable(ok))
        // A read of the old value after the write was answered: stale.
        var stale = ok
        stale[2] = Self.op(.get, .absent, 4, 5)
        #expect(!RegisterLinearizability.isLinearizable(stale))
        // Versions only grow: a later write may not take a lower one.
        var backwards = ok
        backwards[3] = Self.op(.compareAndSet(expected: 5, write: 2), .written(version: 4), 6, 7)
        #expect(!RegisterLinearizability.isLinearizable(backwards))
    }

    @Test func concurrentOperationsMayTakeEitherOrder() {
        let history = [
            Self.op(.put(write: 1), .written(version: 5), 0, 10),
            Self.op(.get, .absent, 1, 9),
            Self.op(.get, .value(write: 1, version: 5), 2, 8)
        ]
        #expect(RegisterLinearizability.isLinearizable(history))
        // Once the put answered, nobody may miss it.
        #expect(!RegisterLinearizability.isLinearizable(history + [Self.op(.get, .absent, 11, 12)]))
    }

    @Test func anOperationOfUnknownOutcomeMayHaveTakenEffectOrNot() {
        let unknownPut = Self.op(.put(write: 7), nil, 0, nil)
        #expect(RegisterLinearizability.isLinearizable([unknownPut, Self.op(.get, .absent, 5, 6)]))
        #expect(RegisterLinearizability.isLinearizable([unknownPut, Self.op(.get, .value(write: 7, version: 3), 5, 6)]))
        // …but not before it was invoked, and not a value nobody wrote.
        #expect(!RegisterLinearizability.isLinearizable([Self.op(.put(write: 7), nil, 10, nil), Self.op(.get, .value(write: 7, version: 3), 5, 6)]))
        #expect(!RegisterLinearizability.isLinearizable([unknownPut, Self.op(.get, .value(write: 8, version: 3), 5, 6)]))
        // Taking effect once: the value read back, then gone, cannot come back without a write.
        #expect(
            !RegisterLinearizability.isLinearizable([
                unknownPut, Self.op(.get, .value(write: 7, version: 3), 5, 6), Self.op(.delete, .written(version: 4), 7, 8),
                Self.op(.get, .value(write: 7, version: 3), 9, 10)
            ]))
    }
}
