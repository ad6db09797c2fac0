import CCarillonSys
import CarillonRuntime
import Dispatch
import Glibc
import Synchronization
import Testing

@testable import CarillonServiceNode

/// The thread that copies and hashes whole objects: jobs in order, at the
/// nice value asked for, and no thread left once the queue is empty.
@Suite struct BackgroundWorkTests {
    @Test func jobsRunInOrderOnAThreadAtTheLoweredPriority() {
        let work = BackgroundWork(niceIncrement: 7)
        let seen = Mutex<[Int]>([])
        let niceSeen = Mutex<[Int32]>([])
        let done = DispatchSemaphore(value: 0)
        let callerNice = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
        for k in 0..<50 {
            work.run {
                seen.withLock { $0.append(k) }
                niceSeen.withLock { $0.append(getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)) }
                if k == 49 { done.signal() }
            }
        }
        #expect(done.wait(timeout: .now() + 30) == .success)
        #expect(seen.withLock { $0 } == Array(0..<50))
        // Per thread on Linux: the jobs ran lowered, the caller was not.
        #expect(niceSeen.withLock { $0 }.allSatisfy { $0 == min(19, callerNice + 7) }, "\(niceSeen.withLock { $0 })")
        #expect(getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0) == callerNice)
        // The thread ends with its queue: a later job starts a new one.
        #expect(work.waitUntilIdle(deadline: .now() + 30))
        #expect(!work.isBusy)
        work.run { done.signal() }
        #expect(done.wait(timeout: .now() + 30) == .success)
    }

    /// Queued from a thread pinned to one CPU and (as root) real-time, as the
    /// bulk channel's thread may be: the job runs as an ordinary thread on
    /// every CPU of the process, not at its creator's priority.
    @Test func aJobQueuedFromAPinnedRealTimeThreadRunsOrdinary() throws {
        let work = BackgroundWork(niceIncrement: 10)
        let seen = Mutex<(policy: Int32, cpus: Int32)?>(nil)
        let done = DispatchSemaphore(value: 0)
        let creatorRealTime = Mutex(false)
        let thread = try startAgentThread {
            _ = carillon_set_thread_cpu(pthread_self(), 0)
            creatorRealTime.withLock { $0 = carillon_set_thread_scheduling(pthread_self(), Int32(CARILLON_SCHED_FIFO), 10) == 0 }
            work.run {
                seen.withLock { $0 = (sched_getscheduler(0), carillon_thread_cpu_count()) }
                done.signal()
            }
        }
        #expect(done.wait(timeout: .now() + 30) == .success)
        pthread_join(thread, nil)
        let processCPUs = Int32(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        let observed = try #require(seen.withLock { $0 })
        #expect(observed.policy == SCHED_OTHER, "creator real-time: \(creatorRealTime.withLock { $0 })")
        #expect(observed.cpus == processCPUs || processCPUs == 1)
    }
}
