// swift-tools-version: 6.0
import PackageDescription

// Dependency direction (see README "Architecture"): the engine knows nothing of the CLI;
// CLI -> Runner -> Store -> Suites -> Training -> (Engine, Optim, Datasets) -> system libraries.
let package = Package(
    name: "sambench",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "sambench", targets: ["sambench"]),
        .library(name: "Engine", targets: ["Engine"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
    ],
    targets: [
        .systemLibrary(name: "CDNNL", providers: [.apt(["libdnnl-dev"])]),
        .systemLibrary(name: "CBLAS", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CCairo", providers: [.apt(["libcairo2-dev"])]),
        .systemLibrary(name: "CPNG", providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CLibCrypto", providers: [.apt(["libssl-dev"])]),
        .target(name: "Engine", dependencies: ["CDNNL", "CBLAS"]),
        .target(name: "Optim", dependencies: ["Engine"]),
        .target(name: "Datasets", dependencies: ["Engine", "CZlib", "CLibCrypto"]),
        .target(name: "Training", dependencies: ["Engine", "Optim", "Datasets"]),
        // Suites (TOML) -> run specs and keys; Store (SQLite) -> results; Runner -> worker processes.
        .target(name: "Suites", dependencies: ["Training", "Datasets", "TOMLKit"]),
        .target(name: "Store", dependencies: ["Suites", "Training", "Datasets", .product(name: "GRDB", package: "GRDB.swift")]),
        .target(name: "CProcess"),
        .target(name: "Runner", dependencies: ["Store", "Suites", "Training", "Datasets", "CProcess"]),
        // Report: statistics over seeds from the store; Charts: cairo drawings written by libpng.
        .target(name: "Report", dependencies: ["Store", "Suites", "Training", "Datasets"]),
        .target(name: "Charts", dependencies: ["Report", "Store", "Suites", "Training", "Datasets", "CCairo", "CPNG", "CZlib"]),
        // The readers of files sambench did not write, driven by bytes (libFuzzer targets, replay test).
        .target(name: "Fuzzing", dependencies: ["Engine", "Datasets", "Suites"]),
        .executableTarget(name: "sambench", dependencies: [
            "Training", "Datasets", "Suites", "Store", "Runner", "Report", "Charts",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Test-only: counts malloc calls so a test can prove the training step allocates nothing.
        .target(name: "AllocCounter"),
        // Test-only helpers (tolerance checks, paths to ../shared) shared by the test targets.
        .target(name: "TestSupport", dependencies: ["Engine"], path: "Tests/TestSupport"),
        .testTarget(name: "EngineTests", dependencies: ["Engine", "Optim", "AllocCounter", "TestSupport"]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "Datasets", "Engine", "Optim", "TestSupport", "AllocCounter"]),
        .testTarget(name: "DatasetsTests", dependencies: ["Datasets", "Engine", "TestSupport", "AllocCounter"]),
        .testTarget(name: "ReportTests", dependencies: ["Report", "Charts", "Store", "Suites", "Training", "TestSupport",
                                                        .product(name: "GRDB", package: "GRDB.swift")]),
        .testTarget(name: "SuitesTests", dependencies: ["Suites", "Store", "Runner", "Training", "Datasets", "TestSupport", "Fuzzing",
                                                        .product(name: "GRDB", package: "GRDB.swift")],
                    exclude: ["Malformed", "Frozen"]),
    ]
)

// libFuzzer targets, one per reader (fuzz/<Reader>/, no main: libFuzzer supplies it), declared only
// when scripts/fuzz.sh builds them with SAMBENCH_FUZZ=1 and --sanitize=fuzzer: an ordinary build
// could not link an executable without a main.
if Context.environment["SAMBENCH_FUZZ"] != nil {
    for reader in ["Safetensors", "NPY", "TorchLabels", "CIFAR", "Archive", "Suite"] {
        package.targets.append(.executableTarget(name: "Fuzz\(reader)", dependencies: ["Fuzzing"], path: "fuzz/\(reader)"))
    }
}
