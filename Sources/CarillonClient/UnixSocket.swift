import Glibc

/// Why a node's Unix socket could not be served or reached.
public struct EndpointError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(description: String) { self.description = description }
}

/// Connecting to a Unix socket, shared by the endpoint's liveness check and the client.
public enum UnixSocket {
    public static func connect(_ path: String) throws(EndpointError) -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.utf8.count < capacity else { throw EndpointError(description: "socket path \(path) is too long") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() { raw[i] = b }
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw EndpointError(description: "socket(AF_UNIX): \(String(cString: strerror(errno)))") }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else {
            let code = errno
            close(fd)
            switch code {
            case ENOENT, ECONNREFUSED:
                throw EndpointError(description: "no node is serving \(path) (is `carillon node` running for this member?)")
            case EACCES:
                throw EndpointError(description: "permission denied on \(path): the socket is mode 0600, run as the node's user")
            default:
                throw EndpointError(description: "cannot connect to \(path): \(String(cString: strerror(code)))")
            }
        }
        return fd
    }
}
