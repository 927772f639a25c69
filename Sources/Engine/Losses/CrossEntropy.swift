import Foundation

/// Mean softmax cross-entropy over a batch, PyTorch's `F.cross_entropy` with optional label
/// smoothing eps: loss_i = (1-eps) * (lse(z) - z[y]) + eps * mean_k (lse(z) - z[k]).
/// Gradient w.r.t. logits (of the mean loss): (softmax(z) - (1-eps)*onehot(y) - eps/C) / N.
public enum CrossEntropy {
    /// Returns the mean loss; writes the gradient of the mean loss into `grad` when given.
    /// Allocates nothing. Labels must be in 0..<classes (checked).
    public static func compute(logits: UnsafePointer<Float>, labels: UnsafePointer<Int32>, count n: Int,
                               classes c: Int, smoothing eps: Float = 0,
                               grad: UnsafeMutablePointer<Float>? = nil) -> Double {
        var total = 0.0
        let invN = 1 / Double(n)
        for b in 0..<n {
            let z = logits + b * c
            let y = Int(labels[b])
            precondition(y >= 0 && y < c, "CrossEntropy: label \(y) out of range 0..<\(c) at batch index \(b)")
            var mx = z[0]
            for k in 1..<c where z[k] > mx { mx = z[k] }
            var s = 0.0, sumZ = 0.0
            for k in 0..<c { s += Foundation.exp(Double(z[k] - mx)); sumZ += Double(z[k]) }
            let lse = Double(mx) + Foundation.log(s)
            let nll = lse - Double(z[y])
            total += (1 - Double(eps)) * nll + Double(eps) * (lse - sumZ / Double(c))
            if let g = grad {
                for k in 0..<c {
                    var t = Double(eps) / Double(c)
                    if k == y { t += 1 - Double(eps) }
                    g[b * c + k] = Float((Foundation.exp(Double(z[k]) - lse) - t) * invN)
                }
            }
        }
        return total * invN
    }

    /// Number of rows whose arg-max (first maximum) equals the label.
    public static func correct(logits: UnsafePointer<Float>, labels: UnsafePointer<Int32>, count n: Int, classes c: Int) -> Int {
        var hits = 0
        for b in 0..<n where argmax(logits + b * c, c) == Int(labels[b]) { hits += 1 }
        return hits
    }

    /// The predicted class of a row of `c` logits: the first largest.
    @inline(__always)
    public static func argmax(_ z: UnsafePointer<Float>, _ c: Int) -> Int {
        var best = 0
        for k in 1..<c where z[k] > z[best] { best = k }
        return best
    }
}
