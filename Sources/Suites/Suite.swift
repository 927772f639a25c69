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
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SuiteError(file: path, line: nil, key: nil, message: FileManager.default.fileExists(atPath: path) ? "cannot read the file" : "no such file")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw SuiteError(file: path, line: nil, key: nil, message: "not UTF-8 text") }
        return try parse(text, file: path)
    }

    /// The most runs one suite may expand to (the paper's full protocol is a few thousand).
    public static let maxRuns = 100_000

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

/// A `[[noise]]` entry: one noise model, possibly with several rates or label files.
private struct NoiseEntry {
    var kind: NoiseKind
    var rates: [Double]
    var selection: NoiseSelection = .exact
    var seed: UInt64?
    var std: Double = 0.1
    var labels: [LabelSpec?] = [nil]
}

/// An `[[optimizer]]` entry: one optimizer, possibly with several rho or micro-batch values.
private struct OptimizerEntry {
    var name: OptimizerFamily
    var rhos: [Double?] = [nil]
    var eta: Double = 0.01
    var gradient: PerturbationGradient = .loss
    var bnPolicy: BNPolicy = .firstPass
    var microBatches: [Int?] = [nil]
    var lookIntervals: [Int] = [1]
    var lookAlpha: Double = 0.7
    var path: String
}

private struct SuiteParser {
    let text: String
    let file: String
    let locator: Locator

    init(text: String, file: String) {
        self.text = text
        self.file = file
        locator = Locator(text: text)
    }

    /// An error at the line that sets `path` (or its table); what is missing is located at
    /// the table it belongs in, or the first line.
    func fail(_ path: String?, _ message: String) -> SuiteError {
        SuiteError(file: file, line: path.flatMap { locator.line($0) } ?? 1, key: path, message: message)
    }

    func root() throws -> TOMLTable {
        if let (line, message) = TOMLGuard.firstUnsafe(text) {
            throw SuiteError(file: file, line: line, key: nil, message: "TOML syntax: \(message)")
        }
        do {
            return try TOMLTable(string: text)
        } catch let e as TOMLParseError {
            throw SuiteError(file: file, line: e.source.begin.line, key: nil, message: "TOML syntax: \(e.description)")
        }
    }

    func parse() throws -> Suite {
        let root = try root()
        try rejectUnknown(root, allowed: Settings.topLevelKeys, path: nil) { key in
            if Methods.parameterNames.contains(key) { return "`\(key)` belongs in a [[method]] entry" }
            if let s = Settings.byName[key] ?? suggestion(for: key, among: Settings.all.map(\.name)).flatMap({ Settings.byName[$0] }) {
                return (s.name == key ? "" : "did you mean `\(s.name)`? ") + "settings go in [defaults] (one value) or [grid] (a list of values to sweep)"
            }
            if Settings.noiseKeys.contains(key) && key != "seed" { return "`\(key)` belongs in a [[noise]] entry" }
            if Settings.optimizerKeys.contains(key) && key != "name" { return "`\(key)` belongs in an [[optimizer]] entry" }
            return nil
        }
        guard let name = try string(root, "name", path: "name") else { throw fail(nil, "the suite needs a `name`") }
        guard !name.trimmingCharacters(in: .whitespaces).isEmpty else { throw fail("name", "the name is empty") }
        let description = try string(root, "description", path: "description") ?? ""
        let taskName = try string(root, "task", path: "task") ?? RunTask.train.rawValue
        guard let task = RunTask(rawValue: taskName) else { throw fail("task", "expected \"train\" or \"finetune\", got \"\(taskName)\"") }
        let pretrains = try entries(root, "pretrain").map(pretrainEntry)
        if task == .train, !pretrains.isEmpty { throw fail("pretrain", "[[pretrain]] entries are for finetune suites: set task = \"finetune\"") }
        if let dup = Dictionary(grouping: pretrains, by: { $0.ref.name }).first(where: { $0.value.count > 1 }) {
            throw fail("\(dup.value[1].path).name", "a second [[pretrain]] named \"\(dup.key)\"; names must be unique")
        }

        // [defaults]: one value per setting. [grid]: a list per setting (a single value is a list of one).
        var base = RunSpec()
        base.task = task
        var fixed: [String: String] = [:]  // setting -> path, to catch a setting given twice
        if let v = root["defaults"] {
            guard let t = v.table else { throw fail("defaults", "expected a table ([defaults]), got \(kind(v))") }
            try rejectUnknown(t, allowed: Settings.all.map(\.name), path: "defaults", hint: settingHint)
            for key in t.keys.sorted() {
                let setting = Settings.byName[key]!
                let path = "defaults.\(key)"
                if !setting.type.isList, t[key]!.array != nil {
                    throw fail(path, "a list in [defaults]; put the values to sweep in [grid]")
                }
                setting.apply(&base, try value(t[key]!, setting, path: path))
                fixed[key] = path
            }
        }
        var axes: [(setting: Setting, values: [SettingValue], path: String)] = []
        if let v = root["grid"] {
            guard let t = v.table else { throw fail("grid", "expected a table ([grid]), got \(kind(v))") }
            try rejectUnknown(t, allowed: Settings.all.map(\.name), path: "grid", hint: settingHint)
            for key in t.keys {
                let setting = Settings.byName[key]!
                let path = "grid.\(key)"
                if let other = fixed[key] {
                    throw fail(path, "set in both [defaults] (line \(locator.line(other) ?? 0)) and [grid]; keep one")
                }
                let raw = t[key]!
                var elements: [TOMLValueConvertible] = [raw]
                if let a = raw.array {
                    // A list of lists for list-valued settings; a list of values otherwise.
                    if setting.type.isList, a.isEmpty || a[0].array == nil { elements = [raw] } else { elements = Array(a) }
                }
                guard !elements.isEmpty else { throw fail(path, "an empty list: the grid would have no runs") }
                let values = try elements.map { try value($0, setting, path: path) }
                if let dup = duplicate(values) { throw fail(path, "\(dup) appears twice; each value of an axis once") }
                axes.append((setting, values, path))
            }
        }
        if fixed["dataset"] == nil && !axes.contains(where: { $0.setting.name == "dataset" }) {
            throw fail(root["defaults"] != nil ? "defaults" : root["grid"] != nil ? "grid" : nil,
                       "the suite needs a `dataset` (synthetic, cifar10 or cifar100) in [defaults] or [grid]")
        }
        // Seed outermost, then dataset and model, then the other axes by name.
        let order = ["seed", "dataset", "model"]
        axes.sort { a, b in
            let ia = order.firstIndex(of: a.setting.name) ?? order.count, ib = order.firstIndex(of: b.setting.name) ?? order.count
            return ia != ib ? ia < ib : a.setting.name < b.setting.name
        }
        let noise = try entries(root, "noise").map(noiseEntry)
        let optimizers = try entries(root, "optimizer").map(optimizerEntry)
        // Every method entry's variants, in order (none: cross-entropy alone), each with the
        // entry's seeds and optimizers when it names them (entry: its index, for the check below).
        let methodEntries = try entries(root, "method")
        let methods = try methodEntries.enumerated().flatMap { i, e in try methodVariants(e).map { (config: $0.config, scope: $0.scope, entry: i) } }
        var entryRuns = [Int](repeating: 0, count: methodEntries.count)

        // Bounded before anything is expanded: a grid of a few long lists is billions of runs.
        let limit = Suite.maxRuns
        let sizes = axes.map { "\($0.setting.name) \($0.values.count)" }.joined(separator: " x ")
        let axisProduct = axes.reduce(1) { acc, a in
            let (p, overflow) = acc.multipliedReportingOverflow(by: a.values.count)
            return overflow ? Int.max : p
        }
        func tooMany(_ what: String) -> SuiteError {
            fail(axes.isEmpty ? nil : "grid", "\(what): one suite may have at most \(limit); split it into several suites")
        }
        if axisProduct > limit { throw tooMany("the grid alone expands to \(axisProduct == .max ? "more than \(Int.max)" : "\(axisProduct)") runs (\(sizes))") }

        var runs: [RunSpec] = []
        func expand(_ i: Int, _ spec: RunSpec, _ label: [String]) throws {
            if i < axes.count {
                for v in axes[i].values {
                    var s = spec
                    axes[i].setting.apply(&s, v)
                    let shown = ["seed", "dataset", "model"].contains(axes[i].setting.name) ? [] : ["\(axes[i].setting.name)=\(v)"]
                    try expand(i + 1, s, label + shown)
                }
                return
            }
            for n in noise.isEmpty ? [nil] : noise.map(Optional.some) {
                for (noiseSpec, noiseLabel) in variants(of: n) {
                    for m in methods.isEmpty ? [nil] : methods.map(Optional.some) {
                        let method = m?.config
                        if let seeds = m?.scope.seeds, !seeds.contains(spec.config.seed) { continue }
                        for o in optimizers.isEmpty ? [nil] : optimizers.map(Optional.some) {
                            for (optimizer, optimizerLabel) in try variants(of: o, batchSize: spec.config.batchSize) {
                                if let names = m?.scope.optimizers, !names.contains(optimizer.family.rawValue) { continue }
                                if let m { entryRuns[m.entry] += 1 }
                                var s = spec
                                s.data.noise = noiseSpec
                                s.noiseSeedFollowsRun = n?.seed == nil
                                if s.noiseSeedFollowsRun { s.data.noise.seed = s.config.seed }
                                if s.splitSeedFollowsRun { s.data.splitSeed = s.config.seed }
                                s.config.optimizer = optimizer
                                s.config.method = method
                                // Cross-entropy, the default, is not named: labels of suites without methods read as before.
                                let methodLabel = method.map { [$0.label] } ?? []
                                s.label = ([s.data.dataset.rawValue, s.config.model, noiseLabel] + methodLabel + [optimizerLabel] + label + ["seed \(s.config.seed)"])
                                    .joined(separator: " ")
                                try resolveStart(&s, pretrains: pretrains)
                                try check(s, optimizerPath: o?.path)
                                guard runs.count < limit else {
                                    throw tooMany("the grid (\(sizes.isEmpty ? "no axes" : sizes)) times the noise, method and optimizer entries expands to more than \(limit) runs")
                                }
                                runs.append(s)
                            }
                        }
                    }
                }
            }
        }
        try expand(0, base, [])
        // An entry whose seeds or optimizers match nothing in the suite is a mistake, never silence.
        for (i, (_, path)) in methodEntries.enumerated() where entryRuns[i] == 0 {
            throw fail(path, "this method entry matches no run: its `seeds` are none of the suite's seeds, or its `optimizers` none of its [[optimizer]] entries")
        }
        // The pretrain runs the finetune runs name, first (a finetune run waits for its pretrain).
        let used = Set(runs.compactMap { $0.pretrain?.name })
        for p in pretrains.reversed() where used.contains(p.ref.name) { runs.insert(p.ref.spec, at: 0) }
        if task == .finetune, let unused = pretrains.first(where: { !used.contains($0.ref.name) }) {
            throw fail(unused.path, "[[pretrain]] \"\(unused.ref.name)\" is named by no run (set `pretrain = \"\(unused.ref.name)\"` in [defaults] or [grid])")
        }
        let expectations = try entries(root, "expect").map(expectation)
        let baseline = try baseline(root)
        if root["baseline"] != nil, !runs.contains(where: { baseline.matches(Axes.values($0)) }) {
            throw fail("baseline", "no run of this suite is the baseline (\(baseline)): add its [[method]] or [[optimizer]] entry, or name another")
        }
        return Suite(name: name, description: description, file: file, text: text, runs: runs, expectations: expectations, baseline: baseline)
    }

    /// Where a finetune run starts: the `[[pretrain]]` it names, filled in, or the checkpoint file
    /// it names, hashed (its path taken relative to the suite file's folder). Train suites name neither.
    func resolveStart(_ s: inout RunSpec, pretrains: [(ref: PretrainRef, path: String)]) throws {
        func where_(_ setting: String) -> String { locator.sets("grid.\(setting)") ? "grid.\(setting)" : "defaults.\(setting)" }
        if s.task == .train {
            for (name, set) in [("pretrain", s.pretrain != nil), ("checkpoint", s.config.initialWeights != nil), ("reinit_head", s.reinitHead != nil)] where set {
                throw fail(where_(name), "`\(name)` is for finetune suites: set task = \"finetune\"")
            }
            return
        }
        if s.pretrain != nil, s.config.initialWeights != nil {
            throw fail(where_("checkpoint"), "\(s.label): `pretrain` and `checkpoint` both set; a run starts from one of them")
        }
        if let name = s.pretrain?.name {
            guard let p = pretrains.first(where: { $0.ref.name == name }) else {
                let known = pretrains.map { "\"\($0.ref.name)\"" }.joined(separator: ", ")
                throw fail(where_("pretrain"), "no [[pretrain]] named \"\(name)\"" + (known.isEmpty ? "" : " (this suite has \(known))"))
            }
            s.pretrain = p.ref
            if p.ref.config.model != s.config.model {
                throw fail(where_("pretrain"), "\(s.label): pretrain \"\(name)\" trains \(p.ref.config.model), this run \(s.config.model); a finetune starts from the same model")
            }
        }
        if let w = s.config.initialWeights {
            let path = w.path.hasPrefix("/") ? w.path : ((file as NSString).deletingLastPathComponent as NSString).appendingPathComponent(w.path)
            do { s.config.initialWeights = try InitialWeights.reading(path, reinitHead: s.reinitHead ?? false) } catch {
                throw fail(where_("checkpoint"), "cannot read the checkpoint \(path) (relative paths are taken from the suite file's folder)")
            }
        }
    }

    /// A `[[pretrain]]` entry: a name and settings, each one value, starting from the defaults
    /// of a run (not the suite's [defaults], which are the finetune runs').
    private func pretrainEntry(_ entry: (TOMLTable, String)) throws -> (ref: PretrainRef, path: String) {
        let (t, p) = entry
        let allowed = ["name"] + Settings.all.map(\.name).filter { !Settings.startKeys.contains($0) }
        try rejectUnknown(t, allowed: allowed, path: p) { key in
            Settings.startKeys.contains(key) ? "a pretrain starts from scratch; `\(key)` is for the finetune runs" : nil
        }
        guard let name = try string(t, "name", path: "\(p).name"), !name.isEmpty else { throw fail(p, "a [[pretrain]] entry needs a `name`") }
        guard name != "none" else { throw fail("\(p).name", "\"none\" means from scratch; name the pretrain otherwise") }
        guard t["dataset"] != nil else { throw fail(p, "[[pretrain]] \"\(name)\" needs a `dataset`") }
        var spec = RunSpec()
        for key in t.keys.sorted() where key != "name" {
            let setting = Settings.byName[key]!
            if !setting.type.isList, t[key]!.array != nil { throw fail("\(p).\(key)", "one value per pretrain setting") }
            setting.apply(&spec, try value(t[key]!, setting, path: "\(p).\(key)"))
        }
        if spec.splitSeedFollowsRun { spec.data.splitSeed = spec.config.seed }
        let ref = PretrainRef(name: name, config: spec.config, data: spec.data)
        try check(ref.spec, optimizerPath: nil, at: p)
        return (ref, p)
    }

    /// What the engine would refuse, found now and located (a pretrain's at its entry).
    func check(_ s: RunSpec, optimizerPath: String?, at entry: String? = nil) throws {
        // The key that sets `setting` (the entry's, the grid's or the defaults'), never one the
        // suite did not write: a value it left at its default is blamed on the entry or on nothing.
        func setBy(_ setting: String) -> String? {
            (entry.map { ["\($0).\(setting)"] } ?? ["grid.\(setting)", "defaults.\(setting)"]).first { locator.sets($0) }
        }
        func where_(_ setting: String) -> String? { setBy(setting) ?? entry }
        do { try s.data.validate() } catch {
            throw fail(where_("\(error)".hasPrefix("classes:") ? "classes" : "dataset"), "\(s.label): \(error)")
        }
        do { try s.config.validate() } catch {
            throw fail(s.config.optimizer.sam != nil ? optimizerPath : where_("epochs"), "\(s.label): \(error)")
        }
        do { _ = try s.config.lrSchedule(iterationsPerEpoch: 1) } catch { throw fail(where_("lr"), "\(s.label): \(error)") }
        if let prefixes = s.config.freeze, let model = try? Architectures.make(s.config.model, numClasses: s.data.runClasses) {
            do { _ = try model.params(under: prefixes) } catch { throw fail(where_("freeze"), "\(s.label): \(error)") }
        }
        // The training images a run will have, where the dataset's size is known now.
        let total = (s.data.dataset.trainImages ?? s.data.syntheticTrain) * s.data.runClasses / s.data.datasetClasses
        let afterSplit = total - Int((Double(total) * s.data.validationFraction).rounded())
        let images = min(afterSplit, s.data.trainSubset ?? afterSplit)
        if images < s.config.batchSize {
            // Blamed on the first of the settings behind the count that the suite wrote.
            let culprit = ["subset", "validation", "synthetic_train", "batch_size"].lazy.compactMap(setBy).first ?? entry
            throw fail(culprit, "\(s.label): \(images) training images, fewer than one batch of \(s.config.batchSize)")
        }
    }

    private func variants(of n: NoiseEntry?) -> [(NoiseSpec, String)] {
        guard let n else { return [(NoiseSpec(kind: .none), "clean")] }
        var out: [(NoiseSpec, String)] = []
        for rate in n.rates {
            for labels in n.labels {
                let spec = NoiseSpec(kind: n.kind, rate: rate, selection: n.selection, seed: n.seed ?? 0, instanceStd: n.std, labelsFile: labels)
                out.append((spec, GroupLabels.noiseLabel(spec)))
            }
        }
        return out
    }

    private func variants(of o: OptimizerEntry?, batchSize: Int) throws -> [(OptimizerConfig, String)] {
        guard let o, let variant = o.name.variant else { return [(.sgd, GroupLabels.optimizerLabel(.sgd))] }
        var out: [(OptimizerConfig, String)] = []
        for rho in o.rhos {
            for m in o.microBatches {
                for k in o.lookIntervals {
                    let c = SAMConfig(variant: variant, rho: rho.map(Float.init), eta: Float(o.eta), perturbationGradient: o.gradient,
                                      bnPolicy: o.bnPolicy, microBatch: m, lookInterval: k, lookAlpha: Float(o.lookAlpha))
                    out.append((.sam(c), GroupLabels.optimizerLabel(.sam(c))))
                }
            }
        }
        return out
    }

    private func entries(_ root: TOMLTable, _ key: String) throws -> [(TOMLTable, String)] {
        guard let v = root[key] else { return [] }
        if let t = v.table { return [(t, "\(key)[0]")] }
        guard let a = v.array else { throw fail(key, "expected [[\(key)]] entries, got \(kind(v))") }
        guard !a.isEmpty else { throw fail(key, "an empty list: the grid would have no runs") }
        return try a.enumerated().map { i, e in
            guard let t = e.table else { throw fail("\(key)[\(i)]", "expected a table like { kind = \"symmetric\", rate = 0.4 }, got \(kind(e))") }
            return (t, "\(key)[\(i)]")
        }
    }

    private func noiseEntry(_ entry: (TOMLTable, String)) throws -> NoiseEntry {
        let (t, p) = entry
        try rejectUnknown(t, allowed: Settings.noiseKeys, path: p) { key in
            Settings.optimizerKeys.contains(key) ? "`\(key)` belongs in an [[optimizer]] entry" : nil
        }
        let kinds = NoiseKind.allCases.map(\.rawValue)
        guard let kindName = try string(t, "kind", path: "\(p).kind") else { throw fail(p, "a noise entry needs a `kind` (\(kinds.joined(separator: ", ")))") }
        guard let noiseKind = NoiseKind(rawValue: kindName) else {
            throw fail("\(p).kind", "unknown noise kind \"\(kindName)\"" + (suggestion(for: kindName, among: kinds).map { "; did you mean \"\($0)\"?" } ?? " (\(kinds.joined(separator: ", ")))"))
        }
        var e = NoiseEntry(kind: noiseKind, rates: [])
        let rateCheck = inUnit
        if t["rate"] != nil && t["rates"] != nil { throw fail("\(p).rates", "give `rate` or `rates`, not both") }
        if let r = t["rate"] {
            if r.array != nil { throw fail("\(p).rate", "a list: name it `rates`") }
            e.rates = [try number(r, path: "\(p).rate", check: rateCheck)]
        } else if let r = t["rates"] {
            guard let a = r.array else { throw fail("\(p).rates", "expected a list of rates, got \(kind(r))") }
            guard !a.isEmpty else { throw fail("\(p).rates", "an empty list: the grid would have no runs") }
            e.rates = try a.map { try number($0, path: "\(p).rates", check: rateCheck) }
            if let dup = duplicate(e.rates.map { SettingValue.double($0) }) { throw fail("\(p).rates", "\(dup) appears twice") }
        }
        switch noiseKind {
        case .none, .human:
            if !e.rates.isEmpty { throw fail("\(p).\(t["rate"] != nil ? "rate" : "rates")", "\(kindName) noise has no rate") }
            e.rates = [0]
        default:
            if e.rates.isEmpty { throw fail(p, "\(kindName) noise needs a `rate` (or `rates`) in [0, 1]") }
        }
        if let s = try string(t, "selection", path: "\(p).selection") {
            guard let sel = NoiseSelection(rawValue: s) else {
                throw fail("\(p).selection", "expected one of \(NoiseSelection.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")), got \"\(s)\"")
            }
            e.selection = sel
        }
        if let s = t["seed"] {
            guard s.type == .int, let v = s.int, v >= 0 else { throw fail("\(p).seed", "expected an integer >= 0 (leave it out to follow the run's seed), got \(describe(s))") }
            e.seed = UInt64(v)
        }
        if let s = t["std"] {
            guard noiseKind == .instance else { throw fail("\(p).std", "`std` is for instance noise only") }
            e.std = try number(s, path: "\(p).std") { $0 > 0 ? nil : "must be > 0" }
        }
        if let l = t["labels"] {
            guard noiseKind == .human else { throw fail("\(p).labels", "`labels` is for human noise only") }
            let files = try (l.array.map(Array.init) ?? [l]).map { v -> LabelSpec? in
                guard let s = v.string, !s.isEmpty else { throw fail("\(p).labels", "expected a label file (FILE.npy or FILE.pt:KEY), got \(describe(v))") }
                do { return try LabelSpec(parsing: s) } catch { throw fail("\(p).labels", "\(error)") }
            }
            guard !files.isEmpty else { throw fail("\(p).labels", "an empty list: the grid would have no runs") }
            e.labels = files
        } else if noiseKind == .human {
            throw fail(p, "human noise needs `labels` (FILE.npy or FILE.pt:KEY, relative to the data directory)")
        }
        return e
    }

    /// A `[[method]]` entry: `name` and the method's own parameters (Methods.all), each a number
    /// or a list of numbers to sweep. Its variants: every combination, in the parameters' order,
    /// each resolved (nil: plain cross-entropy). A bad value is found here and located.
    private func methodVariants(_ entry: (TOMLTable, String)) throws -> [(config: MethodConfig?, scope: MethodScope)] {
        let (t, p) = entry
        let names = Methods.all.map(\.name)
        guard let text = try string(t, "name", path: "\(p).name") else { throw fail(p, "a method entry needs a `name` (\(names.joined(separator: ", ")))") }
        guard let method = Methods.named(text) else {
            throw fail("\(p).name", "unknown method \"\(text)\"" + (suggestion(for: text, among: names).map { "; did you mean \"\($0)\"?" } ?? " (\(names.joined(separator: ", ")))"))
        }
        let own = method.parameters.map(\.name)
        try rejectUnknown(t, allowed: ["name", "seeds", "optimizers"] + own, path: p) { key in
            if key == "seed" { return "did you mean `seeds` (a list: the seeds of the suite this method runs with)?" }
            if key == "optimizer" { return "did you mean `optimizers` (a list of optimizer names this method runs with)?" }
            if key == "label_smoothing" { return "label smoothing is a run setting: put it in [defaults] or [grid]" }
            if Methods.parameterNames.contains(key) { return "`\(key)` is not a parameter of \(text)" + (own.isEmpty ? "" : " (its parameters: \(own.joined(separator: ", ")))") }
            if Settings.optimizerKeys.contains(key) { return "`\(key)` belongs in an [[optimizer]] entry" }
            if Settings.byName[key] != nil { return "settings go in [defaults] or [grid], for every method" }
            return nil
        }
        var combinations: [[String: Double]] = [[:]]
        for parameter in method.parameters {
            guard let v = t[parameter.name] else { continue }
            let path = "\(p).\(parameter.name)"
            let items = v.array.map(Array.init) ?? [v]
            guard !items.isEmpty else { throw fail(path, "an empty list: the grid would have no runs") }
            let values = try items.map { try number($0, path: path, check: parameter.check) }
            if let dup = duplicate(values.map { SettingValue.double($0) }) { throw fail(path, "\(dup) appears twice") }
            combinations = combinations.flatMap { c in values.map { c.merging([parameter.name: $0]) { $1 } } }
        }
        var scope = MethodScope()
        if let v = t["seeds"] {
            let items = v.array.map(Array.init) ?? [v]
            guard !items.isEmpty else { throw fail("\(p).seeds", "an empty list: the method would have no runs") }
            scope.seeds = try items.map { UInt64(try integer($0, path: "\(p).seeds", min: 0)) }
        }
        if let v = t["optimizers"] {
            let items = v.array.map(Array.init) ?? [v]
            guard !items.isEmpty else { throw fail("\(p).optimizers", "an empty list: the method would have no runs") }
            let names = OptimizerFamily.allCases.map(\.rawValue)
            scope.optimizers = try items.map { item in
                guard item.type == .string, let name = item.string else { throw fail("\(p).optimizers", "expected optimizer names (strings), got \(describe(item))") }
                guard names.contains(name) else { throw fail("\(p).optimizers", "unknown optimizer \"\(name)\" (\(names.joined(separator: ", ")))") }
                return name
            }
        }
        return try combinations.map { c in
            do { return (try Methods.resolve(text, c), scope) } catch { throw fail(p, "\(error)") }
        }
    }

    /// Which runs of the suite a `[[method]]` entry takes part in: the seeds and optimizer
    /// families it names (nil: all), so that a suite can run the costly methods with fewer seeds.
    private struct MethodScope {
        var seeds: [UInt64]?
        var optimizers: [String]?
    }

    private func optimizerEntry(_ entry: (TOMLTable, String)) throws -> OptimizerEntry {
        let (t, p) = entry
        try rejectUnknown(t, allowed: Settings.optimizerKeys, path: p) { key in
            if Settings.noiseKeys.contains(key) { return "`\(key)` belongs in a [[noise]] entry" }
            if Settings.byName[key] != nil { return "settings go in [defaults] or [grid], for every optimizer" }
            return nil
        }
        let names = OptimizerFamily.allCases.map(\.rawValue)
        guard let text = try string(t, "name", path: "\(p).name") else { throw fail(p, "an optimizer entry needs a `name` (\(names.joined(separator: ", ")))") }
        guard let name = OptimizerFamily(rawValue: text) else {
            throw fail("\(p).name", "unknown optimizer \"\(text)\"" + (suggestion(for: text, among: names).map { "; did you mean \"\($0)\"?" } ?? " (\(names.joined(separator: ", ")))"))
        }
        var e = OptimizerEntry(name: name, path: p)
        if name == .sgd {
            if let extra = t.keys.sorted().first(where: { $0 != "name" }) { throw fail("\(p).\(extra)", "`\(extra)` is not used by sgd") }
            return e
        }
        func list<T>(_ key: String, _ convert: (TOMLValueConvertible) throws -> T) throws -> [T]? {
            guard let v = t[key] else { return nil }
            let items = v.array.map(Array.init) ?? [v]
            guard !items.isEmpty else { throw fail("\(p).\(key)", "an empty list: the grid would have no runs") }
            return try items.map(convert)
        }
        if let r = try list("rho", { try number($0, path: "\(p).rho") { $0 > 0 ? nil : "must be > 0" } }) {
            if let dup = duplicate(r.map { SettingValue.double($0) }) { throw fail("\(p).rho", "\(dup) appears twice") }
            e.rhos = r
        }
        if let v = t["eta"] { e.eta = try number(v, path: "\(p).eta") { $0 >= 0 ? nil : "must be >= 0" } }
        if let s = try string(t, "gradient", path: "\(p).gradient") {
            guard let g = PerturbationGradient(rawValue: s) else { throw fail("\(p).gradient", "expected \"loss\" or \"loss+wd\", got \"\(s)\"") }
            e.gradient = g
        }
        if let s = try string(t, "bn_policy", path: "\(p).bn_policy") {
            guard let b = BNPolicy(rawValue: s) else { throw fail("\(p).bn_policy", "expected \"first-pass\" or \"both-passes\", got \"\(s)\"") }
            e.bnPolicy = b
        }
        if let m = try list("micro_batch", { try integer($0, path: "\(p).micro_batch", min: 1) }) { e.microBatches = m }
        if let k = try list("look_interval", { try integer($0, path: "\(p).look_interval", min: 1) }) { e.lookIntervals = k }
        if let v = t["look_alpha"] { e.lookAlpha = try number(v, path: "\(p).look_alpha") }
        return e
    }

    /// `baseline = { method = "ce", optimizer = "sgd", rho = 0.1 }` (or a `[baseline]` table):
    /// strings for the method and optimizer, numbers for their parameters.
    func baseline(_ root: TOMLTable) throws -> Baseline {
        guard let v = root["baseline"] else { return .standard }
        guard let t = v.table else { throw fail("baseline", "expected a table (baseline = { method = \"ce\", optimizer = \"sgd\" }), got \(kind(v))") }
        var values: [String: String] = [:]
        for key in t.keys.sorted() {
            let path = "baseline.\(key)"
            guard Baseline.fields.contains(key) else {
                throw fail(path, "unknown key `\(key)`" + (suggestion(for: key, among: Baseline.fields).map { "; did you mean `\($0)`?" } ?? "")
                           + " (a baseline names: \(Baseline.fields.joined(separator: ", ")))")
            }
            if key == "method" || key == "optimizer" || t[key]!.type == .string {
                values[key] = try string(t, key, path: path)
            } else {
                values[key] = SettingValue.format(try number(t[key]!, path: path))
            }
        }
        do { return try Baseline(values) } catch let e as BaselineError {
            throw fail(e.key.flatMap { t[$0] != nil ? "baseline.\($0)" : nil } ?? "baseline", e.description)
        }
    }

    private func expectation(_ entry: (TOMLTable, String)) throws -> Expectation {
        let (t, p) = entry
        try rejectUnknown(t, allowed: Expectation.keys, path: p)
        let kinds = Expectation.Kind.allCases.map(\.rawValue)
        guard let what = try string(t, "what", path: "\(p).what") else { throw fail(p, "an expectation needs `what` (\(kinds.joined(separator: ", ")))") }
        guard let kind = Expectation.Kind(rawValue: what) else {
            throw fail("\(p).what", "unknown expectation \"\(what)\"" + (suggestion(for: what, among: kinds).map { "; did you mean \"\($0)\"?" } ?? " (\(kinds.joined(separator: ", ")))"))
        }
        var e = Expectation(kind: kind, min: nil, max: nil, filter: nil, metric: .last, optimizer: .sam, rho: nil, line: locator.line(p) ?? 1)
        let percent: (Double) -> String? = { (0...100).contains($0) ? nil : kind == .accuracy ? "an accuracy in percent, in [0, 100]" : "a percentage, in [0, 100]" }
        let gain = kind == .gain || kind == .samGain
        if let v = t["min"] {
            guard kind == .accuracy || gain || kind == .memorised else { throw fail("\(p).min", "`min` is for accuracy, gain, sam-gain and memorised") }
            e.min = try number(v, path: "\(p).min") { gain ? nil : percent($0) }
        } else if kind == .accuracy || gain {
            throw fail(p, "\(what) needs `min` (in percentage points)")
        }
        if let v = t["max"] {
            guard kind == .memorised else { throw fail("\(p).max", "`max` is for memorised only") }
            e.max = try number(v, path: "\(p).max", check: percent)
        }
        if kind == .memorised {
            guard e.min != nil || e.max != nil else { throw fail(p, "memorised needs `min` or `max` (in percent)") }
            if let lo = e.min, let hi = e.max, lo > hi { throw fail("\(p).max", "`max` (\(hi)) is below `min` (\(lo))") }
        }
        if let w = try string(t, "where", path: "\(p).where") {
            do { e.filter = try Conditions(w, fields: Expectation.fields) } catch { throw fail("\(p).where", "\(error)") }
        }
        if let m = try string(t, "metric", path: "\(p).metric") {
            guard let metric = Metric(rawValue: m) else { throw fail("\(p).metric", "expected \"last\", \"best\" or \"val\", got \"\(m)\"") }
            e.metric = metric
        }
        if let o = try string(t, "optimizer", path: "\(p).optimizer") {
            guard kind == .samGain, let family = OptimizerFamily(rawValue: o), family != .sgd else {
                throw fail("\(p).optimizer", "for sam-gain only: \"sam\" or \"asam\"")
            }
            e.optimizer = family
        }
        if let r = t["rho"] {
            guard kind == .samGain else { throw fail("\(p).rho", "`rho` is for sam-gain only") }
            e.rho = try number(r, path: "\(p).rho") { $0 > 0 ? nil : "must be > 0" }
        }
        return e
    }

    // MARK: values

    private var inUnit: (Double) -> String? { { (0...1).contains($0) ? nil : "a rate must be in [0, 1], got \(SettingValue.format($0))" } }

    private func value(_ v: TOMLValueConvertible, _ setting: Setting, path: String) throws -> SettingValue {
        let result: SettingValue
        switch setting.type {
        case .int: result = .int(try integer(v, path: path))
        case .double: result = .double(try number(v, path: path))
        case .bool:
            guard v.type == .bool, let b = v.bool else { throw fail(path, "expected true or false, got \(describe(v))") }
            result = .bool(b)
        case .ints:
            guard let a = v.array else { throw fail(path, "expected a list of integers, got \(describe(v))") }
            result = .ints(try a.map { try integer($0, path: path) })
        case .strings:
            guard let a = v.array else { throw fail(path, "expected a list of strings, got \(describe(v))") }
            result = .strings(try a.map { e in
                guard e.type == .string, let s = e.string else { throw fail(path, "expected a list of strings, got \(describe(e)) in it") }
                return s
            })
        case let .string(choices):
            guard v.type == .string, let s = v.string else { throw fail(path, "expected \(setting.type.name), got \(describe(v))") }
            if !choices.isEmpty && !choices.contains(s) {
                throw fail(path, "expected \(setting.type.name), got \"\(s)\"" + (suggestion(for: s, among: choices).map { "; did you mean \"\($0)\"?" } ?? ""))
            }
            result = .string(s)
        }
        if let problem = setting.check(result) { throw fail(path, problem) }
        return result
    }

    /// A float; integers are accepted (`lr = 1`).
    private func number(_ v: TOMLValueConvertible, path: String, check: (Double) -> String? = { _ in nil }) throws -> Double {
        let x: Double
        switch v.type {
        case .double: x = v.double!
        case .int: x = Double(v.int!)
        default: throw fail(path, "expected a number, got \(describe(v))")
        }
        guard x.isFinite else { throw fail(path, "expected a finite number, got \(x)") }
        if let problem = check(x) { throw fail(path, problem) }
        return x
    }

    private func integer(_ v: TOMLValueConvertible, path: String, min: Int? = nil) throws -> Int {
        guard v.type == .int, let i = v.int else { throw fail(path, "expected an integer, got \(describe(v))") }
        if let min, i < min { throw fail(path, "must be >= \(min), got \(i)") }
        return i
    }

    private func string(_ t: TOMLTable, _ key: String, path: String) throws -> String? {
        guard let v = t[key] else { return nil }
        guard v.type == .string, let s = v.string else { throw fail(path, "expected a string, got \(describe(v))") }
        return s
    }

    private func describe(_ v: TOMLValueConvertible) -> String {
        switch v.type {
        case .string: return "the string \"\(v.string ?? "")\""
        case .table: return "a table"
        case .array: return "a list"
        default: return "\(kind(v)) \(v.debugDescription)"
        }
    }

    private func kind(_ v: TOMLValueConvertible) -> String {
        switch v.type {
        case .int: return "an integer"
        case .double: return "a float"
        case .bool: return "a boolean"
        case .string: return "a string"
        case .table: return "a table"
        case .array: return "a list"
        default: return "a date or time"
        }
    }

    private func duplicate(_ values: [SettingValue]) -> String? {
        var seen: [String] = []
        for v in values {
            if seen.contains(v.description) { return v.description }
            seen.append(v.description)
        }
        return nil
    }

    private var settingHint: (String) -> String? {
        { key in
            if Settings.noiseKeys.contains(key) && key != "seed" { return "`\(key)` belongs in a [[noise]] entry" }
            if Settings.optimizerKeys.contains(key) { return "`\(key)` belongs in an [[optimizer]] entry" }
            return nil
        }
    }

    /// Unknown keys are errors, with the closest known key as a suggestion.
    private func rejectUnknown(_ t: TOMLTable, allowed: [String], path: String?, hint: (String) -> String? = { _ in nil }) throws {
        for key in t.keys.sorted() where !allowed.contains(key) {
            let p = path.map { "\($0).\(key)" } ?? key
            if let h = hint(key) { throw fail(p, "unknown key here: \(h)") }
            if let s = suggestion(for: key, among: allowed) { throw fail(p, "unknown key; did you mean `\(s)`?") }
            throw fail(p, "unknown key; expected one of \(allowed.map { "`\($0)`" }.joined(separator: ", "))")
        }
    }
}
