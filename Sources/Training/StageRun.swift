// The epoch loop of one stage: resume, train an epoch, evaluate, checkpoint, sharpness.
import Datasets
import Engine
import Foundation
import Optim

/// One stage of a run as it goes: its loader, schedule and step, the epochs so far, and the
/// parts `Trainer.runStage` strings together (resume, train an epoch, evaluate, checkpoint,
/// sharpness).
final class StageRun {
    let trainer: Trainer
    let stage: Stage
    let data: PreparedData
    let checkpoint: String?
    /// Stages finished before this one, and (bootstrap) the labels the first one changed.
    let finished: [StageResult]
    let relabelled: Int?
    let loader: BatchLoader
    let schedule: LRSchedule
    let step: TrainStep
    /// Batches to the model's input size (`imageSize`).
    let resizer: InputResizer
    /// Eval-mode passes on the training executor.
    let evaluator: BatchEvaluator
    /// Training samples whose label the noise changed: memorisation is measured on them against
    /// the labels of the run's data (the noise), not a bootstrap stage's relabelling.
    let corrupted: [Int]
    /// Co-teaching's second network (nil for other methods).
    let peer: CoTeachingPeer?
    var perEpoch: Int { loader.batchesPerEpoch }
    var config: TrainConfig { trainer.config }

    var history: [EpochMetrics] = []
    var iteration = 0
    var firstLoss: Double?
    var startEpoch = 1

    init(trainer: Trainer, stage: Stage, data: PreparedData, checkpoint: String?, finished: [StageResult], relabelled: Int?) throws {
        (self.trainer, self.stage, self.data, self.checkpoint, self.finished, self.relabelled) = (trainer, stage, data, checkpoint, finished, relabelled)
        let c = trainer.config
        loader = BatchLoader(data: data, batchSize: c.batchSize, augmentation: c.augmentation, seed: c.seed)
        schedule = try c.lrSchedule(iterationsPerEpoch: loader.batchesPerEpoch)
        step = try c.trainStep(state: trainer.state, data: data)
        evaluator = BatchEvaluator(executor: step.executor, normalization: data.normalization)
        resizer = InputResizer(model: trainer.model, batchSize: c.batchSize)
        let run = trainer.data
        corrupted = run.trainIndices.filter { run.trainLabels[$0] != run.cleanTrainLabels[$0] }
        peer = c.method?.name == "coteaching" ? try CoTeachingPeer(trainer: trainer, data: data) : nil
    }

    /// Weights, optimizer state and progress from a checkpoint of this stage.
    func resume(from r: (progress: Trainer.Progress, file: SafetensorsFile)) throws {
        // The file was checked in full against this run (`Trainer.checkedCheckpoint`) before it got here.
        try Checkpoint.load(into: trainer.state, file: r.file, source: checkpoint ?? "checkpoint", allowUnexpected: true)
        try step.restoreOptimizer(from: r.file, source: checkpoint ?? "checkpoint")
        try peer?.restore(from: r.file, source: checkpoint ?? "checkpoint")
        let p = r.progress
        (history, iteration, firstLoss, startEpoch) = (p.history, p.iteration, p.firstLoss, p.completedEpochs + 1)
    }

    enum Trained {
        case trained(loss: Double, accuracy: Double, perturbedLoss: Double?, lr: Float)
        case diverged(StageStatus)
    }

    /// One epoch of steps; `onBatch(done, perEpoch)` after each. Stops at the first step whose
    /// loss is not finite or exceeds the divergence factor times the first step's loss.
    func train(epoch: Int, onBatch: (Int, Int) -> Void) -> Trained {
        let b = config.batchSize
        var lossSum = 0.0, perturbedSum = 0.0, perturbedCount = 0, correct = 0.0
        var lr = schedule.lr(at: iteration)
        var diverged: StageStatus?
        var done = 0
        peer?.startEpoch(epoch)
        loader.forEachBatch(epoch: epoch) { images, labels, indices in
            lr = schedule.lr(at: iteration)
            let dropoutSeed = splitMix64(config.seed &+ UInt64(iteration) &* 2)
            let r: TrainStep.Result
            var peerFinite = true
            if let peer {
                let (one, two) = peer.step(step, input: resizer.prepare(images), labels: labels, indices: indices, lr: lr, dropoutSeed: dropoutSeed,
                                           iteration: iteration)
                r = one
                peerFinite = two.loss.isFinite && (two.perturbedLoss?.isFinite ?? true)
            } else {
                r = step.step(input: resizer.prepare(images), labels: labels, indices: indices, lr: lr, dropoutSeed: dropoutSeed, iteration: iteration)
            }
            let reference = firstLoss ?? r.loss
            if firstLoss == nil { firstLoss = r.loss }
            if !r.loss.isFinite || r.loss > config.divergenceFactor * reference || !(r.perturbedLoss?.isFinite ?? true) || !peerFinite {
                diverged = .diverged(step: iteration, epoch: epoch, loss: r.loss.isFinite ? r.loss : nil)
                return false
            }
            lossSum += r.loss
            correct += r.correct
            if let p = r.perturbedLoss { perturbedSum += p; perturbedCount += 1 }
            iteration += 1
            done += 1
            onBatch(done, perEpoch)
            return true
        }
        if let diverged { return .diverged(diverged) }
        // A finite loss does not prove finite weights (the epoch's last update may have made
        // them NaN): such a model must end diverged, never be evaluated, saved or called done.
        if trainer.state.firstNonFinite() != nil || peer?.state.firstNonFinite() != nil {
            return .diverged(.diverged(step: max(iteration - 1, 0), epoch: epoch, loss: nil))
        }
        return .trained(loss: lossSum / Double(perEpoch), accuracy: correct / Double(perEpoch * b),
                        perturbedLoss: perturbedCount > 0 ? perturbedSum / Double(perturbedCount) : nil, lr: lr)
    }

    /// The epoch's metrics: the training numbers given, then the test set, the validation split
    /// and memorisation, evaluated now (`seconds` left for the caller).
    func evaluate(epoch: Int, lr: Float, trainLoss: Double, trainAccuracy: Double, perturbedLoss: Double?, imagesPerSecond: Double) -> EpochMetrics {
        let run = trainer.data
        let test = evaluator.lossAndAccuracy(images: data.testImages, indices: Array(data.testLabels.indices), labels: data.testLabels)
        var m = EpochMetrics(epoch: epoch, lr: lr, trainLoss: trainLoss, trainAccuracy: trainAccuracy, perturbedLoss: perturbedLoss,
                             testLoss: test.loss, testAccuracy: test.accuracy, seconds: 0, imagesPerSecond: imagesPerSecond)
        if !data.validationIndices.isEmpty {
            let v = evaluator.lossAndAccuracy(images: data.trainImages, indices: data.validationIndices,
                                     labels: data.validationUsesNoisyLabels ? run.trainLabels : data.cleanTrainLabels)
            m.validationLoss = v.loss
            m.validationAccuracy = v.accuracy
        }
        if !corrupted.isEmpty {
            let predicted = evaluator.predict(images: data.trainImages, indices: corrupted)
            m.corruptedNoisyAccuracy = Double(zip(corrupted, predicted).filter { run.trainLabels[$0.0] == $0.1 }.count) / Double(corrupted.count)
            m.corruptedCleanAccuracy = Double(zip(corrupted, predicted).filter { data.cleanTrainLabels[$0.0] == $0.1 }.count) / Double(corrupted.count)
        }
        if let peer {
            (m.forgetRate, m.selectionPrecision, m.peerSelectionPrecision) = (peer.tau, peer.precision.0, peer.precision.1)
            m.peerTestAccuracy = peer.evaluator.lossAndAccuracy(images: data.testImages, indices: Array(data.testLabels.indices), labels: data.testLabels).accuracy
        }
        return m
    }

    /// The test set's confusion matrix (true class by predicted class) of the current weights.
    func testConfusion() -> [[Int]] { evaluator.evaluate(images: data.testImages, labels: data.testLabels).confusion }

    /// Sharpness at the end, on fixed batches: the first ones of the training indices, unaugmented.
    func measureSharpness() -> SharpnessMetrics? {
        guard let sc = config.sharpness else { return nil }
        let b = config.batchSize
        let batches = min(sc.batches, data.trainIndices.count / b)
        let indices = Array(data.trainIndices.prefix(batches * b))
        var images = [Float](repeating: 0, count: indices.count * RawImages.imageBytes)
        var labels = indices.map { data.trainLabels[$0] }
        images.withUnsafeMutableBufferPointer {
            BatchEvaluator.normalise(data.trainImages, indices[...], normalization: data.normalization, into: $0.baseAddress!)
        }
        if let resize = resizer.resize {
            var resized = [Float](repeating: 0, count: indices.count * 3 * resize.to * resize.to)
            images.withUnsafeBufferPointer { src in resized.withUnsafeMutableBufferPointer { resize.apply(images: indices.count, src.baseAddress!, into: $0.baseAddress!) } }
            images = resized
        }
        return images.withUnsafeBufferPointer { img in
            labels.withUnsafeMutableBufferPointer { lab in
                Sharpness.measure(executor: step.executor, images: img.baseAddress!, labels: lab.baseAddress!, batches: batches, config: sc)
            }
        }
    }

    func result(_ status: StageStatus, sharpness: SharpnessMetrics? = nil) -> StageResult {
        StageResult(stage: stage, status: status, epochs: history, sharpness: sharpness, relabelled: relabelled)
    }
}

