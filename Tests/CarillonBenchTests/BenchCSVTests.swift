import CarillonBench
import Testing

@Suite struct BenchCSVTests {
    /// A minimal RFC 4180 reader, to check the writer against.
    static func records(_ csv: String) -> [[String]] {
        var records: [[String]] = []
        var record: [String] = []
        var field = ""
        var quoted = false
        var characters = Array(csv)[...]
        while let c = characters.popFirst() {
            if quoted {
                if c == "\"" {
                    if characters.first == "\"" {
                        field.append("\"")
                        characters.removeFirst()
                    } else {
                        quoted = false
                    }
                } else {
                    field.append(c)
                }
            } else if c == "\"" {
                quoted = true
            } else if c == "," {
                record.append(field)
                field = ""
            } else if c == "\n" {
                record.append(field)
                records.append(record)
                record = []
                field = ""
            } else {
                field.append(c)
            }
        }
        #expect(field.isEmpty && record.isEmpty, "CSV does not end with a newline")
        return records
    }

    let run = BenchRun(
        scenario: "throughput", environment: Fixtures.environment, settings: [:],
        results: [
            BenchResult(
                scenario: "throughput", system: "carillon", placement: "namespaces",
                parameters: ["size_bytes": "64", "members": "3"],
                latency: Fixtures.latency(min: 12.3456, p50: 100.0001, p99: 200.5, p999: 300, max: 400), notes: []),
            BenchResult(
                scenario: "throughput", system: "corosync-cpg", placement: "namespaces",
                parameters: ["size_bytes": "1024", "mode": "throughput, \"max\""],
                throughput: ThroughputSummary(messagesPerSecondPerMember: [100, 200], bytesPerSecondPerMember: [6400, 12800]),
                notes: ["h1 fell short", "second line\nhere"])
        ])

    @Test func headerHasTheUnionOfParameterKeysSorted() {
        let records = Self.records(run.csv())
        #expect(
            records[0] == [
                "scenario", "system", "placement", "members", "mode", "size_bytes", "count", "min_us", "mean_us", "p50_us", "p90_us",
                "p99_us", "p999_us", "max_us", "msgs_per_s_per_member", "bytes_per_s_per_member", "notes"
            ])
        #expect(records.count == 3)
        #expect(records.allSatisfy { $0.count == records[0].count })
    }

    @Test func rowsHaveEmptyCellsForAbsentValues() {
        let records = Self.records(run.csv())
        #expect(
            records[1] == [
                "throughput", "carillon", "namespaces", "3", "", "64", "10000", "12.346", "110", "100", "150.25", "200.5", "300", "400",
                "", "", ""
            ])
        #expect(
            records[2] == [
                "throughput", "corosync-cpg", "namespaces", "", "throughput, \"max\"", "1024", "", "", "", "", "", "", "", "", "150",
                "9600", "h1 fell short; second line\nhere"
            ])
    }

    @Test func fieldsAreQuotedOnlyWhenNeeded() {
        let csv = run.csv()
        #expect(csv.contains(",\"throughput, \"\"max\"\"\","))
        #expect(csv.contains("\"h1 fell short; second line\nhere\"\n"))
        #expect(csv.hasPrefix("scenario,system,placement,members,"))
        #expect(!csv.contains("\"carillon\""))
    }

    @Test func emptyRunHasOnlyTheHeader() {
        let empty = BenchRun(scenario: "x", environment: Fixtures.environment, settings: [:], results: [])
        #expect(
            empty.csv()
                == "scenario,system,placement,count,min_us,mean_us,p50_us,p90_us,p99_us,p999_us,max_us,msgs_per_s_per_member,bytes_per_s_per_member,notes\n"
        )
    }
}
