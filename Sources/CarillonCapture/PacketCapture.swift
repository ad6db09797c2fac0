import CPcap
import Glibc
import Synchronization

/// A libpcap error: what was being done and what libpcap said.
public struct CaptureError: Error, Sendable, CustomStringConvertible {
    public var action: String
    public var message: String
    public var description: String { "\(action): \(message)" }
}

/// libpcap's error buffer as text (up to its terminating zero).
func errorText(_ buffer: [CChar]) -> String {
    let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    return String(decoding: bytes, as: UTF8.self)
}

/// One captured packet's metadata.
public struct CapturedPacket: Sendable {
    /// Capture time on the realtime clock, nanoseconds.
    public var timestampNanos: UInt64
    /// Bytes on the wire (may exceed the captured bytes); -1 when no packet
    /// came within a live capture's 100 ms timeout (a chance to stop or report).
    public var wireLength: Int
}

/// A libpcap handle: live capture on an interface or reading a pcap/pcapng
/// file, a BPF filter, and an optional pcap writer. A thin shell: decoding is
/// ``TapDecoder``'s, in the library's wire module. Use it from one thread;
/// only ``breakLoop()`` may be called from another.
public final class PacketCapture: @unchecked Sendable {
    let handle: OpaquePointer
    /// The link-layer type (DLT_*), which ``PacketDissector`` needs.
    public let linkType: Int32
    var dumper: OpaquePointer?

    /// Timestamp fractions per second the handle delivers (nanoseconds where libpcap could).
    let fractionsPerSecond: UInt64
    /// A live handle's descriptor, in non-blocking mode: ``run(count:_:)`` waits
    /// on it with `poll` for at most 100 ms. (In immediate mode on Linux,
    /// `pcap_next_ex` on a blocking handle does not return when the 100 ms
    /// timeout passes without a packet, so a quiet bus starved the periodic
    /// statistics and the `-w` flush.)
    let selectableDescriptor: Int32?
    /// Set by ``breakLoop()``: with a non-blocking handle libpcap's own break
    /// flag is only looked at when a packet is read, so a quiet capture checks this.
    let stopRequested = Atomic<Bool>(false)

    init(handle: OpaquePointer, selectableDescriptor: Int32? = nil) {
        self.handle = handle
        self.selectableDescriptor = selectableDescriptor
        linkType = pcap_datalink(handle)
        fractionsPerSecond = pcap_get_tstamp_precision(handle) == Int32(PCAP_TSTAMP_PRECISION_NANO) ? 1_000_000_000 : 1_000_000
    }

    deinit {
        if let dumper { pcap_dump_flush(dumper); pcap_dump_close(dumper) }
        pcap_close(handle)
    }

    /// Opens `interface` ("any" for all) for live capture with a 256 KiB...8 MiB
    /// kernel buffer and immediate delivery (no batching delay).
    public static func live(interface: String, snapshotLength: Int32 = 65_535, bufferBytes: Int32 = 8 << 20) throws(CaptureError) -> PacketCapture {
        var errorBuffer = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE))
        guard let handle = pcap_create(interface, &errorBuffer) else {
            throw CaptureError(action: "opening interface \(interface)", message: errorText(errorBuffer))
        }
        pcap_set_snaplen(handle, snapshotLength)
        pcap_set_promisc(handle, 0)
        pcap_set_timeout(handle, 100)
        pcap_set_immediate_mode(handle, 1)
        pcap_set_buffer_size(handle, bufferBytes)
        pcap_set_tstamp_precision(handle, Int32(PCAP_TSTAMP_PRECISION_NANO))
        let status = pcap_activate(handle)
        if status < 0 {
            let message = String(cString: pcap_geterr(handle))
            pcap_close(handle)
            let hint =
                status == PCAP_ERROR_PERM_DENIED
                ? " (live capture needs root or CAP_NET_RAW)"
                : status == PCAP_ERROR_NO_SUCH_DEVICE ? " (list interfaces with `ip link`; `any` captures on all)" : ""
            throw CaptureError(action: "starting capture on \(interface)", message: message + hint)
        }
        let descriptor = pcap_get_selectable_fd(handle)
        guard descriptor >= 0, pcap_setnonblock(handle, 1, &errorBuffer) == 0 else {
            let message = errorText(errorBuffer)
            pcap_close(handle)
            throw CaptureError(action: "preparing capture on \(interface)", message: message.isEmpty ? "no selectable descriptor" : message)
        }
        return PacketCapture(handle: handle, selectableDescriptor: descriptor)
    }

    /// Opens a pcap or pcapng file (`-` for standard input), timestamps in nanoseconds.
    public static func offline(path: String) throws(CaptureError) -> PacketCapture {
        var errorBuffer = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE))
        guard let handle = pcap_open_offline_with_tstamp_precision(path, UInt32(PCAP_TSTAMP_PRECISION_NANO), &errorBuffer) else {
            throw CaptureError(action: "reading \(path)", message: errorText(errorBuffer))
        }
        return PacketCapture(handle: handle)
    }

    /// A handle that only writes (for generating captures): `linkType` packets into `path`.
    public static func writer(linkType: Int32, path: String) throws(CaptureError) -> PacketCapture {
        guard let handle = pcap_open_dead_with_tstamp_precision(linkType, 65_535, UInt32(PCAP_TSTAMP_PRECISION_NANO)) else {
            throw CaptureError(action: "preparing a writer", message: "pcap_open_dead failed")
        }
        let capture = PacketCapture(handle: handle)
        try capture.write(to: path)
        return capture
    }

    /// Compiles and sets a BPF filter (tcpdump's expression syntax).
    public func setFilter(_ expression: String) throws(CaptureError) {
        var program = bpf_program()
        guard pcap_compile(handle, &program, expression, 1, PCAP_NETMASK_UNKNOWN) == 0 else {
            throw CaptureError(action: "filter \"\(expression)\"", message: String(cString: pcap_geterr(handle)))
        }
        defer { pcap_freecode(&program) }
        guard pcap_setfilter(handle, &program) == 0 else {
            throw CaptureError(action: "setting filter \"\(expression)\"", message: String(cString: pcap_geterr(handle)))
        }
    }

    /// Also writes every packet read to `path` (pcap format; `-` for standard output).
    public func write(to path: String) throws(CaptureError) {
        guard let dumper = pcap_dump_open(handle, path) else {
            throw CaptureError(action: "writing \(path)", message: String(cString: pcap_geterr(handle)))
        }
        self.dumper = dumper
    }

    /// Writes one packet to the file opened by ``write(to:)``.
    public func dump(timestampNanos: UInt64, bytes: UnsafeRawBufferPointer) {
        guard let dumper else { return }
        var header = pcap_pkthdr()
        header.ts.tv_sec = Int(timestampNanos / 1_000_000_000)
        header.ts.tv_usec = Int(timestampNanos % 1_000_000_000)  // nanoseconds: the handle's precision
        header.caplen = UInt32(bytes.count)
        header.len = UInt32(bytes.count)
        pcap_dump(
            UnsafeMutableRawPointer(dumper).assumingMemoryBound(to: UInt8.self), &header,
            bytes.baseAddress?.assumingMemoryBound(to: UInt8.self))
    }

    /// Reads packets until `count` (0: no limit), the end of the file, an error,
    /// or `body` returns false. Packets are also written out when a writer is open.
    /// Returns the number of packets read.
    @discardableResult
    public func run(count: Int = 0, _ body: (CapturedPacket, UnsafeRawBufferPointer) -> Bool) throws(CaptureError) -> Int {
        var read = 0
        var flushedAt = ContinuousClock.now
        var header: UnsafeMutablePointer<pcap_pkthdr>?
        var data: UnsafePointer<UInt8>?
        while count == 0 || read < count {
            var status = pcap_next_ex(handle, &header, &data)
            if status == 0, let descriptor = selectableDescriptor {
                // Nothing buffered: wait for the descriptor, at most 100 ms.
                if stopRequested.load(ordering: .relaxed) { break }
                var entry = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
                let ready = poll(&entry, 1, 100)
                if ready < 0, errno != EINTR {
                    throw CaptureError(action: "waiting for packets", message: String(cString: strerror(errno)))
                }
                if stopRequested.load(ordering: .relaxed) { break }
                if ready != 0 { continue }  // readable (or interrupted): read again
                status = 0
            }
            if status == 0 {
                // A live capture's quiet 100 ms: the file is flushed, so a reader of -w sees every packet.
                if let dumper { pcap_dump_flush(dumper) }
                if !body(CapturedPacket(timestampNanos: 0, wireLength: -1), UnsafeRawBufferPointer(start: nil, count: 0)) { break }
                continue
            }
            if status == PCAP_ERROR_BREAK { break }
            if status < 0 {
                throw CaptureError(action: "reading packets", message: String(cString: pcap_geterr(handle)))
            }
            guard let header, let data else { continue }
            read += 1
            if let dumper {
                pcap_dump(UnsafeMutableRawPointer(dumper).assumingMemoryBound(to: UInt8.self), header, data)
                // Every 100 ms, so a reader of the file (or of `-w -`) keeps up with a busy bus.
                if ContinuousClock.now - flushedAt >= .milliseconds(100) {
                    pcap_dump_flush(dumper)
                    flushedAt = ContinuousClock.now
                }
            }
            let ts = header.pointee.ts
            // Negative or absurd times (a crafted file) become 0, never a trap.
            let seconds = UInt64(clamping: ts.tv_sec), fraction = UInt64(clamping: ts.tv_usec)
            let (wholeNanos, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
            let fractionNanos = min(fraction, fractionsPerSecond) * (1_000_000_000 / fractionsPerSecond)
            let packet = CapturedPacket(
                timestampNanos: overflow ? 0 : wholeNanos &+ fractionNanos,
                wireLength: Int(header.pointee.len))
            if !body(packet, UnsafeRawBufferPointer(start: data, count: Int(header.pointee.caplen))) { break }
        }
        if let dumper { pcap_dump_flush(dumper) }
        return read
    }

    /// Makes ``run(count:_:)`` return soon (from a signal handler's thread).
    public func breakLoop() {
        stopRequested.store(true, ordering: .relaxed)
        pcap_breakloop(handle)
    }

    /// Packets received and dropped by the kernel (live capture).
    public var kernelStatistics: (received: Int, dropped: Int)? {
        var stats = pcap_stat()
        guard pcap_stats(handle, &stats) == 0 else { return nil }
        return (Int(stats.ps_recv), Int(stats.ps_drop))
    }
}
