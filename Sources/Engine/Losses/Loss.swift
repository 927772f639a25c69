import Foundation

/// What a batch is trained towards: one class per sample, or a distribution over the classes
/// per sample (Mixup's mixed labels). Views of buffers the caller owns.
public enum Targets {
    /// [n] class indices.
    case hard(UnsafePointer<Int32>)
    /// [n, classes] rows that each sum to 1.
    case soft(UnsafePointer<Float>)
    /// [n] class indices, and a row of state per sample that the loss reads and updates (ELR's
    /// running average of each sample's prediction).
    case tracked(UnsafePointer<Int32>, TrackedRows)

    /// The targets of the samples from `offset` on (a micro-batch).
    public func advanced(by offset: Int, classes c: Int) -> Targets {
        switch self {
        case let .hard(y): .hard(y + offset)
        case let .soft(t): .soft(t + offset * c)
        case let .tracked(y, rows): .tracked(y + offset, rows.advanced(by: offset))
        }
    }
}

/// Per-sample rows a method keeps across the run (`table`, [samples, classes]) and the batch's
/// view of them: sample b's row is `table + indices[b] * classes`; `pending[b]` is 1 until the
/// loss has updated that row in this step (so a SAM step's second pass, or a micro-batch's,
/// reads what the first left instead of updating it again).
public struct TrackedRows {
    public var table: UnsafeMutablePointer<Float>
    public var indices: UnsafePointer<Int32>
    public var pending: UnsafeMutablePointer<UInt8>

    public init(table: UnsafeMutablePointer<Float>, indices: UnsafePointer<Int32>, pending: UnsafeMutablePointer<UInt8>) {
        (self.table, self.indices, self.pending) = (table, indices, pending)
    }

    @inline(__always)
    public func row(_ b: Int, classes c: Int) -> UnsafeMutablePointer<Float> { table + Int(indices[b]) * c }

    public func advanced(by offset: Int) -> TrackedRows { TrackedRows(table: table, indices: indices + offset, pending: pending + offset) }
}

/// The same targets in float64 arrays, for the reference twins.
public enum ReferenceTargets {
    case hard([Int])
    case soft([Double])
    /// Class indices and each sample's tracked row [n, classes], as the loss reads it (after this step's update).
    case tracked([Int], [Double])
}

/// A training loss over a batch of logits. `compute` is the fast path (float32 in and out,
/// float64 inside a row, nothing allocated); `reference` is its plain float64 twin, written
/// from the formula, that the tests hold it against (and against PyTorch).
///
/// The batch loss is the mean of the per-sample losses, or with `weights` their weighted
/// mean sum(w_i l_i) / sum(w_i) (0 when every weight is 0). The gradient written is that of
/// the batch loss with respect to the logits. A loss that reads the model's own prediction
/// in its target (bootstrapping) treats that prediction as a constant (PyTorch's `.detach()`).
public protocol Loss: Sendable {
    /// Hard-label losses refuse soft targets (a precondition): a method pairs them correctly.
    var acceptsSoftTargets: Bool { get }

    /// The batch loss; per-sample losses into `losses` [n] and the gradient into `grad` [n, c]
    /// when given.
    func compute(logits: UnsafePointer<Float>, targets: Targets, count n: Int, classes c: Int,
                 weights: UnsafePointer<Float>?, losses: UnsafeMutablePointer<Float>?, grad: UnsafeMutablePointer<Float>?) -> Double

    /// The twin: per-sample losses [n] and the gradient of the batch loss [n, c].
    func reference(logits: [Double], targets: ReferenceTargets, count n: Int, classes c: Int,
                   weights: [Double]?) -> (losses: [Double], grad: [Double])
}

public extension Loss {
    var acceptsSoftTargets: Bool { false }

    func compute(logits: UnsafePointer<Float>, targets: Targets, count n: Int, classes c: Int,
                 grad: UnsafeMutablePointer<Float>?) -> Double {
        compute(logits: logits, targets: targets, count: n, classes: c, weights: nil, losses: nil, grad: grad)
    }
}

/// The pieces every loss's fast path shares: a row's max and log-sum-exp, the class of a hard
/// target, and the weighted mean with its per-sample gradient scale.
public enum LossRows {
    /// log sum_k exp(z_k), computed from the row's maximum.
    @inline(__always)
    public static func logSumExp(_ z: UnsafePointer<Float>, _ c: Int) -> Double {
        var mx = z[0]
        for k in 1..<c where z[k] > mx { mx = z[k] }
        var s = 0.0
        for k in 0..<c { s += Foundation.exp(Double(z[k] - mx)) }
        return Double(mx) + Foundation.log(s)
    }

    /// The hard target of sample `b`, checked against the class count.
    @inline(__always)
    public static func label(_ y: UnsafePointer<Int32>, _ b: Int, _ c: Int) -> Int {
        let v = Int(y[b])
        precondition(v >= 0 && v < c, "loss: label \(v) out of range 0..<\(c) at batch index \(b)")
        return v
    }

    /// The factor of sample b's own loss gradient in the batch loss's: w_b / sum(w), or 1 / n.
    /// Calls `body(b, scale)` for every sample and returns the batch loss from the losses it gets back.
    @inline(__always)
    public static func weightedMean(count n: Int, weights: UnsafePointer<Float>?, losses: UnsafeMutablePointer<Float>?,
                                    _ body: (_ b: Int, _ scale: Double) -> Double) -> Double {
        var total = 0.0
        if let w = weights {
            var sum = 0.0
            for b in 0..<n { sum += Double(w[b]) }
            let inv = sum > 0 ? 1 / sum : 0
            for b in 0..<n {
                let l = body(b, Double(w[b]) * inv)
                losses?[b] = Float(l)
                total += Double(w[b]) * l
            }
            return total * inv
        }
        let inv = 1 / Double(n)
        for b in 0..<n {
            let l = body(b, inv)
            losses?[b] = Float(l)
            total += l
        }
        return total * inv
    }
}

/// The reference twins' shared pieces: softmax of a row and the weighted mean's factors, in float64.
public enum ReferenceLossRows {
    public static func softmax(_ z: ArraySlice<Double>) -> [Double] {
        let mx = z.max()!
        let e = z.map { Foundation.exp($0 - mx) }
        let s = e.reduce(0, +)
        return e.map { $0 / s }
    }

    /// Per-sample factors of the batch loss: w_b / sum(w) (0 when the weights sum to 0), or 1 / n.
    public static func scales(count n: Int, weights: [Double]?) -> [Double] {
        guard let w = weights else { return [Double](repeating: 1 / Double(n), count: n) }
        let s = w.reduce(0, +)
        return w.map { s > 0 ? $0 / s : 0 }
    }

    /// Runs `row(b, logits of b) -> (loss, gradient of the loss)` for each sample and scales the gradients.
    public static func batch(logits: [Double], count n: Int, classes c: Int, weights: [Double]?,
                             _ row: (Int, ArraySlice<Double>) -> (Double, [Double])) -> (losses: [Double], grad: [Double]) {
        let scale = scales(count: n, weights: weights)
        var losses: [Double] = [], grad: [Double] = []
        for b in 0..<n {
            let (l, g) = row(b, logits[(b * c)..<((b + 1) * c)])
            losses.append(l)
            grad += g.map { $0 * scale[b] }
        }
        return (losses, grad)
    }

    public static func label(_ t: ReferenceTargets, _ b: Int) -> Int {
        guard case let .hard(y) = t else { preconditionFailure("this loss takes hard labels") }
        return y[b]
    }
}
