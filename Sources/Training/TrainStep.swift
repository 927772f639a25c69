import Engine
import Foundation
import Optim

/// One SGD training step on the fast path, with every buffer made up front: forward (train
/// mode), mean cross-entropy, backward, SGD update. `step` allocates nothing.
public final class TrainStep {
    public let executor: DNNLExecutor
    public let optimizer: SGD
    public let labelSmoothing: Float
    private let logitsGrad: FloatBuffer

    public init(state: ModelState, batchSize: Int, sgd: SGDConfig, labelSmoothing: Float = 0) throws {
        executor = try DNNLExecutor(state: state, batchSize: batchSize)
        optimizer = try SGD(parameterCount: state.model.parameterCount, config: sgd)
        self.labelSmoothing = labelSmoothing
        logitsGrad = FloatBuffer(count: batchSize * state.model.numClasses)
    }

    /// Returns the batch's mean loss and the number of correct predictions (before the update).
    @discardableResult
    public func step(input: UnsafePointer<Float>, labels: UnsafePointer<Int32>, lr: Float, dropoutSeed: UInt64 = 0) -> (loss: Double, correct: Int) {
        let n = executor.batchSize, c = executor.model.numClasses
        let logits = executor.forward(input: input, mode: .train(bnMomentum: 0.1, dropoutSeed: dropoutSeed))
        let loss = CrossEntropy.compute(logits: logits, labels: labels, count: n, classes: c, smoothing: labelSmoothing, grad: logitsGrad.pointer)
        let correct = CrossEntropy.correct(logits: logits, labels: labels, count: n, classes: c)
        executor.backward(logitsGrad: logitsGrad.pointer)
        optimizer.step(params: executor.state.params, grads: executor.state.grads, lr: lr)
        return (loss, correct)
    }
}
