import CarillonAuth
import CarillonCapture
import CarillonSchedule

// SwiftPM's `main` replaces libFuzzer's, so hand control to libFuzzer's driver.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

let key = try! FrameAuthenticator(hexKey: String(repeating: "3d", count: 32))
let schedule = try! TDMASchedule(memberCount: 3, roundPeriodNanos: 100_000, reservation: 0.5)
nonisolated(unsafe) var inputs = 0
/// Decoders kept across inputs, so the statistics see long sequences of frames.
nonisolated(unsafe) var decoders = [
    TapDecoder(format: .line, authenticator: key, runs: [SampleTraffic().run], statistics: TapStatistics(schedule: schedule)),
    TapDecoder(format: .json, authenticator: nil, statistics: TapStatistics(schedule: schedule))
]

/// carillon-tap's path for one captured packet: byte 0 picks the link type,
/// byte 1 the output (line or JSON, verbose), bytes 2–9 the capture time, the
/// rest is the packet. Everything must be reported, never trap.
func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard size >= 10, let data else { return 0 }
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    let links = LinkType.allCases
    let link = links[Int(bytes[0]) % links.count].rawValue
    let choice = Int(bytes[1])
    var time: UInt64 = 0
    for i in 2..<10 { time = time << 8 | UInt64(bytes[i]) }
    let packet = UnsafeRawBufferPointer(rebasing: bytes[10...])
    var decoder = decoders[choice & 1]
    decoder.verbose = choice & 2 != 0
    decoder.packet(timestampNanos: time, linkType: link, bytes: packet)
    // Also as a bare UDP payload, the path a frame takes after the headers.
    decoder.frame(timestampNanos: time, source: nil, payload: packet)
    if decoder.output.bytes.count > 1 << 20 { decoder.output.removeAll() }
    if choice & 0x1C == 0x1C { decoder.statistics.settle(); _ = decoder.statistics.report() }
    decoders[choice & 1] = decoder
    // Fresh decoders now and then: the statistics' tables stay small and fast.
    inputs += 1
    if inputs % 5_000 == 0 {
        decoders[0] = TapDecoder(format: .line, authenticator: key, runs: [SampleTraffic().run], statistics: TapStatistics(schedule: schedule))
        decoders[1] = TapDecoder(format: .json, authenticator: nil, statistics: TapStatistics(schedule: schedule))
    }
    return 0
}

func runFuzzer() {
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    _ = LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzOne(data, size) }
}

runFuzzer()
