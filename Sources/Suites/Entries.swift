// The suite's entries read: [[pretrain]], [[noise]], [[method]] and [[optimizer]].
import Datasets
import Engine
import Foundation
import Optim
import TOMLKit
import Training

/// A `[[noise]]` entry: one noise model, possibly with several rates or label files.
struct NoiseEntry {
    var kind: NoiseKind
    var rates: [Double]
    var selection: NoiseSelection = .exact
    var seed: UInt64?
    var std: Double = 0.1
    var labels: [LabelSpec?] = [nil]
    var path: String
}

/// An `[[optimizer]]` entry: one optimizer, possibly with several rho or micro-batch values.
struct OptimizerEntry {
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

extension SuiteParser {
    func entries(_ root: TOMLTable, _ key: String) throws -> [(TOMLTable, String)] {
        guard let v = root[key] else { return [] }
        if let t = v.table { return [(t, "\(key)[0]")] }
        guard let a = v.array else { throw fail(key, "expected [[\(key)]] entries, got \(kind(v))") }
        guard !a.isEmpty else { throw fail(key, "an empty list: the grid would have no runs") }
        return try a.enumerated().map { i, e in
            guard let t = e.table else { throw fail("\(key)[\(i)]", "expected a table like { kind = \"symmetric\", rate = 0.4 }, got \(kind(e))") }
            return (t, "\(key)[\(i)]")
        }
    }

    func noiseEntry(_ entry: (TOMLTable, String)) throws -> NoiseEntry {
        let (t, p) = entry
        try rejectUnknown(t, allowed: Settings.noiseKeys, path: p) { key in
            Settings.optimizerKeys.contains(key) ? "`\(key)` belongs in an [[optimizer]] entry" : nil
        }
        guard let noiseKind: NoiseKind = try choice(t, "kind", path: "\(p).kind", what: "noise kind") else {
            throw fail(p, "a noise entry needs a `kind` (\(NoiseKind.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        let kindName = noiseKind.rawValue
        var e = NoiseEntry(kind: noiseKind, rates: [], path: p)
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
        if let selection: NoiseSelection = try choice(t, "selection", path: "\(p).selection", what: "selection") { e.selection = selection }
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
    func methodVariants(_ entry: (TOMLTable, String)) throws -> [(config: MethodConfig?, scope: MethodScope)] {
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
            scope.optimizers = try items.map { item in
                guard item.type == .string, let name = item.string else { throw fail("\(p).optimizers", "expected optimizer names (strings), got \(describe(item))") }
                let family: OptimizerFamily = try choice(name, path: "\(p).optimizers", what: "optimizer")
                return family.rawValue
            }
        }
        return try combinations.map { c in
            do { return (try Methods.resolve(text, c), scope) } catch {
                let setting = (error as? ConfigurationError)?.setting
                throw fail(setting.map { "\(p).\($0)" }.flatMap { locator.sets($0) ? $0 : nil } ?? p, "\(error)")
            }
        }
    }

    /// Which runs of the suite a `[[method]]` entry takes part in: the seeds and optimizer
    /// families it names (nil: all), so that a suite can run the costly methods with fewer seeds.
    struct MethodScope {
        var seeds: [UInt64]?
        var optimizers: [String]?
    }

    func optimizerEntry(_ entry: (TOMLTable, String)) throws -> OptimizerEntry {
        let (t, p) = entry
        try rejectUnknown(t, allowed: Settings.optimizerKeys, path: p) { key in
            if Settings.noiseKeys.contains(key) { return "`\(key)` belongs in a [[noise]] entry" }
            if Settings.byName[key] != nil { return "settings go in [defaults] or [grid], for every optimizer" }
            return nil
        }
        guard let name: OptimizerFamily = try choice(t, "name", path: "\(p).name", what: "optimizer") else {
            throw fail(p, "an optimizer entry needs a `name` (\(OptimizerFamily.allCases.map(\.rawValue).joined(separator: ", ")))")
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
        if let g: PerturbationGradient = try choice(t, "gradient", path: "\(p).gradient", what: "perturbation gradient") { e.gradient = g }
        if let b: BNPolicy = try choice(t, "bn_policy", path: "\(p).bn_policy", what: "BN policy") { e.bnPolicy = b }
        if let m = try list("micro_batch", { try integer($0, path: "\(p).micro_batch", min: 1) }) { e.microBatches = m }
        if let k = try list("look_interval", { try integer($0, path: "\(p).look_interval", min: 1) }) { e.lookIntervals = k }
        if let v = t["look_alpha"] { e.lookAlpha = try number(v, path: "\(p).look_alpha") }
        return e
    }


    /// A `[[pretrain]]` entry: a name and settings, each one value, starting from the defaults
    /// of a run (not the suite's [defaults], which are the finetune runs').
    func pretrainEntry(_ entry: (TOMLTable, String)) throws -> (ref: PretrainRef, path: String) {
        let (t, p) = entry
        let allowed = ["name"] + Settings.all.map(\.name).filter { !Settings.startKeys.contains($0) }
        try rejectUnknown(t, allowed: allowed, path: p) { key in
            Settings.startKeys.contains(key) ? "a pretrain starts from scratch; `\(key)` is for the finetune runs" : nil
        }
        guard let name = try string(t, "name", path: "\(p).name"), !name.isEmpty else { throw fail(p, "a [[pretrain]] entry needs a `name`") }
        if let c = firstControlCharacter(name) { throw fail("\(p).name", "a control character (\(c)) in the name; a name is one line of text") }
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
}
