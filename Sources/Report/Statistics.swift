import Foundation

/// Summary of a sample: n, mean, standard deviation (n - 1) and the 95% confidence interval of
/// the mean by Student's t. With one value the spread and interval are undefined (nil).
public struct Summary: Sendable, Codable, Equatable {
    public var n: Int
    public var mean: Double
    public var std: Double?
    /// Half-width of the 95% interval: mean +- ci95.
    public var ci95: Double?

    public init?(_ values: [Double]) {
        guard !values.isEmpty else { return nil }
        n = values.count
        mean = values.reduce(0, +) / Double(n)
        guard n >= 2 else { return }
        let m = mean
        let s = (values.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(n - 1)).squareRoot()
        std = s
        ci95 = StudentT.quantile(0.975, degreesOfFreedom: Double(n - 1)) * s / Double(n).squareRoot()
    }
}

/// A paired comparison (b - a on the same seeds): the mean difference with its 95% interval and
/// the two-sided p-value of the paired t-test.
public struct PairedComparison: Sendable, Codable, Equatable {
    public var pairs: Int
    public var meanDifference: Double
    public var ci95: Double?
    public var pValue: Double?

    public init?(differences d: [Double]) {
        guard let s = Summary(d) else { return nil }
        pairs = s.n
        meanDifference = s.mean
        ci95 = s.ci95
        guard let sd = s.std else { return }
        // Pairs that all differ by the same amount (to rounding: accuracies are counts over one
        // test set, so two seeds can meet exactly) leave the spread unestimated, not zero: no
        // interval and no p-value, rather than the certainty (p = 0) that a handful of seeds never gives.
        if sd <= 1e-9 * max(1, abs(s.mean)) {
            ci95 = nil
            return
        }
        let t = s.mean / (sd / Double(s.n).squareRoot())
        pValue = 2 * (1 - StudentT.cdf(abs(t), degreesOfFreedom: Double(s.n - 1)))
    }

    /// Several pairs, every one with the same difference: no spread to draw an interval from.
    public var noSpread: Bool { pairs >= 2 && ci95 == nil }

    /// How the tables write a missing interval: why it is missing.
    public var noIntervalReason: String { noSpread ? "every pair the same: no interval" : "one pair: no interval" }
}

/// Student's t distribution, through the regularised incomplete beta function.
public enum StudentT {
    /// P(T <= t) for `df` degrees of freedom.
    public static func cdf(_ t: Double, degreesOfFreedom df: Double) -> Double {
        let x = df / (df + t * t)
        let tail = 0.5 * incompleteBeta(x, a: df / 2, b: 0.5)
        return t >= 0 ? 1 - tail : tail
    }

    /// The p-quantile, by bisection on the CDF (to 1e-12).
    public static func quantile(_ p: Double, degreesOfFreedom df: Double) -> Double {
        precondition(p > 0 && p < 1 && df > 0)
        if p < 0.5 { return -quantile(1 - p, degreesOfFreedom: df) }
        var lo = 0.0, hi = 1.0
        while cdf(hi, degreesOfFreedom: df) < p { hi *= 2 }
        for _ in 0..<200 where hi - lo > 1e-12 * max(1, hi) {
            let mid = (lo + hi) / 2
            if cdf(mid, degreesOfFreedom: df) < p { lo = mid } else { hi = mid }
        }
        return (lo + hi) / 2
    }

    /// I_x(a, b), the regularised incomplete beta function: the continued fraction of
    /// I_x(a, b) = x^a (1-x)^b / (a B(a, b)) / (1 + d1 / (1 + d2 / (1 + ...))), evaluated by the
    /// modified Lentz method, on the side of the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) where it
    /// converges quickly.
    static func incompleteBeta(_ x: Double, a: Double, b: Double) -> Double {
        if x <= 0 { return 0 }
        if x >= 1 { return 1 }
        if x > (a + 1) / (a + b + 2) { return 1 - incompleteBeta(1 - x, a: b, b: a) }
        let logBeta: Double = lgamma(a) + lgamma(b) - lgamma(a + b)
        let logPowers: Double = a * log(x) + b * log(1 - x)
        let logFront = logPowers - logBeta - log(a)
        let tiny = 1e-300
        var f = 1.0, c = 1.0, d = 0.0
        for i in 0...400 {
            let m = Double(i / 2)
            let numerator: Double
            if i == 0 {
                numerator = 1
            } else if i % 2 == 0 {
                numerator = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
            } else {
                numerator = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
            }
            d = 1 + numerator * d
            if abs(d) < tiny { d = tiny }
            d = 1 / d
            c = 1 + numerator / c
            if abs(c) < tiny { c = tiny }
            let step = c * d
            f *= step
            if abs(step - 1) < 1e-15 { break }
        }
        return exp(logFront) * (f - 1)
    }
}
