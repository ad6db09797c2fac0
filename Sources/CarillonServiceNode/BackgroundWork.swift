import CarillonRuntime
import Glibc
import Synchronization

/// Work that copies or hashes a whole object or state — hundreds of
/// megabytes, a second of CPU — run in order, one job at a time, on a thread
/// of its own at a lowered priority (`nice` ``niceIncrement``).
///
/// On two cores a second of digest at normal priority takes a core from the
/// bus's members for that second, and their ordered latency shows it. On
/// Linux the nice value is per thread: a member that wakes preempts this
/// thread at once, while the work still gets a fair share of a core that
/// someone else loads (a CPU hog at normal priority leaves it about a tenth
/// of a core at nice 10, so a migration slows rather than stops; the idle
/// scheduling class would stop it for as long as the hog runs).
///
/// The thread exists only while jobs are queued, so a node that is stopped
/// leaves none behind.
final class BackgroundWork: Sendable {
    /// How much lower than normal the thread runs (`setpriority`'s nice, 0...19).
    let niceIncrement: Int32
    private let state = Mutex<(jobs: [@Sendable () -> Void], running: Bool)>(([], false))

    init(niceIncrement: Int32) {
        self.niceIncrement = niceIncrement
    }

    /// Queues `job`; jobs run in the order they were queued.
    func run(_ job: @escaping @Sendable () -> Void) {
        let start = state.withLock { s -> Bool in
            s.jobs.append(job)
            if s.running { return false }
            s.running = true
            return true
        }
        guard start else { return }
        do {
            let thread = try startAgentThread { [self] in drain() }
            pthread_detach(thread)
        } catch {
            // No thread to be had: run the job here rather than never.
            drain(lowering: false)
        }
    }

    /// Whether a job is queued or running.
    var isBusy: Bool { state.withLock { $0.running } }

    private func drain(lowering: Bool = true) {
        if lowering {
            // Linux: PRIO_PROCESS with who 0 is the calling thread alone.
            _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, niceIncrement)
        }
        while let job = state.withLock({ s -> (@Sendable () -> Void)? in
            guard !s.jobs.isEmpty else {
                s.running = false
                return nil
            }
            return s.jobs.removeFirst()
        }) {
            job()
        }
    }
}
