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
    public var labelSmoothing: Float = 0
    public var seed: UInt64 = 0

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
}

public struct EpochMetrics: Sendable, Codable, Equatable {
    public var epoch: Int
    public var lr: Float                 // learning rate at the epoch's last step
    public var trainLoss: Double
    public var trainAccuracy: Double     // against the training labels, during the epoch
    public var testLoss: Double
    public var testAccuracy: Double
    public var seconds: Double
    public var imagesPerSecond: Double   // training images per second
}

/// One training run: a model trained with SGD on a dataset, evaluated on a test set after each
/// epoch. Shuffling is deterministic per (seed, epoch). The last partial training batch is
/// dropped (a full batch keeps the BN statistics and the step cost uniform); evaluation covers
/// every test image (a short last batch is zero-padded, which eval-mode BN leaves exact).
public final class Trainer {
    public let config: TrainConfig
    public let state: ModelState
    private let train: Dataset
    private let test: Dataset
    private let step: TrainStep
    private let batchImages: FloatBuffer
    private let batchLabels: UnsafeMutablePointer<Int32>

    public init(config: TrainConfig, train: Dataset, test: Dataset) throws {
        guard config.epochs >= 1 else { throw EngineError("epochs must be >= 1, got \(config.epochs)") }
        guard config.batchSize >= 1 else { throw EngineError("batch size must be >= 1, got \(config.batchSize)") }
        guard train.count >= config.batchSize else {
            throw EngineError("training set has \(train.count) images, fewer than one batch of \(config.batchSize)")
        }
        guard train.classes == test.classes else { throw EngineError("train and test sets disagree on the class count") }
        self.config = config
        self.train = train
        self.test = test
        let model = try Architectures.make(config.model, numClasses: train.classes, dropout: config.dropout, inputSize: train.height)
        state = ModelState(model: model, seed: config.seed)
        step = try TrainStep(state: state, batchSize: config.batchSize, sgd: config.sgd, labelSmoothing: config.labelSmoothing)
        batchImages = FloatBuffer(count: config.batchSize * train.imageSize)
        batchLabels = .allocate(capacity: config.batchSize)
    }

    deinit { batchLabels.deallocate() }

    /// Trains for `config.epochs`, calling `onEpoch` after each; returns all epochs' metrics.
    @discardableResult
    public func run(onEpoch: (EpochMetrics) -> Void = { _ in }) throws -> [EpochMetrics] {
        let b = config.batchSize, size = train.imageSize
        let perEpoch = train.count / b
        let schedule = try config.lrSchedule(iterationsPerEpoch: perEpoch)
        var history: [EpochMetrics] = []
        var order = Array(0..<train.count)
        var iteration = 0
        for epoch in 1...config.epochs {
            let start = Date()
            var rng = Xoshiro256(seed: splitMix64(config.seed) ^ UInt64(epoch))
            order.shuffle(using: &rng)
            var lossSum = 0.0, correct = 0
            var lr = schedule.lr(at: iteration)
            for batch in 0..<perEpoch {
                train.images.withUnsafeBufferPointer { src in
                    for j in 0..<b {
                        let idx = order[batch * b + j]
                        (batchImages.pointer + j * size).update(from: src.baseAddress! + idx * size, count: size)
                        batchLabels[j] = train.labels[idx]
                    }
                }
                lr = schedule.lr(at: iteration)
                let r = step.step(input: batchImages.pointer, labels: batchLabels, lr: lr,
                                  dropoutSeed: splitMix64(config.seed &+ UInt64(iteration)))
                guard r.loss.isFinite else {
                    throw EngineError("training diverged: non-finite loss at epoch \(epoch), step \(iteration)")
                }
                lossSum += r.loss
                correct += r.correct
                iteration += 1
            }
            let trainSeconds = Date().timeIntervalSince(start)
            let (testLoss, testAcc) = evaluate(test)
            let m = EpochMetrics(epoch: epoch, lr: lr, trainLoss: lossSum / Double(perEpoch),
                                 trainAccuracy: Double(correct) / Double(perEpoch * b),
                                 testLoss: testLoss, testAccuracy: testAcc,
                                 seconds: Date().timeIntervalSince(start),
                                 imagesPerSecond: Double(perEpoch * b) / trainSeconds)
            history.append(m)
            onEpoch(m)
        }
        return history
    }

    /// Mean loss and accuracy of the current model in eval mode over a whole dataset.
    public func evaluate(_ data: Dataset) -> (loss: Double, accuracy: Double) {
        let b = config.batchSize, size = data.imageSize, c = state.model.numClasses
        var lossSum = 0.0, correct = 0
        var start = 0
        while start < data.count {
            let n = min(b, data.count - start)
            data.images.withUnsafeBufferPointer { src in
                batchImages.pointer.update(from: src.baseAddress! + start * size, count: n * size)
            }
            if n < b { (batchImages.pointer + n * size).update(repeating: 0, count: (b - n) * size) }
            for j in 0..<n { batchLabels[j] = data.labels[start + j] }
            let logits = step.executor.forward(input: batchImages.pointer, mode: .eval)
            lossSum += CrossEntropy.compute(logits: logits, labels: batchLabels, count: n, classes: c) * Double(n)
            correct += CrossEntropy.correct(logits: logits, labels: batchLabels, count: n, classes: c)
            start += n
        }
        return (lossSum / Double(data.count), Double(correct) / Double(data.count))
    }
}
