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

/// A SAM-family group against the SGD group of the same setting, paired by seed and noise
/// realisation.
public struct Comparison: Sendable, Codable, Equatable {
    /// The setting's label and key (nil in reports made before setting keys).
    public var setting: String
    public var settingKey: String?
    public var optimizerLabel: String
    public var rho: Double?
    /// This rho is the one chosen on validation among the groups of the setting and optimizer
    /// configuration that differ only in rho.
    public var selected: Bool
    public var samGroup: String
    public var sgdGroup: String
    /// SAM minus SGD, in accuracy (0..1).
    public var difference: PairedComparison?
    /// Seeds present in only one of the two groups, or trained on different noisy labels.
    public var unpaired: Int
}

public struct Report: Sendable, Codable, Equatable {
    public var sambenchVersion: String
    public var suites: [String]
    public var metric: Metric
    public var runs: Int
    /// Runs by status.
    public var statuses: [RunStatus: Int]
    public var groups: [Group]
    public var comparisons: [Comparison]

    public var complete: Bool { statuses.keys.allSatisfy(\.finished) }
}

public enum ReportBuilder {
    /// A group whose standard deviation exceeds this multiple of the median over groups is flagged.
    public static let disagreementFactor = 3.0

    public static func build(_ runs: [StoredRun], suites: [String], metric: Metric) -> Report {
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
        let comparisons = compare(groups, byGroup: byGroup, metric: metric)
        return Report(sambenchVersion: SambenchVersion.string, suites: suites, metric: metric, runs: runs.count, statuses: statuses,
                      groups: groups, comparisons: comparisons)
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

    /// Each SAM-family group (of any method) against the baseline of the same setting key (SGD
    /// with cross-entropy), paired by seed; among
    /// the groups of one optimizer configuration that differ only in rho, the rho with the best
    /// mean validation accuracy is marked selected.
    static func compare(_ groups: [Group], byGroup: [String: [StoredRun]], metric: Metric) -> [Comparison] {
        var out: [Comparison] = []
        for sgd in groups where sgd.optimizer == .sgd && (sgd.axes?["method"] ?? "ce") == "ce" {
            let sgdRuns = byGroup[sgd.group]!
            for optimizer in OptimizerFamily.sharpnessAware {
                let mine = groups.filter { $0.settingIdentity == sgd.settingIdentity && $0.optimizer == optimizer }
                for sam in mine {
                    let candidates = mine.filter { rhoPeers($0, sam) }
                    let best = candidates.filter { $0.validation != nil }.max { $0.validation!.mean < $1.validation!.mean }
                    let samRuns = byGroup[sam.group]!
                    var differences: [Double] = []
                    var unpaired = 0
                    let seeds = Set(samRuns.map(\.spec.config.seed)).union(sgdRuns.map(\.spec.config.seed))
                    for seed in seeds.sorted() {
                        guard let a = samRuns.first(where: { $0.spec.config.seed == seed }), let b = sgdRuns.first(where: { $0.spec.config.seed == seed }),
                              a.noiseLabels == b.noiseLabels else { unpaired += 1; continue }
                        guard let va = value(a, metric), let vb = value(b, metric) else { continue }
                        differences.append(va - vb)
                    }
                    out.append(Comparison(setting: sgd.setting, settingKey: sgd.settingKey, optimizerLabel: sam.optimizerLabel, rho: sam.rho,
                                          selected: candidates.count > 1 && best?.group == sam.group, samGroup: sam.group,
                                          sgdGroup: sgd.group, difference: PairedComparison(differences: differences), unpaired: unpaired))
                }
            }
        }
        return out
    }

    /// Two groups of one setting and optimizer that differ at most in rho: the candidates among
    /// which rho is chosen.
    public static func rhoPeers(_ a: Group, _ b: Group) -> Bool {
        guard let x = a.axes, let y = b.axes else { return true }
        return x.filter { $0.key != "rho" } == y.filter { $0.key != "rho" }
    }
}
