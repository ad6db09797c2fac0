import CarillonVerify
import Testing

/// The checks behind `carillon verify`, on logs written out here.
@Suite struct LogComparisonTests {
    static let view1 = "# view 1 100 0 cbf29ce484222325 members=0,1\n"

    /// Issue 12, defect 10: a joiner that never joined leaves an empty log;
    /// reading it trapped (`prefix(-1)`). It must read as "no view, no
    /// deliveries", and the other logs must still be checked.
    @Test func anEmptyLogIsNoViewAndNoDeliveriesAndTheOthersAreStillChecked() throws {
        let empty = try MemberLog(name: "joiner.log", text: "")
        #expect(empty.isEmpty)
        #expect(empty.segments.isEmpty && empty.installations.isEmpty && empty.messageCount == 0)
        let a = try MemberLog(name: "a.log", text: Self.view1 + "0 1 5 6\n1 1 7 8\n")
        let b = try MemberLog(name: "b.log", text: Self.view1 + "0 1 5 6\n1 1 7 9\n")
        let agree = LogComparison(logs: [a, empty, b]).check()
        #expect(agree.problems.isEmpty, "\(agree.problems)")
        #expect(agree.epochs == 1)
        // A disagreement among the others is still found beside the empty log.
        let c = try MemberLog(name: "c.log", text: Self.view1 + "1 1 7 8\n0 1 5 6\n")
        let disagree = LogComparison(logs: [a, empty, c]).check()
        #expect(disagree.problems.count == 1, "\(disagree.problems)")
    }

    /// A log that holds only half a line (killed while writing its first) is
    /// empty too; a log of one complete line without a view line is the first view.
    @Test func aHalfWrittenFirstLineIsAnEmptyLog() throws {
        #expect(try MemberLog(name: "x.log", text: "0 1 5").isEmpty)
        let one = try MemberLog(name: "y.log", text: "0 1 5 6\n")
        #expect(one.messageCount == 1 && one.segments.first?.epoch == 1)
    }
}
