import CarillonBulk
import CarillonClient
import CarillonMembership
import CarillonRuntime
import CarillonServiceNode
import CarillonServices
import CarillonTransport
import Foundation
import Testing

/// Loopback ports `p` whose `p + 1` is free too (the bulk channel's port beside the bus's).
func freeLoopbackPortPairs(_ count: Int) throws -> [UDPEndpoint] {
    var held: [UDPTransport] = []
    var chosen: [UDPEndpoint] = []
    var attempts = 0
    while chosen.count < count {
        attempts += 1
        guard attempts < 1000 else { throw ServiceCallError(.timedOut, "no free pair of loopback ports") }
        let port = UInt16.random(in: 20_000...60_000)
        guard let bus = try? UDPTransport(options: UDPTransportOptions(bind: UDPEndpoint("127.0.0.1:\(port)")!, peers: [])) else { continue }
        guard let bulk = try? UDPTransport(options: UDPTransportOptions(bind: UDPEndpoint("127.0.0.1:\(port + 1)")!, peers: [])) else { continue }
        held += [bus, bulk]
        chosen.append(bus.localEndpoint)
    }
    return chosen
}

/// Owned objects on real UDP sockets in one process: three members, each
/// with a ServiceNode and a bulk channel (the bus port + 1) the objects'
/// bytes migrate over. Idle strategy `blocking` (three agents share two
/// cores). Every wait is bounded; no timing is asserted.
@Suite("Loopback owned objects (real UDP sockets and bulk channels, one process)", .serialized)
struct LoopbackObjectTests {
    final class Cluster {
        let members: [Member]
        let services: [ServiceNode]
        let channels: [BulkChannel]

        init() throws {
            let endpoints = try freeLoopbackPortPairs(3)
            let start = MemberClock.viewNanos()
            var members: [Member] = [], services: [ServiceNode] = [], channels: [BulkChannel] = []
            for rank in 0..<3 {
                var configuration = try MemberConfiguration(
                    node: rank, nodes: endpoints, roundPeriodNanos: 200_000, startNanos: start, authentication: .clusterKey(testKey))
                configuration.idleStrategy = .blocking
                configuration.tolerateSlowAgents()
                let node = ServiceNode()
                let member = try Member(configuration: configuration, onDelivery: node.deliver)
                let channel = try BulkChannel(member: member) { source, _, bytes in node.bulkArrived(source: source, bytes: bytes) }
                node.attach(to: member, bulk: channel)
                members.append(member)
                services.append(node)
                channels.append(channel)
            }
            for member in members { try member.start() }
            for channel in channels { try channel.start() }
            self.members = members
            self.services = services
            self.channels = channels
        }

        func stop() {
            for s in services { s.stop() }
            for c in channels { _ = c.stop() }
            for m in members { _ = m.stop() }
        }
    }

    func bounded<T: Sendable>(seconds: Double = 30, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let once = OnceBox<T>()
        return try await withCheckedThrowingContinuation { continuation in
            once.set(continuation)
            Task { do { once.finish(.success(try await body())) } catch { once.finish(.failure(error)) } }
            Task {
                try? await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
                once.finish(.failure(ServiceCallError(.timedOut, "no answer within \(seconds) s")))
            }
        }
    }

    func refusal(_ body: @escaping @Sendable () async throws -> Void) async throws -> ServiceStatus? {
        do {
            try await bounded { try await body() }
            return nil
        } catch let error as ServiceCallError where error.status != .timedOut {
            return error.status
        }
    }

    @Test func anObjectMovesWithItsBytesAndAWriteOrderedDuringTheMoveLandsAtTheTarget() async throws {
        let cluster = try Cluster()
        defer { cluster.stop() }
        let a = cluster.services[0].openSession(), b = cluster.services[1].openSession(), c = cluster.services[2].openSession()
        let size: UInt64 = 1 << 20
        let cap = try await bounded { try await a.createObject("data/part", size: size) }
        #expect(cap.rights == .all && cap.name == "data/part")
        let v1 = try await bounded { try await b.writeObject(cap, at: 1000, Array("hello".utf8)) }
        // A read at another member is routed to the owner (node 0) and answered through the bus.
        let read = try await bounded { try await c.readObject(cap, at: 1000, length: 5) }
        #expect(read.bytes == Array("hello".utf8) && read.version == v1)

        // Migrate to node 2 while node 1 writes: whatever the bus orders
        // during the freeze waits and is applied by the new owner.
        async let moved = bounded { try await a.migrateObject(cap, to: .node(2)) }
        async let late = bounded { try await b.writeObject(cap, at: size - 5, Array("world".utf8)) }
        let (owner, _) = try await moved
        let lateVersion = try await late
        #expect(owner.node == 2)
        let location = try await bounded { try await b.locateObject("data/part") }
        #expect(location.owner.node == 2 && location.state == "active")
        #expect(location.version == lateVersion)
        let end = try await bounded { try await a.readObject(cap, at: size - 5, length: 5) }
        #expect(end.bytes == Array("world".utf8))
        let first = try await bounded { try await a.readObject(cap, at: 1000, length: 5) }
        #expect(first.bytes == Array("hello".utf8), "the bytes written before the move moved with it")
        // Only the owner holds the bytes now (no backups).
        try await bounded { _ = try await c.locateObject("data/part") }
        #expect(cluster.services[0].heldObject("data/part") == nil)
        #expect(cluster.services[2].heldObject("data/part")?.bytes.count == Int(size))
        #expect(cluster.services[2].objectCounters?.committed == 1)
        #expect(cluster.services.allSatisfy { ($0.objectCounters?.missingCopies ?? -1) == 0 })
    }

    @Test func capabilitiesAreCheckedOnTheBus() async throws {
        let cluster = try Cluster()
        defer { cluster.stop() }
        let a = cluster.services[0].openSession(), b = cluster.services[1].openSession()
        let cap = try await bounded { try await a.createObject("secret", size: 4096, backups: 1) }
        let reader = try await bounded { try await a.grant(cap, rights: .read) }
        #expect(reader.rights == .read)
        _ = try await bounded { try await b.readObject(reader, at: 0, length: 16) }
        #expect(try await refusal { _ = try await b.writeObject(reader, at: 0, [1]) } == .forbidden, "a read capability cannot write")
        #expect(try await refusal { _ = try await b.grant(reader, rights: .read) } == .forbidden, "nor delegate")
        // A capability widened by hand (rights changed, tag kept) is forged.
        let widened = {
            var c = reader
            c.rights = .all
            return c
        }()
        #expect(try await refusal { _ = try await b.writeObject(widened, at: 0, [1]) } == .forbidden)
        // Revoked at one position: refused from there on, at every member.
        try await bounded { try await a.revoke(reader.id, using: cap) }
        #expect(try await refusal { _ = try await b.readObject(reader, at: 0, length: 1) } == .forbidden)
        // The creator's capability still works, and a name without one gets nothing but its location.
        _ = try await bounded { try await b.writeObject(cap, at: 0, [7]) }
        let location = try await bounded { try await b.locateObject("secret") }
        #expect(location.owner.node == 0 && location.backups.map(\.node) == [1])
        #expect(cluster.services[1].heldObject("secret")?.bytes.first == 7, "the backup applied the write")
        // A lock behind capabilities: refused without one, granted with one.
        let lockCap = try await bounded { try await a.protectLock("printer") }
        #expect(lockCap.kind == .lock)
        #expect(try await refusal { _ = try await b.acquire("printer", wait: false) } == .forbidden)
        let grant = try await bounded { try await b.acquire("printer", wait: false, capability: lockCap) }
        #expect(grant != nil)
        try await bounded { try await b.release("printer", capability: lockCap) }
    }
}
