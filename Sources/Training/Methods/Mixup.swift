// Mixup: batches mixed with a Beta-drawn weight before the step.
import Engine
import Foundation

/// Mixup (Zhang et al., ICLR 2018), as facebookresearch/mixup-cifar10: per batch one
/// lambda ~ Beta(alpha, alpha) and a random permutation pi of the batch; the step trains on
/// lambda * x + (1 - lambda) * x[pi] with the loss lambda * CE(z, y) + (1 - lambda) * CE(z, y[pi]),
/// which is the cross-entropy against the soft target lambda * onehot(y) + (1 - lambda) *
/// onehot(y[pi]) (with label smoothing, that target smoothed). Training accuracy counts lambda
/// for a prediction equal to y and 1 - lambda for one equal to y[pi], as the reference does.
/// lambda and pi come from a generator seeded by (run seed, iteration): a resumed run mixes
/// the same batches. Nothing is allocated per batch.
public final class Mixup: TrainingMethod {
    public let alpha: Double
    public let loss: Loss
    let context: MethodContext
    private let mixedInput: FloatBuffer
    private let softTargets: FloatBuffer
    private let permutation: UnsafeMutablePointer<Int32>
    private let permutedLabels: UnsafeMutablePointer<Int32>

    public init(alpha: Double, context: MethodContext) {
        self.alpha = alpha
        self.context = context
        loss = SoftCrossEntropy(smoothing: context.labelSmoothing)
        mixedInput = FloatBuffer(count: context.batchSize * context.imageSize)
        softTargets = FloatBuffer(count: context.batchSize * context.classes)
        permutation = .allocate(capacity: context.batchSize)
        permutedLabels = .allocate(capacity: context.batchSize)
    }

    deinit {
        permutation.deallocate()
        permutedLabels.deallocate()
    }

    /// The batch's lambda and permutation: drawn from a generator of (seed, iteration).
    public func prepare(input: UnsafePointer<Float>, labels: UnsafePointer<Int32>, indices: UnsafePointer<Int32>?, iteration: Int) -> PreparedBatch {
        var rng = Xoshiro256(seed: splitMix64(splitMix64(context.seed ^ 0x6D69_7875_70) &+ UInt64(iteration)))
        let lambda = Self.beta(alpha, &rng)
        let n = context.batchSize
        for i in 0..<n { permutation[i] = Int32(i) }
        for i in stride(from: n - 1, to: 0, by: -1) {
            let j = rng.nextInt(below: i + 1)
            (permutation[i], permutation[j]) = (permutation[j], permutation[i])
        }
        return mix(input: input, labels: labels, lambda: lambda, permutation: permutation)
    }

    /// The batch mixed with a given lambda and permutation (`prepare`'s second half; tests give both).
    public func mix(input: UnsafePointer<Float>, labels: UnsafePointer<Int32>, lambda: Double, permutation pi: UnsafePointer<Int32>) -> PreparedBatch {
        let n = context.batchSize, size = context.imageSize, c = context.classes
        let l = Float(lambda), r = Float(1 - lambda)
        for i in 0..<n {
            let j = Int(pi[i])
            precondition(j >= 0 && j < n && (0..<c).contains(Int(labels[i])), "Mixup: permutation entry \(j) or label \(labels[i]) out of range at \(i)")
            let dst = mixedInput.pointer + i * size, a = input + i * size, b = input + j * size
            for k in 0..<size { dst[k] = l * a[k] + r * b[k] }
            permutedLabels[i] = labels[j]
            let t = softTargets.pointer + i * c
            t.update(repeating: 0, count: c)
            t[Int(labels[i])] += l
            t[Int(labels[j])] += r
        }
        return PreparedBatch(input: mixedInput.pointer, targets: .soft(softTargets.pointer), labels: labels, mixed: permutedLabels, lambda: lambda)
    }

    /// A draw of Beta(a, a), as X / (X + Y) of two Gamma(a) draws (Marsaglia and Tsang's
    /// method; for a < 1 the Gamma(a + 1) draw scaled by U^(1/a)).
    static func beta(_ a: Double, _ rng: inout Xoshiro256) -> Double {
        let x = gamma(a, &rng), y = gamma(a, &rng)
        return x + y > 0 ? x / (x + y) : 0.5
    }

    static func gamma(_ a: Double, _ rng: inout Xoshiro256) -> Double {
        if a < 1 {
            var u = rng.nextUniform()
            while u <= 0 { u = rng.nextUniform() }
            return gamma(a + 1, &rng) * Foundation.pow(u, 1 / a)
        }
        let d = a - 1.0 / 3, c = 1 / (9 * d).squareRoot()
        while true {
            let x = rng.nextNormal()
            let v0 = 1 + c * x
            guard v0 > 0 else { continue }
            let v = v0 * v0 * v0
            let u = rng.nextUniform()
            if u > 0, Foundation.log(u) < 0.5 * x * x + d - d * v + d * Foundation.log(v) { return d * v }
        }
    }
}
