// swift-tools-version: 6.1
import PackageDescription

// A libFuzzer target for the frame decoder, kept out of the main package: it
// only links with -sanitize=fuzzer (see docs/testing.md for the command).
let package = Package(
    name: "CarillonFuzz",
    dependencies: [.package(name: "Carillon", path: "..")],
    targets: [
        .executableTarget(
            name: "FuzzFrameDecoder",
            dependencies: [.product(name: "Carillon", package: "Carillon")]
        )
    ]
)
