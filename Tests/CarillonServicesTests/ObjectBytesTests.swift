import CarillonMembership
import CarillonServices
import Testing

@Suite struct ObjectBytesTests {
    static let chunk = ObjectBytes.chunkBytes

    @Test func creatingALargeObjectStoresNothing() {
        // What the agent thread does when a 512 MiB object is created: no zero-fill.
        var holding = ObjectHolding(me: MemberID(node: 0, incarnation: 1))
        _ = holding.apply(.allocate(name: "big", size: 512 << 20, version: 7, holders: [MemberID(node: 0, incarnation: 1)]))
        let copy = holding.copy(of: "big")
        #expect(copy?.bytes.count == 512 << 20)
        #expect(copy?.bytes.storedBytes == 0)
        _ = holding.apply(.write(name: "big", offset: 0, bytes: [1, 2, 3, 4, 5, 6, 7, 8], version: 8, holders: [MemberID(node: 0, incarnation: 1)]))
        #expect(holding.copy(of: "big")?.bytes.storedBytes == Self.chunk, "a write fills only the chunk it touches")
    }

    @Test func writesAndReadsAcrossChunkBoundariesMatchAFlatArray() {
        let size = 2 * Self.chunk + 2000
        var chunked = ObjectBytes(zeros: size)
        var flat = [UInt8](repeating: 0, count: size)
        let writes: [(Int, Int)] = [(Self.chunk - 3, 10), (0, 1), (2 * Self.chunk - 1, 1002), (5, Self.chunk + 7)]
        for (n, (offset, length)) in writes.enumerated() {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ n &+ 1) }
            chunked.write(bytes, at: offset)
            flat.replaceSubrange(offset..<(offset + length), with: bytes)
        }
        #expect(chunked.elementsEqual(flat))
        #expect(chunked.bytes(in: (Self.chunk - 5)..<(Self.chunk + 20)) == Array(flat[(Self.chunk - 5)..<(Self.chunk + 20)]))
        #expect(chunked.bytes(in: 0..<size) == flat)
        #expect(chunked.digest == Digest64.of(flat))
        #expect(chunked == ObjectBytes(flat))
    }

    @Test func zerosEqualAndHashAlikeStoredOrNot() {
        var written = ObjectBytes(zeros: Self.chunk + 5)
        written.write([0, 0, 0], at: 10)
        let untouched = ObjectBytes(zeros: Self.chunk + 5)
        #expect(written.storedBytes > 0 && untouched.storedBytes == 0)
        #expect(written == untouched)
        #expect(written.hashValue == untouched.hashValue)
        var other = untouched
        other.write([1], at: Self.chunk + 4)
        #expect(other != untouched)
        #expect(ObjectBytes(zeros: 3) != ObjectBytes(zeros: 4))
    }

    @Test func aTransferOfChunkedBytesRoundTrips() throws {
        var bytes = ObjectBytes(zeros: 3 * Self.chunk + 17)
        bytes.write([9, 8, 7], at: Self.chunk + 1)
        bytes.write([1], at: 3 * Self.chunk + 16)
        let transfer = ObjectTransfer(name: "obj", migration: 11, version: 4, bytes: bytes)
        let encoded = transfer.encoded
        let decoded = try ObjectTransfer.decode(encoded)
        #expect(decoded == transfer)
        #expect(decoded.digest == bytes.digest)
        #expect(decoded.bytes.storedBytes == Self.chunk + 17, "zero chunks are not stored on arrival either")
    }
}
