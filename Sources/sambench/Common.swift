import ArgumentParser
import Charts
import Datasets
import Engine
import Foundation
import Optim
import Report
import Runner
import Store
import Suites
import Training

/// Writes a line to standard output immediately (unbuffered), so progress shows in pipes too,
/// its control characters but line breaks and tabs written out (labels, paths and errors come
/// from files and databases).
func emit(_ line: String) {
    // A closed pipe (`| head`) must not end a long job: the write's error is ignored.
    try? FileHandle.standardOutput.write(contentsOf: Data((escapingControlCharacters(line) + "\n").utf8))
}

/// `s` padded with spaces to `width` columns (on the left when `left`).
func pad(_ s: String, _ width: Int, left: Bool = false) -> String {
    let fill = String(repeating: " ", count: max(0, width - s.count))
    return left ? fill + s : s + fill
}

/// Errors a user fixes (a bad suite, a locked or foreign database, missing data): printed as
/// they are, exit status 2.
func usageFailure<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let e where e is SuiteError || e is StoreError || e is RunnerError || e is DataError || e is ConfigurationError || e is ChartError || e is CheckError || e is BaselineError {
        FileHandle.standardError.write(Data("error: \(escapingControlCharacters("\(e)"))\n".utf8))
        throw ExitCode(2)
    }
}

/// `--db`, shared by the commands that read or write the results database.
struct DatabaseOption: ParsableArguments {
    @Option(help: "The results database.") var db: String = "results/sambench.sqlite"
}

/// `--data-dir`, shared by the commands that read CIFAR.
struct DataDirOption: ParsableArguments {
    @Option(help: "Data directory for CIFAR (default: $SAMBENCH_DATA, else $XDG_DATA_HOME/sambench, else ~/.local/share/sambench).")
    var dataDir: String?
}

/// `--threads`, shared by the commands that train or time; each says its default.
struct ThreadsOption: ParsableArguments {
    @Option(parsing: .unconditional, help: "oneDNN threads (default: all cores; for `run`, the cores divided by --jobs).") var threads: Int?

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be >= 1") }
    }

    /// The threads asked for, else `fallback`.
    func resolved(_ fallback: Int = ProcessInfo.processInfo.activeProcessorCount) -> Int { threads ?? fallback }
}

/// Turns on the per-machine choice of oneDNN convolution implementations (docs/PERFORMANCE.md):
/// the choices are kept in $SAMBENCH_TUNING_FILE, else $XDG_CACHE_HOME/sambench/onednn-HOST.json,
/// else ~/.cache/sambench/onednn-HOST.json; SAMBENCH_TUNING_FILE=off keeps oneDNN's first choices.
func enableConvolutionTuning() {
    let env = ProcessInfo.processInfo.environment
    if let path = env["SAMBENCH_TUNING_FILE"], !path.isEmpty {
        if path != "off" { ConvolutionTuning.shared.enable(file: URL(fileURLWithPath: path)) }
        return
    }
    let cache = env["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? (NSHomeDirectory() + "/.cache")
    let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "localhost"
    ConvolutionTuning.shared.enable(file: URL(fileURLWithPath: "\(cache)/sambench/onednn-\(host).json"))
}

/// The datasets `sambench data` downloads and verifies.
enum CIFARName: String, CaseIterable, ExpressibleByArgument {
    case cifar10, cifar100
    var archive: CIFARArchive { self == .cifar10 ? .cifar10 : .cifar100 }
}

/// `--format` for commands that print either a table or JSON.
enum TextOrJSON: String, ExpressibleByArgument, CaseIterable { case text, json }

// Options that take a fixed set of values are the library's own enums.
extension Dataset: ExpressibleByArgument {}
extension NoiseKind: ExpressibleByArgument {}
extension NoiseSelection: ExpressibleByArgument {}
extension Schedule: ExpressibleByArgument {}
extension OptimizerFamily: ExpressibleByArgument {}
extension PerturbationGradient: ExpressibleByArgument {}
extension BNPolicy: ExpressibleByArgument {}
extension Metric: ExpressibleByArgument {}
extension RunStatus: ExpressibleByArgument {}

extension LabelSpec: ExpressibleByArgument {
    public init?(argument: String) { try? self.init(parsing: argument) }
}
