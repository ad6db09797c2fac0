import CCarillonSys
import CarillonTransport
import Glibc
import Synchronization

/// Runs several members' duty cycles on one thread instead of one thread
/// each: for many members in one process on few cores. Each cycle visits
/// every member once (receive, slot, effects), then idles until the earliest
/// next slot or until any member's socket is readable.
///
/// ```swift
/// let agent = SharedAgent(members: [a, b, c], idleStrategy: .blocking)
/// try agent.start()
/// …
/// let reports = agent.stop()
/// ```
public final class SharedAgent: @unchecked Sendable {
    public let members: [Member]
    public let idleStrategy: IdleStrategy
    let running = Atomic<Bool>(false)
    var thread: pthread_t?
    let descriptors: [Int32]

    /// The members must not have been started on their own threads.
    public init(members: [Member], idleStrategy: IdleStrategy = .default) {
        self.members = members
        self.idleStrategy = idleStrategy
        descriptors = members.flatMap(\.ownDescriptors)
        pollIntervalNanos = members.compactMap(\.pollIntervalNanos).min()
    }

    /// The shortest poll interval of the members' polled transports (nil: none is polled).
    let pollIntervalNanos: UInt64?

    /// Starts the shared thread.
    public func start() throws(SystemCallError) {
        guard !running.exchange(true, ordering: .acquiringAndReleasing) else { return }
        do { thread = try startAgentThread { [self] in run() } } catch {
            running.store(false, ordering: .releasing)
            throw error
        }
        // One thread for all: the first member's scheduling settings apply to it.
        let report = applyScheduling(members.first?.configuration.scheduling ?? .none, to: thread!)
        for member in members {
            member.schedulingReport = report
            _ = member.markRunning()
        }
    }

    /// Stops the thread, then every member; returns their reports in order.
    @discardableResult
    public func stop() -> [StopReport] {
        if running.exchange(false, ordering: .acquiringAndReleasing), let thread {
            pthread_join(thread, nil)
            self.thread = nil
        }
        return members.map { $0.stop() }
    }

    func run() {
        _ = carillon_set_timer_slack(1)
        for member in members { member.prepareAgent() }
        while running.load(ordering: .relaxed) {
            var wait = UInt64.max
            for member in members { wait = min(wait, member.dutyCycle()) }
            let readable = members[0].idle(forNanos: wait, descriptors: descriptors, strategy: idleStrategy, pollIntervalNanos: pollIntervalNanos)
            // Each member's descriptors in order: its transport's (if any), then its wake eventfd.
            var index = 0
            for member in members {
                let wakeIndex = index + member.ownDescriptors.count - 1
                member.unpark(wakeReadable: member.wakeDescriptor >= 0 && wakeIndex < 31 && readable & (1 << wakeIndex) != 0)
                index += member.ownDescriptors.count
            }
        }
    }
}
