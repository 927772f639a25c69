import Foundation
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
