// One run, stage after stage: the Trainer that strings the stages together and resumes them.
import Datasets
import Engine
import Foundation
import Optim

/// One training run: a model trained on `data.trainIndices`, evaluated after each epoch on the
/// test set, the validation split and the corrupted training samples. Batches come from a
/// `BatchLoader` (shuffling and augmentation deterministic per (seed, epoch)); the last partial
/// training batch is dropped (a full batch keeps BN statistics, SAM's m and the step cost
/// uniform); evaluation covers every image (a short last batch is zero-padded, which eval-mode
/// BN leaves exact). Divergence ends a stage with status `diverged`; it is never an error.
public final class Trainer {
    public let config: TrainConfig
    public let model: Model
    /// The state of the current (last) stage's model.
    public private(set) var state: ModelState
    public let data: PreparedData
    /// What loading `config.initialWeights` left at the seed's initialisation (nil: from scratch).
    public private(set) var initialWeightsReport: Checkpoint.LoadReport?
    /// Fault injection for the reliability tests only: called during each checkpoint write, once
    /// half of its bytes are in the temporary file (a worker sets it from SAMBENCH_FAULT).
    public var checkpointHalfWritten: (() -> Void)?

    public init(config: TrainConfig, data: PreparedData) throws {
        try config.validate()
        guard data.trainIndices.count >= config.batchSize else {
            throw ConfigurationError("batch_size", "training set has \(data.trainIndices.count) images, fewer than one batch of \(config.batchSize)")
        }
        self.config = config
        self.data = data
        model = try Architectures.make(config.model, numClasses: data.classes, dropout: config.dropout, inputSize: config.imageSize ?? 32)
        state = ModelState(model: model, seed: config.seed)
        if let w = config.initialWeights { initialWeightsReport = try w.load(into: state) }
        _ = try config.lrSchedule(iterationsPerEpoch: data.trainIndices.count / config.batchSize)
    }

    /// Runs every stage, calling `onEpoch(stage, metrics)` after each epoch and
    /// `onBatch(stage, epoch, batchesDone, batchesPerEpoch)` after each training step.
    ///
    /// With `checkpoint`, the weights, optimizer state and progress are written there
    /// (atomically) after every epoch, and a run that finds the file resumes after its last
    /// epoch and ends exactly as if it had never stopped: batch order, augmentation, dropout and
    /// the learning rate depend only on the seed, the epoch and the step. A checkpoint made by
    /// another configuration is refused, one that does not hold for this run is a `CorruptCheckpoint`
    /// (`checkedCheckpoint`). The file is left in place; the caller removes it.
    @discardableResult
    public func run(checkpoint: String? = nil, onEpoch: (Stage, EpochMetrics) throws -> Void = { _, _ in },
                    onBatch: (Stage, Int, Int, Int) -> Void = { _, _, _, _ in }) throws -> RunResult {
        var resume: (progress: Progress, file: SafetensorsFile)?
        if let checkpoint, FileManager.default.fileExists(atPath: checkpoint) {
            resume = try checkedCheckpoint(checkpoint)
        }
        var stages = resume?.progress.finished ?? []
        if stages.isEmpty {
            let r = resume?.progress.stage == .train ? resume : nil
            stages.append(try runStage(.train, data: data, resume: r, checkpoint: checkpoint, finished: [], onEpoch: onEpoch, onBatch: onBatch))
        }
        if config.bootstrap, stages.count == 1, stages[0].status == .done {
            var relabelled = data
            let r = resume?.progress.stage == .bootstrap ? resume : nil
            let changed: Int
            if let r {
                guard let labels = r.file[Trainer.bootstrapLabelsKey] else { throw EngineError("\(checkpoint ?? ""): bootstrap labels missing") }
                relabelled.trainLabels = labels.int64s.map { Int32($0) }
                changed = r.progress.relabelled ?? 0
            } else {
                let ex = try DNNLExecutor(state: state, batchSize: config.batchSize, training: false)
                relabelled.trainLabels = BatchEvaluator(executor: ex, normalization: data.normalization)
                    .predict(images: data.trainImages, indices: Array(0..<data.cleanTrainLabels.count))
                changed = data.trainIndices.filter { relabelled.trainLabels[$0] != data.trainLabels[$0] }.count
            }
            state = ModelState(model: model, seed: config.seed)
            if let w = config.initialWeights { _ = try w.load(into: state) }
            stages.append(try runStage(.bootstrap, data: relabelled, resume: r, checkpoint: checkpoint, finished: stages,
                                       relabelled: changed, onEpoch: onEpoch, onBatch: onBatch))
        }
        return RunResult(stages: stages)
    }

    private func runStage(_ name: Stage, data: PreparedData, resume: (progress: Progress, file: SafetensorsFile)?, checkpoint: String?,
                          finished: [StageResult], relabelled: Int? = nil,
                          onEpoch: (Stage, EpochMetrics) throws -> Void, onBatch: (Stage, Int, Int, Int) -> Void) throws -> StageResult {
        let stage = try StageRun(trainer: self, stage: name, data: data, checkpoint: checkpoint, finished: finished, relabelled: relabelled)
        if let resume { try stage.resume(from: resume) }
        for epoch in stage.startEpoch..<(config.epochs + 1) {
            let start = Date()
            let (loss, accuracy, perturbed, lr): (Double, Double, Double?, Float)
            switch stage.train(epoch: epoch, onBatch: { onBatch(name, epoch, $0, $1) }) {
            case let .diverged(status): return stage.result(status)
            case let .trained(l, a, p, r): (loss, accuracy, perturbed, lr) = (l, a, p, r)
            }
            let trainSeconds = Date().timeIntervalSince(start)
            var m = stage.evaluate(epoch: epoch, lr: lr, trainLoss: loss, trainAccuracy: accuracy, perturbedLoss: perturbed,
                                   imagesPerSecond: Double(stage.perEpoch * config.batchSize) / trainSeconds)
            m.seconds = Date().timeIntervalSince(start)
            stage.history.append(m)
            try stage.save(completedEpochs: epoch)
            try onEpoch(name, m)
        }
        var result = stage.result(.done, sharpness: stage.measureSharpness())
        result.confusion = stage.testConfusion()
        // Against the run's own (noisy) labels, not a bootstrap stage's relabelling.
        result.detection = NoisyLabelDetection.measure(stage.evaluator, data: self.data)
        return result
    }
}


extension Trainer {
    /// The initialisation seed of Co-teaching's second network: a run's seed mixed with a
    /// constant ("coteach!"), so that it is not another seed's first network.
    public static func peerSeed(_ seed: UInt64) -> UInt64 { splitMix64(seed ^ 0x636F_7465_6163_6821) }
}
