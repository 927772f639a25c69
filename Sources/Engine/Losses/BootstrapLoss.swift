import Foundation

/// Reed et al.'s bootstrapping losses (ICLR 2015 workshop, "Training deep neural networks on
/// noisy labels with bootstrapping"): cross-entropy against beta * onehot(y) + (1 - beta) * q,
/// where q is the model's own prediction, detached (a constant of the step: no gradient flows
/// through the target): `soft` takes q = softmax(z) (beta 0.95 in the paper), `hard` takes
/// q = onehot(argmax z) (beta 0.8). The loss is lse(z) - sum_k t_k z_k, its gradient
/// softmax(z) - t. This is a loss; the two-stage relabelling `bootstrap = true` (the SAM
/// paper's "Bootstrap") is another thing and combines with it.
public struct BootstrapLoss: Loss {
    public enum Kind: Sendable { case soft, hard }
    public var kind: Kind
    public var beta: Double
    public init(_ kind: Kind, beta: Double) { (self.kind, self.beta) = (kind, beta) }

    public func compute(logits: UnsafePointer<Float>, targets: Targets, count n: Int, classes c: Int,
                        weights: UnsafePointer<Float>?, losses: UnsafeMutablePointer<Float>?, grad: UnsafeMutablePointer<Float>?) -> Double {
        guard case let .hard(y) = targets else { preconditionFailure("bootstrapping losses take hard labels") }
        return LossRows.weightedMean(count: n, weights: weights, losses: losses) { b, scale in
            let z = logits + b * c
            let label = LossRows.label(y, b, c)
            let lse = LossRows.logSumExp(z, c)
            let argmax = CrossEntropy.argmax(z, c)
            var loss = lse
            for k in 0..<c {
                let p = Foundation.exp(Double(z[k]) - lse)
                let q: Double = kind == .soft ? p : (k == argmax ? 1 : 0)
                let t = beta * (k == label ? 1 : 0) + (1 - beta) * q
                loss -= t * Double(z[k])
                grad?[b * c + k] = Float((p - t) * scale)
            }
            return loss
        }
    }

    public func reference(logits: [Double], targets: ReferenceTargets, count n: Int, classes c: Int,
                          weights: [Double]?) -> (losses: [Double], grad: [Double]) {
        ReferenceLossRows.batch(logits: logits, count: n, classes: c, weights: weights) { b, z in
            let p = ReferenceLossRows.softmax(z)
            let y = ReferenceLossRows.label(targets, b)
            let top = p.indices.max { p[$0] < p[$1] || (p[$0] == p[$1] && $0 > $1) }!
            let q = kind == .soft ? p : p.indices.map { $0 == top ? 1 : 0 }
            let t = (0..<c).map { beta * ($0 == y ? 1 : 0) + (1 - beta) * q[$0] }
            return (-zip(t, p).map { $0 * Foundation.log($1) }.reduce(0, +), zip(p, t).map { $0 - $1 })
        }
    }
}
