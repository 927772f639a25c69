import Foundation

/// Symmetric cross-entropy (Wang et al., ICCV 2019): alpha * CE + beta * RCE, the reverse
/// cross-entropy RCE = -sum_k p_k log t_k with the one-hot target's log 0 replaced by A.
/// As the authors' code (YisenWang/symmetric_cross_entropy_for_noisy_labels): the target
/// clamped to [1e-4, 1] (A = ln 1e-4, the default `logZero`) and the prediction to [1e-7, 1]
/// (a class below 1e-7 counts as 1e-7 and passes no gradient); the paper's A = -4 is
/// `logZero = -4`. So RCE = -A * sum_{k != y} max(p_k, 1e-7).
public struct SymmetricCrossEntropy: Loss {
    public var alpha: Double
    public var beta: Double
    public var logZero: Double
    public static let codeLogZero = Foundation.log(1e-4)
    static let predictionFloor = 1e-7

    public init(alpha: Double = 0.1, beta: Double = 1, logZero: Double = SymmetricCrossEntropy.codeLogZero) {
        (self.alpha, self.beta, self.logZero) = (alpha, beta, logZero)
    }

    public func compute(logits: UnsafePointer<Float>, targets: Targets, count n: Int, classes c: Int,
                        weights: UnsafePointer<Float>?, losses: UnsafeMutablePointer<Float>?, grad: UnsafeMutablePointer<Float>?) -> Double {
        guard case let .hard(y) = targets else { preconditionFailure("SCE takes hard labels") }
        let floor = Self.predictionFloor
        return LossRows.weightedMean(count: n, weights: weights, losses: losses) { b, scale in
            let z = logits + b * c
            let label = LossRows.label(y, b, c)
            let lse = LossRows.logSumExp(z, c)
            // The clamped mass of the other classes (s), and the part of it that passes gradient (live).
            var s = 0.0, live = 0.0
            for k in 0..<c where k != label {
                let p = Foundation.exp(Double(z[k]) - lse)
                if p >= floor { s += p; live += p } else { s += floor }
            }
            if let g = grad {
                for k in 0..<c {
                    let p = Foundation.exp(Double(z[k]) - lse)
                    let ce = p - (k == label ? 1 : 0)
                    let own = k != label && p >= floor ? p : 0
                    g[b * c + k] = Float((alpha * ce - beta * logZero * (own - p * live)) * scale)
                }
            }
            return alpha * (lse - Double(z[label])) - beta * logZero * s
        }
    }

    public func reference(logits: [Double], targets: ReferenceTargets, count n: Int, classes c: Int,
                          weights: [Double]?) -> (losses: [Double], grad: [Double]) {
        ReferenceLossRows.batch(logits: logits, count: n, classes: c, weights: weights) { b, z in
            let p = ReferenceLossRows.softmax(z)
            let y = ReferenceLossRows.label(targets, b)
            let logT = (0..<c).map { $0 == y ? 0 : logZero }
            let clamped = p.map { min(max($0, Self.predictionFloor), 1) }
            let ce = -Foundation.log(p[y])
            let rce = -zip(clamped, logT).map { $0 * $1 }.reduce(0, +)
            // d rce / d p_k = -log t_k where p_k is not clamped; d p_k / d z_j = p_k ([k = j] - p_j).
            let drce = (0..<c).map { k in p[k] >= Self.predictionFloor ? -logT[k] : 0 }
            let grad = (0..<c).map { j in
                let dce = p[j] - (j == y ? 1 : 0)
                let dr = (0..<c).map { k in drce[k] * p[k] * ((k == j ? 1 : 0) - p[j]) }.reduce(0, +)
                return alpha * dce + beta * dr
            }
            return (alpha * ce + beta * rce, grad)
        }
    }
}
