// swift-tools-version: 6.1
import PackageDescription

// Layering (see docs/architecture.md): the pure protocol targets import only the
// Swift standard library; shells and executables sit above them. Benchmarks/ and
// Fuzz/ are packages of their own so that a library user never resolves their
// dependencies.
let package = Package(
    name: "Carillon",
    products: [
        .library(name: "Carillon", targets: ["Carillon"]),
        .library(name: "CarillonSimulation", targets: ["CarillonSimulation"]),
        .library(name: "CarillonServices", targets: ["CarillonServices"]),
        .library(name: "CarillonClient", targets: ["CarillonClient"]),
        .executable(name: "carillon-sim", targets: ["carillon-sim"]),
        .executable(name: "carillon", targets: ["carillon"]),
        .executable(name: "carillon-tap", targets: ["carillon-tap"]),
        .library(name: "CarillonCapture", targets: ["CarillonCapture"]),
        // The bus over RDMA (libibverbs); an application passes its VerbsTransport to Member(configuration:transport:).
        .library(name: "CarillonVerbs", targets: ["CarillonVerbs"]),
        .executable(name: "carillon-bench", targets: ["carillon-bench"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        // The Prometheus backend for swift-metrics behind `carillon node --metrics-listen`; only the
        // CarillonMetricsEndpoint target and the carillon executable use it, never the library products.
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // `swift package generate-documentation` (DocC) for the Carillon catalog and the layers'
        // API; a command plugin only, no library target links it.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0")
    ],
    targets: [
        // Pure layers: standard library only, time is an argument.
        .target(name: "CarillonWire"),
        .target(name: "CarillonSchedule"),
        .target(name: "CarillonOrdering", dependencies: ["CarillonWire", "CarillonSchedule"]),
        .target(name: "CarillonMembership", dependencies: ["CarillonOrdering", "CarillonWire", "CarillonSchedule"]),
        // Services as replicated state machines on the bus's event stream: the
        // envelope, sessions, locks, the object store.
        .target(name: "CarillonServices", dependencies: ["CarillonMembership", "CarillonOrdering"]),
        // The bulk channel's datagrams, pacer, sender and receiver.
        .target(name: "CarillonBulk", dependencies: ["CarillonSchedule"]),

        // Shells: sockets, clocks, threads.
        .target(name: "CCarillonSys"),
        .systemLibrary(name: "CSodium", pkgConfig: "libsodium", providers: [.apt(["libsodium-dev"])]),
        .target(name: "CarillonAuth", dependencies: ["CSodium", "CarillonWire"]),
        .systemLibrary(name: "CPcap", pkgConfig: "libpcap", providers: [.apt(["libpcap-dev"])]),
        .target(name: "CarillonCapture", dependencies: ["CPcap", "CarillonWire", "CarillonAuth", "CarillonSchedule"]),
        .target(name: "CarillonTransport", dependencies: ["CCarillonSys"]),
        // The bus over RDMA (docs/rdma.md): libibverbs, and the UD transport behind the FrameTransport seam.
        .systemLibrary(name: "CIBVerbs", pkgConfig: "libibverbs", providers: [.apt(["libibverbs-dev"])]),
        .target(name: "CarillonVerbs", dependencies: ["CIBVerbs", "CarillonTransport", "CCarillonSys"]),
        // CPU time and context switches of a process from /proc (carillon node --stats, carillon-bench).
        .target(name: "CarillonProcessStats"),
        // `carillon node --metrics-listen`: the member's swift-metrics counters and the process's CPU
        // time and context switches in Prometheus text format, served by a small HTTP/1.1 responder
        // on its own thread (Glibc sockets, no NIO).
        .target(
            name: "CarillonMetricsEndpoint",
            dependencies: [
                "CCarillonSys", "CarillonTransport", "CarillonProcessStats",
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Metrics", package: "swift-metrics")
            ]
        ),
        .target(
            name: "CarillonRuntime",
            dependencies: [
                "CarillonOrdering", "CarillonMembership", "CarillonSchedule", "CarillonTransport", "CarillonAuth", "CCarillonSys", "CarillonWire",
                "CarillonBulk",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics")
            ]
        ),
        // Services bound to a member, and the local client endpoint.
        .target(
            name: "CarillonServiceNode",
            dependencies: [
                "CarillonServices", "CarillonClient", "CarillonRuntime", "CarillonMembership", "CarillonOrdering", "CCarillonSys",
                "CarillonAuth", "CarillonProcessStats",
                .product(name: "Logging", package: "swift-log"), .product(name: "Metrics", package: "swift-metrics")
            ]),
        // The async client of a node's Unix socket (no runtime needed).
        .target(name: "CarillonClient", dependencies: ["CarillonServices"]),
        // The umbrella: `import Carillon` re-exports every module listed here (Sources/Carillon/Carillon.swift),
        // what an application running members and services in its own process uses; tools/check-shadowing.sh.
        .target(
            name: "Carillon",
            dependencies: [
                "CarillonBulk", "CarillonWire", "CarillonSchedule", "CarillonOrdering", "CarillonMembership", "CarillonTransport", "CarillonAuth",
                "CarillonRuntime",
                "CarillonServices", "CarillonServiceNode"
            ]),

        // Deterministic whole-cluster simulator (test support, also pure).
        .target(
            name: "CarillonSimulation",
            dependencies: ["CarillonOrdering", "CarillonMembership", "CarillonSchedule", "CarillonWire", "CarillonServices"]),
        .executableTarget(
            name: "carillon-sim",
            dependencies: [
                "CarillonSimulation", "CarillonOrdering", "CarillonMembership", "CarillonServices",
                .product(name: "ArgumentParser", package: "swift-argument-parser")
            ]
        ),

        .executableTarget(
            name: "carillon-tap",
            dependencies: [
                "CarillonCapture", "CarillonAuth", "CarillonSchedule",
                .product(name: "ArgumentParser", package: "swift-argument-parser")
            ]
        ),
        // The log checks behind `carillon verify` (Foundation only).
        .target(name: "CarillonVerify"),
        .executableTarget(
            name: "carillon",
            dependencies: [
                "CarillonVerify", "CarillonRuntime", "CarillonTransport", "CarillonOrdering", "CarillonMembership", "CarillonAuth", "CCarillonSys",
                "CarillonVerbs",
                "CarillonBulk", "CarillonProcessStats", "CarillonServiceNode", "CarillonServices", "CarillonClient", "CarillonMetricsEndpoint",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics")
            ]
        ),

        // carillon-bench: results model, HdrHistogram summaries, CSV, SVG plots and
        // the docs/benchmarks.md report (Foundation only), and the orchestrator.
        .target(name: "CarillonBench", dependencies: [.product(name: "Histogram", package: "hdrhistogram-swift")]),
        .executableTarget(
            name: "carillon-bench",
            dependencies: [
                "CarillonBench", "CarillonTransport", "CarillonRuntime", "CCarillonSys", "CarillonProcessStats",
                // `services`: the bench connects to each node's client socket as a client would.
                "CarillonClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift")
            ]
        ),

        .testTarget(name: "CarillonWireTests", dependencies: ["CarillonWire"], exclude: ["Corpus"]),
        .testTarget(name: "CarillonScheduleTests", dependencies: ["CarillonSchedule"]),
        .testTarget(
            name: "CarillonOrderingTests", dependencies: ["CarillonOrdering", "CarillonSchedule", "CarillonWire", "CarillonSimulation"],
            exclude: ["Transcripts"]),
        .testTarget(
            name: "CarillonRuntimeTests",
            dependencies: [
                "CarillonRuntime", "CarillonTransport", "CarillonOrdering", "CarillonAuth", "CarillonWire", "CarillonBulk",
                "CarillonServiceNode", "CarillonServices", "CarillonClient", "CarillonMembership",
                .product(name: "Logging", package: "swift-log"),
                // The counter tables' export test (CounterTableTests) reads what MemberMetrics published.
                .product(name: "MetricsTestKit", package: "swift-metrics")
            ]
        ),
        .testTarget(
            name: "CarillonMembershipTests",
            dependencies: ["CarillonMembership", "CarillonSimulation", "CarillonOrdering", "CarillonSchedule", "CarillonWire"],
            exclude: ["Transcripts"]),
        .testTarget(name: "CarillonServicesTests", dependencies: ["CarillonServices", "CarillonMembership", "CarillonOrdering"]),
        .testTarget(
            name: "CarillonSimulationTests", dependencies: ["CarillonSimulation", "CarillonOrdering", "CarillonServices", "CarillonMembership"]),
        .testTarget(name: "CarillonBulkTests", dependencies: ["CarillonBulk", "CarillonSchedule"]),
        .testTarget(
            name: "CarillonBenchTests",
            dependencies: ["CarillonBench", "CarillonProcessStats", .product(name: "Histogram", package: "hdrhistogram-swift")]),
        .testTarget(name: "CarillonVerifyTests", dependencies: ["CarillonVerify"]),
        .testTarget(
            name: "CarillonVerbsTests",
            dependencies: ["CarillonVerbs", "CarillonTransport", "CarillonRuntime", "CarillonOrdering", "CarillonMembership", "CarillonSchedule"]),
        .testTarget(name: "CarillonAuthTests", dependencies: ["CarillonAuth"]),
        .testTarget(
            name: "CarillonMetricsEndpointTests",
            dependencies: [
                "CarillonMetricsEndpoint", "CarillonProcessStats", "CarillonTransport",
                .product(name: "Metrics", package: "swift-metrics")
            ]
        ),
        .testTarget(
            name: "CarillonCaptureTests",
            dependencies: ["CarillonCapture", "CarillonWire", "CarillonAuth", "CarillonSchedule", "CarillonRuntime", "CarillonTransport"])
    ]
)
