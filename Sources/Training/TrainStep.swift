// One training step: the method prepares the batch, then SGD or the SAM sequence calls its loss.
import Engine
import Foundation
import Optim

/// The optimizer families a run can name, in one place: the raw values are what suites, the
/// CLI, the store and the report spell.
public enum OptimizerFamily: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    case sgd, sam, asam

    /// The sharpness-aware families, compared against SGD.
    public static let sharpnessAware: [OptimizerFamily] = [.sam, .asam]

    public var description: String { rawValue }
    /// How charts and tables title it: SGD, SAM, ASAM.
    public var title: String { rawValue.uppercased() }
    public var variant: SAMVariant? { SAMVariant(rawValue: rawValue) }
}

/// The optimizer of a run: plain SGD, or a SAM-family step whose base optimizer is that SGD.
public enum OptimizerConfig: Sendable, Codable, Hashable {
    case sgd
    case sam(SAMConfig)

    public var sam: SAMConfig? { if case let .sam(c) = self { return c } else { return nil } }

    public var family: OptimizerFamily {
        switch self { case .sgd: .sgd; case let .sam(c): OptimizerFamily(rawValue: c.variant.rawValue)! }
    }
}

/// One training step on the fast path with every buffer made up front; `step` allocates nothing.
///
/// The run's training method (`TrainingMethod`: cross-entropy by default, another loss, Mixup)
/// turns the loader's batch into the input and targets trained on; the optimizer's sequence then
/// calls one closure, "forward, the method's loss, backward", as often as it needs (PyTorch's
/// `optimizer.step(closure)`), so every method combines with every optimizer.
/// SGD: the closure once, then the SGD update.
/// SAM family (davda54/sam's order): the gradient g at w (BN running statistics updated);
/// w <- w + e(g); the gradient g' at w + e (running statistics per `bnPolicy`); w restored
/// exactly; the SGD step with g'. m-sharpness does this per micro-batch of m samples and
/// averages the g'; LookSAM does it every k-th step and reuses g'- direction in between.
public final class TrainStep {
    /// Makes the executor of a batch size, with BN frozen or not; the oneDNN fast path unless a
    /// test asks for the twin.
    public typealias ExecutorFactory = @Sendable (_ state: ModelState, _ batchSize: Int, _ frozenBatchNorm: Bool) throws -> Executor
    public static let fastPath: ExecutorFactory = { try DNNLExecutor(state: $0, batchSize: $1, frozenBatchNorm: $2) }

    public let executor: Executor
    /// The SGD step (the base optimizer of a SAM-family step).
    public let optimizer: SGD
    public let config: OptimizerConfig
    /// The training method: the loss, and what it does to a batch before the step.
    public let method: TrainingMethod
    /// The SAM-family optimizer over `optimizer` (nil for SGD).
    public let sam: SAM?
    public var perturbation: SharpnessAwarePerturbation? { sam?.perturbation }
    /// m-sharpness: the executor of one micro-batch.
    private let microExecutor: Executor?
    private let look: LookSAMState?
    /// [batch, classes]: the loss gradient with respect to the logits.
    private let logitsGrad: FloatBuffer
    /// [parameters]: m-sharpness's sum of the perturbed gradients (empty otherwise).
    private let accumulated: FloatBuffer
    /// [parameters]: LookSAM's plain gradient at w (empty otherwise).
    private let plainGradient: FloatBuffer
    /// 0..<batch: the sample indices of a batch given without its own (benchmarks, tests).
    private let positions: UnsafeMutablePointer<Int32>
    /// Steps taken (LookSAM's cycle position).
    public private(set) var stepCount = 0

    public struct Result: Sendable {
        /// Mean loss of the batch at w (the first pass), before the update.
        public var loss: Double
        /// Correct predictions at w, before the update (with Mixup, lambda-weighted: see `PreparedBatch`).
        public var correct: Double
        /// Mean loss at w + e (SAM-family steps that took the second pass; else nil).
        public var perturbedLoss: Double?
    }

    /// [parameters]: 1 where a parameter trains, 0 where it is frozen (`freeze`); nil: all train.
    public let trainable: FloatBuffer?
    /// The frozen parameters' ranges in the flat layout, whose gradients are zeroed after every backward.
    private let frozenRanges: [Range<Int>]

    /// `freeze`: module prefixes whose parameters keep their values (no gradient, decay, momentum
    /// or perturbation), e.g. ["conv1", "bn1", "layer1"]; each must name some parameter.
    /// `method`: nil is cross-entropy; `seed` seeds its batch transform (Mixup's draws);
    /// `samples`: the training images the batches' indices range over (ELR's table; at least a batch).
    public init(state: ModelState, batchSize: Int, sgd: SGDConfig, optimizer: OptimizerConfig = .sgd, labelSmoothing: Float = 0,
                method: MethodConfig? = nil, seed: UInt64 = 0, samples: Int = 0,
                frozenBatchNorm: Bool = false, freeze: [String] = [], executor makeExecutor: ExecutorFactory = TrainStep.fastPath) throws {
        let model = state.model
        if let method { try Methods.validate(method) }
        let frozen: [ParamEntry]
        do { frozen = try model.params(under: freeze) } catch { throw ConfigurationError("freeze", "freeze: \(error)") }
        frozenRanges = frozen.map { $0.offset..<($0.offset + $0.count) }
        if frozen.isEmpty {
            trainable = nil
        } else {
            let mask = FloatBuffer(count: model.parameterCount)
            mask.pointer.update(repeating: 1, count: model.parameterCount)
            for r in frozenRanges { (mask.pointer + r.lowerBound).update(repeating: 0, count: r.count) }
            trainable = mask
        }
        executor = try makeExecutor(state, batchSize, frozenBatchNorm)
        self.optimizer = try SGD(parameterCount: state.model.parameterCount, config: sgd)
        self.optimizer.trainable = trainable
        config = optimizer
        self.method = Methods.make(method, MethodContext(batchSize: batchSize, classes: model.numClasses, imageSize: model.tensors[model.inputTensor].perImage,
                                                         labelSmoothing: labelSmoothing, seed: seed, samples: max(samples, batchSize)))
        let n = state.model.parameterCount
        if let c = optimizer.sam {
            try c.validate(batchSize: batchSize)
            sam = SAM(model: state.model, config: c, base: self.optimizer)
            sam!.perturbation.trainable = trainable
            let m = c.microBatch ?? batchSize
            microExecutor = m < batchSize ? try makeExecutor(state, m, frozenBatchNorm) : nil
            look = c.lookInterval > 1 ? LookSAMState(parameterCount: n) : nil
        } else {
            sam = nil
            microExecutor = nil
            look = nil
        }
        logitsGrad = FloatBuffer(count: batchSize * state.model.numClasses)
        accumulated = FloatBuffer(count: microExecutor == nil ? 0 : n)
        plainGradient = FloatBuffer(count: look == nil ? 0 : n)
        positions = .allocate(capacity: batchSize)
        for i in 0..<batchSize { positions[i] = Int32(i) }
    }

    deinit { positions.deallocate() }

    public var state: ModelState { executor.state }

    /// The closure every optimizer sequence calls: forward (train mode) on `ex` over the batch's
    /// samples from `offset` on (`ex.batchSize` of them), the method's loss, backward; the
    /// gradient lands in `state.grads` (frozen parameters' zeroed).
    private func lossAndGradient(_ ex: Executor, _ batch: PreparedBatch, offset: Int, momentum: Float, dropoutSeed: UInt64) -> (loss: Double, correct: Double) {
        let n = ex.batchSize, c = ex.model.numClasses, size = ex.model.tensors[ex.model.inputTensor].perImage
        let logits: UnsafePointer<Float>
        if let done = forwardDone, ex === executor, offset == 0 {
            // The first pass's forward, taken before the step (`forwardFirstPass`).
            logits = done
            forwardDone = nil
        } else {
            logits = timed("forward") { ex.forward(input: batch.input + offset * size, mode: .train(bnMomentum: momentum, dropoutSeed: dropoutSeed)) }
        }
        let (loss, correct) = timed("loss") {
            (method.loss.compute(logits: logits, targets: batch.targets.advanced(by: offset, classes: c), count: n, classes: c,
                                 weights: batch.weights.map { $0 + offset }, losses: nil, grad: logitsGrad.pointer),
             batch.correct(logits: logits, offset: offset, count: n, classes: c))
        }
        timed("backward") { ex.backward(logitsGrad: logitsGrad.pointer) }
        for r in frozenRanges { (state.grads.pointer + r.lowerBound).update(repeating: 0, count: r.count) }
        return (loss, correct)
    }

    /// What an optimizer sequence calls for a loss and its gradient: (executor, first sample,
    /// BN momentum, dropout seed) -> (mean loss, correct credit).
    public typealias LossClosure = (_ executor: Executor, _ offset: Int, _ bnMomentum: Float, _ dropoutSeed: UInt64) -> (loss: Double, correct: Double)

    /// Time the phases of the steps that follow: the executor's forward and backward, the loss,
    /// the optimizer update and SAM's perturbation (`sambench bench --profile`).
    public var profiling = false
    /// Seconds per phase since profiling was last reset, and the phases in the order first seen.
    public private(set) var phaseSeconds: [String: Double] = [:]
    public private(set) var phases: [String] = []

    public func resetProfile() { phaseSeconds = [:]; phases = [] }

    private func timed<T>(_ phase: String, _ body: () -> T) -> T {
        guard profiling else { return body() }
        let t0 = DispatchTime.now().uptimeNanoseconds
        let result = body()
        if phaseSeconds[phase] == nil { phases.append(phase) }
        phaseSeconds[phase, default: 0] += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        return result
    }

    /// BN momentum of the first pass (running statistics always updated at w).
    private static let firstMomentum: Float = 0.1

    /// Logits of a first pass already taken (`forwardFirstPass`), for the next step's first loss.
    private var forwardDone: UnsafePointer<Float>?

    /// The first pass's forward (train mode at w, running statistics updated) of `batch`, taken
    /// before the step, for a method that needs the logits of two networks before either trains
    /// (Co-teaching ranks each batch by the other network's losses). The next `step` takes its
    /// first loss from these logits instead of a forward of its own; `dropoutSeed` must be that
    /// step's. Not with m-sharpness, whose first passes are per micro-batch.
    public func forwardFirstPass(_ batch: PreparedBatch, dropoutSeed: UInt64 = 0) -> UnsafePointer<Float> {
        precondition(microExecutor == nil, "forwardFirstPass: not with m-sharpness")
        let logits = timed("forward") { executor.forward(input: batch.input, mode: .train(bnMomentum: Self.firstMomentum, dropoutSeed: dropoutSeed)) }
        forwardDone = logits
        return logits
    }

    /// One step on the loader's batch: the method prepares it (`iteration` seeds its draws;
    /// `indices`, the samples' indices in the training images, default 0..<batch), then the
    /// optimizer's sequence trains on it.
    @discardableResult
    public func step(input: UnsafePointer<Float>, labels: UnsafePointer<Int32>, indices: UnsafePointer<Int32>? = nil, lr: Float,
                     dropoutSeed: UInt64 = 0, iteration: Int = 0) -> Result {
        let batch = timed("method") { method.prepare(input: input, labels: labels, indices: indices ?? UnsafePointer(positions), iteration: iteration) }
        return step(batch, lr: lr, dropoutSeed: dropoutSeed)
    }

    /// One step on a batch the method has prepared (tests give Mixup's lambda and permutation).
    @discardableResult
    public func step(_ batch: PreparedBatch, lr: Float, dropoutSeed: UInt64 = 0) -> Result {
        optimizerStep(lr: lr, dropoutSeed: dropoutSeed) { ex, offset, momentum, seed in
            lossAndGradient(ex, batch, offset: offset, momentum: momentum, dropoutSeed: seed)
        }
    }

    /// The optimizer's sequence over `closure`: SGD calls it once; the SAM family owns its
    /// sequence (the gradient at w, the perturbation, the gradient at w + e, the update).
    private func optimizerStep(lr: Float, dropoutSeed: UInt64, _ closure: LossClosure) -> Result {
        defer { stepCount += 1 }
        guard let sam else {
            let r = closure(executor, 0, Self.firstMomentum, dropoutSeed)
            timed("optimizer update") { optimizer.step(params: state.params, grads: state.grads, lr: lr) }
            return Result(loss: r.loss, correct: r.correct, perturbedLoss: nil)
        }
        if let micro = microExecutor { return microBatchStep(sam, micro, lr: lr, dropoutSeed: dropoutSeed, closure) }
        let params = state.params, grads = state.grads
        let r = closure(executor, 0, Self.firstMomentum, dropoutSeed)
        if let look, stepCount % sam.config.lookInterval != 0 {
            // LookSAM in between full SAM steps: reuse the stored orthogonal direction.
            look.reuse(into: grads, alpha: sam.config.lookAlpha)
            optimizer.step(params: params, grads: grads, lr: lr)
            return Result(loss: r.loss, correct: r.correct, perturbedLoss: nil)
        }
        if look != nil { plainGradient.copy(from: grads) }
        timed("SAM perturbation") { sam.firstStep(params: params, grads: grads) }
        let p = closure(executor, 0, secondMomentum(sam), dropoutSeed &+ 1)
        look?.store(samGradient: grads, plainGradient: plainGradient)
        timed("SAM restore and update") { sam.secondStep(params: params, grads: grads, lr: lr) }
        return Result(loss: r.loss, correct: r.correct, perturbedLoss: p.loss)
    }

    /// BN momentum of the perturbed pass: 0 (statistics untouched) unless both passes update them.
    private func secondMomentum(_ sam: SAM) -> Float { sam.config.bnPolicy == .firstPass ? 0 : Self.firstMomentum }

    /// m-sharpness: a perturbation per micro-batch of m samples, the perturbed gradients averaged,
    /// then one base step.
    private func microBatchStep(_ sam: SAM, _ micro: Executor, lr: Float, dropoutSeed: UInt64, _ closure: LossClosure) -> Result {
        let params = state.params, grads = state.grads
        let m = micro.batchSize, k = executor.batchSize / m
        accumulated.zero()
        var loss = 0.0, perturbed = 0.0, correct = 0.0
        for j in 0..<k {
            let r = closure(micro, j * m, Self.firstMomentum, dropoutSeed &+ UInt64(2 * j))
            sam.firstStep(params: params, grads: grads)
            let p = closure(micro, j * m, secondMomentum(sam), dropoutSeed &+ UInt64(2 * j + 1))
            sam.restore(params: params)
            for i in 0..<grads.count { accumulated.pointer[i] += grads.pointer[i] }
            loss += r.loss; perturbed += p.loss; correct += r.correct
        }
        let inv = 1 / Float(k)
        for i in 0..<grads.count { grads.pointer[i] = accumulated.pointer[i] * inv }
        sam.baseStep(params: params, grads: grads, lr: lr)
        return Result(loss: loss / Double(k), correct: correct, perturbedLoss: perturbed / Double(k))
    }

    /// The optimizer's state (momentum buffer, LookSAM's g_v, the step count) as tensors, for
    /// checkpoints that resume a run exactly.
    public func optimizerTensors() -> [String: SafetensorsTensor] {
        let n = state.model.parameterCount
        var out: [String: SafetensorsTensor] = ["optimizer.step_count": SafetensorsTensor(int64: Int64(stepCount))]
        if optimizer.hasMomentumBuffer {
            out["optimizer.momentum_buffer"] = SafetensorsTensor(floats: UnsafeBufferPointer(start: optimizer.momentumBuffer.pointer, count: n), shape: [n])
        }
        if let look, look.hasOrthogonal {
            out["optimizer.looksam_orthogonal"] = SafetensorsTensor(floats: UnsafeBufferPointer(start: look.orthogonal.pointer, count: n), shape: [n])
        }
        return out.merging(method.stateTensors()) { a, _ in a }
    }

    public func restoreOptimizer(from file: SafetensorsFile, source: String) throws {
        let n = state.model.parameterCount
        func vector(_ name: String) throws -> [Float]? {
            guard let t = file[name] else { return nil }
            guard t.dtype == .F32, t.shape == [n] else { throw EngineError("\(source): \(name) has shape \(t.shape), expected [\(n)]") }
            return t.floats
        }
        guard let count = file["optimizer.step_count"], count.dtype == .I64, count.elementCount == 1 else {
            throw EngineError("\(source): no optimizer.step_count (not a training checkpoint?)")
        }
        stepCount = Int(count.int64s[0])
        if let m = try vector("optimizer.momentum_buffer") { m.withUnsafeBufferPointer { optimizer.setMomentumBuffer($0) } }
        if let g = try vector("optimizer.looksam_orthogonal") {
            guard let look else { throw EngineError("\(source): a LookSAM state, but this run is not LookSAM") }
            g.withUnsafeBufferPointer { look.restore(orthogonal: $0) }
        }
        try method.restoreState(from: file, source: source)
    }
}
