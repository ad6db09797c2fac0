import CarillonRuntime
import CarillonTransport
import Glibc
import Testing

/// Issue 12 defect 7: the agent thread asks for real-time scheduling where
/// permitted and says what it got; a refusal is a notice, never a failure.
@Suite("Agent scheduling")
struct AgentSchedulingTests {
    @Test func policiesParse() {
        #expect(AgentScheduling.policy("rr") == .roundRobin(priority: 10))
        #expect(AgentScheduling.policy("rr:20") == .roundRobin(priority: 20))
        #expect(AgentScheduling.policy("fifo:5") == .fifo(priority: 5))
        #expect(AgentScheduling.policy("normal") == .normal)
        for bad in ["rr:0", "rr:100", "fifo:x", "idle", "normal:3", ""] { #expect(AgentScheduling.policy(bad) == nil, "\(bad)") }
        #expect(AgentScheduling.text(.roundRobin(priority: 10)) == "rr:10")
    }

    func member(_ scheduling: AgentScheduling) throws -> Member {
        let endpoints = try freeLoopbackPorts(1)
        var configuration = try MemberConfiguration(
            node: 0, nodes: endpoints, roundPeriodNanos: 200_000,
            startNanos: MemberClock.viewNanos(), authentication: .off)
        configuration.idleStrategy = .blocking
        configuration.scheduling = scheduling
        return try Member(configuration: configuration) { _, _ in }
    }

    /// Real-time round robin where permitted (root or CAP_SYS_NICE here), normal otherwise — reported either way.
    @Test func roundRobinWherePermitted() throws {
        let node = try member(AgentScheduling(policy: .roundRobin(priority: 10), lockMemory: false, cpu: 0))
        try node.start()
        defer { node.stop() }
        let report = try #require(node.schedulingReport)
        if geteuid() == 0 {
            #expect(report.policy == .roundRobin(priority: 10), "\(report)")
            #expect(report.policyRefused == nil)
            #expect(report.description.contains("SCHED_RR priority 10"))
        } else {
            #expect(report.policy == .normal || report.policy == .roundRobin(priority: 10))
            if report.policy == .normal { #expect(report.policyRefused?.contains("EPERM") == true) }
        }
        #expect(report.cpu == 0, "\(report)")
        #expect(!report.memoryLocked && report.memoryRefused == nil)
    }

    /// A refused request (priority out of range, a CPU that does not exist) falls back and says why.
    @Test func aRefusedRequestFallsBackAndSaysWhy() throws {
        let node = try member(AgentScheduling(policy: .fifo(priority: 150), lockMemory: false, cpu: 1_000))
        try node.start()
        defer { node.stop() }
        let report = try #require(node.schedulingReport)
        #expect(report.policy == .normal)
        #expect(report.policyRefused != nil)
        #expect(report.cpu == nil && report.cpuRefused != nil)
        #expect(report.refusals?.contains("fifo:150 not permitted") == true, "\(report.refusals ?? "-")")
        #expect(report.description.hasPrefix("agent thread normal (fifo:150 refused"), "\(report)")
    }
}
