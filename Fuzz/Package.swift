// swift-tools-version: 6.1
import PackageDescription

// libFuzzer targets for the frame decoder and for carillon-tap's packet path,
// kept out of the main package: they only link with -sanitize=fuzzer (see
// docs/testing.md for the command).
let package = Package(
    name: "CarillonFuzz",
    dependencies: [.package(name: "Carillon", path: "..")],
    targets: [
        .executableTarget(
            name: "FuzzFrameDecoder",
            dependencies: [.product(name: "Carillon", package: "Carillon")]
        ),
        .executableTarget(
            name: "FuzzCapturedPacket",
            dependencies: [
                .product(name: "Carillon", package: "Carillon"),
                .product(name: "CarillonCapture", package: "Carillon")
            ]
        )
    ]
)
