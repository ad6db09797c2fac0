import CarillonProcessStats
import Testing

/// Parsing /proc/<pid>/stat and status on fixed text, and rates between samples.
@Suite struct ProcessStatsTests {
    /// A real line of /proc/<pid>/stat (a `carillon node`), 52 fields.
    static let statLine =
        "4242 (carillon) S 4240 4242 4240 0 -1 4194560 2817 0 0 0 1234 567 0 0 -11 0 7 0 12345 987654321 4321 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 10 2 0 0 0 0 0 0 0 0 0 0 0\n"

    @Test func statFieldsAfterTheCommand() throws {
        let stat = try #require(ProcStat(parsing: Self.statLine))
        #expect(stat.pid == 4242)
        #expect(stat.command == "carillon")
        #expect(stat.state == "S")
        #expect(stat.userTicks == 1234)
        #expect(stat.systemTicks == 567)
        #expect(stat.cpuTicks == 1801)
    }

    @Test func aCommandWithSpacesAndParenthesesIsReadToTheLastParenthesis() throws {
        // A process may name itself anything up to 15 bytes, ") S 1 2 (" included.
        let line = "77 (a) S 9 (x) y) R 1 77 1 0 -1 0 0 0 0 0 40 2 0 0 20 0 1 0 5 0 0 0"
        let stat = try #require(ProcStat(parsing: line))
        #expect(stat.pid == 77)
        #expect(stat.command == "a) S 9 (x) y")
        #expect(stat.state == "R")
        #expect(stat.userTicks == 40)
        #expect(stat.systemTicks == 2)
        let spaces = try #require(ProcStat(parsing: "5 (Web Content) Z 1 5 1 0 -1 0 0 0 0 0 3 4 0 0"))
        #expect(spaces.command == "Web Content" && spaces.state == "Z" && spaces.cpuTicks == 7)
    }

    @Test func statThatIsNotOneIsRefused() {
        #expect(ProcStat(parsing: "") == nil)
        #expect(ProcStat(parsing: "12 carillon S 1 2 3") == nil)  // no parentheses
        #expect(ProcStat(parsing: "12 (carillon) S 1 2 3 4 5") == nil)  // too few fields
        #expect(ProcStat(parsing: "x (carillon) S 1 2 3 4 5 6 7 8 9 10 11 12") == nil)
        #expect(ProcStat(parsing: "12 (carillon) S 1 2 3 4 5 6 7 8 9 10 ten 12") == nil)
    }

    static let status = """
        Name:\tcarillon
        Umask:\t0022
        State:\tS (sleeping)
        Tgid:\t4242
        Pid:\t4243
        Threads:\t7
        voluntary_ctxt_switches:\t150323
        nonvoluntary_ctxt_switches:\t4711

        """

    @Test func contextSwitchesFromStatus() throws {
        let switches = try #require(ContextSwitches(parsingStatus: Self.status))
        #expect(switches == ContextSwitches(voluntary: 150_323, involuntary: 4711))
        // The keys count only at the start of a line (a thread may be named after them).
        let named = "Name:\tvoluntary_ctxt_switches: 9\nvoluntary_ctxt_switches:\t3\nnonvoluntary_ctxt_switches:\t1\n"
        #expect(ContextSwitches(parsingStatus: named) == ContextSwitches(voluntary: 3, involuntary: 1))
        #expect(ContextSwitches(parsingStatus: "Name:\tx\nvoluntary_ctxt_switches:\t3\n") == nil)
    }

    @Test func ratesBetweenTwoSamplesArePerThreadDifferences() throws {
        let before = ProcessSample(
            stat: ProcStat(pid: 10, command: "carillon", state: "S", userTicks: 100, systemTicks: 50),
            threads: [
                10: ContextSwitches(voluntary: 5, involuntary: 1), 11: ContextSwitches(voluntary: 1000, involuntary: 10),
                12: ContextSwitches(voluntary: 7, involuntary: 0)
            ],
            monotonicNanos: 1_000_000_000)
        // 2 s later: thread 11 woke 20,000 times, 12 exited, 13 started and woke 40 times.
        let after = ProcessSample(
            stat: ProcStat(pid: 10, command: "carillon", state: "S", userTicks: 130, systemTicks: 70),
            threads: [
                10: ContextSwitches(voluntary: 6, involuntary: 1), 11: ContextSwitches(voluntary: 21_000, involuntary: 30),
                13: ContextSwitches(voluntary: 40, involuntary: 2)
            ],
            monotonicNanos: 3_000_000_000)
        let cost = ProcessCost(from: before, to: after, clockTicksPerSecond: 100)
        #expect(cost.seconds == 2)
        #expect(cost.cpuSeconds == 0.5)  // 50 ticks at 100 Hz
        #expect(cost.cpuPercentOfOneCore == 25)
        #expect(cost.voluntarySwitches == 1 + 20_000 + 40)
        #expect(cost.involuntarySwitches == 0 + 20 + 2)
        #expect(cost.wakeupsPerSecond == 10_020.5)
        #expect(cost.involuntarySwitchesPerSecond == 11)
        #expect(after.switches == ContextSwitches(voluntary: 21_046, involuntary: 33))
        // No time between the samples: no rate rather than a division by zero.
        #expect(ProcessCost(from: before, to: before).cpuPercentOfOneCore == 0)
    }

    @Test func readsThisProcessFromProc() throws {
        let first = try #require(ProcessSample.read())
        var x = 0.0
        for i in 0..<2_000_000 { x += Double(i).squareRoot() }
        let second = try #require(ProcessSample.read())
        #expect(x > 0)
        #expect(!first.threads.isEmpty && !first.hasExited)
        #expect(second.monotonicNanos > first.monotonicNanos)
        #expect(second.stat.cpuTicks >= first.stat.cpuTicks)
        let tid = try #require(first.threads.keys.min())
        #expect(ProcessSample.read(thread: tid)?.threads.keys.sorted() == [tid])
        #expect(ProcessSample.read(pid: Int32.max) == nil)
    }
}
