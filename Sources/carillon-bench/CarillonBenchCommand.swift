import ArgumentParser

struct CarillonBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "carillon-bench",
        abstract: "Carillon's latency and throughput benchmarks.",
        subcommands: [])
}
