import Datasets
import Engine
import Foundation
import Optim

/// Everything one training run needs; the run is fully determined by it (and the data).
public struct TrainConfig: Sendable, Codable, Equatable {
    public var model: String = "resnet20"
    public var dropout: Float = 0
    public var epochs: Int = 10
    public var batchSize: Int = 128
    public var lr: Float = 0.1
    public var schedule: String = "cosine"          // constant | cosine | multistep
    public var milestones: [Int] = []               // epochs, for multistep
    public var gamma: Float = 0.1                   // multistep factor
    public var warmupEpochs: Int = 0
    public var sgd = SGDConfig(momentum: 0.9, weightDecay: 5e-4, nesterov: false)
    public var optimizer: OptimizerConfig = .sgd
    public var labelSmoothing: Float = 0
    public var seed: UInt64 = 0
    /// A run whose training loss exceeds this multiple of its first step's loss (or is not
    /// finite) ends as diverged.
    public var divergenceFactor: Double = 10
    /// Bootstrap: after training, relabel the training set with the model's predictions and
    /// train a fresh model (same configuration and seed) on those labels.
    public var bootstrap: Bool = false
    /// Sharpness measured at the end of the run (nil: not measured).
    public var sharpness: SharpnessConfig? = SharpnessConfig()

    public init() {}

    public func lrSchedule(iterationsPerEpoch: Int) throws -> LRSchedule {
        let kind: LRScheduleKind
        switch schedule {
        case "constant": kind = .constant
        case "cosine": kind = .cosine(floor: 0)
        case "multistep": kind = .multiStep(milestones: milestones.map { $0 * iterationsPerEpoch }, gamma: gamma)
        default: throw EngineError("unknown schedule '\(schedule)' (constant, cosine, multistep)")
        }
        let s = LRSchedule(base: lr, kind: kind, warmupIterations: warmupEpochs * iterationsPerEpoch,
                           totalIterations: max(epochs * iterationsPerEpoch, 1))
        try s.validate()
        return s
    }

    public func validate() throws {
        guard epochs >= 1 else { throw EngineError("epochs must be >= 1, got \(epochs)") }
        guard batchSize >= 1 else { throw EngineError("batch size must be >= 1, got \(batchSize)") }
        guard divergenceFactor > 1 else { throw EngineError("divergence factor must be > 1, got \(divergenceFactor)") }
        try sgd.validate()
        try optimizer.sam?.validate(batchSize: batchSize)
        if let s = sharpness {
            guard s.batches >= 1, s.rho > 0, s.hessianIterations >= 0, s.finiteDifferenceStep > 0 else {
                throw EngineError("sharpness: batches >= 1, rho > 0, iterations >= 0 and a positive step needed")
            }
        }
    }
}

public struct EpochMetrics: Sendable, Codable, Equatable {
    public var epoch: Int
    public var lr: Float                 // learning rate at the epoch's last step
    public var trainLoss: Double
    public var trainAccuracy: Double     // against the training labels, during the epoch
    public var perturbedLoss: Double?    // mean loss at w + e (SAM-family runs)
    public var testLoss: Double
    public var testAccuracy: Double
    public var seconds: Double
    public var imagesPerSecond: Double   // training images per second
}

public enum RunStatus: Sendable, Codable, Equatable {
    case done
    /// Loss not finite, or above `divergenceFactor` x the first step's loss, at this step.
    case diverged(step: Int, epoch: Int, loss: Double?)

    public var name: String { if case .done = self { "done" } else { "diverged" } }
}

/// One stage of a run: `train` (every run), then `bootstrap` when asked for.
public struct StageResult: Sendable, Codable, Equatable {
    public var stage: String
    public var status: RunStatus
    public var epochs: [EpochMetrics]
    public var sharpness: SharpnessMetrics?
    /// For the bootstrap stage: training labels the first stage's model changed.
    public var relabelled: Int?
}

public struct RunResult: Sendable, Codable, Equatable {
    public var stages: [StageResult]
    /// The last stage's status (a diverged first stage ends the run).
    public var status: RunStatus { stages.last!.status }
    public var epochs: [EpochMetrics] { stages.last!.epochs }
}

/// One training run: a model trained on a dataset, evaluated on a test set after each epoch.
/// Shuffling is deterministic per (seed, epoch). The last partial training batch is dropped
/// (a full batch keeps BN statistics, SAM's m and the step cost uniform); evaluation covers
/// every test image (a short last batch is zero-padded, which eval-mode BN leaves exact).
/// Divergence ends a stage with status `diverged`; it is never an error.
public final class Trainer {
    public let config: TrainConfig
    public let model: Model
    /// The state of the current (last) stage's model.
    public private(set) var state: ModelState
    private let train: Dataset
    private let test: Dataset
    private let batchImages: FloatBuffer
    private let batchLabels: UnsafeMutablePointer<Int32>

    public init(config: TrainConfig, train: Dataset, test: Dataset) throws {
        try config.validate()
        guard train.count >= config.batchSize else {
            throw EngineError("training set has \(train.count) images, fewer than one batch of \(config.batchSize)")
        }
        guard train.classes == test.classes else { throw EngineError("train and test sets disagree on the class count") }
        self.config = config
        self.train = train
        self.test = test
        model = try Architectures.make(config.model, numClasses: train.classes, dropout: config.dropout, inputSize: train.height)
        state = ModelState(model: model, seed: config.seed)
        batchImages = FloatBuffer(count: config.batchSize * train.imageSize)
        batchLabels = .allocate(capacity: config.batchSize)
        _ = try config.lrSchedule(iterationsPerEpoch: train.count / config.batchSize)
    }

    deinit { batchLabels.deallocate() }

    /// Runs every stage, calling `onEpoch(stage, metrics)` after each epoch.
    @discardableResult
    public func run(onEpoch: (String, EpochMetrics) -> Void = { _, _ in }) throws -> RunResult {
        var stages: [StageResult] = []
        let first = try runStage("train", labels: train.labels, onEpoch: onEpoch)
        stages.append(first)
        if config.bootstrap, first.status == .done {
            let predicted = try predict(train)
            let changed = zip(predicted, train.labels).filter { $0 != $1 }.count
            state = ModelState(model: model, seed: config.seed)
            var second = try runStage("bootstrap", labels: predicted, onEpoch: onEpoch)
            second.relabelled = changed
            stages.append(second)
        }
        return RunResult(stages: stages)
    }

    private func runStage(_ name: String, labels: [Int32], onEpoch: (String, EpochMetrics) -> Void) throws -> StageResult {
        let b = config.batchSize, size = train.imageSize
        let perEpoch = train.count / b
        let schedule = try config.lrSchedule(iterationsPerEpoch: perEpoch)
        let step = try TrainStep(state: state, batchSize: b, sgd: config.sgd, optimizer: config.optimizer, labelSmoothing: config.labelSmoothing)
        var history: [EpochMetrics] = []
        var order = Array(0..<train.count)
        var iteration = 0
        var firstLoss: Double?
        for epoch in 1...config.epochs {
            let start = Date()
            var rng = Xoshiro256(seed: splitMix64(config.seed) ^ UInt64(epoch))
            order.shuffle(using: &rng)
            var lossSum = 0.0, perturbedSum = 0.0, perturbedCount = 0, correct = 0
            var lr = schedule.lr(at: iteration)
            for batch in 0..<perEpoch {
                train.images.withUnsafeBufferPointer { src in
                    for j in 0..<b {
                        let idx = order[batch * b + j]
                        (batchImages.pointer + j * size).update(from: src.baseAddress! + idx * size, count: size)
                        batchLabels[j] = labels[idx]
                    }
                }
                lr = schedule.lr(at: iteration)
                let r = step.step(input: batchImages.pointer, labels: batchLabels, lr: lr,
                                  dropoutSeed: splitMix64(config.seed &+ UInt64(iteration) &* 2))
                let reference = firstLoss ?? r.loss
                if firstLoss == nil { firstLoss = r.loss }
                if !r.loss.isFinite || r.loss > config.divergenceFactor * reference || !(r.perturbedLoss?.isFinite ?? true) {
                    return StageResult(stage: name, status: .diverged(step: iteration, epoch: epoch, loss: r.loss.isFinite ? r.loss : nil),
                                       epochs: history, sharpness: nil)
                }
                lossSum += r.loss
                correct += r.correct
                if let p = r.perturbedLoss { perturbedSum += p; perturbedCount += 1 }
                iteration += 1
            }
            let trainSeconds = Date().timeIntervalSince(start)
            let (testLoss, testAcc) = evaluate(test, executor: step.executor)
            let m = EpochMetrics(epoch: epoch, lr: lr, trainLoss: lossSum / Double(perEpoch),
                                 trainAccuracy: Double(correct) / Double(perEpoch * b),
                                 perturbedLoss: perturbedCount > 0 ? perturbedSum / Double(perturbedCount) : nil,
                                 testLoss: testLoss, testAccuracy: testAcc,
                                 seconds: Date().timeIntervalSince(start),
                                 imagesPerSecond: Double(perEpoch * b) / trainSeconds)
            history.append(m)
            onEpoch(name, m)
        }
        var sharpness: SharpnessMetrics?
        if let sc = config.sharpness {
            let batches = min(sc.batches, train.count / b)
            var labelsCopy = Array(labels.prefix(batches * b))
            sharpness = train.images.withUnsafeBufferPointer { img in
                labelsCopy.withUnsafeMutableBufferPointer { lab in
                    Sharpness.measure(executor: step.executor, images: img.baseAddress!, labels: lab.baseAddress!, batches: batches, config: sc)
                }
            }
        }
        return StageResult(stage: name, status: .done, epochs: history, sharpness: sharpness)
    }

    /// The current model's predicted class for every image of `data` (eval mode).
    public func predict(_ data: Dataset) throws -> [Int32] {
        let ex = try DNNLExecutor(state: state, batchSize: config.batchSize)
        var out: [Int32] = []
        out.reserveCapacity(data.count)
        forEachBatch(data, executor: ex) { logits, n, _ in
            let c = self.model.numClasses
            for r in 0..<n {
                var best = 0
                for k in 1..<c where logits[r * c + k] > logits[r * c + best] { best = k }
                out.append(Int32(best))
            }
        }
        return out
    }

    /// Mean loss and accuracy of the current model in eval mode over a whole dataset.
    public func evaluate(_ data: Dataset) throws -> (loss: Double, accuracy: Double) {
        evaluate(data, executor: try DNNLExecutor(state: state, batchSize: config.batchSize))
    }

    private func evaluate(_ data: Dataset, executor ex: Executor) -> (loss: Double, accuracy: Double) {
        let c = model.numClasses
        var lossSum = 0.0, correct = 0
        forEachBatch(data, executor: ex) { logits, n, labels in
            lossSum += CrossEntropy.compute(logits: logits, labels: labels, count: n, classes: c) * Double(n)
            correct += CrossEntropy.correct(logits: logits, labels: labels, count: n, classes: c)
        }
        return (lossSum / Double(data.count), Double(correct) / Double(data.count))
    }

    /// Eval-mode logits for consecutive batches of `data` (the last one zero-padded).
    private func forEachBatch(_ data: Dataset, executor ex: Executor,
                              _ body: (UnsafePointer<Float>, Int, UnsafePointer<Int32>) -> Void) {
        let b = ex.batchSize, size = data.imageSize
        var start = 0
        while start < data.count {
            let n = min(b, data.count - start)
            data.images.withUnsafeBufferPointer { src in
                batchImages.pointer.update(from: src.baseAddress! + start * size, count: n * size)
            }
            if n < b { (batchImages.pointer + n * size).update(repeating: 0, count: (b - n) * size) }
            for j in 0..<n { batchLabels[j] = data.labels[start + j] }
            body(ex.forward(input: batchImages.pointer, mode: .eval), n, batchLabels)
            start += n
        }
    }
}
