import Foundation

/// Early-learning regularization (Liu et al., NeurIPS 2020), as shengliu66/ELR writes it: per
/// sample, cross-entropy plus lambda log(1 - <t_i, p_i>), where p_i is the softmax clamped to
/// [1e-4, 1 - 1e-4] and t_i a running average of sample i's own clamped and renormalised
/// prediction, t_i <- beta t_i + (1 - beta) p_i / sum(p_i) (detached), updated before the loss is
/// taken, the first time the step sees the sample (`TrackedRows.pending`): a SAM step's
/// second pass reads the target its first pass left. The clamp passes no gradient outside
/// [1e-4, 1 - 1e-4] (PyTorch's `clamp`). Gradient with respect to the logits: p - onehot(y)
/// plus p_j (g_j - sum_k g_k p_k), g_k = -lambda t_k [p_k inside the clamp] / (1 - <t, p>).
public struct ELRLoss: Loss {
    public var beta: Double
    public var lambda: Double
    public static let clampLow = 1e-4, clampHigh = 1 - 1e-4

    public init(beta: Double = 0.7, lambda: Double = 3) { (self.beta, self.lambda) = (beta, lambda) }

    public func compute(logits: UnsafePointer<Float>, targets: Targets, count n: Int, classes c: Int,
                        weights: UnsafePointer<Float>?, losses: UnsafeMutablePointer<Float>?, grad: UnsafeMutablePointer<Float>?) -> Double {
        guard case let .tracked(y, rows) = targets else { preconditionFailure("ELR takes hard labels with their tracked targets") }
        return LossRows.weightedMean(count: n, weights: weights, losses: losses) { b, scale in
            let z = logits + b * c
            let label = LossRows.label(y, b, c)
            let t = rows.row(b, classes: c)
            let lse = LossRows.logSumExp(z, c)
            // The prediction and its clamp, float64 in registers: C <= 1000 fits the stack.
            return withUnsafeTemporaryAllocation(of: Double.self, capacity: 2 * c) { buffer in
                let p = buffer.baseAddress!, pc = p + c
                var sum = 0.0
                for k in 0..<c {
                    p[k] = Foundation.exp(Double(z[k]) - lse)
                    pc[k] = min(max(p[k], Self.clampLow), Self.clampHigh)
                    sum += pc[k]
                }
                if rows.pending[b] != 0 {
                    for k in 0..<c { t[k] = Float(beta * Double(t[k]) + (1 - beta) * pc[k] / sum) }
                    rows.pending[b] = 0
                }
                var dot = 0.0
                for k in 0..<c { dot += Double(t[k]) * pc[k] }
                let loss = lse - Double(z[label]) + lambda * Foundation.log(1 - dot)
                if let g = grad {
                    // g_k = dreg/dpc_k through the clamp (into pc, no longer needed), then through the softmax.
                    var gp = 0.0
                    for k in 0..<c {
                        pc[k] = p[k] >= Self.clampLow && p[k] <= Self.clampHigh ? -lambda * Double(t[k]) / (1 - dot) : 0
                        gp += pc[k] * p[k]
                    }
                    for j in 0..<c { g[b * c + j] = Float((p[j] - (j == label ? 1 : 0) + p[j] * (pc[j] - gp)) * scale) }
                }
                return loss
            }
        }
    }

    /// The twin takes the targets as they are after this step's update (`updated(...)` makes them).
    public func reference(logits: [Double], targets: ReferenceTargets, count n: Int, classes c: Int,
                          weights: [Double]?) -> (losses: [Double], grad: [Double]) {
        guard case let .tracked(y, t) = targets else { preconditionFailure("ELR takes hard labels with their tracked targets") }
        return ReferenceLossRows.batch(logits: logits, count: n, classes: c, weights: weights) { b, z in
            let p = ReferenceLossRows.softmax(z)
            let pc = p.map { min(max($0, Self.clampLow), Self.clampHigh) }
            let tb = Array(t[(b * c)..<((b + 1) * c)])
            let dot = zip(tb, pc).map(*).reduce(0, +)
            let loss = -Foundation.log(p[y[b]]) + lambda * Foundation.log(1 - dot)
            // d/dz_j of CE: p_j - [j = y]; of the regulariser: sum_k dreg/dpc_k dpc_k/dp_k dp_k/dz_j.
            let dpc: [Double] = (0..<c).map { k in p[k] >= Self.clampLow && p[k] <= Self.clampHigh ? -lambda * tb[k] / (1 - dot) : 0 }
            var grad = [Double](repeating: 0, count: c)
            for j in 0..<c {
                var g = p[j] - (j == y[b] ? 1.0 : 0.0)
                for k in 0..<c {
                    let jacobian: Double = p[k] * ((k == j ? 1.0 : 0.0) - p[j])
                    g += dpc[k] * jacobian
                }
                grad[j] = g
            }
            return (loss, grad)
        }
    }

    /// The targets after one update with these logits (the twin of the fast path's update):
    /// beta t + (1 - beta) clamp(p) / sum(clamp(p)), row by row.
    public func updated(targets t: [Double], logits: [Double], count n: Int, classes c: Int) -> [Double] {
        var out = t
        for b in 0..<n {
            let pc = ReferenceLossRows.softmax(logits[(b * c)..<((b + 1) * c)]).map { min(max($0, Self.clampLow), Self.clampHigh) }
            let s = pc.reduce(0, +)
            for k in 0..<c { out[b * c + k] = beta * t[b * c + k] + (1 - beta) * pc[k] / s }
        }
        return out
    }
}
