import ArgumentParser
import CCarillonSys
import CarillonAuth
import CarillonOrdering
import CarillonRuntime
import CarillonTransport
import Dispatch
import Foundation
import Synchronization

struct Carillon: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "carillon",
        abstract: "Run members of a Carillon totally ordered bus on UDP (or RDMA).",
        discussion: """
            Examples:
              carillon demo                                   3 member processes on loopback, ordered delivery, latency summary
              carillon demo --members 5 --messages 5000 --idle busy-spin
              carillon node --config bus.json --member a      run member "a" of the bus in bus.json
              carillon node --config bus.json --member a --send 1000 --rate 500 --log a.log
              carillon node --config bus.json --member a --join   restart member "a": rejoin the running cluster
              carillon verify a.log b.log c.log               check members' logs agree (order, views, state)
              carillon lock --config bus.json --member a backup -- ./backup.sh   hold lock "backup" cluster-wide while it runs
              carillon kv add --config bus.json --member b visits 1            a replicated counter
              carillon locks --config bus.json --member c                      the lock table
              carillon obj create --config bus.json --member a --size 64MiB data/part1 > part1.cap   an owned object
              carillon obj migrate --config bus.json --member a --cap @part1.cap --to b         move it to member b
              carillon cap grant --config bus.json --member a --cap @part1.cap --rights r      a read-only capability
              carillon devices                                the RDMA devices and ports for "transport": "rdma"
            The configuration file format is in docs/configuration.md.
            """,
        subcommands: [
            Node.self, Demo.self, Verify.self, Keygen.self, Fanout.self, Lock.self, Locks.self, KV.self, Obj.self, Cap.self, Devices.self
        ])
}

func sleepNanos(_ nanos: UInt64) {
    var request = timespec(tv_sec: Int(nanos / 1_000_000_000), tv_nsec: Int(nanos % 1_000_000_000))
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0, errno == EINTR { request = remaining }
}

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a fresh random cluster key (64 hex digits) for the configuration's key_file.",
        discussion: """
            With --output the key goes to a new file of mode 0600 (an existing file is never replaced); \
            without, to standard output. Key files that group or others can read are refused.

            Examples:
              carillon keygen --output bus.key
              (umask 077 && carillon keygen > bus.key)
            """)
    @Option(name: [.short, .long], help: "Write the key to this new file (mode 0600) instead of standard output.")
    var output: String?

    func run() throws {
        let key = FrameAuthenticator.generateHexKey()
        guard let output else { return print(key) }
        do { try KeyFile.write(hexKey: key, to: output) } catch { throw ValidationError("\(error)") }
    }
}

/// Raw UDP 1→N fan-out on the same path as the bus: the baseline every
/// latency figure is a ratio against.
struct Fanout: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Baseline: the first member sends timestamped datagrams straight to the others over plain UDP; the others log arrivals.",
        discussion: """
            Same configuration file and addresses as the bus; no ordering, no authentication. The sender \
            (--send N) sends to every other member with one sendmmsg, waiting --gap-us between messages; \
            receivers block in ppoll and log "sender sequence sent_ns received_ns" per datagram.

            Examples:
              carillon fanout --config bus.json --member h1 --expect 1000 --log h1.fanout
              carillon fanout --config bus.json --member h0 --send 1000 --gap-us 1000
            """)

    @Option(help: "The bus's JSON configuration file.") var config: String
    @Option(help: "This member's name.") var member: String
    @Option(help: "Datagrams to send (sender only).") var send = 0
    @Option(help: "Pause between datagrams, microseconds.") var gapUs: Double = 1000
    @Option(help: "Payload size in bytes (at least 16).") var size = 64
    @Option(help: "Stop after receiving this many datagrams.") var expect = 0
    @Option(help: "Stop after this many seconds in any case.") var timeout: Double = 60
    @Option(help: "Write every arrival to this file.") var log: String?

    func run() throws {
        let file: ConfigFile
        do { file = try ConfigFile.load(path: config) } catch { throw ValidationError(error.description) }
        guard let rank = file.members.firstIndex(where: { $0.name == member }) else {
            throw ValidationError("\(config) has no member named \(member)")
        }
        let peers = file.members.enumerated().filter { $0.offset != rank }.map(\.element.address)
        let transport = try UDPTransport(options: UDPTransportOptions(bind: file.members[rank].address, peers: peers))
        let deadline = MemberClock.viewNanos() + UInt64(timeout * 1e9)
        var payload = [UInt8](repeating: 0x5A, count: max(size, 16))
        if send > 0 {
            // Let the receivers bind first.
            while MemberClock.viewNanos() < file.startAtNanos { sleepNanos(1_000_000) }
            for sequence in 1...send {
                payload.withUnsafeMutableBytes {
                    $0.storeBytes(of: MemberClock.viewNanos(), as: UInt64.self)
                    $0.storeBytes(of: UInt64(sequence), toByteOffset: 8, as: UInt64.self)
                }
                try payload.withUnsafeBytes { try transport.sendToAll($0) }
                sleepNanos(UInt64(gapUs * 1000))
            }
        }
        var lines: [String] = []
        lines.reserveCapacity(expect)
        while lines.count < expect, MemberClock.viewNanos() < deadline {
            _ = carillon_wait_readable(transport.descriptor, 100_000_000)
            try transport.receiveBatch { bytes, _ in
                let now = MemberClock.viewNanos()
                guard bytes.count >= 16 else { return }
                lines.append("0 \(bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) \(bytes.loadUnaligned(as: UInt64.self)) \(now)")
            }
        }
        if let log { try (lines.joined(separator: "\n") + (lines.isEmpty ? "" : "\n")).write(toFile: log, atomically: true, encoding: .utf8) }
        FileHandle.standardError.write(Data("\(member): fanout sent \(send), received \(lines.count)\n".utf8))
        if lines.count < expect { throw ExitCode(2) }
    }
}
