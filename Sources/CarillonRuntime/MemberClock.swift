import CCarillonSys

/// The clock a member's shell reads. The view's timebase starts from
/// CLOCK_REALTIME — one clock for every namespace on a host, kept close across
/// hosts by NTP or PTP — corrected toward rank 0's clock (docs/protocol.md
/// §13). Only *when* a member sends depends on it, never what is delivered.
/// Waits are relative timeouts (ppoll), so a clock step moves the next
/// wake-up, never the order.
public enum MemberClock {
    /// Nanoseconds on the view's timebase (CLOCK_REALTIME).
    @inline(__always) public static func viewNanos() -> UInt64 { UInt64(carillon_realtime_ns()) }
}

/// How a member's agent waits between duty cycles. Every test and benchmark
/// states which one it uses.
public enum IdleStrategy: Sendable, Hashable, CustomStringConvertible {
    /// Poll the socket and the clock without pause: lowest latency, one core per member.
    case busySpin
    /// Sleep on a high-resolution timer (timer slack 1 ns) until `spinNanos`
    /// before the next slot, then spin; wakes early for arriving frames only
    /// while spinning. The default.
    case spinThenPark(spinNanos: UInt64)
    /// Block in `poll` on the socket until a frame arrives or the next slot is
    /// due: least CPU, most latency.
    case blocking

    public static let `default` = IdleStrategy.spinThenPark(spinNanos: 10_000)

    public var description: String {
        switch self {
        case .busySpin: return "busy-spin"
        case .spinThenPark(let spin): return "spin-then-park(\(spin / 1000) µs)"
        case .blocking: return "blocking"
        }
    }

    /// Parses `busy-spin`, `spin-then-park`, `spin-then-park:20000` or `blocking`.
    public init?(_ text: String) {
        switch text {
        case "busy-spin": self = .busySpin
        case "blocking": self = .blocking
        case "spin-then-park": self = .default
        default:
            guard text.hasPrefix("spin-then-park:"), let spin = UInt64(text.dropFirst("spin-then-park:".count)) else { return nil }
            self = .spinThenPark(spinNanos: spin)
        }
    }
}
