import ArgumentParser

struct CarillonBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "carillon-bench",
        abstract: "Carillon's benchmarks: each scenario is one command; results go to --out as JSON, CSV and SVG plots.",
        discussion: """
            Run from a release build. As root the members are separate processes in network namespaces on \
            a bridge; without root they are separate processes on loopback and the results say so. Every \
            latency is recorded in an HdrHistogram; what each member process costs (CPU, wake-ups) is read \
            from /proc over the measured phase. `report` turns the results into docs/benchmarks.md.

            Examples:
              swift build -c release --product carillon && swift build -c release --product carillon-bench
              sudo .build/release/carillon-bench baseline
              sudo .build/release/carillon-bench ordered --members 3 --sizes 64,1024
              sudo .build/release/carillon-bench interference
              sudo .build/release/carillon-bench corosync
              sudo .build/release/carillon-bench idle            # CPU and wake-ups per member, idle and loaded
              sudo .build/release/carillon-bench latency         # issue 13's latency ratios: fan-out, slots, promises, open loop, CPU hog
              sudo .build/release/carillon-bench services        # locks and replicated objects, beside etcd (tmpfs and disk)
              sudo .build/release/carillon-bench migration       # owned objects of 1, 64, 512 MiB moving between hosts
              .build/release/carillon-bench report --results bench-results --doc docs/benchmarks.md
            """,
        subcommands: [
            Baseline.self, Ordered.self, Throughput.self, Interference.self, CorosyncComparison.self, Idle.self, Latency.self, Services.self,
            Migration.self,
            Report.self,
            UDPPingPong.self, CPGAgent.self
        ])
}
