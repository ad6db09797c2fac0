/// Link-layer types carillon-tap reads (libpcap's DLT_* values as
/// `pcap_datalink` returns them on Linux).
public enum LinkType: Int32, Sendable, CaseIterable {
    /// BSD loopback: a 4-byte address family in host byte order.
    case null = 0
    /// Ethernet II, with at most one 802.1Q tag.
    case ethernet = 1
    /// Raw IP, as Linux reports it.
    case raw = 12
    /// Raw IP, the LINKTYPE_ value some files carry.
    case rawLinktype = 101
    /// OpenBSD loopback (family in network byte order).
    case loop = 108
    /// Linux cooked capture v1 (`-i any`).
    case linuxSLL = 113
    /// Linux cooked capture v2.
    case linuxSLL2 = 276
}

/// An IPv4 address and port, printed as `a.b.c.d:port`.
public struct SocketAddress: Sendable, Hashable, CustomStringConvertible {
    /// Host byte order.
    public var address: UInt32
    public var port: UInt16

    public init(address: UInt32, port: UInt16) {
        self.address = address
        self.port = port
    }

    public var description: String {
        "\(address >> 24).\(address >> 16 & 0xFF).\(address >> 8 & 0xFF).\(address & 0xFF):\(port)"
    }
}

/// The UDP datagram inside a captured packet.
public struct UDPDatagram: Sendable, Hashable {
    public var source: SocketAddress
    public var destination: SocketAddress
    /// Where the UDP payload starts in the packet, and how long the datagram says it is.
    public var payloadOffset: Int
    public var payloadLength: Int
    /// Bytes of the payload that were captured (less than `payloadLength` when the snapshot length cut it).
    public var capturedPayloadLength: Int
}

/// Why a captured packet holds no complete UDP datagram.
public enum PacketError: Error, Sendable, Hashable, CustomStringConvertible {
    case unsupportedLinkType(Int32)
    case truncated(layer: String, needed: Int, available: Int)
    case notIPv4(etherType: UInt16)
    case badIPHeader(String)
    case notUDP(protocolNumber: UInt8)
    /// A fragment after the first: its bytes are not a frame on their own.
    case laterFragment
    /// The first fragment of a datagram larger than the path MTU: the frame is incomplete here.
    case firstFragment

    public var description: String {
        switch self {
        case .unsupportedLinkType(let t): return "link type \(t) is not supported (Ethernet, Linux cooked v1/v2, raw IP, loopback are)"
        case .truncated(let layer, let needed, let available): return "\(layer) truncated: needs \(needed) bytes, \(available) captured"
        case .notIPv4(let type): return "not IPv4 (ethertype 0x\(String(type, radix: 16)))"
        case .badIPHeader(let why): return "bad IPv4 header: \(why)"
        case .notUDP(let p): return "not UDP (IP protocol \(p))"
        case .laterFragment: return "IPv4 fragment after the first"
        case .firstFragment:
            return "first IPv4 fragment of a larger datagram (the frame continues in later fragments; raise the MTU or max_frame_bytes)"
        }
    }
}

/// Finds the UDP datagram in a captured packet: link layer, IPv4, UDP.
/// Pure and allocation-free; never traps on any input.
public enum PacketDissector {
    public static func udp(linkType: Int32, packet: UnsafeRawBufferPointer) throws(PacketError) -> UDPDatagram {
        guard let link = LinkType(rawValue: linkType) else { throw .unsupportedLinkType(linkType) }
        var offset: Int
        switch link {
        case .ethernet:
            try need(packet, 14, "Ethernet header")
            offset = try ipv4After(etherTypeAt: 12, packet)
        case .linuxSLL:
            try need(packet, 16, "Linux cooked header")
            // (libpcap puts a VLAN tag back after the cooked header.)
            offset = try ipv4After(etherTypeAt: 14, packet)
        case .linuxSLL2:
            try need(packet, 20, "Linux cooked v2 header")
            let protocolType = be16(packet, 0)
            guard protocolType == 0x0800 else { throw .notIPv4(etherType: protocolType) }
            offset = 20
        case .null, .loop:
            try need(packet, 4, "loopback header")
            let family = link == .loop ? UInt32(be16(packet, 2)) : UInt32(packet[0]) | UInt32(packet[3])
            guard family == 2 else { throw .notIPv4(etherType: UInt16(truncatingIfNeeded: family)) }
            offset = 4
        case .raw, .rawLinktype:
            offset = 0
        }
        // IPv4
        try need(packet, offset + 20, "IPv4 header")
        let versionIHL = packet[offset]
        guard versionIHL >> 4 == 4 else { throw .badIPHeader("version \(versionIHL >> 4)") }
        let headerLength = Int(versionIHL & 0x0F) * 4
        guard headerLength >= 20 else { throw .badIPHeader("header length \(headerLength)") }
        let totalLength = Int(be16(packet, offset + 2))
        guard totalLength >= headerLength else { throw .badIPHeader("total length \(totalLength) below header length \(headerLength)") }
        let fragment = be16(packet, offset + 6)
        if fragment & 0x1FFF != 0 { throw .laterFragment }
        if fragment & 0x2000 != 0 { throw .firstFragment }
        let protocolNumber = packet[offset + 9]
        guard protocolNumber == 17 else { throw .notUDP(protocolNumber: protocolNumber) }
        let source = be32(packet, offset + 12), destination = be32(packet, offset + 16)
        offset += headerLength
        // UDP
        try need(packet, offset + 8, "UDP header")
        let udpLength = Int(be16(packet, offset + 4))
        guard udpLength >= 8 else { throw .badIPHeader("UDP length \(udpLength)") }
        guard udpLength <= totalLength - headerLength else {
            throw .badIPHeader("UDP length \(udpLength) exceeds the IPv4 datagram's \(totalLength - headerLength) bytes")
        }
        let payloadOffset = offset + 8
        return UDPDatagram(
            source: SocketAddress(address: source, port: be16(packet, offset)),
            destination: SocketAddress(address: destination, port: be16(packet, offset + 2)),
            payloadOffset: payloadOffset, payloadLength: udpLength - 8,
            capturedPayloadLength: max(0, min(udpLength - 8, packet.count - payloadOffset)))
    }

    /// The offset of the IPv4 header after the ethertype at `at`, past at most
    /// one 802.1Q/802.1ad tag; an error unless the (inner) type is IPv4.
    static func ipv4After(etherTypeAt at: Int, _ packet: UnsafeRawBufferPointer) throws(PacketError) -> Int {
        var etherType = be16(packet, at)
        var offset = at + 2
        if etherType == 0x8100 || etherType == 0x88A8 {
            try need(packet, offset + 4, "802.1Q tag")
            etherType = be16(packet, offset + 2)
            offset += 4
        }
        guard etherType == 0x0800 else { throw .notIPv4(etherType: etherType) }
        return offset
    }

    @inline(__always)
    static func need(_ packet: UnsafeRawBufferPointer, _ bytes: Int, _ layer: String) throws(PacketError) {
        if packet.count < bytes { throw .truncated(layer: layer, needed: bytes, available: packet.count) }
    }

    @inline(__always) static func be16(_ p: UnsafeRawBufferPointer, _ o: Int) -> UInt16 { UInt16(p[o]) << 8 | UInt16(p[o + 1]) }
    @inline(__always) static func be32(_ p: UnsafeRawBufferPointer, _ o: Int) -> UInt32 {
        UInt32(p[o]) << 24 | UInt32(p[o + 1]) << 16 | UInt32(p[o + 2]) << 8 | UInt32(p[o + 3])
    }
}
