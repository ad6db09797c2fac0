// Two members of one Carillon bus in one process, on real UDP sockets on
// loopback. Each broadcasts N messages; both must deliver all 2N in one
// identical order. Prints a summary and exits 0, or prints why not and exits 1
// (also when the deliveries take longer than 30 seconds).
//
//   swift run TwoMembers              # 100 messages each, ports the kernel picks
//   swift run TwoMembers 1000 7400    # 1000 messages each, ports 7400 and 7401
//
// `twoMembers` is what an application writes; the lines before it turn its
// error into a message and exit status 1.
//
// README.md ("Using the library") shows the lines between the markers;
// tools/check-readme-example.sh keeps the two the same.

// BEGIN README SNIPPET
import Carillon
import Glibc  // exit: the standard library has none

let arguments = CommandLine.arguments.dropFirst()
do {
    print(
        try await twoMembers(
            messagesEach: arguments.first.flatMap { Int($0) } ?? 100,
            basePort: arguments.dropFirst().first.flatMap { UInt16($0) }))
} catch {
    print("FAILED: \(error)")
    exit(1)
}

/// Starts two members on 127.0.0.1 (ports `basePort` and `basePort + 1`, or
/// ports the kernel picks), broadcasts `perMember` messages from each, waits
/// at most 30 seconds until both delivered all of them, and checks the order.
func twoMembers(messagesEach perMember: Int, basePort: UInt16?) async throws -> String {
    // Every member is given the same list of endpoints (node i is endpoints[i]),
    // the same start time and the same cluster key.
    let endpoints =
        try basePort.map { [UDPEndpoint("127.0.0.1:\($0)")!, UDPEndpoint("127.0.0.1:\($0 + 1)")!] }
        ?? freeLoopbackEndpoints(count: 2)
    let key = try FrameAuthenticator(hexKey: FrameAuthenticator.generateHexKey())
    let startNanos = MemberClock.viewNanos()
    var members: [Member] = []
    var deliveries: [AsyncStream<DeliveredMessage>] = []
    for node in endpoints.indices {
        // 1 ms rounds and a blocking agent: two members share this process's cores gently.
        var configuration = try MemberConfiguration(
            node: node, nodes: endpoints, roundPeriodNanos: 1_000_000,
            startNanos: startNanos, authentication: .clusterKey(key))
        configuration.idleStrategy = .blocking
        let (member, stream) = try Member.withDeliveryStream(configuration: configuration)
        members.append(member)
        deliveries.append(stream)
    }
    let began = ContinuousClock.now
    for member in members { try member.start() }

    // Each member broadcasts; `broadcast(waitingFor:)` waits while its send buffer is full.
    for index in 0..<perMember {
        for (node, member) in members.enumerated() {
            _ = try await member.broadcast(waitingFor: Array("node \(node) message \(index)".utf8))
        }
    }

    // Wait, at most 30 seconds, until every member has delivered every message.
    let expected = members.count * perMember
    let delivered = await first(expected, of: deliveries, within: .seconds(30))
    let elapsed = ContinuousClock.now - began
    let reports = members.map { $0.stop() }

    // Every member delivered the same messages in the same order, each
    // sender's once each and in the order it sent them.
    var problems: [String] = []
    for (node, messages) in delivered.enumerated() where messages.count != expected {
        problems.append("node \(node) delivered \(messages.count) of \(expected) messages within 30 s")
    }
    if let index = delivered[0].indices.first(where: { $0 < delivered[1].count && delivered[0][$0] != delivered[1][$0] }) {
        problems.append("the members' orders differ at delivery \(index)")
    }
    for node in members.indices {
        let sent = delivered[0].filter { $0.sender == node }.map { String(decoding: $0.payload, as: UTF8.self) }
        if sent != (0..<perMember).map({ "node \(node) message \($0)" }) {
            problems.append("node \(node)'s messages were not delivered once each in the order it sent them")
        }
    }
    guard problems.isEmpty else { throw ExampleFailure(problems: problems, reports: reports) }
    return "2 members on \(endpoints.map(\.description).joined(separator: " and ")) delivered \(expected) of \(expected) messages each, "
        + "in one order, in \(elapsed); NAKs sent: \(reports.map(\.ordering.naksSent)), views installed: \(reports.map(\.membership.viewsInstalled))"
}
// END README SNIPPET

/// What went wrong, and each member's stop report.
struct ExampleFailure: Error, CustomStringConvertible {
    var problems: [String]
    var reports: [StopReport]
    var description: String {
        problems.joined(separator: "; ") + reports.enumerated().map { "\nnode \($0.offset): \($0.element)" }.joined()
    }
}

/// `count` free UDP ports on 127.0.0.1, found by binding port 0 and releasing
/// it (another process could take one in between: the members bind them at once).
func freeLoopbackEndpoints(count: Int) throws(SystemCallError) -> [UDPEndpoint] {
    var sockets: [UDPTransport] = []
    for _ in 0..<count {
        sockets.append(try UDPTransport(options: UDPTransportOptions(bind: UDPEndpoint("127.0.0.1:0")!, peers: [])))
    }
    return sockets.map(\.localEndpoint)
}

/// The first `count` messages of each stream, or fewer from a stream that has
/// not delivered them when `timeout` has passed.
func first(_ count: Int, of streams: [AsyncStream<DeliveredMessage>], within timeout: Duration) async -> [[DeliveredMessage]] {
    await withTaskGroup(of: (Int, [DeliveredMessage])?.self) { group in
        for (index, stream) in streams.enumerated() {
            group.addTask {
                var messages: [DeliveredMessage] = []
                for await message in stream {  // ends early when the group is cancelled
                    messages.append(message)
                    if messages.count == count { break }
                }
                return (index, messages)
            }
        }
        group.addTask {
            try? await Task.sleep(for: timeout)
            return nil
        }
        var result = [[DeliveredMessage]](repeating: [], count: streams.count)
        var remaining = streams.count
        for await finished in group {
            guard let (index, messages) = finished else { group.cancelAll(); continue }  // timed out
            result[index] = messages
            remaining -= 1
            if remaining == 0 { group.cancelAll() }  // ends the timer
        }
        return result
    }
}
