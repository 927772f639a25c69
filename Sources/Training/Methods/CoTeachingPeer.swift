// Co-teaching's second network inside a stage: both networks' steps and the cross-selection.
import Datasets
import Engine
import Foundation
import Optim

/// Co-teaching's second network in a stage (Han et al. 2018; `CoTeaching` has the selection and
/// its conventions): its own initialisation (`Trainer.peerSeed`), optimizer state and BN
/// statistics, the same batches and augmentation, its own dropout draws. Each step both networks
/// take their first forward, each ranks the batch by its own per-sample cross-entropy, and each
/// trains (with the run's optimizer: SAM perturbs each with its own loss) on the samples the other
/// ranked smallest. Network 1 is the run's model: its numbers are the run's results; network 2's
/// test accuracy and both selections' label precision are recorded per epoch. Its weights and
/// optimizer state are checkpointed under `peer.`.
final class CoTeachingPeer {
    let state: ModelState
    let step: TrainStep
    let evaluator: BatchEvaluator
    let forgetRate: Double, numGradual: Int, exponent: Double
    /// The run's true labels, to count the clean samples a selection keeps.
    let clean: [Int32]
    private let losses1, losses2, weights1, weights2: FloatBuffer
    private let order: UnsafeMutablePointer<Int32>
    private let ranking = SoftCrossEntropy()
    private(set) var tau = 0.0
    private var kept = 0, clean1 = 0, clean2 = 0

    init(trainer: Trainer, data: PreparedData) throws {
        let c = trainer.config, b = c.batchSize
        let method = c.method!
        state = ModelState(model: trainer.model, seed: Trainer.peerSeed(c.seed))
        if let w = c.initialWeights { _ = try w.load(into: state) }
        step = try c.trainStep(state: state, data: data)
        evaluator = BatchEvaluator(executor: step.executor, normalization: data.normalization)
        // -1: the run's noise rate (its nominal rate; the realised one for label files), as the reference's default.
        let noise = trainer.data.noise
        forgetRate = method["forget_rate"] >= 0 ? method["forget_rate"] : noise.map { $0.spec.kind.hasRate ? $0.spec.rate : $0.realisedRate } ?? 0
        (numGradual, exponent) = (Int(method["num_gradual"]), method["exponent"])
        clean = trainer.data.cleanTrainLabels
        (losses1, losses2, weights1, weights2) = (FloatBuffer(count: b), FloatBuffer(count: b), FloatBuffer(count: b), FloatBuffer(count: b))
        order = .allocate(capacity: b)
    }

    deinit { order.deallocate() }

    func startEpoch(_ epoch: Int) {
        tau = CoTeaching.forgetRate(epoch: epoch, forgetRate: forgetRate, numGradual: numGradual, exponent: exponent)
        (kept, clean1, clean2) = (0, 0, 0)
    }

    /// The label precision of network 1's and network 2's small-loss selections over the epoch so far.
    var precision: (Double?, Double?) { kept > 0 ? (Double(clean1) / Double(kept), Double(clean2) / Double(kept)) : (nil, nil) }

    /// One step of both networks on the loader's batch (`one` is network 1's step).
    func step(_ one: TrainStep, input: UnsafePointer<Float>, labels: UnsafePointer<Int32>, indices: UnsafePointer<Int32>, lr: Float,
              dropoutSeed: UInt64, iteration: Int) -> (TrainStep.Result, TrainStep.Result) {
        let b = one.executor.batchSize, c = one.executor.model.numClasses
        var batch1 = one.method.prepare(input: input, labels: labels, indices: indices, iteration: iteration)
        var batch2 = step.method.prepare(input: input, labels: labels, indices: indices, iteration: iteration)
        let peerDropout = splitMix64(dropoutSeed ^ 0x7065_6572)
        let z1 = one.forwardFirstPass(batch1, dropoutSeed: dropoutSeed)
        let z2 = step.forwardFirstPass(batch2, dropoutSeed: peerDropout)
        _ = ranking.compute(logits: z1, targets: .hard(labels), count: b, classes: c, weights: nil, losses: losses1.pointer, grad: nil)
        _ = ranking.compute(logits: z2, targets: .hard(labels), count: b, classes: c, weights: nil, losses: losses2.pointer, grad: nil)
        let k = CoTeaching.kept(b, forgetRate: tau)
        // Network 1 trains on network 2's small-loss samples, and network 2 on network 1's.
        CoTeaching.select(losses: losses2.pointer, count: b, kept: k, order: order, weights: weights1.pointer)
        clean2 += countClean(k, labels, indices)
        CoTeaching.select(losses: losses1.pointer, count: b, kept: k, order: order, weights: weights2.pointer)
        clean1 += countClean(k, labels, indices)
        kept += k
        batch1.weights = UnsafePointer(weights1.pointer)
        batch2.weights = UnsafePointer(weights2.pointer)
        return (one.step(batch1, lr: lr, dropoutSeed: dropoutSeed), step.step(batch2, lr: lr, dropoutSeed: peerDropout))
    }

    /// Clean labels among the first `k` of `order` (the selection just ranked).
    private func countClean(_ k: Int, _ labels: UnsafePointer<Int32>, _ indices: UnsafePointer<Int32>) -> Int {
        var n = 0
        for i in 0..<k { let j = Int(order[i]); if labels[j] == clean[Int(indices[j])] { n += 1 } }
        return n
    }

    static let prefix = "peer."

    func tensors() -> [String: SafetensorsTensor] {
        var out: [String: SafetensorsTensor] = [:]
        for (k, v) in Checkpoint.tensors(of: state).merging(step.optimizerTensors(), uniquingKeysWith: { a, _ in a }) { out[Self.prefix + k] = v }
        return out
    }

    func restore(from file: SafetensorsFile, source: String) throws {
        var own: [String: SafetensorsTensor] = [:]
        for (k, v) in file.tensors where k.hasPrefix(Self.prefix) { own[String(k.dropFirst(Self.prefix.count))] = v }
        guard !own.isEmpty else { throw EngineError("\(source): no second network (peer.*): not a checkpoint of this Co-teaching run") }
        let peerFile = SafetensorsFile(tensors: own)
        try Checkpoint.load(into: state, file: peerFile, source: source + " (peer)", allowUnexpected: true)
        try step.restoreOptimizer(from: peerFile, source: source + " (peer)")
    }
}

