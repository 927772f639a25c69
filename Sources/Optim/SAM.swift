import Engine

/// Which sharpness-aware perturbation to take.
public enum SAMVariant: String, Sendable, Codable, CaseIterable {
    /// Foret et al. 2021: e = rho * g / (||g|| + 1e-12), the norm over all parameters.
    case sam
    /// Kwon et al. 2021 (SamsungLabs/ASAM): T = |w| + eta for parameters named `*.weight`
    /// (conv, BN gamma, fc weight), 1 for biases; e = rho * T^2 g / (||T g|| + 1e-16).
    case asam
}

/// Which gradient enters the perturbation.
public enum PerturbationGradient: String, Sendable, Codable, CaseIterable {
    /// The raw loss gradient, no weight decay (davda54/sam; sambench's default).
    case loss
    /// The loss gradient plus weight_decay * w (the official JAX implementation).
    case lossPlusWeightDecay = "loss+wd"
}

/// Which forward passes of a SAM step update the BN running statistics.
public enum BNPolicy: String, Sendable, Codable, CaseIterable {
    /// Only the first pass at w (davda54/sam's `disable_running_stats`; the default).
    case firstPass = "first-pass"
    /// Both passes, the perturbed one included.
    case bothPasses = "both-passes"
}

/// Every choice of a SAM-family step, named, with its default. See docs/OPTIMIZERS.md.
public struct SAMConfig: Sendable, Codable, Hashable {
    public var variant: SAMVariant
    public var rho: Float
    /// ASAM's eta (ignored by SAM).
    public var eta: Float
    public var perturbationGradient: PerturbationGradient
    public var bnPolicy: BNPolicy
    /// m-sharpness: micro-batch size m over which each perturbation is taken; nil = the whole batch.
    public var microBatch: Int?
    /// LookSAM: the full SAM gradient every `lookInterval` steps; 1 = SAM every step.
    public var lookInterval: Int
    /// LookSAM: scale of the reused orthogonal component.
    public var lookAlpha: Float

    public init(variant: SAMVariant = .sam, rho: Float? = nil, eta: Float = 0.01,
                perturbationGradient: PerturbationGradient = .loss, bnPolicy: BNPolicy = .firstPass,
                microBatch: Int? = nil, lookInterval: Int = 1, lookAlpha: Float = 0.7) {
        self.variant = variant
        self.rho = rho ?? (variant == .asam ? 0.5 : 0.05)
        self.eta = eta
        self.perturbationGradient = perturbationGradient
        self.bnPolicy = bnPolicy
        self.microBatch = microBatch
        self.lookInterval = lookInterval
        self.lookAlpha = lookAlpha
    }

    /// The epsilon added to the perturbation's norm (as in each reference implementation).
    public var normEpsilon: Double { variant == .asam ? 1e-16 : 1e-12 }

    public func validate(batchSize: Int) throws {
        guard rho > 0, rho.isFinite else { throw ConfigurationError("rho", "SAM: rho must be > 0, got \(rho)") }
        guard eta >= 0 else { throw ConfigurationError("eta", "ASAM: eta must be >= 0, got \(eta)") }
        guard rho <= 1e6 else { throw ConfigurationError("rho", "SAM: rho must be <= 1e6, got \(rho)") }
        guard eta.isFinite, eta <= 1e6 else { throw ConfigurationError("eta", "ASAM: eta must be <= 1e6, got \(eta)") }
        if let m = microBatch {
            guard m >= 1, m <= batchSize, batchSize % m == 0 else {
                throw ConfigurationError("micro_batch", "m-sharpness: micro-batch \(m) must divide the batch size \(batchSize)")
            }
        }
        guard lookInterval >= 1 else { throw ConfigurationError("look_interval", "LookSAM: interval k must be >= 1, got \(lookInterval)") }
        guard lookInterval == 1 || microBatch == nil || microBatch == batchSize else {
            throw ConfigurationError("look_interval", "LookSAM (k > 1) and m-sharpness cannot be combined")
        }
        guard lookAlpha >= 0 else { throw ConfigurationError("look_alpha", "LookSAM: alpha must be >= 0, got \(lookAlpha)") }
        guard lookAlpha.isFinite, lookAlpha <= 1e6 else { throw ConfigurationError("look_alpha", "LookSAM: alpha must be <= 1e6, got \(lookAlpha)") }
        guard lookInterval <= 100_000 else { throw ConfigurationError("look_interval", "LookSAM: interval k must be <= 100000, got \(lookInterval)") }
    }
}

/// The perturbation of a SAM-family step on the flat parameter vector: `ascend` moves w to
/// w + e(g) keeping an exact copy of w, `restore` puts that copy back (not w + e - e).
/// Allocates nothing after construction.
public final class SharpnessAwarePerturbation {
    public let config: SAMConfig
    /// e of the last `ascend`, in the flat layout.
    public let e: FloatBuffer
    /// T_w of the last ASAM `ascend` (1 for SAM), in the flat layout.
    public let scale: FloatBuffer
    /// ||g|| + eps (SAM) or ||T g|| + eps (ASAM) of the last `ascend`.
    public private(set) var lastNorm: Double = 0
    private let backup: FloatBuffer
    private let weightMask: FloatBuffer
    /// 1 for a parameter that trains, 0 for a frozen one (not perturbed, not in the norm); nil: all train.
    public var trainable: FloatBuffer?

    /// `model` tells which parameters are weights (ASAM scales those only).
    public init(model: Model, config: SAMConfig) {
        self.config = config
        let n = model.parameterCount
        e = FloatBuffer(count: n)
        scale = FloatBuffer(count: n)
        backup = FloatBuffer(count: n)
        weightMask = FloatBuffer(count: n)
        for p in model.params where p.role.isWeight {
            (weightMask.pointer + p.offset).update(repeating: 1, count: p.count)
        }
    }

    /// w <- w + e, where e is computed from `grads` (the loss gradient at w), plus
    /// `weightDecay * w` when the configuration asks for it.
    public func ascend(params: FloatBuffer, grads: FloatBuffer, weightDecay: Float) {
        let n = params.count
        let w = params.pointer, g = grads.pointer, ep = e.pointer, t = scale.pointer, mask = weightMask.pointer
        // Frozen parameters (trainable 0) take no part: their gradient and decay term count as 0.
        let live = trainable?.pointer
        let wd: Float = config.perturbationGradient == .lossPlusWeightDecay ? weightDecay : 0
        backup.pointer.update(from: w, count: n)
        // ep temporarily holds T*g (ASAM) or g (SAM); the norm accumulates in Double.
        var sum = 0.0
        switch config.variant {
        case .sam:
            for i in 0..<n {
                t[i] = 1
                let gi = (g[i] + wd * w[i]) * (live?[i] ?? 1)
                ep[i] = gi
                sum += Double(gi) * Double(gi)
            }
        case .asam:
            let eta = config.eta
            for i in 0..<n {
                let ti = mask[i] != 0 ? abs(w[i]) + eta : 1
                t[i] = ti
                let tg = ti * (g[i] + wd * w[i]) * (live?[i] ?? 1)
                ep[i] = tg
                sum += Double(tg) * Double(tg)
            }
        }
        lastNorm = sum.squareRoot() + config.normEpsilon
        let factor = Float(Double(config.rho) / lastNorm)
        for i in 0..<n {
            // SAM: e = g * (rho / (||g|| + eps)); ASAM: e = T * (T g) * rho / (||T g|| + eps).
            ep[i] = t[i] * ep[i] * factor
            w[i] += ep[i]
        }
    }

    /// w <- the exact copy taken by the last `ascend`.
    public func restore(params: FloatBuffer) {
        params.pointer.update(from: backup.pointer, count: params.count)
    }
}

/// A SAM-family optimizer in davda54/sam's shape, over a base SGD that it owns:
///
///     sam.firstStep(params, grads)        // save w exactly, climb to w + e(g)
///     (gradient at w + e into grads)
///     sam.secondStep(params, grads, lr)   // restore w exactly, the base step with that gradient
///
/// m-sharpness takes a `firstStep`, a gradient and a `restore` per micro-batch, then one
/// `baseStep` with the averaged gradient; LookSAM takes the full sequence every k-th step. The
/// sequence is written here once; `TrainStep` only calls it. Allocates nothing after construction.
public final class SAM {
    public let config: SAMConfig
    public let base: SGD
    public let perturbation: SharpnessAwarePerturbation

    public init(model: Model, config: SAMConfig, base: SGD) {
        self.config = config
        self.base = base
        perturbation = SharpnessAwarePerturbation(model: model, config: config)
    }

    /// w <- w + e(g), keeping an exact copy of w; `grads` holds the loss gradient at w.
    public func firstStep(params: FloatBuffer, grads: FloatBuffer) {
        perturbation.ascend(params: params, grads: grads, weightDecay: base.config.weightDecay)
    }

    /// w <- the exact copy `firstStep` took.
    public func restore(params: FloatBuffer) { perturbation.restore(params: params) }

    /// The base optimizer's step with `grads` (the gradient at the perturbed point).
    public func baseStep(params: FloatBuffer, grads: FloatBuffer, lr: Float) { base.step(params: params, grads: grads, lr: lr) }

    /// `restore`, then `baseStep`: the second half of a SAM step.
    public func secondStep(params: FloatBuffer, grads: FloatBuffer, lr: Float) {
        restore(params: params)
        baseStep(params: params, grads: grads, lr: lr)
    }
}

/// LookSAM (Liu et al. 2022): every k steps the full SAM gradient g_s is computed and its
/// component orthogonal to the plain gradient g kept, g_v = g_s - (g . g_s / ||g||^2) g; in the
/// steps between, the update uses g + alpha * (||g|| / ||g_v||) * g_v from the plain gradient alone.
public final class LookSAMState {
    public let orthogonal: FloatBuffer
    public private(set) var hasOrthogonal = false

    public init(parameterCount: Int) { orthogonal = FloatBuffer(count: parameterCount) }

    /// Keeps g_v from the SAM gradient `gs` and the plain gradient `g`.
    public func store(samGradient gs: FloatBuffer, plainGradient g: FloatBuffer) {
        let n = gs.count
        var dot = 0.0, gg = 0.0
        for i in 0..<n { dot += Double(g.pointer[i]) * Double(gs.pointer[i]); gg += Double(g.pointer[i]) * Double(g.pointer[i]) }
        let c = Float(gg > 0 ? dot / gg : 0)
        for i in 0..<n { orthogonal.pointer[i] = gs.pointer[i] - c * g.pointer[i] }
        hasOrthogonal = true
    }

    /// Restores g_v (e.g. from a checkpoint).
    public func restore(orthogonal values: UnsafeBufferPointer<Float>) {
        precondition(values.count == orthogonal.count)
        orthogonal.pointer.update(from: values.baseAddress!, count: values.count)
        hasOrthogonal = true
    }

    /// g <- g + alpha * (||g|| / ||g_v||) * g_v (no change before the first `store`).
    public func reuse(into g: FloatBuffer, alpha: Float) {
        guard hasOrthogonal else { return }
        let n = g.count
        var gn = 0.0, vn = 0.0
        for i in 0..<n { gn += Double(g.pointer[i]) * Double(g.pointer[i]); vn += Double(orthogonal.pointer[i]) * Double(orthogonal.pointer[i]) }
        guard vn > 0 else { return }
        let s = alpha * Float((gn / vn).squareRoot())
        for i in 0..<n { g.pointer[i] += s * orthogonal.pointer[i] }
    }
}
