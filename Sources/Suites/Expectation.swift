// What a suite asserts about its own results ([[expect]]), and how its [[expect]] entries are read.
import Foundation
import TOMLKit
import Training

/// An assertion a suite makes about its own results (`[[expect]]`), checked by
/// `sambench check --suite FILE`. Percentages are in points.
public struct Expectation: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable, CaseIterable {
        /// Every matching group's mean test accuracy is at least `min`.
        case accuracy
        /// In every matching setting, each group `where` selects minus the suite's baseline
        /// (SGD with cross-entropy unless the suite names another), paired by seed, is on average
        /// at least `min`; among groups that differ only in rho or a method parameter, the one
        /// chosen on validation.
        case gain
        /// `gain` for a SAM-family optimizer (`optimizer`, sam by default; `rho`, or the one
        /// chosen on validation): SAM minus SGD with the default baseline.
        case samGain = "sam-gain"
        /// No matching run diverged or failed.
        case noDivergence = "no-divergence"
        /// Every matching run finished.
        case allDone = "all-done"
        /// Every matching group's mean memorisation at the last epoch (the corrupted training
        /// samples' accuracy against their noisy labels) is at least `min` and at most `max`.
        case memorised
    }

    public var kind: Kind
    public var min: Double?
    /// For memorised: the most it may be, in percent.
    public var max: Double?
    public var filter: Conditions?
    public var metric: Metric
    /// For sam-gain: sam or asam.
    public var optimizer: OptimizerFamily
    /// For sam-gain: this rho instead of the one chosen on validation.
    public var rho: Double?
    /// Where the suite says it.
    public var line: Int

    /// The fields `where` may name.
    public static var fields: [String] { Axes.names + ["label"] }
    public static let keys = ["what", "min", "max", "where", "metric", "optimizer", "rho"]

    public var summary: String {
        var s: String
        switch kind {
        case .accuracy: s = "accuracy >= \(min.map { "\($0)" } ?? "?")"
        case .gain: s = "gain over the baseline >= \(min.map { "\($0)" } ?? "?") points"
        case .samGain: s = "\(optimizer)\(rho.map { "(rho=\(Float($0)))" } ?? "") - baseline >= \(min.map { "\($0)" } ?? "?") points"
        case .noDivergence: s = "no run diverged or failed"
        case .allDone: s = "every run finished"
        case .memorised: s = "memorised" + [min.map { " >= \($0)" }, max.map { " <= \($0)" }].compactMap { $0 }.joined(separator: " and")
        }
        if let filter { s += " where \(filter.text)" }
        if kind == .accuracy || kind == .gain || kind == .samGain, metric != .last { s += " (metric \(metric))" }
        return s
    }
}

extension SuiteParser {
    func expectation(_ entry: (TOMLTable, String)) throws -> Expectation {
        let (t, p) = entry
        try rejectUnknown(t, allowed: Expectation.keys, path: p)
        guard let kind: Expectation.Kind = try choice(t, "what", path: "\(p).what", what: "expectation") else {
            throw fail(p, "an expectation needs `what` (\(Expectation.Kind.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        let what = kind.rawValue
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
        if let metric: Metric = try choice(t, "metric", path: "\(p).metric", what: "metric") { e.metric = metric }
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
}
