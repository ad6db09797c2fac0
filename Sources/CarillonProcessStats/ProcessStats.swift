#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

// What a process costs the machine: CPU time and context switches read from
// /proc, and rates between two samples. Used by `carillon node --stats` (its
// own process) and by `carillon-bench` (each member process it started).
// Sampling reads a few small files: do it at a stats interval or from a
// driver, never per message.

/// The fields of `/proc/<pid>/stat` (or `/proc/<pid>/task/<tid>/stat`) this
/// package uses (proc(5)).
public struct ProcStat: Sendable, Hashable {
    /// Field 1: the process (or thread) id.
    public var pid: Int32
    /// Field 2, without its parentheses: the executable's name or the thread's
    /// name, at most 15 bytes, and it may itself hold spaces and parentheses.
    public var command: String
    /// Field 3: `R` running, `S` sleeping, `D` disk sleep, `Z` zombie, …
    public var state: Character
    /// Field 14: user-mode CPU time, in clock ticks (`sysconf(_SC_CLK_TCK)`).
    public var userTicks: UInt64
    /// Field 15: kernel-mode CPU time, in clock ticks.
    public var systemTicks: UInt64

    /// User plus kernel CPU time, in clock ticks.
    public var cpuTicks: UInt64 { userTicks &+ systemTicks }

    public init(pid: Int32, command: String, state: Character, userTicks: UInt64, systemTicks: UInt64) {
        self.pid = pid
        self.command = command
        self.state = state
        self.userTicks = userTicks
        self.systemTicks = systemTicks
    }

    /// Parses the one line of a `stat` file; nil when it is not one.
    ///
    /// The command is everything between the first `(` and the *last* `)`,
    /// because a process may name itself `a) b (c`; the numbered fields are
    /// read after the last `)`.
    public init?(parsing text: some StringProtocol) {
        let bytes = Array(text.utf8)
        guard let open = bytes.firstIndex(of: UInt8(ascii: "(")), let close = bytes.lastIndex(of: UInt8(ascii: ")")),
            open < close
        else { return nil }
        let pidText = bytes[..<open].filter { $0 != UInt8(ascii: " ") }
        guard let pid = Int32(String(decoding: pidText, as: UTF8.self)) else { return nil }
        // Fields 3, 4, …: after ") ", separated by single spaces.
        let fields = bytes[(close + 1)...].split(whereSeparator: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\n") })
        // State is field 3 (index 0); utime and stime are fields 14 and 15 (indices 11 and 12).
        guard fields.count >= 13, fields[0].count == 1,
            let user = UInt64(String(decoding: fields[11], as: UTF8.self)),
            let system = UInt64(String(decoding: fields[12], as: UTF8.self))
        else { return nil }
        self.init(
            pid: pid, command: String(decoding: bytes[(open + 1)..<close], as: UTF8.self),
            state: Character(Unicode.Scalar(fields[0].first!)), userTicks: user, systemTicks: system)
    }
}

/// Context switches of one thread, from the `voluntary_ctxt_switches` and
/// `nonvoluntary_ctxt_switches` lines of its `status` file. A voluntary switch
/// is the thread giving up the CPU to wait (in `ppoll`, on a lock, asleep), so
/// each is followed by a wake-up: voluntary switches count wake-ups. An
/// involuntary one is the scheduler taking the CPU away (preemption).
public struct ContextSwitches: Sendable, Hashable {
    public var voluntary: UInt64
    public var involuntary: UInt64

    public init(voluntary: UInt64, involuntary: UInt64) {
        self.voluntary = voluntary
        self.involuntary = involuntary
    }

    /// Both counters from the text of a `status` file; nil when either line is missing.
    ///
    /// Lines are matched by their key at the start of a line, so a `Name:`
    /// line holding the same words cannot be mistaken for them.
    public init?(parsingStatus text: some StringProtocol) {
        var voluntary: UInt64?, involuntary: UInt64?
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let key = line[..<colon]
            guard key == "voluntary_ctxt_switches" || key == "nonvoluntary_ctxt_switches" else { continue }
            let value = UInt64(String(line[line.index(after: colon)...].filter { !$0.isWhitespace }))
            if key == "voluntary_ctxt_switches" { voluntary = value } else { involuntary = value }
        }
        guard let voluntary, let involuntary else { return nil }
        self.init(voluntary: voluntary, involuntary: involuntary)
    }
}

/// One reading of a process (or of one of its threads): CPU time, each
/// thread's context switches, and when it was taken.
public struct ProcessSample: Sendable, Hashable {
    /// The process's `stat`: for a whole process, CPU time summed over all its
    /// threads, including threads that have exited; for a thread, its own.
    public var stat: ProcStat
    /// Context switches per thread id. Linux reports them per thread (a
    /// process's own `status` file holds its main thread's only), so a
    /// process's are the sum over `/proc/<pid>/task/*/status`.
    public var threads: [Int32: ContextSwitches]
    /// CLOCK_MONOTONIC when the sample was taken, nanoseconds.
    public var monotonicNanos: UInt64

    public init(stat: ProcStat, threads: [Int32: ContextSwitches], monotonicNanos: UInt64) {
        self.stat = stat
        self.threads = threads
        self.monotonicNanos = monotonicNanos
    }

    /// Whether the process is gone or going (zombie or dead): its figures no longer move.
    public var hasExited: Bool { stat.state == "Z" || stat.state == "X" || stat.state == "x" }

    /// Voluntary and involuntary switches summed over the threads alive at the sample.
    public var switches: ContextSwitches {
        threads.values.reduce(ContextSwitches(voluntary: 0, involuntary: 0)) {
            ContextSwitches(voluntary: $0.voluntary &+ $1.voluntary, involuntary: $0.involuntary &+ $1.involuntary)
        }
    }

    /// `sysconf(_SC_CLK_TCK)`: the unit of `stat`'s CPU times (100 on Linux).
    public static let clockTicksPerSecond: Double = {
        let ticks = sysconf(Int32(_SC_CLK_TCK))
        return ticks > 0 ? Double(ticks) : 100
    }()

    /// Reads process `pid` (nil: the calling process) from /proc: its `stat`
    /// and every thread's `status`. Nil when the process does not exist (any
    /// more) or a file cannot be parsed.
    public static func read(pid: Int32? = nil) -> ProcessSample? {
        let base = pid.map { "/proc/\($0)" } ?? "/proc/self"
        let now = monotonicNanosNow()
        guard let text = readProcFile(base + "/stat"), let stat = ProcStat(parsing: text) else { return nil }
        var threads: [Int32: ContextSwitches] = [:]
        for tid in taskIDs(base + "/task") {
            // A thread may exit between listing and reading: skip it.
            if let status = readProcFile("\(base)/task/\(tid)/status"), let switches = ContextSwitches(parsingStatus: status) {
                threads[tid] = switches
            }
        }
        guard !threads.isEmpty else { return nil }
        return ProcessSample(stat: stat, threads: threads, monotonicNanos: now)
    }

    /// Reads one thread `tid` of process `pid` (nil: the calling process):
    /// that thread's own CPU time and context switches.
    public static func read(pid: Int32? = nil, thread tid: Int32) -> ProcessSample? {
        let base = "\(pid.map { "/proc/\($0)" } ?? "/proc/self")/task/\(tid)"
        let now = monotonicNanosNow()
        guard let text = readProcFile(base + "/stat"), let stat = ProcStat(parsing: text),
            let status = readProcFile(base + "/status"), let switches = ContextSwitches(parsingStatus: status)
        else { return nil }
        return ProcessSample(stat: stat, threads: [tid: switches], monotonicNanos: now)
    }

    /// CLOCK_MONOTONIC, nanoseconds.
    public static func monotonicNanosNow() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// A whole /proc file (their size is 0 to `stat`, so read to the end).
    static func readProcFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { systemRead(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                return nil
            }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The numeric entries of a `task` directory.
    static func taskIDs(_ path: String) -> [Int32] {
        guard let directory = opendir(path) else { return [] }
        defer { closedir(directory) }
        var ids: [Int32] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if let id = Int32(name) { ids.append(id) }
        }
        return ids
    }
}

/// `read(2)` (the name `read` is taken inside ``ProcessSample``).
private func systemRead(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int) -> Int {
    #if canImport(Glibc)
        return Glibc.read(fd, buffer, count)
    #else
        return Musl.read(fd, buffer, count)
    #endif
}

/// What a process (or thread) cost between two samples: CPU time as a share
/// of one core, and context switches per second.
public struct ProcessCost: Sendable, Hashable {
    /// Wall-clock time between the samples.
    public var seconds: Double
    /// User plus kernel CPU time used between them.
    public var cpuSeconds: Double
    /// Voluntary context switches between them: wake-ups.
    public var voluntarySwitches: UInt64
    /// Involuntary context switches (preemptions) between them.
    public var involuntarySwitches: UInt64

    public init(seconds: Double, cpuSeconds: Double, voluntarySwitches: UInt64, involuntarySwitches: UInt64) {
        self.seconds = seconds
        self.cpuSeconds = cpuSeconds
        self.voluntarySwitches = voluntarySwitches
        self.involuntarySwitches = involuntarySwitches
    }

    /// The cost from `start` to `end` (two samples of the same process, `end` later).
    ///
    /// Context switches are summed per thread: a thread in both samples adds
    /// its difference, a thread only in `end` (started since) all of its
    /// count; a thread that exited between the samples is missing from `end`
    /// and its switches in the interval are lost (CPU time is not: the
    /// process's `stat` keeps its exited threads' time).
    public init(from start: ProcessSample, to end: ProcessSample, clockTicksPerSecond: Double = ProcessSample.clockTicksPerSecond) {
        var voluntary: UInt64 = 0, involuntary: UInt64 = 0
        for (tid, after) in end.threads {
            let before = start.threads[tid] ?? ContextSwitches(voluntary: 0, involuntary: 0)
            // A counter that went backwards is a reused thread id: count it from zero.
            voluntary &+= after.voluntary >= before.voluntary ? after.voluntary - before.voluntary : after.voluntary
            involuntary &+= after.involuntary >= before.involuntary ? after.involuntary - before.involuntary : after.involuntary
        }
        let ticks = end.stat.cpuTicks >= start.stat.cpuTicks ? end.stat.cpuTicks - start.stat.cpuTicks : 0
        let nanos = end.monotonicNanos >= start.monotonicNanos ? end.monotonicNanos - start.monotonicNanos : 0
        self.init(
            seconds: Double(nanos) / 1e9, cpuSeconds: Double(ticks) / clockTicksPerSecond,
            voluntarySwitches: voluntary, involuntarySwitches: involuntary)
    }

    /// CPU time as a percentage of one core (100: one core busy all the time; can exceed 100 with several threads).
    public var cpuPercentOfOneCore: Double { seconds > 0 ? cpuSeconds / seconds * 100 : 0 }
    /// Wake-ups per second (voluntary context switches).
    public var wakeupsPerSecond: Double { seconds > 0 ? Double(voluntarySwitches) / seconds : 0 }
    /// Involuntary context switches (preemptions) per second.
    public var involuntarySwitchesPerSecond: Double { seconds > 0 ? Double(involuntarySwitches) / seconds : 0 }
}

/// The calling process's CPU time and context switches from
/// `getrusage(RUSAGE_SELF)`: one system call, and — unlike the per-thread sum
/// of ``ProcessSample`` — never decreasing, because the kernel adds an exiting
/// thread's counts to its process's. That is what a counter exported for
/// scraping needs (`carillon node --metrics-listen`): a dispatch worker thread
/// that ends must not make the process's wake-ups go backwards.
public struct ProcessUsage: Sendable, Hashable {
    /// User-mode CPU time of all threads, live and exited.
    public var userSeconds: Double
    /// Kernel-mode CPU time of all threads, live and exited.
    public var systemSeconds: Double
    /// Voluntary context switches (wake-ups) of all threads, live and exited.
    public var voluntarySwitches: UInt64
    /// Involuntary context switches (preemptions) of all threads, live and exited.
    public var involuntarySwitches: UInt64

    public init(userSeconds: Double, systemSeconds: Double, voluntarySwitches: UInt64, involuntarySwitches: UInt64) {
        self.userSeconds = userSeconds
        self.systemSeconds = systemSeconds
        self.voluntarySwitches = voluntarySwitches
        self.involuntarySwitches = involuntarySwitches
    }

    /// User plus kernel CPU time.
    public var cpuSeconds: Double { userSeconds + systemSeconds }

    /// The calling process now; nil if `getrusage` fails (it does not for RUSAGE_SELF).
    public static func current() -> ProcessUsage? {
        var usage = rusage()
        guard getrusage(RUSAGE_SELF.rawValue, &usage) == 0 else { return nil }
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return ProcessUsage(
            userSeconds: seconds(usage.ru_utime), systemSeconds: seconds(usage.ru_stime),
            voluntarySwitches: UInt64(clamping: usage.ru_nvcsw), involuntarySwitches: UInt64(clamping: usage.ru_nivcsw))
    }
}
