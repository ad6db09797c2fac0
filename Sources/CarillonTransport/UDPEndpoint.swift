import Glibc

/// An IPv4 address and UDP port.
public struct UDPEndpoint: Sendable, Hashable, CustomStringConvertible {
    /// Address in network byte order, as in `in_addr.s_addr`.
    public var address: UInt32
    public var port: UInt16

    public init(address: UInt32, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// Parses `"a.b.c.d:port"`; `nil` when it is not one.
    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else { return nil }
        var address = in_addr()
        let host = String(text[..<colon])
        guard inet_pton(AF_INET, host, &address) == 1 else { return nil }
        self.address = address.s_addr
        self.port = port
    }

    /// The endpoint as a `sockaddr_in`.
    public var socketAddress: sockaddr_in {
        var socket = sockaddr_in()
        socket.sin_family = sa_family_t(AF_INET)
        socket.sin_port = port.bigEndian
        socket.sin_addr = in_addr(s_addr: address)
        return socket
    }

    public init(_ socket: sockaddr_in) {
        address = socket.sin_addr.s_addr
        port = UInt16(bigEndian: socket.sin_port)
    }

    /// Whether the address is an IPv4 multicast group (224.0.0.0/4).
    public var isMulticast: Bool { (UInt32(bigEndian: address) >> 28) == 0xE }

    public var description: String {
        let host = UInt32(bigEndian: address)
        return "\(host >> 24).\((host >> 16) & 0xFF).\((host >> 8) & 0xFF).\(host & 0xFF):\(port)"
    }
}
