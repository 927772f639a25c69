import Foundation

/// Generalized cross-entropy (Zhang and Sabuncu, NeurIPS 2018): l = (1 - p_y^q) / q, from
/// cross-entropy (q -> 0) to MAE (q = 1); q = 0.7 in the paper and AlanChou/Truncated-Loss.
/// Gradient with respect to the logits: p_y^q (p_k - [k = y]).
public struct GeneralizedCrossEntropy: Loss {
    public var q: Double
    public init(q: Double = 0.7) { self.q = q }

    public func compute(logits: UnsafePointer<Float>, targets: Targets, count n: Int, classes c: Int,
                        weights: UnsafePointer<Float>?, losses: UnsafeMutablePointer<Float>?, grad: UnsafeMutablePointer<Float>?) -> Double {
        guard case let .hard(y) = targets else { preconditionFailure("GCE takes hard labels") }
        return LossRows.weightedMean(count: n, weights: weights, losses: losses) { b, scale in
            let z = logits + b * c
            let label = LossRows.label(y, b, c)
            let lse = LossRows.logSumExp(z, c)
            // p_y^q = exp(q log p_y): exact where p_y underflows.
            let pq = Foundation.exp(q * (Double(z[label]) - lse))
            if let g = grad {
                for k in 0..<c { g[b * c + k] = Float(pq * (Foundation.exp(Double(z[k]) - lse) - (k == label ? 1 : 0)) * scale) }
            }
            return (1 - pq) / q
        }
    }

    public func reference(logits: [Double], targets: ReferenceTargets, count n: Int, classes c: Int,
                          weights: [Double]?) -> (losses: [Double], grad: [Double]) {
        ReferenceLossRows.batch(logits: logits, count: n, classes: c, weights: weights) { b, z in
            let p = ReferenceLossRows.softmax(z)
            let y = ReferenceLossRows.label(targets, b)
            // dl/dp_y = -p_y^(q-1); dp_y/dz_k = p_y ([k = y] - p_k).
            let dp = -Foundation.pow(p[y], q - 1)
            return ((1 - Foundation.pow(p[y], q)) / q, (0..<c).map { k in dp * p[y] * ((k == y ? 1 : 0) - p[k]) })
        }
    }
}
