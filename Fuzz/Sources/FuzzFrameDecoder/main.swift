import CarillonWire

// SwiftPM's `main` replaces libFuzzer's, so hand control to libFuzzer's driver.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

/// Decodes one input; on success walks every section and embedded frame, so
/// every accessor runs over fuzzed bytes under AddressSanitizer.
func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    guard let view = try? FrameView.decode(bytes) else { return 0 }
    // Fold every field into `sum` with wrapping arithmetic: the harness must not trap on values the decoder accepts.
    var sum: UInt64 = 0
    for message in view.messages { sum &+= message.sequence &+ UInt64(message.payload.count) }
    for entry in view.positionEntries { sum &+= entry.receivedBelowRound &+ UInt64(entry.rank) }
    for nak in view.nakRanges {
        guard nak.firstRound <= nak.lastRound else { fatalError("decoder accepted an inverted NAK range") }
        sum &+= nak.lastRound &- nak.firstRound
    }
    for range in view.silentRanges {
        guard range.firstRound <= range.lastRound else { fatalError("decoder accepted an inverted silent range") }
        sum &+= range.firstRound
    }
    for embedded in view.embeddedFrames {
        // Validated with the outer frame: decoding it again must succeed.
        guard let inner = try? FrameView.decode(embedded) else { fatalError("embedded frame failed re-validation") }
        for message in inner.messages { sum &+= UInt64(message.payload.count) }
    }
    guard view.authenticatedBytes.count + view.tag.count == size else { fatalError("frame parts do not add up to the datagram") }
    return sum == 0xDEAD_BEEF_DEAD_BEEF ? 1 : 0
}

func runFuzzer() {
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    _ = LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzOne(data, size) }
}

runFuzzer()
