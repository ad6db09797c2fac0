import ArgumentParser
import CarillonAuth
import CarillonCapture
import CarillonSchedule
import Dispatch
import Foundation
import Synchronization

/// `carillon-tap`: tail and decode Carillon bus traffic with libpcap, live or from files.
struct CarillonTap: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "carillon-tap",
        abstract: "Capture and decode Carillon bus traffic (libpcap): one line per frame, statistics, pcap in and out.",
        discussion: """
            Flags follow tcpdump where they apply. Without -r it captures live on -i (default: any) with \
            the BPF filter "udp port PORT" and, if given, the trailing filter expression on top. Each \
            frame is decoded by the library's own wire codec; malformed, truncated or unauthenticated \
            frames are printed with the reason. With --key-file every frame's tag is checked as the \
            members check it: membership frames under the cluster key, slot and repair frames under \
            the key of their run (the first view's start_at_ns). Give the run with --run or --config \
            (which also names the key file); an authentic membership frame teaches it too. Until a run \
            is known, slot and repair frames print auth=run-unknown, never bad-tag.

            Line format:
              TIME SRC KIND e=EPOCH r=ROUND s=SLOT msgs=N bytes=B [acks=RANK:BELOW,…] [naks=RANK:FIRST-LAST,…]
              [silent=FIRST-LAST,…] [retransmits=N] [suspects=RANK,…] auth=ok|bad-tag|no-tag|run-unknown|unchecked
              (-v adds run=RUN: the run a slot or repair frame verified under, the run a membership frame names)

            Examples:
              carillon-tap                                   tail the bus on every interface (root)
              carillon-tap -i h0 -c 100 -v                   100 frames with message headers and payload previews
              carillon-tap -r bus.pcap --key-file bus.key --stats
              carillon-tap --config bus.json                 the cluster key and run from the cluster's configuration
              carillon-tap --key-file bus.key --run 1796183437712642454
                                                             check slot and repair tags under that run's key
              carillon-tap -r restart.pcap --config old.json --config new.json -v
                                                             a recording across a restart: each frame says which run verified
              carillon-tap -w bus.pcap                       write a capture without decoding it
              carillon-tap -w bus.pcap --print               write it and print it
              carillon-tap --json -r bus.pcapng | jq .round
              carillon-tap -i any src host 10.200.0.1         only one member's frames
              carillon-tap --stats --members 3 --round-period-us 100 -r bus.pcap
                                                             with slot timing against the schedule
              carillon-tap --write-sample sample.pcap --sample-rounds 1000
                                                             a synthetic capture (tests, benchmarks)
            """)

    @Option(name: .customShort("i"), help: "Interface to capture on (any: all of them).") var interface = "any"
    @Option(name: .customShort("r"), help: "Read packets from a pcap or pcapng file (- for standard input).") var readFile: String?
    @Option(
        name: .customShort("w"),
        help: "Write the packets to a pcap file (- for standard output); without --print nothing is printed (frames are still counted for --stats).")
    var writeFile: String?
    @Option(name: .customShort("c"), help: "Stop after this many packets.") var count = 0
    @Flag(name: .customShort("n"), help: "Do not resolve addresses (never done anyway; accepted for tcpdump habits).") var numeric = false
    @Flag(name: .customShort("v"), help: "Verbose: message headers and a hex/ASCII preview of each payload.") var verbose = false
    @Flag(name: .customShort("q"), help: "No per-frame output.") var quiet = false
    @Flag(help: "One JSON object per frame.") var json = false
    @Flag(help: "With -w: also decode and print.") var print = false
    @Option(help: "The bus's UDP port.") var port: UInt16 = 7400
    @Option(help: "Cluster key file (64 hex digits): check every frame's authentication tag.") var keyFile: String?
    @Option(
        name: .customLong("run"),
        help: ArgumentHelp(
            "A run identity (the first view's start_at_ns; `carillon node` logs it as run=): check slot and repair tags under its key. Repeatable.",
            valueName: "run")) var runs: [UInt64] = []
    @Option(
        name: .customLong("config"),
        help: ArgumentHelp(
            "A cluster configuration file (JSON): its start_at_ns gives the run, its key_file the key (unless --key-file). Repeatable.",
            valueName: "bus.json")) var configs: [String] = []
    @Flag(help: "Print statistics at the end (and every --stats-interval seconds during a live capture).") var stats = false
    @Option(help: "Seconds between statistics during a live capture.") var statsInterval: Double = 10
    @Option(help: "Members in the view, for slot timing and round completeness.") var members: Int?
    @Option(help: "Round period in microseconds (with --members).") var roundPeriodUs: Double = 100
    @Option(help: "Reserved share of each round (with --members).") var reservation: Double = 0.5
    @Option(help: "Link rate in Gbit/s, for slot capacity.") var linkGbit: Double = 10
    @Option(help: "Write a synthetic capture of bus traffic to this file and exit.") var writeSample: String?
    @Option(help: "Rounds in the synthetic capture.") var sampleRounds = 1000
    @Option(help: "Members in the synthetic capture.") var sampleMembers = 3
    @Argument(help: "A BPF filter expression (tcpdump syntax) applied on top of the bus port.") var filter: [String] = []

    func validate() throws {
        if count < 0 { throw ValidationError("-c must not be negative") }
        if !(statsInterval > 0 && statsInterval <= 86_400) { throw ValidationError("--stats-interval must be in (0, 86400] seconds") }
        if !(roundPeriodUs > 0 && roundPeriodUs <= 1_000_000) { throw ValidationError("--round-period-us must be in (0, 1000000]") }
        if !(reservation > 0 && reservation <= 1) { throw ValidationError("--reservation must be in (0, 1]") }
        if !(linkGbit > 0 && linkGbit <= 10_000) { throw ValidationError("--link-gbit must be in (0, 10000]") }
        if writeFile == "-", print || json || verbose {
            throw ValidationError("-w - writes the capture to standard output; it cannot also carry decoded lines (write to a file, or drop --print)")
        }
        if let members, !(1...4096).contains(members) { throw ValidationError("--members must be 1...4096") }
        if json && verbose { throw ValidationError("-v and --json do not go together") }
        if sampleRounds < 1 || sampleMembers < 1 { throw ValidationError("--sample-rounds and --sample-members must be at least 1") }
        if runs.contains(0) { throw ValidationError("--run must be at least 1 (a run identity is the first view's start_at_ns, and at least 1)") }
        if !runs.isEmpty, keyFile == nil, configs.isEmpty { throw ValidationError("--run needs the cluster key: give --key-file (or --config)") }
    }

    func run() throws {
        var authenticator: FrameAuthenticator?
        if let keyFile {
            do { authenticator = try KeyFile.load(path: keyFile) } catch { throw ValidationError("--key-file: \(error)") }
        }
        var knownRuns = runs
        for path in configs {
            let config: ClusterConfigRun
            do { config = try ClusterConfigRun.load(path: path) } catch { throw ValidationError("--config: \(error)") }
            if authenticator == nil {
                do { authenticator = try config.loadKey() } catch { throw ValidationError("--config: \(path): \(error)") }
            }
            knownRuns.append(config.runIdentity)
        }
        if !configs.isEmpty, authenticator == nil {
            FileHandle.standardError.write(Data("carillon-tap: the configuration says \"authentication\": \"off\": tags are not checked\n".utf8))
        }
        if let writeSample {
            var sample = SampleTraffic(members: sampleMembers, authenticator: authenticator)
            if let run = knownRuns.first { sample.run = run }
            sample.port = port
            let written = try sample.write(rounds: sampleRounds, to: writeSample)
            FileHandle.standardError.write(
                Data(
                    "carillon-tap: wrote \(written) packets (a membership frame naming run \(sample.run), then \(sampleRounds) rounds × \(sampleMembers) members) to \(writeSample)\n"
                        .utf8))
            return
        }

        let capture: PacketCapture
        if let readFile { capture = try PacketCapture.offline(path: readFile) } else { capture = try PacketCapture.live(interface: interface) }
        let expression = filter.isEmpty ? "udp port \(port)" : "(udp port \(port)) and (\(filter.joined(separator: " ")))"
        try capture.setFilter(expression)
        if let writeFile { try capture.write(to: writeFile) }

        var schedule: TDMASchedule?
        if let members {
            do { schedule = try TDMASchedule(memberCount: members, roundPeriodNanos: UInt64(roundPeriodUs * 1000), reservation: reservation) } catch {
                throw ValidationError("schedule: \(error)")
            }
        }
        var statistics = TapStatistics(schedule: schedule)
        statistics.linkBitsPerSecond = linkGbit * 1e9
        let format: TapFormat = quiet || (writeFile != nil && !print) ? .quiet : json ? .json : .line
        var decoder = TapDecoder(format: format, authenticator: authenticator, runs: knownRuns, statistics: statistics)
        decoder.verbose = verbose
        let toStandardOutput = writeFile == "-"
        if readFile == nil {
            FileHandle.standardError.write(
                Data(
                    "carillon-tap: listening on \(interface), link type \(capture.linkType), filter \"\(expression)\"\(writeFile.map { ", writing \($0)" } ?? "")\n"
                        .utf8))
        }

        // SIGINT/SIGTERM end a live capture cleanly (statistics, flushed file).
        let stop = Atomic<Bool>(false)
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let sources = [SIGINT, SIGTERM].map { number in
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                stop.store(true, ordering: .relaxed); capture.breakLoop()
            }
            source.resume()
            return source
        }
        defer { sources.forEach { $0.cancel() } }

        let out = FileHandle.standardOutput
        var nextStats = readFile == nil && stats ? DispatchTime.now().uptimeNanoseconds + UInt64(statsInterval * 1e9) : .max
        func flush() {
            guard !decoder.output.bytes.isEmpty, !toStandardOutput else { decoder.output.removeAll(); return }
            decoder.output.bytes.withUnsafeBytes { out.write(Data($0)) }
            decoder.output.removeAll()
        }
        let linkType = capture.linkType
        let live = readFile == nil
        let read = try capture.run(count: count) { packet, bytes in
            if packet.wireLength >= 0 {
                decoder.packet(timestampNanos: packet.timestampNanos, linkType: linkType, bytes: bytes)
            }
            if decoder.output.bytes.count >= 1 << 16 || (live && !decoder.output.bytes.isEmpty) { flush() }
            if DispatchTime.now().uptimeNanoseconds >= nextStats {
                nextStats = DispatchTime.now().uptimeNanoseconds + UInt64(statsInterval * 1e9)
                FileHandle.standardError.write(Data((decoder.statistics.report() + "\n").utf8))
            }
            return !stop.load(ordering: .relaxed)
        }
        flush()
        if stats {
            decoder.statistics.settle()
            FileHandle.standardError.write(Data((decoder.statistics.report() + "\n").utf8))
        }
        if live, let kernel = capture.kernelStatistics {
            FileHandle.standardError.write(
                Data(
                    "carillon-tap: \(read) packets captured, \(kernel.received) received by the filter, \(kernel.dropped) dropped by the kernel\n"
                        .utf8))
        }
    }
}

extension CaptureError: LocalizedError {
    public var errorDescription: String? { description }
}
