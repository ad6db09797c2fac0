import CarillonTransport
import CarillonVerbs
import Dispatch
import Glibc
import Testing

/// Free UDP ports on 127.0.0.1 (the rendezvous sockets bind them right after).
func freePorts(_ count: Int) throws -> [UDPEndpoint] {
    let sockets = try (0..<count).map { _ in try UDPTransport(options: UDPTransportOptions(bind: UDPEndpoint("127.0.0.1:0")!, peers: [])) }
    return sockets.map(\.localEndpoint)
}

/// `count` verbs transports on one fake fabric, their addresses exchanged over real loopback UDP.
func fakeCluster(
    _ count: Int, fabric: FakeFabric, maxFrameBytes: Int = 1472, sendBuffers: Int = 16, receiveBuffers: Int = 32, maxInlineBytes: Int = 64
) throws -> [VerbsTransport] {
    let rendezvous = try freePorts(count)
    let transports = try (0..<count).map { rank in
        var options = VerbsTransportOptions(rank: rank, rendezvous: rendezvous, maxFrameBytes: maxFrameBytes)
        options.sendBuffers = sendBuffers
        options.receiveBuffers = receiveBuffers
        return try VerbsTransport(queue: fabric.makeQueue(queuePair: UInt32(0x100 + rank), maxInlineBytes: maxInlineBytes), options: options)
    }
    // Each one's first hello may have gone out before a peer's socket existed: exchange until all are known.
    for t in transports { #expect(t.awaitPeers(timeoutNanos: 5_000_000_000)) }
    for t in transports { #expect(t.awaitPeers(timeoutNanos: 5_000_000_000)) }
    return transports
}

/// Polls `transport` until `count` frames arrived or a bound passes.
func receive(_ count: Int, at transport: VerbsTransport, timeoutNanos: UInt64 = 5_000_000_000) -> [([UInt8], Int?)] {
    var frames: [([UInt8], Int?)] = []
    let deadline = VerbsTransport.monotonicNanos() + timeoutNanos
    while frames.count < count, VerbsTransport.monotonicNanos() < deadline {
        _ = try? transport.receiveFrames { bytes, frame in frames.append((Array(bytes), frame.sourceRank)) }
    }
    return frames
}

@Suite("Verbs transport (the pool, ring and completions over a fake of the verbs)", .serialized)
struct VerbsTransportTests {
    @Test func framesArriveWholeWithTheirSourceAndTheGRHStripped() throws {
        let fabric = FakeFabric()
        let ts = try fakeCluster(3, fabric: fabric)
        let small = Array("hello".utf8)  // inline
        let large = (0..<1200).map { UInt8(truncatingIfNeeded: $0 &* 7) }  // from a registered buffer
        try small.withUnsafeBytes { try ts[0].sendToAll(copying: $0) }
        try large.withUnsafeBytes { try ts[2].sendToAll(copying: $0) }
        let at1 = receive(2, at: ts[1])
        #expect(at1.map(\.0) == [small, large])
        #expect(at1.map(\.1) == [0, 2])
        let at0 = receive(1, at: ts[0])
        #expect(at0.map(\.0) == [large] && at0.first?.1 == 2)
        #expect(fabric.counts.unregisteredAccesses == 0)
        #expect(ts[0].verbsCounters.inlineSends == 2, "a 5-byte frame is sent inline, to each of two peers")
    }

    @Test func aBufferIsNotReusedBeforeItsSendsComplete() throws {
        let fabric = FakeFabric()
        let ts = try fakeCluster(2, fabric: fabric, sendBuffers: 4)
        fabric.hold(true)
        var sent: [[UInt8]] = []
        // Four non-inline frames take the four buffers; the fifth has none: backpressure.
        for i in 0..<5 {
            let frame = [UInt8](repeating: UInt8(i + 1), count: 500)
            let taken = try ts[0].send(toRank: 1) { buffer in
                buffer.copyBytes(from: frame)
                return frame.count
            }
            if taken { sent.append(frame) }
            #expect(taken == (i < 4), "frame \(i)")
        }
        #expect(ts[0].verbsCounters.noSendBuffer == 1)
        fabric.hold(false)
        // Completions free the buffers again; what arrives is what was written, not a later frame.
        #expect(receive(4, at: ts[1]).map(\.0) == sent)
        let again = try ts[0].send(toRank: 1) { buffer in
            buffer.storeBytes(of: 9, as: UInt8.self)
            return 100
        }
        #expect(again)
        #expect(fabric.counts.unregisteredAccesses == 0)
    }

    @Test func aFullSendQueueIsBackpressureForOneMemberAndALossForAll() throws {
        let fabric = FakeFabric()
        let rendezvous = try freePorts(2)
        let ts = try (0..<2).map { rank in
            try VerbsTransport(
                queue: fabric.makeQueue(queuePair: UInt32(0x400 + rank), maxInlineBytes: 16, sendQueueDepth: 2),
                options: VerbsTransportOptions(rank: rank, rendezvous: rendezvous, maxFrameBytes: 512))
        }
        #expect(ts[0].awaitPeers(timeoutNanos: 5_000_000_000) && ts[1].awaitPeers(timeoutNanos: 5_000_000_000))
        fabric.hold(true)
        let frame = [UInt8](repeating: 7, count: 100)
        func offer() throws -> Bool {
            try ts[0].send(toRank: 1) { buffer in
                buffer.copyBytes(from: frame)
                return frame.count
            }
        }
        #expect(try offer() && offer())
        #expect(try !offer(), "the send queue is full: not taken, offered again later")
        try frame.withUnsafeBytes { try ts[0].sendToAll(copying: $0) }
        #expect(ts[0].counters.datagramsNotSent == 2 && ts[0].verbsCounters.sendQueueFull == 2)
        fabric.hold(false)
        #expect(try offer())
        #expect(receive(3, at: ts[1]).count == 3)
    }

    @Test func theReceiveRingIsPostedAgainAfterEachFrame() throws {
        let fabric = FakeFabric()
        let ts = try fakeCluster(2, fabric: fabric, receiveBuffers: 8)
        // Five times the ring, taken as they come: none lost.
        for i in 0..<40 {
            try [UInt8(i), 1, 2, 3].withUnsafeBytes { try ts[0].sendToAll(copying: $0) }  // [UInt8]
            #expect(receive(1, at: ts[1]).first?.0 == [UInt8(i), 1, 2, 3])
        }
        // Twelve without taking any in: eight land, four find no posted receive (UD drops them, the protocol repairs).
        for i in 0..<12 { try [UInt8(i)].withUnsafeBytes { try ts[0].sendToAll(copying: $0) } }
        // (A bounded wait for frames that must not come.)
        #expect(receive(12, at: ts[1], timeoutNanos: 200_000_000).count == 8)
        #expect(fabric.counts.droppedNoReceive == 4)
    }

    @Test func aFrameLargerThanThePortsMTUIsAClearError() throws {
        let fabric = FakeFabric()
        let rendezvous = try freePorts(2)
        #expect(throws: VerbsError.frameLargerThanMTU(frameBytes: 1472, mtuBytes: 1024)) {
            _ = try VerbsTransport(
                queue: fabric.makeQueue(queuePair: 7, maxMessageBytes: 1024),
                options: VerbsTransportOptions(rank: 0, rendezvous: rendezvous, maxFrameBytes: 1472))
        }
        #expect(VerbsError.frameLargerThanMTU(frameBytes: 1472, mtuBytes: 1024).description.contains("lower max_frame_bytes to 1024"))
    }

    @Test func framesAreByteIdenticalOverUDPAndVerbs() throws {
        // The same frames through both transports arrive with the same bytes and the same source rank.
        let frames: [[UInt8]] = [[1], Array("carillon".utf8), (0..<1472).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) }]
        let endpoints = try freePorts(2)
        let udp = try (0..<2).map { try UDPTransport(options: UDPTransportOptions(members: endpoints, rank: $0)) }
        let verbs = try fakeCluster(2, fabric: FakeFabric())
        var overUDP: [([UInt8], Int?)] = []
        for frame in frames {
            try frame.withUnsafeBytes { try udp[0].sendToAll(copying: $0) }
            try frame.withUnsafeBytes { try verbs[0].sendToAll(copying: $0) }
        }
        let deadline = VerbsTransport.monotonicNanos() + 5_000_000_000
        while overUDP.count < frames.count, VerbsTransport.monotonicNanos() < deadline {
            _ = try udp[1].receiveFrames { bytes, frame in overUDP.append((Array(bytes), frame.sourceRank)) }
        }
        let overVerbs = receive(frames.count, at: verbs[1])
        #expect(overUDP.map(\.0) == frames)
        #expect(overVerbs.map(\.0) == frames)
        #expect(overUDP.map(\.1) == [0, 0, 0] && overVerbs.map(\.1) == [0, 0, 0])
    }
}

@Suite("Verbs rendezvous (hellos and the peer table)")
struct VerbsRendezvousTests {
    static func address(_ qpn: UInt32) -> VerbsAddress {
        VerbsAddress(gid: (0..<16).map { UInt8($0) }, lid: 7, queuePair: qpn, queueKey: 0x4341_524C)
    }

    @Test func aHelloRoundTripsAndGarbageIsRefused() {
        let hello = VerbsHello(rank: 3, memberCount: 5, answerMe: true, start: 0x1122_3344_5566_7788, address: Self.address(0xABCDE))
        let bytes = hello.encoded
        #expect(bytes.count == VerbsHello.encodedBytes)
        #expect(bytes.withUnsafeBytes { VerbsHello($0) } == hello)
        #expect(Array(bytes.dropLast()).withUnsafeBytes { VerbsHello($0) } == nil)
        var flags = bytes
        flags[8] = 2
        #expect(flags.withUnsafeBytes { VerbsHello($0) } == nil)
        #expect(Array("CVH2".utf8 + bytes.dropFirst(4)).withUnsafeBytes { VerbsHello($0) } == nil)
    }

    @Test func aRestartedPeerReplacesItsAddressAndALateHelloDoesNot() {
        var table = VerbsPeerTable(rank: 0, memberCount: 3)
        #expect(!table.complete)
        #expect(
            table.learn(VerbsHello(rank: 1, memberCount: 3, answerMe: true, start: 10, address: Self.address(11))) == .learnt(rank: 1, replaced: nil))
        #expect(
            table.learn(VerbsHello(rank: 2, memberCount: 3, answerMe: false, start: 10, address: Self.address(12))) == .learnt(rank: 2, replaced: nil)
        )
        #expect(table.complete)
        #expect(table.learn(VerbsHello(rank: 1, memberCount: 3, answerMe: true, start: 10, address: Self.address(11))) == .unchanged(answer: true))
        // Rank 1 restarted: a new queue pair, a later start.
        #expect(
            table.learn(VerbsHello(rank: 1, memberCount: 3, answerMe: true, start: 20, address: Self.address(21)))
                == .learnt(rank: 1, replaced: Self.address(11)))
        #expect(table.rank(ofQueuePair: 21) == 1 && table.rank(ofQueuePair: 11) == nil)
        // The old start's hello, late: ignored.
        #expect(table.learn(VerbsHello(rank: 1, memberCount: 3, answerMe: true, start: 10, address: Self.address(11))) == .ignored)
        // Another bus, our own rank, a rank out of range: ignored.
        #expect(table.learn(VerbsHello(rank: 1, memberCount: 4, answerMe: true, start: 30, address: Self.address(31))) == .ignored)
        #expect(table.learn(VerbsHello(rank: 0, memberCount: 3, answerMe: true, start: 30, address: Self.address(31))) == .ignored)
        #expect(table.learn(VerbsHello(rank: 3, memberCount: 3, answerMe: true, start: 30, address: Self.address(31))) == .ignored)
    }

    @Test func aRestartedTransportIsLearntByItsPeers() throws {
        let fabric = FakeFabric()
        let rendezvous = try freePorts(2)
        let first = try VerbsTransport(
            queue: fabric.makeQueue(queuePair: 0x200), options: VerbsTransportOptions(rank: 0, rendezvous: rendezvous, maxFrameBytes: 512))
        var second: VerbsTransport? = try VerbsTransport(
            queue: fabric.makeQueue(queuePair: 0x201), options: VerbsTransportOptions(rank: 1, rendezvous: rendezvous, maxFrameBytes: 512))
        // Rank 0 hears rank 1's first hello and answers it.
        #expect(first.awaitPeers(timeoutNanos: 5_000_000_000) && second!.awaitPeers(timeoutNanos: 5_000_000_000))
        #expect(first.peers.peers[1]?.address.queuePair == 0x201)
        second = nil  // rank 1 stops; a new start of it has a new queue pair
        let restarted = try VerbsTransport(
            queue: fabric.makeQueue(queuePair: 0x301), options: VerbsTransportOptions(rank: 1, rendezvous: rendezvous, maxFrameBytes: 512))
        // Rank 0 learns the new address from the hello while it polls for frames, and answers it.
        let deadline = VerbsTransport.monotonicNanos() + 5_000_000_000
        while first.peers.peers[1]?.address.queuePair != 0x301, VerbsTransport.monotonicNanos() < deadline {
            _ = try first.receiveFrames { _, _ in }
        }
        #expect(first.peers.peers[1]?.address.queuePair == 0x301)
        #expect(restarted.awaitPeers(timeoutNanos: 5_000_000_000))
        try ([4, 2] as [UInt8]).withUnsafeBytes { try first.sendToAll(copying: $0) }
        #expect(receive(1, at: restarted).first?.0 == [4, 2])
    }
}
