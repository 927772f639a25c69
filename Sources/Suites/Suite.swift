// The run model of a suite: a suite, its runs (RunSpec), pretrain references, and located suite errors.
import Datasets
import Engine
import Foundation
import Optim
import TOMLKit
import Training

/// A suite error, located: the file, the line and the key it concerns.
public struct SuiteError: Error, CustomStringConvertible, Sendable {
    public let file: String
    public let line: Int?
    public let key: String?
    public let message: String

    public var description: String {
        var s = file
        if let line { s += ":\(line)" }
        s += ": "
        if let key { s += "`\(key)`: " }
        return s + message
    }
}

/// A `[[pretrain]]` entry of a finetune suite: a run trained once (clean labels, SGD or not,
/// whatever its settings say), whose final weights the finetune runs naming it start from.
public struct PretrainRef: Sendable, Codable, Equatable {
    public var name: String
    public var config: TrainConfig
    public var data: DataSpec
    /// The identity of the pretrain's data (set where keys are computed), so that a finetune
    /// run's key, which contains its pretrain's, needs nothing beyond the run itself.
    public var identity: String?

    public init(name: String, config: TrainConfig = TrainConfig(), data: DataSpec = DataSpec(), identity: String? = nil) {
        self.name = name
        self.config = config
        self.data = data
        self.identity = identity
    }

    /// The pretrain as a run of its own.
    public var spec: RunSpec {
        var s = RunSpec()
        s.config = config
        s.data = data
        s.noiseSeedFollowsRun = false
        s.splitSeedFollowsRun = false
        s.label = "pretrain \(name): " + [data.dataset.rawValue, config.model, data.classes.map { "classes \($0)" } ?? "",
                                           "seed \(config.seed)"].filter { !$0.isEmpty }.joined(separator: " ")
        return s
    }
}

/// One run of a suite, fully resolved: every default filled in.
public struct RunSpec: Sendable, Codable, Equatable {
    /// `train`, or `finetune` (from a `[[pretrain]]` run, a checkpoint file, or from scratch for comparison).
    public var task: RunTask = .train
    public var config = TrainConfig()
    public var data = DataSpec()
    /// A short human-readable description ("cifar10 resnet20 symmetric-0.4 sam(rho=0.05) seed 1"),
    /// for display only: nothing reads a field back from it.
    public var label = ""
    /// The noise and split seeds follow the run's seed (not set explicitly in the suite).
    public var noiseSeedFollowsRun = true
    public var splitSeedFollowsRun = true
    /// finetune: the `[[pretrain]]` run whose weights this run starts from (a checkpoint file is
    /// `config.initialWeights`; neither: from scratch).
    public var pretrain: PretrainRef?
    /// finetune: the classifier starts freshly initialised (nil: false).
    public var reinitHead: Bool?

    public init() {}

    public var optimizer: OptimizerFamily { config.optimizer.family }
    public var rho: Double? { config.optimizer.sam.map { Double($0.rho) } }
}

/// A suite read from TOML: its grid expanded into runs, in a fixed order (seed outermost, so a
/// half-finished suite has whole comparisons for its first seeds).
public struct Suite: Sendable {
    public var name: String
    public var description: String
    public var file: String
    public var text: String
    public var runs: [RunSpec]
    /// What the suite asserts about its results (`[[expect]]`); not part of any run.
    public var expectations: [Expectation] = []
    /// The group every other group of a setting is compared with (`baseline = {...}`; by
    /// default cross-entropy with SGD); not part of any run.
    public var baseline: Baseline = .standard

    /// Reads and expands a suite file. Every error names the file, the line and the key.
    public static func load(_ path: String) throws -> Suite {
        let data: Data
        do { data = Data(try InputFile.contents(path, what: "the suite", limit: maxBytes)) } catch let error as InputFile.Unreadable {
            throw SuiteError(file: path, line: nil, key: nil, message: "cannot read the suite: \(error.reason)")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw SuiteError(file: path, line: nil, key: nil, message: "not UTF-8 text") }
        return try parse(text, file: path)
    }

    /// The most runs one suite may expand to (the paper's full protocol is a few thousand).
    public static let maxRuns = 100_000
    /// The largest suite file read: a suite is a few hundred lines; 16 MiB of TOML would be
    /// generated, and is refused before it is parsed.
    public static let maxBytes = 16 << 20

    /// The names of the settings `[defaults]` and `[grid]` accept (documented in docs/SUITES.md).
    public static var settingNames: [String] { Settings.all.map(\.name) }

    public static func parse(_ text: String, file: String) throws -> Suite {
        try SuiteParser(text: text, file: file).parse()
    }

    /// The baseline a suite's text names, read alone (a stored suite whose other parts no
    /// longer parse, or whose checkpoints are elsewhere, still says what it compares against).
    public static func baseline(inText text: String, file: String) throws -> Baseline {
        let parser = SuiteParser(text: text, file: file)
        return try parser.baseline(try parser.root())
    }
}

