// Sharpness at the end of a run: m-sharpness and the top Hessian eigenvalue.
import Engine
import Foundation
import Optim

/// How sharpness is measured at the end of a run.
public struct SharpnessConfig: Sendable, Codable, Hashable {
    /// Fixed training batches (the first ones of the unshuffled training set) to measure on.
    public var batches: Int = 2
    /// rho of the SAM perturbation of the m-sharpness estimate.
    public var rho: Float = 0.05
    /// Power-iteration steps for the top Hessian eigenvalue (0 skips it).
    public var hessianIterations: Int = 20
    /// Step h of the central difference (grad(w + h v) - grad(w - h v)) / 2h, |v| = 1.
    public var finiteDifferenceStep: Float = 1e-3

    public init() {}
}

public struct SharpnessMetrics: Sendable, Codable, Equatable {
    /// Mean over the batches of L(w + e(w)) - L(w), e the SAM perturbation of radius rho with
    /// m = the batch size (train-mode BN, running statistics untouched).
    public var mSharpness: Double
    public var rho: Float
    public var batches: Int
    public var batchSize: Int
    /// Top eigenvalue of the Hessian of the mean loss over the same batches (nil if skipped).
    public var topHessianEigenvalue: Double?
    /// ||Hv - lambda v|| / |lambda| at the last power iterate: the estimate's accuracy.
    public var hessianRelativeResidual: Double?
    public var hessianIterations: Int?
}

/// Sharpness of the model at its current weights, on fixed batches. Leaves the parameters,
/// running statistics and num_batches_tracked exactly as they were.
public enum Sharpness {
    public static func measure(executor ex: Executor, images: UnsafePointer<Float>, labels: UnsafePointer<Int32>,
                               batches: Int, config: SharpnessConfig) -> SharpnessMetrics {
        let state = ex.state
        let n = ex.batchSize, c = ex.model.numClasses, size = ex.model.tensors[0].perImage
        let tracked = state.batchesTracked
        let stats = FloatBuffer(count: state.stats.count)
        stats.copy(from: state.stats)
        defer {
            state.batchesTracked = tracked
            state.stats.copy(from: stats)
        }
        let dl = FloatBuffer(count: n * c)
        let mode = ForwardMode.train(bnMomentum: 0, dropoutSeed: 12345)
        func loss(_ b: Int, gradient: Bool) -> Double {
            let logits = ex.forward(input: images + b * n * size, mode: mode)
            let l = CrossEntropy.compute(logits: logits, labels: labels + b * n, count: n, classes: c, grad: gradient ? dl.pointer : nil)
            if gradient { ex.backward(logitsGrad: dl.pointer) }
            return l
        }

        let perturbation = SharpnessAwarePerturbation(model: ex.model, config: SAMConfig(variant: .sam, rho: config.rho))
        var increase = 0.0
        for b in 0..<batches {
            let l0 = loss(b, gradient: true)
            perturbation.ascend(params: state.params, grads: state.grads, weightDecay: 0)
            let l1 = loss(b, gradient: false)
            perturbation.restore(params: state.params)
            increase += l1 - l0
        }
        var metrics = SharpnessMetrics(mSharpness: increase / Double(batches), rho: config.rho, batches: batches, batchSize: n)

        if config.hessianIterations > 0 {
            let p = state.params.count
            let w0 = FloatBuffer(count: p), gPlus = FloatBuffer(count: p)
            w0.copy(from: state.params)
            let h = config.finiteDifferenceStep
            /// Mean gradient over the batches at w0 + s*h*v, into `out`.
            func meanGradient(_ v: UnsafePointer<Float>, _ s: Float, _ out: UnsafeMutablePointer<Float>) {
                for i in 0..<p { state.params.pointer[i] = w0.pointer[i] + s * h * v[i] }
                out.update(repeating: 0, count: p)
                for b in 0..<batches {
                    _ = loss(b, gradient: true)
                    for i in 0..<p { out[i] += state.grads.pointer[i] / Float(batches) }
                }
            }
            let r = PowerIteration.topEigenvalue(dimension: p, maxIterations: config.hessianIterations, seed: 1) { v, out in
                meanGradient(v, 1, gPlus.pointer)
                meanGradient(v, -1, out)
                for i in 0..<p { out[i] = (gPlus.pointer[i] - out[i]) / (2 * h) }
            }
            state.params.copy(from: w0)
            metrics.topHessianEigenvalue = r.eigenvalue
            metrics.hessianRelativeResidual = r.relativeResidual
            metrics.hessianIterations = r.iterations
        }
        return metrics
    }
}
