import Testing

@testable import CarillonServices

/// ``Digest64``: the same however the bytes are split over calls, and
/// changed by any one byte, by order and by length (trailing zeros).
@Suite struct DigestTests {
    static func bytes(_ n: Int, seed: UInt64) -> [UInt8] {
        var x = seed
        return (0..<n).map { _ in
            x = x &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: x >> 56)
        }
    }

    @Test func theSameHoweverTheBytesAreSplit() {
        let all = Self.bytes(1000, seed: 3)
        let whole = Digest64.of(all)
        for cuts in [[1], [7], [8], [9], [3, 5, 11], [0, 0, 999], [13, 400, 401, 402, 990], Array(stride(from: 1, to: 1000, by: 3))] {
            var d = Digest64()
            var start = 0
            for cut in cuts + [all.count] {
                d.add(Array(all[start..<max(start, cut)]))
                start = max(start, cut)
            }
            #expect(d.value == whole, "split at \(cuts)")
        }
    }

    @Test func anyByteItsPlaceAndTheLengthChangeIt() {
        let all = Self.bytes(64, seed: 9)
        let whole = Digest64.of(all)
        var seen: Set<UInt64> = [whole]
        for i in all.indices {
            for bit in 0..<8 {
                var changed = all
                changed[i] ^= 1 << bit
                seen.insert(Digest64.of(changed))
            }
        }
        #expect(seen.count == 1 + 64 * 8)
        // Two bytes swapped; zeros appended; the empty input.
        var swapped = all
        swapped.swapAt(3, 40)
        #expect(Digest64.of(swapped) != whole)
        let zeros = (0...16).map { Digest64.of([UInt8](repeating: 0, count: $0)) }
        #expect(Set(zeros).count == zeros.count)
        #expect(Digest64.of(all + [0]) != whole)
    }
}
