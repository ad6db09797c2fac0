@testable import CarillonMembership
import Testing

@Suite("State transfer")
struct StateTransferTests {
    static let joiner = MemberID(node: 3, incarnation: 9)
    static let view = View(epoch: 2, members: [MemberID(node: 0, incarnation: 1), joiner], startRound: 0)

    // Mutating calls stay out of `#expect`'s expansion.
    func provide(_ outgoing: inout OutgoingStateTransfer, _ state: [UInt8], forEpoch epoch: UInt32, round: UInt64, sendRounds: Int) -> Bool {
        outgoing.provide(state, forEpoch: epoch, round: round, sendRounds: sendRounds)
    }

    func chunks(_ outgoing: inout OutgoingStateTransfer, round: UInt64, view: View, chunkLimit: Int) -> [(member: MemberID, range: Range<Int>)] {
        outgoing.chunks(round: round, view: view, chunkLimit: chunkLimit)
    }

    /// Hands `chunk` (at `offset`) to the joiner; returns whether it was taken.
    func take(_ incoming: inout IncomingStateTransfer, _ chunk: ArraySlice<UInt8>, at offset: UInt64) -> Bool {
        chunk.withUnsafeBytes { incoming.receive(offset: offset, $0) }
    }

    @Test func theJoinerCompletesOnlyWhenEveryChunkArrivedInOrder() {
        var incoming = IncomingStateTransfer()
        incoming.start(round: 5)
        #expect(!incoming.isComplete, "no size announced yet")
        incoming.announce(total: 6)
        let bytes: [UInt8] = [1, 2, 3, 4, 5, 6]
        #expect(take(&incoming, bytes[0..<3], at: 0))
        #expect(!incoming.isComplete)
        // A duplicate, and a chunk past a gap, are refused.
        #expect(!take(&incoming, bytes[0..<3], at: 0))
        #expect(!take(&incoming, bytes[4..<6], at: 4))
        #expect(incoming.bytes == [1, 2, 3])
        #expect(!incoming.isComplete)
        #expect(take(&incoming, bytes[3..<6], at: 3))
        #expect(incoming.isComplete)
        #expect(incoming.bytes == bytes)
        incoming.completed(round: 7, acknowledgeRounds: 4)
        #expect(incoming.acknowledgeUntilRound == 11)
        incoming.start(round: 20)
        #expect(incoming.bytes.isEmpty && incoming.total == nil && incoming.sinceRound == 20)
    }

    @Test func anEmptyStateCompletesOnceItsSizeIsKnown() {
        var incoming = IncomingStateTransfer()
        incoming.start(round: 0)
        incoming.announce(total: 0)
        #expect(incoming.isComplete)
    }

    @Test func theDonorSendsOnlyWhatWasRequestedInItsWindowFromEachAcknowledgement() {
        var outgoing = OutgoingStateTransfer()
        #expect(!provide(&outgoing, [1], forEpoch: 2, round: 0, sendRounds: 10), "nothing requested")
        outgoing.request([Self.joiner], epoch: 2, delayRounds: 3)
        #expect(outgoing.isRequested(forEpoch: 2) && !outgoing.isRequested(forEpoch: 1))
        #expect(!provide(&outgoing, [1], forEpoch: 1, round: 0, sendRounds: 10), "another epoch")
        #expect(provide(&outgoing, Array(0..<10), forEpoch: 2, round: 100, sendRounds: 10))
        #expect(!outgoing.isRequested(forEpoch: 2))
        #expect(chunks(&outgoing, round: 102, view: Self.view, chunkLimit: 4).isEmpty, "the donor delay")
        #expect(chunks(&outgoing, round: 103, view: Self.view, chunkLimit: 4).map(\.range) == [0..<4])
        outgoing.acknowledge(node: 3, received: 4)
        #expect(chunks(&outgoing, round: 104, view: Self.view, chunkLimit: 4).map(\.range) == [4..<8])
        outgoing.acknowledge(node: 3, received: 2)  // an old acknowledgement does not move it back
        outgoing.acknowledge(node: 7, received: 10)  // nor does another node's
        #expect(chunks(&outgoing, round: 105, view: Self.view, chunkLimit: 4).map(\.range) == [4..<8])
        outgoing.acknowledge(node: 3, received: 10)
        #expect(!outgoing.isSending)
        #expect(chunks(&outgoing, round: 106, view: Self.view, chunkLimit: 4).isEmpty)
    }

    @Test func theDonorGivesUpAfterItsWindowAndSkipsJoinersNoLongerInTheView() {
        var outgoing = OutgoingStateTransfer()
        outgoing.request([Self.joiner], epoch: 2, delayRounds: 0)
        outgoing.provide([], forEpoch: 2, round: 10, sendRounds: 5)
        #expect(chunks(&outgoing, round: 10, view: Self.view, chunkLimit: 4).map(\.range) == [0..<0], "an empty state is sent once")
        let without = View(epoch: 3, members: [MemberID(node: 0, incarnation: 1)], startRound: 0)
        #expect(chunks(&outgoing, round: 11, view: without, chunkLimit: 4).isEmpty)
        #expect(outgoing.isSending)
        #expect(chunks(&outgoing, round: 15, view: Self.view, chunkLimit: 4).isEmpty)
        #expect(!outgoing.isSending, "given up at the end of the window")
    }
}
