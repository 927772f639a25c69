import Foundation
import Store
import Suites
import Training

/// Which test accuracy of a run the report compares.
public enum Metric: String, Sendable, Codable, CaseIterable {
    /// At the last epoch: what training to the end gives (the default).
    case last
    /// At the best epoch, chosen on the test set: optimistic, as many papers report.
    case best
    /// At the epoch with the best validation accuracy: chosen without the test set.
    case val

    public var title: String {
        switch self {
        case .last: "test accuracy at the last epoch"
        case .best: "test accuracy at the best epoch (chosen on the test set: optimistic)"
        case .val: "test accuracy at the epoch chosen on validation"
        }
    }
}

/// Runs that differ only in seed, summarised.
public struct Group: Sendable, Codable, Equatable {
    public var group: String
    /// The runs' label without the seed.
    public var label: String
    /// What the comparison holds fixed: the label without the optimizer.
    public var setting: String
    public var dataset: String
    public var model: String
    public var noise: String
    /// The noise model: none, symmetric, asymmetric, ...
    public var noiseKind: String
    public var noiseRate: Double?
    public var optimizer: String
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
    public var flags: [String]
}

public struct CurvePoint: Sendable, Codable, Equatable {
    public var epoch: Int
    public var testAccuracy: Double
    public var memorised: Double?
}

/// A SAM-family group against the SGD group of the same setting, paired by seed and noise
/// realisation.
public struct Comparison: Sendable, Codable, Equatable {
    public var setting: String
    public var optimizerLabel: String
    public var rho: Double?
    /// This rho is the one chosen on validation among the optimizer's rho values for the setting.
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
    public var statuses: [String: Int]
    public var groups: [Group]
    public var comparisons: [Comparison]

    public var complete: Bool { statuses.keys.allSatisfy { $0 == "done" || $0 == "diverged" } }
}

public enum ReportBuilder {
    /// A group whose standard deviation exceeds this multiple of the median over groups is flagged.
    public static let disagreementFactor = 3.0

    public static func build(_ runs: [StoredRun], suites: [String], metric: Metric) -> Report {
        var statuses: [String: Int] = [:]
        for r in runs { statuses[r.status, default: 0] += 1 }
        // Groups, in the order of their first run.
        var order: [String] = []
        var byGroup: [String: [StoredRun]] = [:]
        for r in runs {
            if byGroup[r.group] == nil { order.append(r.group) }
            byGroup[r.group, default: []].append(r)
        }
        var groups = order.map { makeGroup(byGroup[$0]!, metric: metric) }
        flagDisagreement(&groups)
        let comparisons = compare(groups, byGroup: byGroup, metric: metric)
        return Report(sambenchVersion: SambenchVersion.string, suites: suites, metric: metric, runs: runs.count, statuses: statuses,
                      groups: groups, comparisons: comparisons)
    }

    static func value(_ r: StoredRun, _ metric: Metric) -> Double? {
        guard r.status == "done", let m = r.metrics else { return nil }
        switch metric {
        case .last: return m.lastTestAccuracy
        case .best: return m.bestTestAccuracy
        case .val: return m.valTestAccuracy
        }
    }

    static func validation(_ r: StoredRun, _ metric: Metric) -> Double? {
        guard r.status == "done", let m = r.metrics else { return nil }
        return metric == .last ? m.lastValidationAccuracy : m.valAccuracy
    }

    static func makeGroup(_ runs: [StoredRun], metric: Metric) -> Group {
        let first = runs[0]
        let tokens = first.label.split(separator: " ").map(String.init)
        // Labels are "dataset model noise optimizer [axes...] seed N".
        let withoutSeed = tokens.count >= 2 && tokens[tokens.count - 2] == "seed" ? Array(tokens.dropLast(2)) : tokens
        let optimizerLabel = withoutSeed.count > 3 ? withoutSeed[3] : first.spec.optimizerName
        let setting = withoutSeed.enumerated().filter { $0.offset != 3 }.map(\.element).joined(separator: " ")
        let finished = runs.filter { $0.status == "done" }
        let n = first.spec.data.noise
        var g = Group(group: first.group, label: withoutSeed.joined(separator: " "), setting: setting, dataset: first.spec.data.dataset,
                      model: first.spec.config.model, noise: withoutSeed.count > 2 ? withoutSeed[2] : n.kind.rawValue, noiseKind: n.kind.rawValue,
                      noiseRate: [.none, .human].contains(n.kind) ? nil : n.rate, optimizer: first.spec.optimizerName,
                      optimizerLabel: optimizerLabel, rho: first.spec.rho.map { Double("\(Float($0))")! },
                      runs: runs.count, done: finished.count, diverged: runs.filter { $0.status == "diverged" }.count,
                      failed: runs.filter { $0.status == "failed" }.count, unfinished: 0,
                      seeds: finished.map(\.spec.config.seed).sorted(),
                      accuracy: Summary(finished.compactMap { value($0, metric) }),
                      memorised: Summary(finished.compactMap { $0.metrics?.lastMemorised }),
                      validation: Summary(finished.compactMap { validation($0, metric) }),
                      curve: meanCurve(finished), flags: [])
        g.unfinished = g.runs - g.done - g.diverged - g.failed
        if g.diverged > 0 { g.flags.append("\(g.diverged) diverged") }
        if g.failed > 0 { g.flags.append("\(g.failed) failed") }
        if g.unfinished > 0 { g.flags.append("\(g.unfinished) unfinished") }
        return g
    }

    static func meanCurve(_ runs: [StoredRun]) -> [CurvePoint] {
        guard let length = runs.map(\.curve.count).min(), length > 0 else { return [] }
        return (0..<length).map { i in
            let points = runs.map { $0.curve[i] }
            let memorised = points.compactMap(\.memorised)
            return CurvePoint(epoch: points[0].epoch, testAccuracy: points.map(\.testAccuracy).reduce(0, +) / Double(points.count),
                              memorised: memorised.count == points.count ? memorised.reduce(0, +) / Double(memorised.count) : nil)
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

    /// Each SAM-family group against its setting's SGD group, paired by seed; per setting and
    /// optimizer, the rho with the best mean validation accuracy is marked selected.
    static func compare(_ groups: [Group], byGroup: [String: [StoredRun]], metric: Metric) -> [Comparison] {
        var out: [Comparison] = []
        for sgd in groups where sgd.optimizer == "sgd" {
            let sgdRuns = byGroup[sgd.group]!
            for optimizer in ["sam", "asam"] {
                let candidates = groups.filter { $0.setting == sgd.setting && $0.optimizer == optimizer }
                guard !candidates.isEmpty else { continue }
                let best = candidates.filter { $0.validation != nil }.max { $0.validation!.mean < $1.validation!.mean }
                for sam in candidates {
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
                    out.append(Comparison(setting: sgd.setting, optimizerLabel: sam.optimizerLabel, rho: sam.rho,
                                          selected: candidates.count > 1 && best?.group == sam.group, samGroup: sam.group,
                                          sgdGroup: sgd.group, difference: PairedComparison(differences: differences), unpaired: unpaired))
                }
            }
        }
        return out
    }
}
