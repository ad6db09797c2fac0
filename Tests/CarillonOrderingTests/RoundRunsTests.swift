@testable import CarillonOrdering
import CarillonSimulation
import Testing

@Suite("Round runs")
struct RoundRunsTests {
    /// Against a reference set of rounds: with room for every run, membership,
    /// `end(containing:)` and `nextStart(after:)` agree with the set.
    @Test(arguments: 1...40)
    func matchesAReferenceSet(seed: Int) {
        var random = SimulationRandom(seed: UInt64(seed))
        var runs = RoundRuns(capacity: 64)
        var reference = Set<UInt64>()
        var floor: UInt64 = 0
        for _ in 0..<30 {
            if random.chance(0.2) {
                floor += UInt64(random.int(in: 0...10))
                runs.removeBelow(floor)
                reference = reference.filter { $0 >= floor }
            }
            let first = UInt64(random.int(in: 0...120)), length = UInt64(random.int(in: 0...8))
            runs.insert(first, first + length)
            for round in first...(first + length) where round >= 0 { reference.insert(round) }
            reference = reference.filter { $0 >= floor }
            // removeBelow only applies to later queries; mirror the instance's use.
            runs.removeBelow(floor)
        }
        for round in UInt64(0)...140 {
            #expect((runs.end(containing: round) != nil) == reference.contains(round), "seed \(seed) round \(round)")
            if let end = runs.end(containing: round) {
                #expect(reference.contains(end) && !reference.contains(end + 1))
            }
            let next = runs.nextStart(after: round)
            let expected = reference.filter { $0 > round && !reference.contains($0 - 1) }.min() ?? .max
            #expect(next == expected, "seed \(seed) after \(round)")
        }
    }

    @Test func aFullSetDropsTheLatestRun() {
        var runs = RoundRuns(capacity: 2)
        do { let changed = runs.insert(10, 12); #expect(changed) }
        do { let changed = runs.insert(20, 22); #expect(changed) }
        do { let changed = runs.insert(30, 31); #expect(!changed) }  // latest, and no room
        do { let changed = runs.insert(1, 2); #expect(changed) }  // earlier: evicts 20...22
        #expect(runs.end(containing: 21) == nil)
        #expect(runs.first == 1...2)
        do { let changed = runs.insert(3, 9); #expect(changed) }  // touches both neighbours: joins into one
        #expect(runs.first == 1...12)
        #expect(runs.count == 1)
        do { let changed = runs.insert(4, 5); #expect(!changed) }  // already covered
        runs.removeBelow(7)
        #expect(runs.first == 7...12)
        do { let changed = runs.insert(UInt64.max - 1, UInt64.max); #expect(changed) }
        #expect(runs.end(containing: .max) == .max)
    }
}
