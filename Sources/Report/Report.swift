import Datasets
import Foundation
import Store
import Suites
import Training

/// Runs that differ only in seed, summarised. Its identity is its keys and typed fields; the
/// labels are for display (unique per key among the groups of a report).
public struct Group: Sendable, Codable, Equatable {
    /// The group key.
    public var group: String
    /// The setting key: the group with SGD as its optimizer (nil in reports made before it).
    public var settingKey: String?
    /// The family key (the setting at noise rate 0) and the base key (the setting without noise).
    public var familyKey: String?
    public var baseKey: String?
    /// The group's label: the setting's, then the optimizer's.
    public var label: String
    /// The setting's label: `dataset model noise`, then the settings that tell it apart.
    public var setting: String
    /// The family's label: the setting's without the noise rate.
    public var family: String?
    /// The value of every axis the runs have (see `Axes`), by name.
    public var axes: [String: String]?
    public var dataset: Dataset
    public var model: String
    /// The noise as labels show it: `clean`, `symmetric-0.4`, `human:worse_label`.
    public var noise: String
    public var noiseKind: NoiseKind
    public var noiseRate: Double?
    public var optimizer: OptimizerFamily
    /// The optimizer with its parameters, e.g. `sam(rho=0.05)`.
    public var optimizerLabel: String
    public var rho: Double?
    public var runs: Int
    public var done: Int
    public var diverged: Int
    public var failed: Int
    public var unfinished: Int
    /// Seeds of the finished runs.
    public var seeds: [UInt64]
    /// The chosen metric's test accuracy over the finished runs.
    public var accuracy: Summary?
    /// Memorisation at the last epoch (accuracy on the corrupted samples against their noisy labels).
    public var memorised: Summary?
    /// Noisy-label detection by the final model's per-sample loss: the AUROC of separating the
    /// corrupted training samples from the clean ones (nil without noise, or for runs finished
    /// before it was measured).
    public var detection: Summary? = nil
    /// Validation accuracy (at the last epoch for `last`, the best for `best` and `val`): what rho is chosen on.
    public var validation: Summary?
    /// Mean curves over the finished runs, by epoch.
    public var curve: [CurvePoint]
    /// Test accuracy per class (true class) at the last epoch, over the finished runs with a
    /// stored confusion matrix (nil without one).
    public var perClass: [Summary?]?
    public var flags: [String]

    /// The setting's identity: its key, or (for reports made before setting keys) its label.
    public var settingIdentity: String { settingKey ?? setting }
}

public struct CurvePoint: Sendable, Codable, Equatable {
    public var epoch: Int
    public var testAccuracy: Double
    public var memorised: Double?
    /// Standard deviations over the seeds (nil for one seed, and in reports made before them).
    public var testStd: Double?
    public var memorisedStd: Double?
}

/// A group against the baseline group of the same setting (SGD with cross-entropy unless the
/// suite names another), paired by seed and noise realisation.
public struct Comparison: Sendable, Codable, Equatable {
    /// The setting's label and key (nil in reports made before setting keys).
    public var setting: String
    public var settingKey: String?
    /// The compared group's label within its setting: its method (when not cross-entropy), then
    /// its optimizer: `sam(rho=0.05)`, `mixup(alpha=1) sgd`.
    public var optimizerLabel: String
    public var rho: Double?
    /// This group's rho and method parameters are the ones chosen on validation among the groups
    /// of the setting that differ only in them.
    public var selected: Bool
    /// The compared group's key and the baseline group's.
    public var group: String
    public var baselineGroup: String
    /// The baseline group's label within its setting (`sgd`; nil in reports made before baselines).
    public var baselineLabel: String?
    /// The group minus the baseline, in accuracy (0..1).
    public var difference: PairedComparison?
    /// Seeds present in only one of the two groups, or trained on different noisy labels.
    public var unpaired: Int

    public init(setting: String, settingKey: String?, optimizerLabel: String, rho: Double?, selected: Bool, group: String,
                baselineGroup: String, baselineLabel: String?, difference: PairedComparison?, unpaired: Int) {
        (self.setting, self.settingKey, self.optimizerLabel, self.rho, self.selected) = (setting, settingKey, optimizerLabel, rho, selected)
        (self.group, self.baselineGroup, self.baselineLabel, self.difference, self.unpaired) = (group, baselineGroup, baselineLabel, difference, unpaired)
    }

    enum CodingKeys: String, CodingKey {
        case setting, settingKey, optimizerLabel, rho, selected, group, baselineGroup, baselineLabel, difference, unpaired
    }
    /// The names reports made before baselines gave the two groups (baselines/*.json keep them).
    enum LegacyKeys: String, CodingKey { case samGroup, sgdGroup }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let legacy = try decoder.container(keyedBy: LegacyKeys.self)
        setting = try c.decode(String.self, forKey: .setting)
        settingKey = try c.decodeIfPresent(String.self, forKey: .settingKey)
        optimizerLabel = try c.decode(String.self, forKey: .optimizerLabel)
        rho = try c.decodeIfPresent(Double.self, forKey: .rho)
        selected = try c.decode(Bool.self, forKey: .selected)
        group = try c.decodeIfPresent(String.self, forKey: .group) ?? legacy.decode(String.self, forKey: .samGroup)
        baselineGroup = try c.decodeIfPresent(String.self, forKey: .baselineGroup) ?? legacy.decode(String.self, forKey: .sgdGroup)
        baselineLabel = try c.decodeIfPresent(String.self, forKey: .baselineLabel)
        difference = try c.decodeIfPresent(PairedComparison.self, forKey: .difference)
        unpaired = try c.decode(Int.self, forKey: .unpaired)
    }
}

public struct Report: Sendable, Codable, Equatable {
    public var sambenchVersion: String
    public var suites: [String]
    public var metric: Metric
    public var runs: Int
    /// Runs by status.
    public var statuses: [RunStatus: Int]
    public var groups: [Group]
    /// The group every other group of a setting is compared with (nil in reports made before
    /// baselines: SGD with cross-entropy).
    public var baseline: Baseline?
    public var comparisons: [Comparison]
    /// What the report could not do, in sentences (a setting where several groups match the
    /// baseline); nil when nothing.
    public var notes: [String]?

    /// "SGD" for the default baseline (so that reports read "minus SGD" as they always have),
    /// else what the suite named: `method=mixup, optimizer=sgd`.
    public var baselineName: String { baseline.map { $0.isStandard ? "SGD" : $0.description } ?? "SGD" }

    /// Whether these comparisons (by default all) ask the paper's question alone: the default
    /// baseline, and only cross-entropy SAM-family groups against it. Titles and headings then
    /// read "SAM minus SGD", as they always have.
    public func samAgainstSGD(_ subset: [Comparison]? = nil) -> Bool {
        guard baseline?.isStandard ?? true else { return false }
        let byKey = Dictionary(groups.map { ($0.group, $0) }, uniquingKeysWith: { a, _ in a })
        return (subset ?? comparisons).allSatisfy { c in byKey[c.group].map { $0.optimizer != .sgd && ($0.axes?["method"] ?? "ce") == "ce" } ?? false }
    }

    public var complete: Bool { statuses.keys.allSatisfy(\.finished) }
}

public enum ReportBuilder {
    /// The baseline of the stored suites named (every suite when nil): the one they agree on
    /// (the default when none names one). Suites that name different baselines are an error
    /// that says which: report one suite at a time, or name the baseline.
    public static func baseline(of store: Store, suites: [String]?) throws -> Baseline {
        var found: [(suite: String, baseline: Baseline)] = []
        for s in try store.suiteTexts(suites) {
            // A stored suite parsed when it was run; one that no longer does compares as the default.
            found.append((s.name, (try? Suite.baseline(inText: s.text, file: s.name)) ?? .standard))
        }
        let distinct = found.reduce(into: [Baseline]()) { acc, f in if !acc.contains(f.baseline) { acc.append(f.baseline) } }
        guard distinct.count <= 1 else {
            let list = found.map { "\($0.suite) (\($0.baseline))" }.joined(separator: ", ")
            throw BaselineError(nil, "the suites name different baselines: \(list); report one suite (--suite NAME) or name the baseline (--baseline)")
        }
        return distinct.first ?? .standard
    }

    /// A group whose standard deviation exceeds this multiple of the median over groups is flagged.
    public static let disagreementFactor = 3.0

    public static func build(_ runs: [StoredRun], suites: [String], metric: Metric, baseline: Baseline = .standard) -> Report {
        var statuses: [RunStatus: Int] = [:]
        for r in runs { statuses[r.status, default: 0] += 1 }
        // Groups, in the order of their first run.
        var order: [String] = []
        var byGroup: [String: [StoredRun]] = [:]
        for r in runs {
            if byGroup[r.group] == nil { order.append(r.group) }
            byGroup[r.group, default: []].append(r)
        }
        let labels = GroupLabels.make(runs.map { GroupLabels.Item(spec: $0.spec, group: $0.group, setting: $0.setting, family: $0.family) })
        var groups = order.map { makeGroup(byGroup[$0]!, labels: labels[$0]!, metric: metric) }
        flagDisagreement(&groups)
        let (comparisons, notes) = compare(groups, byGroup: byGroup, metric: metric, baseline: baseline)
        return Report(sambenchVersion: SambenchVersion.string, suites: suites, metric: metric, runs: runs.count, statuses: statuses,
                      groups: groups, baseline: baseline, comparisons: comparisons, notes: notes.isEmpty ? nil : notes)
    }

    static func value(_ r: StoredRun, _ metric: Metric) -> Double? {
        guard r.status == .done, let m = r.metrics else { return nil }
        switch metric {
        case .last: return m.lastTestAccuracy
        case .best: return m.bestTestAccuracy
        case .val: return m.valTestAccuracy
        }
    }

    static func validation(_ r: StoredRun, _ metric: Metric) -> Double? {
        guard r.status == .done, let m = r.metrics else { return nil }
        return metric == .last ? m.lastValidationAccuracy : m.valAccuracy
    }

    static func makeGroup(_ runs: [StoredRun], labels: GroupLabels, metric: Metric) -> Group {
        let first = runs[0]
        let finished = runs.filter { $0.status == .done }
        let n = first.spec.data.noise
        func count(_ s: RunStatus) -> Int { runs.filter { $0.status == s }.count }
        var g = Group(group: first.group, settingKey: first.setting, familyKey: first.family, baseKey: first.base,
                      label: labels.group, setting: labels.setting, family: labels.family, axes: Axes.values(first.spec),
                      dataset: first.spec.data.dataset, model: first.spec.config.model, noise: GroupLabels.noiseLabel(n), noiseKind: n.kind,
                      noiseRate: n.kind.hasRate ? n.rate : nil, optimizer: first.spec.optimizer,
                      optimizerLabel: labels.optimizer, rho: first.spec.rho.map { Double("\(Float($0))")! },
                      runs: runs.count, done: finished.count, diverged: count(.diverged), failed: count(.failed), unfinished: 0,
                      seeds: finished.map(\.spec.config.seed).sorted(),
                      accuracy: Summary(finished.compactMap { value($0, metric) }),
                      memorised: Summary(finished.compactMap { $0.metrics?.lastMemorised }),
                      validation: Summary(finished.compactMap { validation($0, metric) }),
                      curve: meanCurve(finished), perClass: perClass(finished), flags: [])
        g.unfinished = g.runs - g.done - g.diverged - g.failed
        g.detection = Summary(finished.compactMap { $0.metrics?.detectionAUROC })
        if g.diverged > 0 { g.flags.append("\(g.diverged) diverged") }
        if g.failed > 0 { g.flags.append("\(g.failed) failed") }
        if g.unfinished > 0 { g.flags.append("\(g.unfinished) unfinished") }
        return g
    }

    static func perClass(_ runs: [StoredRun]) -> [Summary?]? {
        let matrices = runs.compactMap(\.confusion)
        guard let classes = matrices.first?.count, classes > 0, matrices.allSatisfy({ $0.count == classes }) else { return nil }
        return (0..<classes).map { c in
            Summary(matrices.compactMap { m in
                let total = m[c].reduce(0, +)
                return total > 0 && c < m[c].count ? Double(m[c][c]) / Double(total) : nil
            })
        }
    }

    static func meanCurve(_ runs: [StoredRun]) -> [CurvePoint] {
        guard let length = runs.map(\.curve.count).min(), length > 0 else { return [] }
        return (0..<length).map { i in
            let points = runs.map { $0.curve[i] }
            let memorised = points.compactMap(\.memorised)
            let test = Summary(points.map(\.testAccuracy))!, m = memorised.count == points.count ? Summary(memorised) : nil
            return CurvePoint(epoch: points[0].epoch, testAccuracy: test.mean, memorised: m?.mean, testStd: test.std, memorisedStd: m?.std)
        }
    }

    /// Flags groups whose seeds disagree far more than the rest (std above `disagreementFactor`
    /// times the median std over the groups with at least two runs).
    static func flagDisagreement(_ groups: inout [Group]) {
        let stds = groups.compactMap { $0.accuracy?.std }.sorted()
        guard stds.count >= 3 else { return }
        let median = stds.count % 2 == 1 ? stds[stds.count / 2] : (stds[stds.count / 2 - 1] + stds[stds.count / 2]) / 2
        guard median > 0 else { return }
        for i in groups.indices {
            if let s = groups[i].accuracy?.std, s > disagreementFactor * median {
                groups[i].flags.append(String(format: "seeds disagree (std %.2f, %.1fx the median)", 100 * s, s / median))
            }
        }
    }

    /// Each group against the baseline group of its setting (the one group there that
    /// `baseline` matches), paired by seed and noise realisation; among the groups of a setting
    /// that differ only in rho and method parameters, the one with the best mean validation
    /// accuracy is marked selected. A setting without the baseline has no comparisons; one where
    /// several groups match it gets a note instead.
    static func compare(_ groups: [Group], byGroup: [String: [StoredRun]], metric: Metric, baseline: Baseline) -> ([Comparison], [String]) {
        var out: [Comparison] = [], notes: [String] = []
        var settings: [String] = []
        for g in groups where !settings.contains(g.settingIdentity) { settings.append(g.settingIdentity) }
        for setting in settings {
            let mine = groups.filter { $0.settingIdentity == setting }
            let bases = mine.filter { baseline.matches($0.axes ?? [:]) }
            if bases.count > 1 {
                notes.append("\(bases[0].setting): \(bases.count) groups match the baseline (\(bases.map(\.optimizerLabel).joined(separator: ", "))): "
                             + "name their parameter in the suite's baseline (or --baseline) to compare them")
            }
            guard bases.count == 1, let base = bases.first else { continue }
            let baseRuns = byGroup[base.group]!
            for g in mine where g.group != base.group {
                let candidates = mine.filter { $0.group != base.group && tuningPeers($0, g) }
                let best = candidates.filter { $0.validation != nil }.max { $0.validation!.mean < $1.validation!.mean }
                let runs = byGroup[g.group]!
                var differences: [Double] = []
                var unpaired = 0
                let seeds = Set(runs.map(\.spec.config.seed)).union(baseRuns.map(\.spec.config.seed))
                for seed in seeds.sorted() {
                    guard let a = runs.first(where: { $0.spec.config.seed == seed }), let b = baseRuns.first(where: { $0.spec.config.seed == seed }) else {
                        unpaired += 1
                        continue
                    }
                    // An unfinished run (flagged as such) is not unpaired: it has no noise realisation stored yet.
                    guard let va = value(a, metric), let vb = value(b, metric) else { continue }
                    guard a.noiseLabels == b.noiseLabels else { unpaired += 1; continue }
                    differences.append(va - vb)
                }
                out.append(Comparison(setting: base.setting, settingKey: base.settingKey, optimizerLabel: g.optimizerLabel, rho: g.rho,
                                      selected: candidates.count > 1 && best?.group == g.group, group: g.group, baselineGroup: base.group,
                                      baselineLabel: base.optimizerLabel, difference: PairedComparison(differences: differences), unpaired: unpaired))
            }
        }
        return (out, notes)
    }

    /// The axes tuned on validation: rho and every method parameter.
    public static let tunedAxes: Set<String> = Set(["rho"] + Methods.parameterNames)

    /// Two groups of one setting that differ at most in rho and method parameters: the
    /// candidates among which those are chosen on validation.
    public static func tuningPeers(_ a: Group, _ b: Group) -> Bool {
        guard let x = a.axes, let y = b.axes else { return true }
        return x.filter { !tunedAxes.contains($0.key) } == y.filter { !tunedAxes.contains($0.key) }
    }
}
