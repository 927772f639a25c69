// The suite parser: TOML read, [defaults] and [grid] applied, the grid expanded over the entries into runs.
import Datasets
import Engine
import Foundation
import Optim
import TOMLKit
import Training

/// Reads a suite's text into a `Suite`; every error is a `SuiteError` at the file, line and key.
struct SuiteParser {
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
        // A name reaches terminals, file names and the Slurm scripts' shell lines: one line of text.
        if let c = firstControlCharacter(name) { throw fail("name", "a control character (\(c)) in the name; a name is one line of text") }
        let description = try string(root, "description", path: "description") ?? ""
        if let c = firstControlCharacter(description, allowing: ["\n", "\t"]) {
            throw fail("description", "a control character (\(c)) in the description; lines and tabs only")
        }
        let task: RunTask = try choice(root, "task", path: "task", what: "task") ?? .train
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
                                try check(s, optimizerPath: o?.path, noisePath: n?.path)
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

    func variants(of n: NoiseEntry?) -> [(NoiseSpec, String)] {
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

    func variants(of o: OptimizerEntry?, batchSize: Int) throws -> [(OptimizerConfig, String)] {
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
}
