import CarillonTransport
import Glibc

/// Starts `body` on a new POSIX thread (the agent threads: the runtime needs
/// a real OS thread it can join, not a task on a shared pool; the services
/// node's background work, which detaches it).
package func startAgentThread(_ body: @escaping @Sendable () -> Void) throws(SystemCallError) -> pthread_t {
    let box = Unmanaged.passRetained(AgentThreadBody(body)).toOpaque()
    var thread = pthread_t()
    let result = pthread_create(&thread, nil, agentThreadEntry, box)
    guard result == 0 else {
        Unmanaged<AgentThreadBody>.fromOpaque(box).release()
        throw SystemCallError(call: "pthread_create", errno: result)
    }
    return thread
}

private final class AgentThreadBody {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

/// A plain function, not a closure: closures handed to pthread_create can pick
/// up actor isolation (docs in NOTES.md).
private func agentThreadEntry(_ context: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    Unmanaged<AgentThreadBody>.fromOpaque(context!).takeRetainedValue().body()
    return nil
}
