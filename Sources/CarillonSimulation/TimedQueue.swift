/// Events in virtual time, earliest first; ties break by insertion order, so
/// runs are deterministic. A binary heap over any payload.
struct TimedQueue<Payload> {
    struct Entry {
        var atNanos: UInt64
        var order: UInt64
        var payload: Payload
        func precedes(_ other: Entry) -> Bool { (atNanos, order) < (other.atNanos, other.order) }
    }
    private var heap: [Entry] = []
    private var counter: UInt64 = 0

    var count: Int { heap.count }

    mutating func push(at nanos: UInt64, _ payload: Payload) {
        counter += 1
        heap.append(Entry(atNanos: nanos, order: counter, payload: payload))
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].precedes(heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Entry? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var best = parent
            if left < heap.count, heap[left].precedes(heap[best]) { best = left }
            if right < heap.count, heap[right].precedes(heap[best]) { best = right }
            guard best != parent else { break }
            heap.swapAt(parent, best)
            parent = best
        }
        return top
    }
}
