import CarillonAuth
import CarillonWire

/// How a frame's authentication tag checked out.
///
/// Membership frames are checked under the cluster key; slot and repair
/// frames under the key of their run (`FrameAuthenticator.bound(toRun:)`,
/// docs/wire-format.md "Authentication tag"), so they can be checked only
/// once the decoder knows a run.
public enum AuthenticationStatus: String, Sendable, Hashable {
    /// The tag matches: the cluster key (membership frames) or a known run's key (slot and repair frames).
    case verified = "ok"
    /// The frame carries a tag that matches neither the key nor any known run's
    /// key: forged, altered, another cluster's, or a run the decoder was not told.
    case badTag = "bad-tag"
    /// The frame carries no tag although a key was given.
    case noTag = "no-tag"
    /// A slot or repair frame while no run is known: its tag cannot be checked
    /// yet (give `--run` or `--config`, or capture a membership frame naming the run).
    case runUnknown = "run-unknown"
    /// No key was given: the tag was not checked.
    case unchecked = "unchecked"
}

/// How carillon-tap prints each frame.
public enum TapFormat: Sendable {
    /// One line per frame, like tcpdump.
    case line
    /// One JSON object per line, for scripts.
    case json
    /// No per-frame output (statistics only, or `-w` alone).
    case quiet
}

/// Decodes captured packets with the library's wire codec (``FrameView``),
/// checks tags when it has the cluster key, prints one line (or JSON object)
/// per frame into an output buffer, and keeps the statistics. One instance per
/// capture; it allocates nothing per frame once its buffer has grown.
///
/// Tags are checked as the members check them: a membership frame under the
/// cluster key, a slot or repair frame under the key of its run. Runs become
/// known from ``init(format:authenticator:runs:statistics:)`` or
/// ``learn(run:)``, and from the `run` field of every authentic membership
/// frame. Up to ``maxRuns`` are kept, each with its key derived once; a frame
/// is tried against each (a recording may span a restart of the cluster),
/// the run that matched last first.
public struct TapDecoder {
    public var format: TapFormat
    /// Message headers and a hex/ASCII preview of each payload.
    public var verbose = false
    /// Bytes of each payload shown in verbose mode.
    public var previewBytes = 16
    /// The cluster key: membership frames' tags, and the root of every run key.
    let authenticator: FrameAuthenticator?
    /// Known runs, the one that matched last first; `runKeys[i]` is `runs[i]`'s key.
    public private(set) var runs: [UInt64] = []
    var runKeys: [FrameAuthenticator] = []
    /// Whether the one-time "run unknown" note has been printed.
    var saidRunUnknown = false
    /// What to print; the shell writes it out and clears it.
    public var output = TapOutput()
    public var statistics: TapStatistics

    /// Runs kept at most (the least recently matched is forgotten first).
    public static let maxRuns = 8

    /// - Parameters:
    ///   - authenticator: the cluster key (nil: tags are not checked).
    ///   - runs: run identities known up front (`--run`, `--config`): the
    ///     first view's `start_at_ns`, at least 1.
    public init(format: TapFormat, authenticator: FrameAuthenticator?, runs: [UInt64] = [], statistics: TapStatistics = TapStatistics()) {
        self.format = format
        self.authenticator = authenticator
        self.statistics = statistics
        for run in runs.reversed() { learn(run: run) }
    }

    /// Makes `run` known (deriving its key once); returns false when it already
    /// was, or is 0 (no run), or there is no cluster key to derive from.
    @discardableResult
    public mutating func learn(run: UInt64) -> Bool {
        guard run != 0, let authenticator, !runs.contains(run) else { return false }
        if runs.count >= Self.maxRuns {
            runs.removeLast()
            runKeys.removeLast()
        }
        runs.insert(run, at: 0)
        runKeys.insert(authenticator.bound(toRun: run), at: 0)
        return true
    }

    /// Takes one captured packet. `timestampNanos` is the capture time (realtime).
    public mutating func packet(timestampNanos: UInt64, linkType: Int32, bytes: UnsafeRawBufferPointer) {
        let datagram: UDPDatagram
        do { datagram = try PacketDissector.udp(linkType: linkType, packet: bytes) } catch {
            statistics.packetsNotUDP += 1
            if format != .quiet { problemLine(timestampNanos, nil, "not a bus datagram: \(error)") }
            return
        }
        let payload = UnsafeRawBufferPointer(rebasing: bytes[datagram.payloadOffset..<(datagram.payloadOffset + datagram.capturedPayloadLength)])
        if datagram.capturedPayloadLength < datagram.payloadLength {
            statistics.framesMalformed += 1
            if format != .quiet {
                problemLine(
                    timestampNanos, datagram.source,
                    "snapshot cut the datagram: \(datagram.capturedPayloadLength) of \(datagram.payloadLength) bytes captured")
            }
            return
        }
        frame(timestampNanos: timestampNanos, source: datagram.source, payload: payload)
    }

    /// Takes one UDP payload (a bus datagram).
    public mutating func frame(timestampNanos: UInt64, source: SocketAddress?, payload: UnsafeRawBufferPointer) {
        let view: FrameView
        do { view = try FrameView.decode(payload) } catch {
            statistics.framesMalformed += 1
            if format != .quiet { problemLine(timestampNanos, source, "malformed frame (\(payload.count) bytes): \(error)") }
            return
        }
        var auth = AuthenticationStatus.unchecked
        // The run a slot or repair frame verified under; the run a membership frame names.
        var run: UInt64?
        if view.header.kind == .membership {
            for field in view.viewFieldEntries where field.rank == ViewField.run.rawValue { run = field.value }
        }
        if let authenticator {
            if view.header.kind == .membership {
                auth = Self.status(authenticator.verify(payload))
                // Only an authentic frame teaches a run (a join request, epoch 0, names none).
                if auth == .verified, view.header.epoch != 0, let run { learn(run: run) }
            } else if Int(view.header.tagLength) != FrameAuthenticator.tagBytes {
                auth = .noTag
            } else if runKeys.isEmpty {
                auth = .runUnknown
            } else {
                auth = .badTag
                for i in runKeys.indices {
                    let result = runKeys[i].verify(payload)
                    if result == .authentic {
                        auth = .verified
                        run = runs[i]
                        if i > 0 { runs.swapAt(0, i); runKeys.swapAt(0, i) }
                        break
                    }
                    if result != .badTag { auth = Self.status(result); break }
                }
            }
        }
        let totals = FrameTotals(view)
        statistics.record(
            view, totals, timestampNanos: timestampNanos, authentication: auth,
            verifiedRun: auth == .verified && view.header.kind != .membership ? run : nil, datagramBytes: payload.count)
        switch format {
        case .quiet: return
        case .line:
            if auth == .runUnknown && !saidRunUnknown {
                saidRunUnknown = true
                problemLine(
                    timestampNanos, source,
                    "tag: run unknown (give --run or --config): slot and repair frames are sealed under the run's key and print auth=run-unknown until a run is known (an authentic membership frame names it)"
                )
            }
            line(view, totals, timestampNanos, source, auth, run)
        case .json: json(view, totals, timestampNanos, source, auth, run)
        }
        output.byte(10)
    }

    static func status(_ result: AuthenticationResult) -> AuthenticationStatus {
        switch result {
        case .authentic: return .verified
        case .badTag: return .badTag
        case .missingTag, .malformed: return .noTag
        }
    }

    // MARK: Text

    mutating func time(_ nanos: UInt64) {
        let seconds = nanos / 1_000_000_000
        let micros = (nanos % 1_000_000_000) / 1_000
        let day = seconds % 86_400
        output.padded(day / 3600, 2); output.byte(58)
        output.padded(day / 60 % 60, 2); output.byte(58)
        output.padded(day % 60, 2); output.byte(46)
        output.padded(micros, 6)
    }

    mutating func problemLine(_ timestampNanos: UInt64, _ source: SocketAddress?, _ text: String) {
        if format == .json {
            output.text("{\"s\":"); output.decimal(timestampNanos / 1_000_000_000)
            output.text(",\"ns\":"); output.decimal(timestampNanos % 1_000_000_000)
            if let source { output.text(",\"src\":\""); output.address(source); output.text("\"") }
            output.text(",\"error\":\""); output.escaped(text); output.text("\"}\n")
            return
        }
        time(timestampNanos)
        output.byte(32)
        if let source { output.address(source) } else { output.text("-") }
        output.text(" ! "); output.text(text); output.byte(10)
    }

    static func kindName(_ kind: FrameKind) -> StaticString {
        switch kind {
        case .slot: return "slot"
        case .repair: return "repair"
        case .membership: return "membership"
        }
    }

    mutating func line(
        _ view: FrameView, _ totals: FrameTotals, _ timestampNanos: UInt64, _ source: SocketAddress?, _ auth: AuthenticationStatus, _ run: UInt64?
    ) {
        let h = view.header
        time(timestampNanos)
        output.byte(32)
        if let source { output.address(source) } else { output.text("-") }
        output.byte(32); output.text(Self.kindName(h.kind))
        output.text(" e="); output.decimal(UInt64(h.epoch))
        output.text(" r="); output.decimal(h.round)
        output.text(" s="); output.decimal(UInt64(h.senderRank))
        output.text(" msgs="); output.decimal(UInt64(view.messageCount))
        output.text(" bytes="); output.decimal(UInt64(totals.payloadBytes))
        var first = true
        for entry in view.positionEntries {
            output.text(first ? " acks=" : ","); first = false
            output.decimal(UInt64(entry.rank)); output.byte(58); output.decimal(entry.receivedBelowRound)
        }
        first = true
        for nak in view.nakRanges {
            output.text(first ? " naks=" : ","); first = false
            output.decimal(UInt64(nak.rank)); output.byte(58); output.decimal(nak.firstRound)
            output.byte(45); output.decimal(nak.lastRound)
        }
        first = true
        for silent in view.silentRanges {
            output.text(first ? " silent=" : ","); first = false
            output.decimal(silent.firstRound); output.byte(45); output.decimal(silent.lastRound)
        }
        if totals.embeddedFrames > 0 { output.text(" retransmits="); output.decimal(UInt64(totals.embeddedFrames)) }
        first = true
        for suspicion in view.suspicionEntries {
            output.text(first ? " suspects=" : ","); first = false
            output.decimal(UInt64(suspicion.rank))
        }
        output.text(" auth="); output.text(auth.rawValue)
        if verbose {
            if let run { output.text(" run="); output.decimal(run) }
            for message in view.messages {
                output.text("\n    seq="); output.decimal(message.sequence)
                output.text(" len="); output.decimal(UInt64(message.payload.count))
                output.text("  ")
                let shown = min(previewBytes, message.payload.count)
                for i in 0..<shown { output.hex(message.payload[i]) }
                output.text("  |")
                for i in 0..<shown {
                    let b = message.payload[i]
                    output.byte(b >= 32 && b < 127 ? b : 46)
                }
                output.byte(124)
            }
        }
    }

    // MARK: JSON

    mutating func json(
        _ view: FrameView, _ totals: FrameTotals, _ timestampNanos: UInt64, _ source: SocketAddress?, _ auth: AuthenticationStatus, _ run: UInt64?
    ) {
        let h = view.header
        output.text("{\"s\":"); output.decimal(timestampNanos / 1_000_000_000)
        output.text(",\"ns\":"); output.decimal(timestampNanos % 1_000_000_000)
        if let source { output.text(",\"src\":\""); output.address(source); output.text("\"") }
        output.text(",\"kind\":\""); output.text(Self.kindName(h.kind))
        output.text("\",\"epoch\":"); output.decimal(UInt64(h.epoch))
        output.text(",\"round\":"); output.decimal(h.round)
        output.text(",\"slot\":"); output.decimal(UInt64(h.senderRank))
        output.text(",\"messages\":"); output.decimal(UInt64(view.messageCount))
        output.text(",\"bytes\":"); output.decimal(UInt64(totals.payloadBytes))
        output.text(",\"acks\":[")
        var first = true
        for entry in view.positionEntries {
            if !first { output.byte(44) }; first = false
            output.byte(91); output.decimal(UInt64(entry.rank)); output.byte(44); output.decimal(entry.receivedBelowRound); output.byte(93)
        }
        output.text("],\"naks\":[")
        first = true
        for nak in view.nakRanges {
            if !first { output.byte(44) }; first = false
            output.byte(91); output.decimal(UInt64(nak.rank)); output.byte(44); output.decimal(nak.firstRound)
            output.byte(44); output.decimal(nak.lastRound); output.byte(93)
        }
        output.text("],\"silent\":[")
        first = true
        for silent in view.silentRanges {
            if !first { output.byte(44) }; first = false
            output.byte(91); output.decimal(silent.firstRound); output.byte(44); output.decimal(silent.lastRound); output.byte(93)
        }
        output.text("],\"suspects\":[")
        first = true
        for suspicion in view.suspicionEntries {
            if !first { output.byte(44) }; first = false
            output.decimal(UInt64(suspicion.rank))
        }
        output.text("],\"retransmits\":"); output.decimal(UInt64(totals.embeddedFrames))
        output.text(",\"auth\":\""); output.text(auth.rawValue); output.byte(34)
        if let run { output.text(",\"run\":"); output.decimal(run) }
        output.byte(125)
    }
}

/// What a frame adds up to, counted once for both its line and the statistics.
struct FrameTotals {
    var payloadBytes = 0
    var embeddedFrames = 0

    init(_ view: FrameView) {
        for message in view.messages { payloadBytes += message.payload.count }
        for _ in view.embeddedFrames { embeddedFrames += 1 }
    }
}

/// A growable byte buffer with allocation-free number formatting.
public struct TapOutput {
    public private(set) var bytes: [UInt8] = []

    public init() { bytes.reserveCapacity(1 << 16) }

    public mutating func removeAll() { bytes.removeAll(keepingCapacity: true) }

    @inline(__always) mutating func byte(_ b: UInt8) { bytes.append(b) }

    mutating func text(_ s: StaticString) {
        s.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    mutating func text(_ s: String) { bytes.append(contentsOf: s.utf8) }

    mutating func escaped(_ s: String) {
        for b in s.utf8 {
            if b == 34 || b == 92 { bytes.append(92) }
            bytes.append(b < 32 ? 32 : b)
        }
    }

    mutating func decimal(_ value: UInt64) {
        if value < 10 { bytes.append(48 + UInt8(value)); return }
        var digits:
            (
                UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8
            ) =
                (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = value, count = 0
        withUnsafeMutableBytes(of: &digits) { buffer in
            while n > 0 { buffer[count] = 48 + UInt8(n % 10); n /= 10; count += 1 }
            for i in stride(from: count - 1, through: 0, by: -1) { bytes.append(buffer[i]) }
        }
    }

    mutating func padded(_ value: UInt64, _ width: Int) {
        var divisor: UInt64 = 1
        for _ in 1..<width { divisor *= 10 }
        var n = value % (divisor * 10)
        while divisor > 0 { bytes.append(48 + UInt8(n / divisor)); n %= divisor; divisor /= 10 }
    }

    mutating func hex(_ b: UInt8) {
        let digits: StaticString = "0123456789abcdef"
        digits.withUTF8Buffer { d in
            bytes.append(d[Int(b >> 4)])
            bytes.append(d[Int(b & 0xF)])
        }
    }

    mutating func address(_ a: SocketAddress) {
        decimal(UInt64(a.address >> 24)); byte(46)
        decimal(UInt64(a.address >> 16 & 0xFF)); byte(46)
        decimal(UInt64(a.address >> 8 & 0xFF)); byte(46)
        decimal(UInt64(a.address & 0xFF)); byte(58)
        decimal(UInt64(a.port))
    }
}
