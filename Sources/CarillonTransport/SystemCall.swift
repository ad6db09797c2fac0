import CCarillonSys
import Glibc

/// A failed system call: which call, and the errno it left.
public struct SystemCallError: Error, Sendable, Hashable, CustomStringConvertible {
    public var call: String
    public var errno: Int32

    public init(call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    public var description: String { "\(call) failed: \(String(cString: strerror(errno))) (errno \(errno))" }
}

/// The one choke point for system calls in the shells: `EINTR` is retried,
/// would-block is a value (`nil`), every other failure is a typed error that
/// names the call and its errno.
public enum SystemCall {
    /// Runs `body` (a call returning -1 and setting errno on failure).
    /// Returns `nil` when the call would block.
    @inline(__always)
    public static func run<T: BinaryInteger>(_ name: @autoclosure () -> String, _ body: () -> T) throws(SystemCallError) -> T? {
        while true {
            let result = body()
            if result >= 0 { return result }
            let error = Glibc.errno
            switch error {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return nil
            default: throw SystemCallError(call: name(), errno: error)
            }
        }
    }

    /// Like ``run(_:_:)`` for calls that must not block.
    @inline(__always) @discardableResult
    public static func must<T: BinaryInteger>(_ name: @autoclosure () -> String, _ body: () -> T) throws(SystemCallError) -> T {
        guard let result = try run(name(), body) else { throw SystemCallError(call: name(), errno: EAGAIN) }
        return result
    }
}
