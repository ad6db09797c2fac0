import ArgumentParser
import CCarillonSys
import CarillonRuntime
import CarillonTransport
import Foundation

/// The raw-UDP floor: one datagram out, the same datagram back, no ordering,
/// no authentication; the ping side logs "0 seq sent_ns received_ns" per round trip.
struct UDPPingPong: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "udp-pingpong",
        abstract: "Agent for `baseline`: raw UDP ping-pong between two hosts (started by the bench).",
        discussion: """
            The echo side returns every datagram to its sender until --count datagrams or --timeout. The \
            ping side first retries until the echo answers, then sends --count datagrams one at a time, \
            each after the previous reply and --gap-us, and logs each round trip. Both block in ppoll.

            Examples:
              carillon-bench udp-pingpong --role echo --bind 10.150.0.2:7500 --count 2000
              carillon-bench udp-pingpong --role ping --bind 10.150.0.1:7500 --peer 10.150.0.2:7500 --count 2000 --log rtt.log
            """)

    @Option(help: "echo or ping.") var role: String
    @Option(help: "Local address:port.") var bind: String
    @Option(help: "The echo's address:port (ping only).") var peer: String?
    @Option(help: "Round trips.") var count = 2000
    @Option(help: "Payload bytes (at least 16).") var size = 64
    @Option(help: "Pause after each reply, microseconds.") var gapUs: Double = 1000
    @Option(help: "Give up after this many seconds.") var timeout: Double = 60
    @Option(help: "Round-trip log (ping only).") var log: String?

    func validate() throws {
        if role != "echo", role != "ping" { throw ValidationError("--role must be echo or ping") }
        if UDPEndpoint(bind) == nil { throw ValidationError("--bind must be address:port") }
        if role == "ping", peer.flatMap(UDPEndpoint.init) == nil { throw ValidationError("--role ping needs --peer address:port") }
        if size < 16 { throw ValidationError("--size must be at least 16") }
        if count < 1 { throw ValidationError("--count must be at least 1") }
    }

    func run() throws {
        _ = carillon_set_timer_slack(1)
        let transport = try UDPTransport(options: UDPTransportOptions(bind: UDPEndpoint(bind)!, peers: []))
        let deadline = MemberClock.viewNanos() + UInt64(timeout * 1e9)
        if role == "echo" {
            var echoed = 0
            var reply = [UInt8](repeating: 0, count: 65_536)
            while echoed < count, MemberClock.viewNanos() < deadline {
                _ = carillon_wait_readable(transport.descriptor, 100_000_000)
                var replies: [(UDPEndpoint, Int)] = []
                try transport.receiveBatch { bytes, datagram in
                    reply.withUnsafeMutableBytes { $0.copyMemory(from: bytes) }
                    replies.append((datagram.source, bytes.count))
                }
                for (source, length) in replies {
                    _ = try reply.withUnsafeBytes { try transport.send(UnsafeRawBufferPointer(rebasing: $0[0..<length]), to: source) }
                    if reply.withUnsafeBytes({ $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self) }) > 0 { echoed += 1 }
                }
            }
            return
        }
        let target = UDPEndpoint(peer!)!
        var payload = [UInt8](repeating: 0x5A, count: size)
        func roundTrip(_ sequence: UInt64, waitNanos: Int64) throws -> UInt64? {
            payload.withUnsafeMutableBytes {
                $0.storeBytes(of: MemberClock.viewNanos(), as: UInt64.self)
                $0.storeBytes(of: sequence, toByteOffset: 8, as: UInt64.self)
            }
            _ = try payload.withUnsafeBytes { try transport.send($0, to: target) }
            let until = MemberClock.viewNanos() + UInt64(waitNanos)
            var answered: UInt64?
            while answered == nil, MemberClock.viewNanos() < until {
                _ = carillon_wait_readable(transport.descriptor, Int64(until - MemberClock.viewNanos()))
                try transport.receiveBatch { bytes, _ in
                    let now = MemberClock.viewNanos()
                    if bytes.count >= 16, bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self) == sequence { answered = now }
                }
            }
            return answered
        }
        // Until the echo is up: sequence 0 is not logged.
        while try roundTrip(0, waitNanos: 10_000_000) == nil {
            guard MemberClock.viewNanos() < deadline else { throw ValidationError("no echo from \(target) before --timeout") }
        }
        var lines = ""
        lines.reserveCapacity(count * 48)
        var lost = 0
        for sequence in 1...UInt64(count) where MemberClock.viewNanos() < deadline {
            let sent = MemberClock.viewNanos()
            if let received = try roundTrip(sequence, waitNanos: 1_000_000_000) {
                lines += "0 \(sequence) \(sent) \(received)\n"
            } else {
                lost += 1
            }
            sleepNanos(UInt64(gapUs * 1000))
        }
        if let log { try lines.write(toFile: log, atomically: true, encoding: .utf8) }
        if lost > 0 { FileHandle.standardError.write(Data("udp-pingpong: \(lost) round trips lost\n".utf8)) }
    }
}

/// Sleeps at least `nanos` (the caller sets the timer slack).
func sleepNanos(_ nanos: UInt64) {
    var request = timespec(tv_sec: Int(nanos / 1_000_000_000), tv_nsec: Int(nanos % 1_000_000_000))
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0, errno == EINTR { request = remaining }
}
