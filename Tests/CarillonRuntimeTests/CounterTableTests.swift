import CarillonMembership
import CarillonOrdering
@testable import CarillonRuntime
@testable import CarillonServiceNode
import CarillonServices
import CarillonTransport
import Foundation
import MetricsTestKit
import Testing

/// The counter tables (`CounterSet.descriptors`) are the one definition of the
/// member's and the services' counters: every stored field has a descriptor,
/// and the sums, the swift-metrics export, the stop report and
/// docs/operations.md follow them.
///
/// Set `CARILLON_REWRITE=1` to rewrite the generated table in docs/operations.md
/// from the descriptors (then review the diff).
@Suite("Counter tables")
struct CounterTableTests {
    /// Names exported through swift-metrics before the tables existed: dashboards use them, so they never change.
    static let namesExportedBefore: Set<String> = [
        "carillon_slot_frames_sent", "carillon_repair_frames_sent", "carillon_frames_received",
        "carillon_frames_duplicate", "carillon_frames_malformed", "carillon_frames_beyond_window",
        "carillon_naks_sent", "carillon_naks_received", "carillon_frames_retransmitted",
        "carillon_messages_broadcast", "carillon_messages_delivered", "carillon_send_buffer_full",
        "carillon_frames_bad_tag", "carillon_frames_missing_tag", "carillon_late_slots",
        "carillon_datagrams_not_sent", "carillon_suspicions_raised", "carillon_suspicions_cleared",
        "carillon_views_installed", "carillon_view_ballots_started", "carillon_exclusions",
        "carillon_state_bytes_sent", "carillon_state_bytes_received",
        "carillon_services_commands_applied", "carillon_services_retries_answered", "carillon_services_duplicates_ignored",
        "carillon_services_bad_requests", "carillon_services_foreign_sessions", "carillon_services_windows_full",
        "carillon_services_sessions_ended", "carillon_services_view_changes",
        "carillon_services_sessions_open", "carillon_services_applied_index"
    ]

    /// Names exported as gauges before the tables existed: they stay gauges.
    static let gaugesExportedBefore: Set<String> = ["carillon_services_sessions_open", "carillon_services_applied_index"]

    /// A set's counters with counter `i` of its table set to `(i + 1) * scale`.
    static func numbered<C: CounterSet>(_: C.Type, scale: Int = 1) -> C {
        var counters = C()
        for (i, counter) in C.descriptors.enumerated() { counters[keyPath: counter.keyPath] = (i + 1) * scale }
        return counters
    }

    /// The stored fields and their values, as `Mirror` sees them (not through the table).
    static func fields<C>(_ counters: C) -> [(label: String, value: Any)] {
        Mirror(reflecting: counters).children.map { ($0.label!, $0.value) }
    }

    /// `OrderingCounters.slotFramesSent` for the descriptor's key path.
    static func fieldName<C>(_ counter: CounterDescriptor<C>) -> String {
        String(String(describing: counter.keyPath).dropFirst())  // the key path prints as `\OrderingCounters.slotFramesSent`
    }

    /// Checks one set: every stored field has exactly one
    /// descriptor, and each descriptor's key path reaches the field it is listed for.
    func checkCovers<C: CounterSet>(_: C.Type) {
        let numbered = Self.numbered(C.self)
        var seen: Set<Int> = []
        for (label, value) in Self.fields(numbered) {
            // A field no descriptor writes is still 0: it has no descriptor.
            let number = value as? Int
            #expect(number != nil && number! > 0, "\(C.self).\(label) has no descriptor in \(C.self).descriptors")
            guard let number, number > 0 else { continue }
            #expect(seen.insert(number).inserted, "\(C.self).\(label) is written by two descriptors")
            // The field the key path names is the field it writes.
            #expect(Self.fieldName(C.descriptors[number - 1]) == "\(C.self).\(label)")
        }
        #expect(seen.count == C.descriptors.count, "\(C.self): \(C.descriptors.count) descriptors for \(seen.count) fields")
    }

    @Test func everyStoredFieldHasExactlyOneDescriptor() {
        checkCovers(OrderingCounters.self)
        checkCovers(MembershipCounters.self)
        checkCovers(TransportCounters.self)
        checkCovers(RuntimeCounters.self)
        checkCovers(ServiceCounters.self)
    }

    @Test func aFieldWithoutADescriptorIsFound() {
        // The check above, on a set that lacks one: the field stays at zero.
        let missing = Self.fields(Self.numbered(Partial.self)).filter { ($0.value as? Int) == 0 }.map(\.label)
        #expect(missing == ["forgotten"])
    }

    static var allNames: [String] {
        MemberMetrics.labels + ServiceCounters.descriptors.map(\.name)
    }

    @Test func namesAreUniqueSnakeCaseAndKeepWhatWasExported() {
        let names = Self.allNames
        #expect(Set(names).count == names.count, "duplicate names: \(Dictionary(grouping: names) { $0 }.filter { $0.value.count > 1 }.keys)")
        for name in names {
            #expect(name.hasPrefix("carillon_") && name.allSatisfy { $0 == "_" || $0.isASCII && ($0.isLowercase || $0.isNumber) }, "\(name)")
        }
        #expect(Self.namesExportedBefore.subtracting(names).isEmpty, "renamed: \(Self.namesExportedBefore.subtracting(names))")
        #expect(
            MemberMetrics.labels == OrderingCounters.descriptors.map(\.name) + MembershipCounters.descriptors.map(\.name)
                + TransportCounters.descriptors.map(\.name) + RuntimeCounters.descriptors.map(\.name))
        #expect(ServiceMetrics.labels == ServiceCounters.descriptors.map(\.name))
        let gauges = Set(ServiceCounters.descriptors.filter { $0.kind == .gauge }.map(\.name))
        #expect(Self.gaugesExportedBefore.isSubset(of: gauges), "no longer gauges: \(Self.gaugesExportedBefore.subtracting(gauges))")
    }

    @Test func helpTextFitsOneTableCell() {
        func check<C: CounterSet>(_: C.Type) {
            for counter in C.descriptors {
                #expect(!counter.help.isEmpty && !counter.help.contains("|") && !counter.help.contains("\n"), "\(counter.name)")
            }
        }
        check(OrderingCounters.self)
        check(MembershipCounters.self)
        check(TransportCounters.self)
        check(RuntimeCounters.self)
        check(ServiceCounters.self)
    }

    @Test func sumsAddEveryCounterAndKeepTheLaterGauge() {
        func check<C: CounterSet>(_: C.Type) {
            let sum = Self.numbered(C.self) + Self.numbered(C.self, scale: 100)
            for (i, counter) in C.descriptors.enumerated() {
                let expected = counter.kind == .gauge ? (i + 1) * 100 : (i + 1) * 101
                #expect(sum[keyPath: counter.keyPath] == expected, "\(counter.name)")
            }
            // Checked through Mirror as well: a field the sum skipped would keep the first side's value.
            for (label, value) in Self.fields(sum) {
                #expect((value as? Int).map { $0 % 100 == 0 || $0 % 101 == 0 } == true && (value as? Int)! > 100, "\(C.self).\(label) = \(value)")
            }
        }
        check(OrderingCounters.self)
        check(MembershipCounters.self)
        check(TransportCounters.self)
        check(RuntimeCounters.self)
        check(ServiceCounters.self)
    }

    @Test func theSumOfAMembersViewsIsTheirFieldwiseSum() {
        var a = OrderingCounters(), b = OrderingCounters()
        a.lateFrames = 2; b.lateFrames = 3; a.promisesOwed = 1; b.naksClipped = 7
        var added = a
        added.add(b)
        #expect(added == a + b)
        #expect(added.lateFrames == 5 && added.promisesOwed == 1 && added.naksClipped == 7)
    }

    @Test func memberMetricsExportsEveryCounterUnderItsName() throws {
        let metrics = TestMetrics()
        var exported = MemberMetrics(node: 3, factory: metrics)
        let o = Self.numbered(OrderingCounters.self), m = Self.numbered(MembershipCounters.self)
        let t = Self.numbered(TransportCounters.self), r = Self.numbered(RuntimeCounters.self)
        exported.publish(o, m, t, r)
        // Differences: the second publish adds what grew since the first.
        exported.publish(Self.numbered(OrderingCounters.self, scale: 3), m, t, r)
        try Self.checkExported(OrderingCounters.self, in: metrics, node: 3, scale: 3)
        try Self.checkExported(MembershipCounters.self, in: metrics, node: 3, scale: 1)
        try Self.checkExported(TransportCounters.self, in: metrics, node: 3, scale: 1)
        try Self.checkExported(RuntimeCounters.self, in: metrics, node: 3, scale: 1)
    }

    /// Every entry of `C`'s table is exported under its name with its kind: a
    /// counter totals `(i + 1) * scale` (the last numbered values), a gauge's last value is that.
    static func checkExported<C: CounterSet>(_: C.Type, in metrics: TestMetrics, node: Int, scale: Int) throws {
        for (i, counter) in C.descriptors.enumerated() {
            switch counter.kind {
            case .counter:
                let exported = try metrics.expectCounter(counter.name, [("node", "\(node)")])
                #expect(exported.totalValue == Int64((i + 1) * scale), "\(counter.name)")
            case .gauge:
                let exported = try metrics.expectGauge(counter.name, [("node", "\(node)")])
                #expect(exported.lastValue == Double((i + 1) * scale), "\(counter.name)")
            }
        }
    }

    @Test func serviceMetricsExportEveryCounterAndGaugeUnderItsName() throws {
        let metrics = TestMetrics()
        var exported = ServiceMetrics(node: 5, factory: metrics)
        exported.publish(Self.numbered(ServiceCounters.self), atNanos: 1_000_000_000)
        // Within the publish interval nothing is exported; after it, what grew (counters) and the new levels (gauges).
        exported.publish(Self.numbered(ServiceCounters.self, scale: 9), atNanos: 1_000_000_000 + ServiceMetrics.publishIntervalNanos - 1)
        try Self.checkExported(ServiceCounters.self, in: metrics, node: 5, scale: 1)
        exported.publish(Self.numbered(ServiceCounters.self, scale: 4), atNanos: 1_000_000_000 + ServiceMetrics.publishIntervalNanos)
        try Self.checkExported(ServiceCounters.self, in: metrics, node: 5, scale: 4)
        // The names dashboards use, with their kinds.
        #expect(
            try metrics.expectGauge("carillon_services_applied_index", [("node", "5")]).lastValue
                == Double(4 * (ServiceCounters.descriptors.firstIndex { $0.name == "carillon_services_applied_index" }! + 1)))
        #expect(try metrics.expectCounter("carillon_services_commands_applied", [("node", "5")]).totalValue == 4)
    }

    @Test func theStopReportListsEveryCounter() {
        let report = StopReport(
            unsentMessages: 0, deliveryCursor: (0, 0), nextRoundToSend: 0, view: nil,
            ordering: Self.numbered(OrderingCounters.self), membership: Self.numbered(MembershipCounters.self),
            transport: Self.numbered(TransportCounters.self), runtime: Self.numbered(RuntimeCounters.self))
        let lines = report.counterLines
        #expect(lines.count == 4)
        func check<C: CounterSet>(_: C.Type, line: String) {
            let entries = line.split(separator: ": ", maxSplits: 1).last!.components(separatedBy: ", ")
            #expect(entries == C.descriptors.enumerated().map { "\($1.shortName) \($0 + 1)" })
        }
        check(OrderingCounters.self, line: lines[0])
        check(MembershipCounters.self, line: lines[1])
        check(TransportCounters.self, line: lines[2])
        check(RuntimeCounters.self, line: lines[3])
        // --stats lists only what moved.
        var few = MembershipCounters()
        few.exclusions = 2
        #expect(few.report(includingZeros: false) == "exclusions 2")
    }

    // MARK: docs/operations.md

    static let docsURL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("docs/operations.md")
    static let beginMarker =
        "<!-- counters: generated from the CounterSet tables; Tests/CarillonRuntimeTests/CounterTableTests.swift checks it, CARILLON_REWRITE=1 rewrites it -->"
    static let endMarker = "<!-- end of generated counters -->"

    /// The member's and the services' counters as a markdown table, in the tables' order.
    static func markdownTable() -> [String] {
        var lines = ["| name | kind | unit | field | counts |", "| --- | --- | --- | --- | --- |"]
        func rows<C: CounterSet>(_: C.Type) {
            for counter in C.descriptors {
                lines.append(
                    "| `\(counter.name)` | \(counter.kind.rawValue) | \(counter.unit.rawValue) | `\(fieldName(counter))` | \(counter.help) |")
            }
        }
        rows(OrderingCounters.self)
        rows(MembershipCounters.self)
        rows(TransportCounters.self)
        rows(RuntimeCounters.self)
        rows(ServiceCounters.self)
        return lines
    }

    @Test func docsListEveryCounterAsTheTablesDo() throws {
        let text = try String(contentsOf: Self.docsURL, encoding: .utf8)
        var lines = text.components(separatedBy: "\n")
        let begin = try #require(lines.firstIndex(of: Self.beginMarker), "docs/operations.md has no line \(Self.beginMarker)")
        let end = try #require(lines[begin...].firstIndex(of: Self.endMarker), "docs/operations.md has no line \(Self.endMarker)")
        let expected = Self.markdownTable()
        let documented = Array(lines[(begin + 1)..<end])
        if ProcessInfo.processInfo.environment["CARILLON_REWRITE"] == "1" {
            lines.replaceSubrange((begin + 1)..<end, with: expected)
            try lines.joined(separator: "\n").write(to: Self.docsURL, atomically: true, encoding: .utf8)
            return
        }
        guard documented != expected else { return }
        let i = zip(documented, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(documented.count, expected.count)
        Issue.record(
            """
            docs/operations.md's counters differ from the tables at line \(begin + 2 + i) \
            (run with CARILLON_REWRITE=1 and review the diff):
              documented: \(i < documented.count ? documented[i] : "(end of table)")
              expected:   \(i < expected.count ? expected[i] : "(end of table)")
            """)
    }
}

/// A counter set that forgot a descriptor.
private struct Partial: CounterSet {
    var described = 0
    var forgotten = 0
    static let descriptors: [CounterDescriptor<Partial>] = [.init("carillon_described", .events, \.described, "described")]
}
