import Foundation
import Suites

/// How large a drop counts as a regression: more than max(floor, k x the standard error of the
/// difference of the two means).
public struct Tolerance: Sendable, Equatable, Codable {
    /// In accuracy (0..1): 0.01 is one point.
    public var floor = 0.01
    public var k = 3.0

    public init() {}

    /// `floor=0.5,k=2.5` (floor in percentage points); either part may be left out.
    public init(_ spec: String) throws {
        for part in spec.split(separator: ",") {
            let kv = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard kv.count == 2, let v = Double(kv[1]), v.isFinite, v >= 0 else {
                throw CheckError("--tolerance: '\(part)' is not floor=POINTS or k=NUMBER")
            }
            switch kv[0] {
            case "floor": floor = v / 100
            case "k": k = v
            default: throw CheckError("--tolerance: unknown part '\(kv[0])' (floor, k)")
            }
        }
    }

    public var summary: String { String(format: "a drop counts when larger than max(%.2f points, %.3g x the standard error of the difference)", 100 * floor, k) }
}

public struct CheckError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// One group of the baseline or the current results, compared.
public struct GroupVerdict: Sendable, Codable, Equatable {
    public enum Verdict: String, Sendable, Codable { case ok, regression, missing, new }
    public var label: String
    public var baseline: Summary?
    public var current: Summary?
    /// current - baseline (accuracy).
    public var change: Double?
    /// The drop allowed: max(floor, k x SE).
    public var allowed: Double?
    public var verdict: Verdict
    /// The configuration changed: the group's key differs from the baseline's.
    public var keyChanged: Bool
    /// Diverged or failed runs the current results have beyond the baseline's.
    public var newFailures: Int
}

public struct ExpectationVerdict: Sendable, Codable, Equatable {
    public var expectation: Expectation
    public var passed: Bool
    /// What was measured, one line per group or setting it concerns.
    public var details: [String]
}

public struct CheckOutcome: Sendable, Codable, Equatable {
    public var tolerance: Tolerance
    public var groups: [GroupVerdict]
    public var expectations: [ExpectationVerdict]

    public init(tolerance: Tolerance, groups: [GroupVerdict], expectations: [ExpectationVerdict]) {
        self.tolerance = tolerance
        self.groups = groups
        self.expectations = expectations
    }

    public var regressions: [GroupVerdict] { groups.filter { $0.verdict == .regression } }
    public var missing: [GroupVerdict] { groups.filter { $0.verdict == .missing } }
    public var passed: Bool { regressions.isEmpty && missing.isEmpty && expectations.allSatisfy(\.passed) }
}

public extension Report {
    /// Why this report cannot serve as a baseline, one line per problem (empty when it can): a
    /// gate compared against it would pass without having compared anything meaningful. No
    /// groups; a group without a finished run; a count of runs or seeds out of range; an accuracy,
    /// standard deviation or interval that no set of accuracies in [0, 1] can have.
    var baselineProblems: [String] {
        var out: [String] = []
        if groups.isEmpty { out.append("it has no groups: nothing would be compared") }
        for g in groups {
            let name = "group \(g.label) (\(g.group))"
            let counts = [g.runs, g.done, g.diverged, g.failed, g.unfinished]
            if counts.contains(where: { $0 < 0 }) || g.done + g.diverged + g.failed + g.unfinished != g.runs {
                out.append("\(name): run counts that do not add up (runs \(g.runs), done \(g.done), diverged \(g.diverged), failed \(g.failed), unfinished \(g.unfinished))")
            }
            guard let a = g.accuracy else { out.append("\(name): no finished run, so no accuracy to compare with"); continue }
            if a.n < 1 || a.n > g.runs { out.append("\(name): n = \(a.n) finished runs (of \(g.runs))") }
            if !(a.mean.isFinite && (0...1).contains(a.mean)) { out.append("\(name): mean accuracy \(a.mean) is not in [0, 1]") }
            // The sample standard deviation of values in [0, 1] is at most sqrt(1/2).
            if let sd = a.std, !(sd.isFinite && (0...0.5.squareRoot()).contains(sd)) {
                out.append("\(name): standard deviation \(sd) is not possible for accuracies in [0, 1]")
            }
            if a.n >= 2 && a.std == nil { out.append("\(name): n = \(a.n) but no standard deviation") }
            if let ci = a.ci95, !(ci.isFinite && ci >= 0) { out.append("\(name): confidence interval half-width \(ci) is not a width") }
        }
        return out
    }
}

public enum Checker {
    /// Compares the current report with a baseline report, group by group. Groups are matched by
    /// their group key; a baseline group whose key is not among the current ones is matched with
    /// the one current group (if exactly one) that has the same dataset, model, noise and optimizer
    /// and is itself unmatched: its configuration changed, and it is compared and listed as such.
    /// Labels never decide a match. The standard error of a group's difference uses the seed
    /// variance measured: each side's standard deviation, but never less than the pooled
    /// within-group standard deviation of both reports (few seeds estimate a spread poorly).
    public static func compare(current: Report, baseline: Report, tolerance: Tolerance) -> [GroupVerdict] {
        var pooledNumerator = 0.0, pooledDF = 0.0
        for g in baseline.groups + current.groups {
            if let s = g.accuracy, let sd = s.std { pooledNumerator += Double(s.n - 1) * sd * sd; pooledDF += Double(s.n - 1) }
        }
        let pooled = pooledDF > 0 ? (pooledNumerator / pooledDF).squareRoot() : 0
        let matches = match(current: current.groups, baseline: baseline.groups)
        var out: [GroupVerdict] = []
        for (i, b) in baseline.groups.enumerated() {
            guard let j = matches[i], case let c = current.groups[j], let ca = c.accuracy else {
                out.append(GroupVerdict(label: b.label, baseline: b.accuracy, current: nil, change: nil, allowed: nil, verdict: .missing,
                                        keyChanged: false, newFailures: 0))
                continue
            }
            let failures = max(0, (c.diverged + c.failed) - (b.diverged + b.failed))
            guard let ba = b.accuracy else {
                out.append(GroupVerdict(label: c.label, baseline: nil, current: ca, change: nil, allowed: nil,
                                        verdict: failures > 0 ? .regression : .ok, keyChanged: b.group != c.group, newFailures: failures))
                continue
            }
            let sb = max(ba.std ?? pooled, pooled), sc = max(ca.std ?? pooled, pooled)
            let se = (sb * sb / Double(ba.n) + sc * sc / Double(ca.n)).squareRoot()
            let allowed = max(tolerance.floor, tolerance.k * se)
            let change = ca.mean - ba.mean
            out.append(GroupVerdict(label: c.label, baseline: ba, current: ca, change: change, allowed: allowed,
                                    verdict: change < -allowed || failures > 0 ? .regression : .ok, keyChanged: b.group != c.group,
                                    newFailures: failures))
        }
        let matched = Set(matches.compactMap { $0 })
        for (j, c) in current.groups.enumerated() where !matched.contains(j) {
            out.append(GroupVerdict(label: c.label, baseline: nil, current: c.accuracy, change: nil, allowed: nil, verdict: .new,
                                    keyChanged: false, newFailures: 0))
        }
        return out
    }

    /// For each baseline group, the index of its current group: by key, else by coordinates when
    /// exactly one unmatched group on each side has them.
    static func match(current: [Group], baseline: [Group]) -> [Int?] {
        var byKey: [String: Int] = [:]
        for (j, c) in current.enumerated() { byKey[c.group] = j }
        var out = baseline.map { byKey[$0.group] }
        let taken = Set(out.compactMap { $0 })
        let openCurrent = current.indices.filter { !taken.contains($0) }
        let openBaseline = baseline.indices.filter { out[$0] == nil }
        for i in openBaseline {
            let same = openCurrent.filter { coordinates(current[$0]) == coordinates(baseline[i]) }
            let rivals = openBaseline.filter { coordinates(baseline[$0]) == coordinates(baseline[i]) }
            if same.count == 1 && rivals.count == 1 { out[i] = same[0] }
        }
        return out
    }

    /// What a group is about, in typed fields: dataset, model, noise, optimizer and its m and k.
    static func coordinates(_ g: Group) -> [String] {
        [g.dataset.rawValue, g.model, g.noiseKind.rawValue, g.noiseRate.map { "\(Float($0))" } ?? "-", g.optimizer.rawValue,
         g.rho.map { "\(Float($0))" } ?? "-", g.axes?["micro_batch"] ?? "-", g.axes?["look_interval"] ?? "-"]
    }

    static func fields(_ g: Group) -> (String) -> String? {
        { name in
            switch name {
            case "dataset": return g.dataset.rawValue
            case "model": return g.model
            case "optimizer": return g.optimizer.rawValue
            case "rho": return g.rho.map { "\(Float($0))" }
            case "noise": return g.noiseKind.rawValue
            case "noise_rate": return g.noiseRate.map { "\($0)" }
            case "label": return g.label
            default: return g.axes?[name]
            }
        }
    }

    /// Evaluates a suite's expectations on reports of its results (one per metric asked for).
    public static func evaluate(_ expectations: [Expectation], reports: (Metric) -> Report) -> [ExpectationVerdict] {
        expectations.map { e in
            let report = reports(e.metric)
            let groups = report.groups.filter { g in e.filter?.matches(fields(g)) ?? true }
            var details: [String] = []
            var passed = true
            switch e.kind {
            case .accuracy:
                let min = (e.min ?? 0) / 100
                for g in groups {
                    guard let a = g.accuracy else { details.append("\(g.label): no finished run"); passed = false; continue }
                    let ok = a.mean >= min
                    passed = passed && ok
                    details.append(String(format: "%@: %.2f%@", g.label, 100 * a.mean, ok ? "" : " (below)"))
                }
            case .gain, .samGain:
                let min = (e.min ?? 0) / 100
                var compared = Dictionary(groups.map { ($0.group, $0) }, uniquingKeysWith: { a, _ in a })
                if e.kind == .samGain { compared = compared.filter { $0.value.optimizer == e.optimizer } }
                var comparisons = report.comparisons.filter { compared[$0.group] != nil }
                if e.kind == .samGain, let rho = e.rho {
                    comparisons = comparisons.filter { $0.rho.map { Float($0) } == Float(rho) }
                } else {
                    // Among groups that differ only in what is tuned on validation (rho, a method's
                    // parameters): the one chosen where there is a choice; each of them where none was made.
                    comparisons = comparisons.filter { c in
                        let peers = comparisons.filter { ReportBuilder.tuningPeers(compared[$0.group]!, compared[c.group]!) && $0.settingKey == c.settingKey && $0.setting == c.setting }
                        return c.selected || peers.count == 1 || !peers.contains(where: \.selected)
                    }
                }
                for c in comparisons {
                    guard let d = c.difference else { details.append("\(c.setting) \(c.optimizerLabel): no pair finished"); passed = false; continue }
                    let ok = d.meanDifference >= min
                    passed = passed && ok
                    details.append(String(format: "%@ %@ minus %@: %+.2f points over %d seeds%@", c.setting, c.optimizerLabel, c.baselineLabel ?? "the baseline",
                                          100 * d.meanDifference, d.pairs, ok ? "" : " (below)"))
                }
                if comparisons.isEmpty {
                    details.append("no matching group has a baseline (\(report.baselineName)) to compare with in its setting")
                    passed = false
                }
            case .noDivergence:
                for g in groups where g.diverged + g.failed > 0 {
                    passed = false
                    details.append("\(g.label): \(g.diverged) diverged, \(g.failed) failed")
                }
            case .memorised:
                for g in groups {
                    guard let m = g.memorised else { details.append("\(g.label): no memorisation measured (no noise, or no finished run)"); passed = false; continue }
                    let ok = m.mean >= (e.min ?? 0) / 100 && m.mean <= (e.max ?? 100) / 100
                    passed = passed && ok
                    details.append(String(format: "%@: %.2f%@", g.label, 100 * m.mean, ok ? "" : " (outside)"))
                }
            case .allDone:
                for g in groups where g.done + g.diverged < g.runs {
                    passed = false
                    details.append("\(g.label): \(g.runs - g.done - g.diverged) of \(g.runs) runs not finished")
                }
            }
            if groups.isEmpty { details.append("no group matches"); passed = false }
            return ExpectationVerdict(expectation: e, passed: passed, details: details)
        }
    }
}

public extension CheckOutcome {
    /// A table of what moved and by how much (fits 100 columns), then the verdict.
    func text(baseline: String?, suite: String?) -> String {
        func pct(_ s: Summary?) -> String { s.map { String(format: "%6.2f (n=%d)", 100 * $0.mean, $0.n) } ?? "           -" }
        func cut(_ s: String, _ w: Int) -> String { s.count <= w ? s + String(repeating: " ", count: w - s.count) : String(s.prefix(w - 1)) + "~" }
        var lines: [String] = []
        if let baseline {
            lines.append("baseline \(baseline): \(tolerance.summary)")
            lines.append(cut("group", 46) + "     baseline       current   change  allowed  verdict")
            for g in groups where g.verdict == .ok || g.verdict == .regression {
                var line = cut(g.label, 46) + " " + pct(g.baseline) + " " + pct(g.current) + " "
                line += g.change.map { String(format: "%+7.2f", 100 * $0) } ?? "      -"
                line += g.allowed.map { String(format: "  %6.2f", -100 * $0) } ?? "       -"
                line += "  " + (g.verdict == .regression ? "REGRESSION" : "ok")
                if g.newFailures > 0 { line += " (\(g.newFailures) more diverged/failed)" }
                lines.append(line)
            }
            let missing = groups.filter { $0.verdict == .missing }, new = groups.filter { $0.verdict == .new }
            let changed = groups.filter(\.keyChanged)
            if !missing.isEmpty {
                lines.append("")
                lines.append("MISSING from the current results (in the baseline): \(missing.count)")
                for g in missing { lines.append("  " + g.label) }
            }
            if !new.isEmpty {
                lines.append("")
                lines.append("new (not in the baseline; not compared): \(new.count)")
                for g in new { lines.append("  " + g.label) }
            }
            if !changed.isEmpty {
                lines.append("")
                lines.append("configuration changed (the run keys differ from the baseline's; compared by label): \(changed.count)")
                for g in changed { lines.append("  " + g.label) }
                lines.append("  if the change is intended, write a new baseline: sambench report --format json > BASELINE")
            }
        }
        if !expectations.isEmpty {
            if !lines.isEmpty { lines.append("") }
            lines.append("expectations\(suite.map { " of " + $0 } ?? ""):")
            for e in expectations {
                lines.append("  line \(e.expectation.line): \(e.expectation.summary): \(e.passed ? "ok" : "FAILED")")
                for d in e.details { lines.append("    " + d) }
            }
        }
        lines.append("")
        var problems: [String] = []
        if !regressions.isEmpty { problems.append("\(regressions.count) regressions") }
        if !missing.isEmpty { problems.append("\(missing.count) groups missing") }
        let failed = expectations.filter { !$0.passed }.count
        if failed > 0 { problems.append("\(failed) expectations failed") }
        lines.append(passed ? "PASS" : "FAIL: " + problems.joined(separator: ", "))
        return lines.joined(separator: "\n") + "\n"
    }
}
