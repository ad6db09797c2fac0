// swift-tools-version: 6.1
import PackageDescription

// An application of the Carillon library, as the README's "Using the library"
// describes it: depend on the package, write `import Carillon`. CI builds and
// runs it (`swift run --scratch-path ../../.build-example`).
let package = Package(
    name: "TwoMembers",
    dependencies: [
        .package(name: "Carillon", path: "../..")
    ],
    targets: [
        .executableTarget(name: "TwoMembers", dependencies: [.product(name: "Carillon", package: "Carillon")])
    ]
)
