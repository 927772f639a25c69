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
public enum OptimizerConfig: Sendable, Codable, Equatable {
    case sgd
    case sam(SAMConfig)

    public var sam: SAMConfig? { if case let .sam(c) = self { return c } else { return nil } }

    public var family: OptimizerFamily {
        switch self { case .sgd: .sgd; case let .sam(c): OptimizerFamily(rawValue: c.variant.rawValue)! }
    }
}

/// One training step on the fast path with every buffer made up front; `step` allocates nothing.
///
/// SGD: forward (train mode), mean cross-entropy, backward, SGD update.
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
    public let labelSmoothing: Float
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
    /// Steps taken (LookSAM's cycle position).
    public private(set) var stepCount = 0

    public struct Result: Sendable {
        /// Mean loss of the batch at w (the first pass), before the update.
        public var loss: Double
        /// Correct predictions at w, before the update.
        public var correct: Int
        /// Mean loss at w + e (SAM-family steps that took the second pass; else nil).
        public var perturbedLoss: Double?
    }

    /// [parameters]: 1 where a parameter trains, 0 where it is frozen (`freeze`); nil: all train.
    public let trainable: FloatBuffer?
    /// The frozen parameters' ranges in the flat layout, whose gradients are zeroed after every backward.
    private let frozenRanges: [Range<Int>]

    /// `freeze`: module prefixes whose parameters keep their values (no gradient, decay, momentum
    /// or perturbation), e.g. ["conv1", "bn1", "layer1"]; each must name some parameter.
    public init(state: ModelState, batchSize: Int, sgd: SGDConfig, optimizer: OptimizerConfig = .sgd, labelSmoothing: Float = 0,
                frozenBatchNorm: Bool = false, freeze: [String] = [], executor makeExecutor: ExecutorFactory = TrainStep.fastPath) throws {
        let model = state.model
        let frozen: [ParamEntry]
        do { frozen = try model.params(under: freeze) } catch { throw EngineError("freeze: \(error)") }
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
        self.labelSmoothing = labelSmoothing
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
    }

    public var state: ModelState { executor.state }

    /// Forward + loss + backward on `ex`; the gradient lands in `state.grads`.
    private func lossAndGradient(_ ex: Executor, _ input: UnsafePointer<Float>, _ labels: UnsafePointer<Int32>,
                                 momentum: Float, dropoutSeed: UInt64) -> (loss: Double, correct: Int) {
        let n = ex.batchSize, c = ex.model.numClasses
        let logits = timed("forward") { ex.forward(input: input, mode: .train(bnMomentum: momentum, dropoutSeed: dropoutSeed)) }
        let (loss, correct) = timed("loss") {
            (CrossEntropy.compute(logits: logits, labels: labels, count: n, classes: c, smoothing: labelSmoothing, grad: logitsGrad.pointer),
             CrossEntropy.correct(logits: logits, labels: labels, count: n, classes: c))
        }
        timed("backward") { ex.backward(logitsGrad: logitsGrad.pointer) }
        for r in frozenRanges { (state.grads.pointer + r.lowerBound).update(repeating: 0, count: r.count) }
        return (loss, correct)
    }

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

    @discardableResult
    public func step(input: UnsafePointer<Float>, labels: UnsafePointer<Int32>, lr: Float, dropoutSeed: UInt64 = 0) -> Result {
        defer { stepCount += 1 }
        guard let sam else {
            let r = lossAndGradient(executor, input, labels, momentum: Self.firstMomentum, dropoutSeed: dropoutSeed)
            timed("optimizer update") { optimizer.step(params: state.params, grads: state.grads, lr: lr) }
            return Result(loss: r.loss, correct: r.correct, perturbedLoss: nil)
        }
        if let micro = microExecutor { return microBatchStep(sam, micro, input, labels, lr: lr, dropoutSeed: dropoutSeed) }
        let params = state.params, grads = state.grads
        let r = lossAndGradient(executor, input, labels, momentum: Self.firstMomentum, dropoutSeed: dropoutSeed)
        if let look, stepCount % sam.config.lookInterval != 0 {
            // LookSAM in between full SAM steps: reuse the stored orthogonal direction.
            look.reuse(into: grads, alpha: sam.config.lookAlpha)
            optimizer.step(params: params, grads: grads, lr: lr)
            return Result(loss: r.loss, correct: r.correct, perturbedLoss: nil)
        }
        if look != nil { plainGradient.copy(from: grads) }
        timed("SAM perturbation") { sam.firstStep(params: params, grads: grads) }
        let p = lossAndGradient(executor, input, labels, momentum: secondMomentum(sam), dropoutSeed: dropoutSeed &+ 1)
        look?.store(samGradient: grads, plainGradient: plainGradient)
        timed("SAM restore and update") { sam.secondStep(params: params, grads: grads, lr: lr) }
        return Result(loss: r.loss, correct: r.correct, perturbedLoss: p.loss)
    }

    /// BN momentum of the perturbed pass: 0 (statistics untouched) unless both passes update them.
    private func secondMomentum(_ sam: SAM) -> Float { sam.config.bnPolicy == .firstPass ? 0 : Self.firstMomentum }

    /// m-sharpness: a perturbation per micro-batch of m samples, the perturbed gradients averaged,
    /// then one base step.
    private func microBatchStep(_ sam: SAM, _ micro: Executor, _ input: UnsafePointer<Float>, _ labels: UnsafePointer<Int32>,
                                lr: Float, dropoutSeed: UInt64) -> Result {
        let params = state.params, grads = state.grads
        let m = micro.batchSize, k = executor.batchSize / m, size = executor.model.tensors[0].perImage
        accumulated.zero()
        var loss = 0.0, perturbed = 0.0, correct = 0
        for j in 0..<k {
            let x = input + j * m * size, y = labels + j * m
            let r = lossAndGradient(micro, x, y, momentum: Self.firstMomentum, dropoutSeed: dropoutSeed &+ UInt64(2 * j))
            sam.firstStep(params: params, grads: grads)
            let p = lossAndGradient(micro, x, y, momentum: secondMomentum(sam), dropoutSeed: dropoutSeed &+ UInt64(2 * j + 1))
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
        return out
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
    }
}
