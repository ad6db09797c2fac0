/// An owned object's bytes, held in chunks of ``chunkBytes``: a chunk no
/// write has touched is zeros and takes no memory.
///
/// Creating an object is an ordered operation applied on the thread that
/// applies the bus; a flat array would zero-fill the whole object there
/// (half a second for 512 MiB on a loaded machine — long enough to leave a
/// member out of the view). Here creation costs one slot per chunk, a write
/// fills at most the chunks it touches, and a transfer (which copies every
/// byte) builds its flat encoding on another thread
/// (``ObjectTransfer/encoded``).
public struct ObjectBytes: Sendable, Hashable, RandomAccessCollection, CustomStringConvertible {
    /// Bytes per chunk: 1 MiB.
    public static let chunkBytes = 1 << 20
    static let chunkShift = 20

    public let count: Int
    /// Each chunk's bytes, nil while it is all zeros; every chunk but the last is ``chunkBytes`` long.
    private var chunks: [[UInt8]?]

    /// `count` zero bytes, none of them stored.
    public init(zeros count: Int) {
        precondition(count >= 0, "an object's size is never negative")
        self.count = count
        chunks = Array(repeating: nil, count: (count + Self.chunkBytes - 1) >> Self.chunkShift)
    }

    /// A copy of `bytes` (chunks that are all zeros are not stored).
    public init(_ bytes: some Collection<UInt8>) {
        self.init(zeros: bytes.count)
        var start = bytes.startIndex
        for k in chunks.indices {
            let end = bytes.index(start, offsetBy: chunkLength(k))
            let piece = bytes[start..<end]
            if !piece.allSatisfy({ $0 == 0 }) { chunks[k] = Array(piece) }
            start = end
        }
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { count }

    public subscript(position: Int) -> UInt8 {
        precondition(position >= 0 && position < count, "an object byte's index is out of range")
        return chunks[position >> Self.chunkShift]?[position & (Self.chunkBytes - 1)] ?? 0
    }

    /// The bytes in `range` as one array.
    public func bytes(in range: Range<Int>) -> [UInt8] {
        precondition(range.lowerBound >= 0 && range.upperBound <= count, "an object's byte range is out of range")
        var out: [UInt8] = []
        out.reserveCapacity(range.count)
        var position = range.lowerBound
        while position < range.upperBound {
            let k = position >> Self.chunkShift
            let within = position & (Self.chunkBytes - 1)
            let n = Swift.min(chunkLength(k) - within, range.upperBound - position)
            if let chunk = chunks[k] {
                out.append(contentsOf: chunk[within..<(within + n)])
            } else {
                out.append(contentsOf: repeatElement(0, count: n))
            }
            position += n
        }
        return out
    }

    /// Overwrites `bytes.count` bytes from `offset` (the caller checks the range).
    public mutating func write(_ bytes: [UInt8], at offset: Int) {
        precondition(offset >= 0 && bytes.count <= count - offset, "a write past an object's end")
        var position = offset
        var from = 0
        while from < bytes.count {
            let k = position >> Self.chunkShift
            let within = position & (Self.chunkBytes - 1)
            let n = Swift.min(chunkLength(k) - within, bytes.count - from)
            if chunks[k] == nil { chunks[k] = Array(repeating: 0, count: chunkLength(k)) }
            chunks[k]!.replaceSubrange(within..<(within + n), with: bytes[from..<(from + n)])
            position += n
            from += n
        }
    }

    /// Calls `body` with each chunk's bytes in order (a zero chunk as a
    /// shared zero buffer), without building the whole object.
    public func forEachChunk(_ body: (UnsafeRawBufferPointer) -> Void) {
        let zeros = [UInt8](repeating: 0, count: Swift.min(count, Self.chunkBytes))
        for k in chunks.indices {
            let n = chunkLength(k)
            if let chunk = chunks[k] {
                chunk.withUnsafeBytes(body)
            } else {
                zeros.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            }
        }
    }

    /// Bytes held in memory (chunks written or received).
    public var storedBytes: Int { chunks.reduce(0) { $0 + ($1?.count ?? 0) } }

    /// The digest of the bytes (``Digest64``).
    public var digest: UInt64 {
        var d = Digest64()
        forEachChunk { d.add($0) }
        return d.value
    }

    public var description: String { "\(count) bytes (\(storedBytes) stored)" }

    private func chunkLength(_ k: Int) -> Int { Swift.min(Self.chunkBytes, count - (k << Self.chunkShift)) }

    public static func == (a: ObjectBytes, b: ObjectBytes) -> Bool {
        guard a.count == b.count else { return false }
        for k in a.chunks.indices {
            switch (a.chunks[k], b.chunks[k]) {
            case (nil, nil): continue
            case (let x?, let y?): if x != y { return false }
            case (let x?, nil), (nil, let x?): if !x.allSatisfy({ $0 == 0 }) { return false }
            }
        }
        return true
    }

    public func hash(into h: inout Hasher) {
        h.combine(count)
        for chunk in chunks {
            // Zeros hash alike whether stored or not.
            if let chunk, !chunk.allSatisfy({ $0 == 0 }) { h.combine(chunk) } else { h.combine(0 as UInt8) }
        }
    }
}
