import Foundation

/// Cross-entropy against hard or soft targets with label smoothing eps, PyTorch's
/// `F.cross_entropy(z, target, label_smoothing=eps)` for class indices and for probabilities:
/// the target t = (1 - eps) * onehot(y) (or the soft row) + eps / C, the loss
/// lse(z) - sum_k t_k z_k, its gradient softmax(z) - t.
public struct SoftCrossEntropy: Loss {
    public var smoothing: Float
    public init(smoothing: Float = 0) { self.smoothing = smoothing }

    public var acceptsSoftTargets: Bool { true }

    public func compute(logits: UnsafePointer<Float>, targets: Targets, count n: Int, classes c: Int,
                        weights: UnsafePointer<Float>?, losses: UnsafeMutablePointer<Float>?, grad: UnsafeMutablePointer<Float>?) -> Double {
        // The plain mean over hard labels is the engine's CrossEntropy, bit for bit (runs made
        // before losses were plug-ins compute the same numbers).
        if case let .hard(y) = targets, weights == nil, losses == nil {
            return CrossEntropy.compute(logits: logits, labels: y, count: n, classes: c, smoothing: smoothing, grad: grad)
        }
        let eps = Double(smoothing), uniform = eps / Double(c)
        return LossRows.weightedMean(count: n, weights: weights, losses: losses) { b, scale in
            let z = logits + b * c
            let lse = LossRows.logSumExp(z, c)
            var loss = lse
            switch targets {
            case let .hard(y):
                let label = LossRows.label(y, b, c)
                for k in 0..<c {
                    let t = uniform + (k == label ? 1 - eps : 0)
                    loss -= t * Double(z[k])
                    grad?[b * c + k] = Float((Foundation.exp(Double(z[k]) - lse) - t) * scale)
                }
            case let .soft(rows):
                for k in 0..<c {
                    let t = (1 - eps) * Double(rows[b * c + k]) + uniform
                    loss -= t * Double(z[k])
                    grad?[b * c + k] = Float((Foundation.exp(Double(z[k]) - lse) - t) * scale)
                }
            case .tracked:
                preconditionFailure("cross-entropy takes hard or soft targets")
            }
            return loss
        }
    }

    public func reference(logits: [Double], targets: ReferenceTargets, count n: Int, classes c: Int,
                          weights: [Double]?) -> (losses: [Double], grad: [Double]) {
        let eps = Double(smoothing)
        return ReferenceLossRows.batch(logits: logits, count: n, classes: c, weights: weights) { b, z in
            let p = ReferenceLossRows.softmax(z)
            let base: [Double]
            switch targets {
            case let .hard(y): base = (0..<c).map { $0 == y[b] ? 1 : 0 }
            case let .soft(t): base = Array(t[(b * c)..<((b + 1) * c)])
            case .tracked: preconditionFailure("cross-entropy takes hard or soft targets")
            }
            let t = base.map { (1 - eps) * $0 + eps / Double(c) }
            let loss = -zip(t, p).map { $0 * Foundation.log($1) }.reduce(0, +)
            return (loss, zip(p, t).map { $0 - $1 })
        }
    }
}
