import CCarillonSys
import Glibc

/// How the agent thread competes for the CPU with the rest of the host.
///
/// A member that is descheduled for a few milliseconds misses its slots and
/// looks dead to the others (docs/protocol.md §14), so `carillon node` (one
/// member per process) by default has the agent
/// thread ask for real-time round-robin scheduling at a modest priority —
/// above every normal process, below the kernel's own real-time threads —
/// and the process locks its memory, as Corosync does. Neither is fatal when
/// not permitted (no root, no CAP_SYS_NICE / CAP_IPC_LOCK, no RLIMIT_RTPRIO):
/// the member runs at normal priority and says so in its start log line
/// (``SchedulingReport``). The kernel's real-time throttling
/// (`/proc/sys/kernel/sched_rt_runtime_us`, 95 % by default) keeps a core for
/// others even if an agent spins.
public struct AgentScheduling: Sendable, Hashable, CustomStringConvertible {
    public enum Policy: Sendable, Hashable {
        /// The host's default time sharing (SCHED_OTHER).
        case normal
        /// SCHED_FIFO at this priority (1–99).
        case fifo(priority: Int32)
        /// SCHED_RR at this priority (1–99).
        case roundRobin(priority: Int32)
    }

    public var policy: Policy
    /// mlockall(MCL_CURRENT | MCL_FUTURE) for the whole process at start: no
    /// page fault (swap-in, lazily mapped buffers) in the duty cycle.
    public var lockMemory: Bool
    /// Pin the agent thread to this CPU (nil: any).
    public var cpu: Int?

    /// SCHED_RR priority 10, memory locked, any CPU: `carillon node`'s default.
    public static let `default` = AgentScheduling(policy: .roundRobin(priority: 10), lockMemory: true, cpu: nil)
    /// Normal priority, nothing locked: the library's default (``MemberConfiguration/scheduling``).
    public static let none = AgentScheduling(policy: .normal, lockMemory: false, cpu: nil)

    public init(policy: Policy, lockMemory: Bool, cpu: Int?) {
        self.policy = policy
        self.lockMemory = lockMemory
        self.cpu = cpu
    }

    /// Parses a policy: `normal`, `rr`, `rr:PRIORITY`, `fifo` or `fifo:PRIORITY` (priority 1–99, default 10).
    public static func policy(_ text: String) -> Policy? {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        var priority: Int32 = 10
        if parts.count == 2 {
            guard let value = Int32(parts[1]), (1...99).contains(value) else { return nil }
            priority = value
        }
        switch parts.first {
        case "normal": return parts.count == 1 ? .normal : nil
        case "rr": return .roundRobin(priority: priority)
        case "fifo": return .fifo(priority: priority)
        default: return nil
        }
    }

    public static func text(_ policy: Policy) -> String {
        switch policy {
        case .normal: return "normal"
        case .fifo(let p): return "fifo:\(p)"
        case .roundRobin(let p): return "rr:\(p)"
        }
    }

    public var description: String {
        "\(Self.text(policy)), lock memory \(lockMemory ? "yes" : "no"), cpu \(cpu.map(String.init) ?? "any")"
    }
}

/// What the agent thread got: the policy in force and, for each request that
/// was refused, why. Logged at start and shown by `carillon node`.
public struct SchedulingReport: Sendable, Hashable, CustomStringConvertible {
    public var requested: AgentScheduling
    /// The policy in force for the agent thread.
    public var policy: AgentScheduling.Policy
    /// Why the requested policy is not in force (nil when it is).
    public var policyRefused: String?
    public var memoryLocked: Bool
    public var memoryRefused: String?
    public var cpu: Int?
    public var cpuRefused: String?

    /// `SCHED_RR priority 10`, `normal`, …
    public var policyText: String {
        switch policy {
        case .normal: return "normal"
        case .fifo(let p): return "SCHED_FIFO priority \(p)"
        case .roundRobin(let p): return "SCHED_RR priority \(p)"
        }
    }

    public var memoryText: String {
        memoryLocked ? "locked" : (memoryRefused.map { "not locked (\($0))" } ?? "not locked")
    }

    public var cpuText: String {
        cpu.map { "cpu \($0)" } ?? (cpuRefused.map { "any cpu (\($0))" } ?? "any cpu")
    }

    /// Every refusal, for a notice in the log (nil: everything asked for is in force).
    public var refusals: String? {
        var parts: [String] = []
        if let policyRefused { parts.append("\(AgentScheduling.text(requested.policy)) not permitted: \(policyRefused)") }
        if let memoryRefused { parts.append("memory not locked: \(memoryRefused)") }
        if let cpuRefused, let cpu = requested.cpu { parts.append("cpu \(cpu) not set: \(cpuRefused)") }
        return parts.isEmpty ? nil : parts.joined(separator: "; ")
    }

    public var description: String {
        let refused = policyRefused.map { " (\(AgentScheduling.text(requested.policy)) refused: \($0))" } ?? ""
        return "agent thread \(policyText)\(refused), memory \(memoryText), \(cpuText)"
    }
}

/// Locks the process's memory once (the first member to start asks; later ones share the result).
private let memoryLock = MemoryLockOnce()

private final class MemoryLockOnce: @unchecked Sendable {
    var mutex = pthread_mutex_t()
    var result: Int32?
    init() { pthread_mutex_init(&mutex, nil) }
    func lock() -> Int32 {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        if let result { return result }
        let outcome = carillon_lock_memory()
        result = outcome
        return outcome
    }
}

func errorText(_ number: Int32) -> String {
    switch number {
    case EPERM: return "EPERM: needs root, CAP_SYS_NICE/CAP_IPC_LOCK or a raised rlimit"
    case EINVAL: return "EINVAL: out of range"
    case ENOMEM: return "ENOMEM: over RLIMIT_MEMLOCK"
    case EAGAIN: return "EAGAIN"
    default: return String(cString: strerror(number))
    }
}

/// Applies `scheduling` to `thread` (and locks memory if asked); never fails.
func applyScheduling(_ scheduling: AgentScheduling, to thread: pthread_t) -> SchedulingReport {
    var report = SchedulingReport(
        requested: scheduling, policy: .normal, policyRefused: nil, memoryLocked: false,
        memoryRefused: nil, cpu: nil, cpuRefused: nil)
    if scheduling.lockMemory {
        let result = memoryLock.lock()
        if result == 0 { report.memoryLocked = true } else { report.memoryRefused = errorText(result) }
    }
    switch scheduling.policy {
    case .normal: break
    case .fifo(let priority), .roundRobin(let priority):
        let native: Int32
        if case .fifo = scheduling.policy { native = Int32(CARILLON_SCHED_FIFO) } else { native = Int32(CARILLON_SCHED_RR) }
        let result = carillon_set_thread_scheduling(thread, native, priority)
        if result == 0 { report.policy = scheduling.policy } else { report.policyRefused = errorText(result) }
    }
    if let cpu = scheduling.cpu {
        let result = carillon_set_thread_cpu(thread, Int32(clamping: cpu))
        if result == 0 { report.cpu = cpu } else { report.cpuRefused = errorText(result) }
    }
    return report
}
