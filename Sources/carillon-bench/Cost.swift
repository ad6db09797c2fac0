import CarillonBench
import CarillonProcessStats
import Dispatch
import Foundation
import Synchronization

/// CLOCK_REALTIME in nanoseconds: the clock the bus's `start_at_ns` is on.
func realtimeNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Sleeps until CLOCK_REALTIME reaches `nanos` (at once if it has).
func sleepUntilRealtime(_ nanos: UInt64) {
    let now = realtimeNanos()
    if nanos > now { Thread.sleep(forTimeInterval: Double(nanos - now) / 1e9) }
}

/// What the member processes of a run cost over its measured phase: each
/// process's CPU time and context switches from /proc, sampled from the bench
/// (never inside a member), at the start of the phase and at its end.
///
/// The pids are the children the bench started. In namespaces a child is
/// `ip netns exec NS carillon node …`, and `ip netns exec` enters the
/// namespace and then execs the command in the same process, so the child's
/// pid *is* the member's; every sample checks that the process's command is
/// `command` (`carillon`), so a sample of `ip` itself, or of a reused pid, is
/// refused instead of reported.
///
/// The phase starts at `start` (CLOCK_REALTIME). It ends at ``finish()``,
/// which samples once more while every member still runs; with
/// `intervalSeconds`, the sampler also samples on its own thread every
/// interval while all run, so for members that end by themselves the phase
/// ends at the last sample before the first of them exited.
final class CostSampler: Sendable {
    private struct State: Sendable {
        var first: [ProcessSample]?
        var last: [ProcessSample]?
        var stopping = false
        var problem: String?
    }

    private let pids: [Int32]
    private let command: String
    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)
    private let done = DispatchSemaphore(value: 0)

    init(pids: [Int32], command: String = "carillon", start: UInt64, intervalSeconds: Double?) {
        self.pids = pids
        self.command = command
        Thread.detachNewThread { [self] in
            run(start: start, interval: intervalSeconds)
            done.signal()
        }
    }

    /// Samples every member; an error naming the member when one is gone or is not `command`.
    private func sampleAll() -> Result<[ProcessSample], BenchError> {
        var samples: [ProcessSample] = []
        for (index, pid) in pids.enumerated() {
            guard let sample = ProcessSample.read(pid: pid), !sample.hasExited else {
                return .failure(BenchError("h\(index) (pid \(pid)) was not running"))
            }
            guard sample.stat.command == command else {
                return .failure(BenchError("h\(index) (pid \(pid)) is `\(sample.stat.command)`, not `\(command)`: the sampled pid is not the member"))
            }
            samples.append(sample)
        }
        return .success(samples)
    }

    private var stopping: Bool { state.withLock { $0.stopping } }

    private func run(start: UInt64, interval: Double?) {
        // Until the phase starts (or finish() comes first).
        while !stopping {
            let now = realtimeNanos()
            if now >= start { break }
            _ = wake.wait(timeout: .now() + .nanoseconds(Int(min(start - now, 1_000_000_000))))
        }
        guard !stopping else { return }
        switch sampleAll() {
        case .failure(let error):
            state.withLock { $0.problem = "\(error) when the measured phase began" }
            return
        case .success(let samples):
            state.withLock {
                $0.first = samples; $0.last = samples
            }
        }
        while !stopping {
            guard let interval else { _ = wake.wait(timeout: .distantFuture); continue }
            _ = wake.wait(timeout: .now() + interval)
            guard !stopping, case .success(let samples) = sampleAll() else { return }
            state.withLock { $0.last = samples }
        }
    }

    /// Ends the phase: one last sample if every member still runs, then each
    /// member's cost from the first sample to the last. The cost is nil when
    /// the phase never began or had no second sample; the string says why.
    func finish() -> (cost: CostSummary?, problem: String?) {
        state.withLock { $0.stopping = true }
        wake.signal()
        done.wait()
        let began = state.withLock { $0.first != nil }
        if began, case .success(let samples) = sampleAll() { state.withLock { $0.last = samples } }
        let (first, last, problem) = state.withLock { ($0.first, $0.last, $0.problem) }
        guard let first, let last else { return (nil, problem ?? "the members ended before the measured phase began") }
        let costs = zip(first, last).map { ProcessCost(from: $0, to: $1) }
        let seconds = costs.map(\.seconds).reduce(0, +) / Double(max(costs.count, 1))
        guard seconds > 0 else { return (nil, "no sample after the first one (the members ended within one interval of the start)") }
        return (
            CostSummary(
                seconds: seconds, cpuPercentOfOneCore: costs.map(\.cpuPercentOfOneCore),
                wakeupsPerSecond: costs.map(\.wakeupsPerSecond),
                involuntarySwitchesPerSecond: costs.map(\.involuntarySwitchesPerSecond)), nil
        )
    }
}

/// "cpu 31.2/30.8/29.9 % of one core, 30123/29876/29912 wake-ups/s over 1.4 s", for progress lines.
func describe(_ cost: CostSummary) -> String {
    "cpu \(cost.cpuPercentOfOneCore.map { String(format: "%.1f", $0) }.joined(separator: "/")) % of one core, "
        + "\(cost.wakeupsPerSecond.map { String(Int($0.rounded())) }.joined(separator: "/")) wake-ups/s "
        + "(h0/h1/… over \(String(format: "%.1f", cost.seconds)) s)"
}
