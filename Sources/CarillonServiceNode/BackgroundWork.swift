import CCarillonSys
import CarillonRuntime
import Dispatch
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
/// The thread is an ordinary one (SCHED_OTHER, every CPU of the process)
/// whatever thread queued the job. It exists only while jobs are queued, so a node that is stopped
/// leaves none behind.
final class BackgroundWork: Sendable {
    /// How much lower than normal the thread runs (`setpriority`'s nice, 0...19).
    let niceIncrement: Int32
    private struct State {
        var jobs: [@Sendable () -> Void] = []
        var running = false
        /// Callers of ``waitUntilIdle(timeout:)``, signalled when the queue empties.
        var idleWaiters: [DispatchSemaphore] = []
    }
    private let state = Mutex(State())

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

    /// Waits until no job is queued or running (the thread is gone), at most
    /// until `deadline`; whether it is idle. A node that stops waits so, and
    /// no job of it runs on afterwards.
    func waitUntilIdle(deadline: DispatchTime) -> Bool {
        let signal = DispatchSemaphore(value: 0)
        let idle = state.withLock { s -> Bool in
            guard s.running else { return true }
            s.idleWaiters.append(signal)
            return false
        }
        return idle || signal.wait(timeout: deadline) == .success
    }

    private func drain(lowering: Bool = true) {
        if lowering {
            // A new thread inherits its creator's policy and CPUs — the bulk
            // channel's thread queues arrivals, and it may run SCHED_FIFO and
            // pinned beside an agent: this one is an ordinary thread on any
            // of the process's CPUs (nice means nothing to a real-time thread).
            _ = carillon_set_thread_scheduling(pthread_self(), Int32(CARILLON_SCHED_NORMAL), 0)
            _ = carillon_set_thread_process_cpus(pthread_self())
            // Linux: PRIO_PROCESS with who 0 is the calling thread alone.
            _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, niceIncrement)
        }
        var waiters: [DispatchSemaphore] = []
        while let job = state.withLock({ s -> (@Sendable () -> Void)? in
            guard !s.jobs.isEmpty else {
                s.running = false
                waiters = s.idleWaiters
                s.idleWaiters = []
                return nil
            }
            return s.jobs.removeFirst()
        }) {
            job()
        }
        for waiter in waiters { waiter.signal() }
    }
}
