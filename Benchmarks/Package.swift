// swift-tools-version: 6.1
import PackageDescription

// Benchmarks for Carillon, kept out of the root package so that a library user
// never resolves ordo-one/benchmark. Run from this directory:
//     swift package benchmark
let package = Package(
    name: "CarillonBenchmarks",
    platforms: [.macOS(.v13)],
    dependencies: [
        .package(name: "Carillon", path: ".."),
        // The default traits also ask for swift-runtime-interposer (Linux, Swift 6.3);
        // the malloc interposer alone is what the malloc metrics need.
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"])
    ],
    targets: [
        .executableTarget(
            name: "CarillonBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "Carillon", package: "Carillon"),
                .product(name: "CarillonSimulation", package: "Carillon"),
                .product(name: "CarillonServices", package: "Carillon")
            ],
            path: "Benchmarks/CarillonBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        )
    ]
)
