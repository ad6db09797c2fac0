import ArgumentParser
import CarillonBench
import Foundation

struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Regenerate the results section of docs/benchmarks.md (and the SVG plots) from the results files.",
        discussion: """
            Reads every <scenario>.json in --results, writes each scenario's plots next to it, and replaces \
            the text between `<!-- carillon-bench:begin -->` and `<!-- carillon-bench:end -->` in --doc \
            with tables, the commands that produced them and the plots (appended when the markers are absent).

            Examples:
              .build/release/carillon-bench report
              .build/release/carillon-bench report --results docs/bench --doc docs/benchmarks.md
            """)

    @Option(help: "Directory holding <scenario>.json files.") var results = "docs/bench"
    @Option(help: "Markdown file to update.") var doc = "docs/benchmarks.md"

    func run() throws {
        let directory = URL(fileURLWithPath: results)
        let files = (try? FileManager.default.contentsOfDirectory(atPath: results))?.filter { $0.hasSuffix(".json") }.sorted() ?? []
        guard !files.isEmpty else { throw ValidationError("no <scenario>.json in \(results): run a scenario with --out \(results) first") }
        var runs: [BenchRun] = []
        for file in files {
            do { runs.append(try BenchRun.load(from: directory.appendingPathComponent(file))) } catch {
                throw ValidationError("\(results)/\(file) is not a carillon-bench results file: \(error)")
            }
        }
        for run in runs {
            for plot in BenchReport.plotFiles(for: run) {
                try plot.svg.write(to: directory.appendingPathComponent(plot.fileName), atomically: true, encoding: .utf8)
            }
        }
        let docURL = URL(fileURLWithPath: doc)
        let report = BenchReport(runs: runs, plotsDirectory: relativePath(from: docURL.deletingLastPathComponent(), to: directory))
        let existing = (try? String(contentsOf: docURL, encoding: .utf8)) ?? "# Benchmarks\n"
        try BenchReport.splice(report: report.markdown(), into: existing).write(to: docURL, atomically: true, encoding: .utf8)
        print("carillon-bench: \(doc) updated from \(runs.count) results file(s): \(runs.map(\.scenario).joined(separator: ", "))")
    }

    /// `to` relative to the directory `from` (both made absolute), for links in the markdown.
    func relativePath(from: URL, to: URL) -> String {
        let a = from.standardizedFileURL.pathComponents, b = to.standardizedFileURL.pathComponents
        var common = 0
        while common < min(a.count, b.count), a[common] == b[common] { common += 1 }
        let ups = Array(repeating: "..", count: a.count - common)
        let path = (ups + b[common...]).joined(separator: "/")
        return path.isEmpty ? "." : path
    }
}
