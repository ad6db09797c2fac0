import CarillonAuth
import CarillonWire

/// How a frame's authentication tag checked out.
public enum AuthenticationStatus: String, Sendable, Hashable {
    /// The tag matches the cluster key.
    case verified = "ok"
    /// The frame carries a tag that does not match the key: forged, altered, or another cluster's.
    case badTag = "bad-tag"
    /// The frame carries no tag although a key was given.
    case noTag = "no-tag"
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
public struct TapDecoder {
    public var format: TapFormat
    /// Message headers and a hex/ASCII preview of each payload.
    public var verbose = false
    /// Bytes of each payload shown in verbose mode.
    public var previewBytes = 16
    let authenticator: FrameAuthenticator?
    /// What to print; the shell writes it out and clears it.
    public var output = TapOutput()
    public var statistics: TapStatistics

    public init(format: TapFormat, authenticator: FrameAuthenticator?, statistics: TapStatistics = TapStatistics()) {
        self.format = format
        self.authenticator = authenticator
        self.statistics = statistics
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
                problemLine(timestampNanos, datagram.source, "snapshot cut the datagram: \(datagram.capturedPayloadLength) of \(datagram.payloadLength) bytes captured")
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
        let auth: AuthenticationStatus
        if let authenticator {
            switch authenticator.verify(payload) {
            case .authentic: auth = .verified
            case .badTag: auth = .badTag
            case .missingTag, .malformed: auth = .noTag
            }
        } else {
            auth = .unchecked
        }
        let totals = FrameTotals(view)
        statistics.record(view, totals, timestampNanos: timestampNanos, authentication: auth, datagramBytes: payload.count)
        switch format {
        case .quiet: return
        case .line: line(view, totals, timestampNanos, source, auth)
        case .json: json(view, totals, timestampNanos, source, auth)
        }
        output.byte(10)
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

    mutating func line(_ view: FrameView, _ totals: FrameTotals, _ timestampNanos: UInt64, _ source: SocketAddress?, _ auth: AuthenticationStatus) {
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

    mutating func json(_ view: FrameView, _ totals: FrameTotals, _ timestampNanos: UInt64, _ source: SocketAddress?, _ auth: AuthenticationStatus) {
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
        output.text(",\"auth\":\""); output.text(auth.rawValue); output.text("\"}")
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
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
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
