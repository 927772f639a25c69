import Datasets
import Engine
import Foundation
import Optim

/// The learning-rate schedules a run can name (stepped per iteration).
public enum Schedule: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    case constant, cosine, multistep
    public var description: String { rawValue }
}

/// Everything one training run needs besides its data; the run is fully determined by it and
/// the `PreparedData` it trains on.
public struct TrainConfig: Sendable, Codable, Equatable {
    public var model: String = "resnet20"
    public var dropout: Float = 0
    public var epochs: Int = 10
    public var batchSize: Int = 128
    public var lr: Float = 0.1
    public var schedule: Schedule = .cosine
    public var milestones: [Int] = []               // epochs, for multistep
    public var gamma: Float = 0.1                   // multistep factor
    public var warmupEpochs: Int = 0
    public var sgd = SGDConfig(momentum: 0.9, weightDecay: 5e-4, nesterov: false)
    public var optimizer: OptimizerConfig = .sgd
    public var labelSmoothing: Float = 0
    /// The training method (a loss, Mixup: Methods.all); nil: cross-entropy (so configurations
    /// without one encode, and hash, as before).
    public var method: MethodConfig?
    public var augmentation = Augmentation()
    public var seed: UInt64 = 0
    /// A run whose training loss exceeds this multiple of its first step's loss (or is not
    /// finite) ends as diverged.
    public var divergenceFactor: Double = 10
    /// Bootstrap: after training, relabel the training set with the model's predictions and
    /// train a fresh model (same configuration and seed) on those labels.
    public var bootstrap: Bool = false
    /// Sharpness measured at the end of the run (nil: not measured).
    public var sharpness: SharpnessConfig? = SharpnessConfig()
    /// Weights to start from instead of the seed's initialisation (finetuning); nil: from scratch.
    public var initialWeights: InitialWeights?
    /// BN in eval mode while training: normalised with the running statistics, which stay as
    /// they were (a pretrained model's), the affine weights still trained. nil: false (so that
    /// configurations without it encode, and hash, as before).
    public var freezeBN: Bool?
    /// Module prefixes whose parameters stay as they start (e.g. a pretrained ["conv1", "bn1",
    /// "layer1"]); nil: every parameter trains.
    public var freeze: [String]?
    /// Inputs bilinearly resized from CIFAR's 32x32 to this size, for weights trained on larger
    /// images (the model is built for it); nil: 32.
    public var imageSize: Int?

    public init() {}

    public func lrSchedule(iterationsPerEpoch: Int) throws -> LRSchedule {
        let kind: LRScheduleKind
        switch schedule {
        case .constant: kind = .constant
        case .cosine: kind = .cosine(floor: 0)
        case .multistep: kind = .multiStep(milestones: milestones.map { $0 * iterationsPerEpoch }, gamma: gamma)
        }
        let s = LRSchedule(base: lr, kind: kind, warmupIterations: warmupEpochs * iterationsPerEpoch,
                           totalIterations: max(epochs * iterationsPerEpoch, 1))
        try s.validate()
        return s
    }

    public func validate() throws {
        guard epochs >= 1 else { throw EngineError("epochs must be >= 1, got \(epochs)") }
        guard batchSize >= 1 else { throw EngineError("batch size must be >= 1, got \(batchSize)") }
        if let s = imageSize { guard (8...512).contains(s) else { throw EngineError("image size must be in [8, 512], got \(s)") } }
        guard divergenceFactor > 1 else { throw EngineError("divergence factor must be > 1, got \(divergenceFactor)") }
        guard augmentation.cropPadding >= 0, augmentation.cutout >= 0 else { throw EngineError("augmentation sizes must be >= 0") }
        try sgd.validate()
        try optimizer.sam?.validate(batchSize: batchSize)
        if let method {
            try Methods.validate(method)
            if method.name == "ls", labelSmoothing > 0 {
                throw EngineError("method ls smooths the labels itself (its epsilon): leave the run's label_smoothing at 0")
            }
            if method.name == "coteaching", optimizer.sam?.microBatch != nil {
                throw EngineError("coteaching ranks the whole batch before each step: not with m-sharpness (micro_batch)")
            }
        }
        if let s = sharpness {
            guard s.batches >= 1, s.rho > 0, s.hessianIterations >= 0, s.finiteDifferenceStep > 0 else {
                throw EngineError("sharpness: batches >= 1, rho > 0, iterations >= 0 and a positive step needed")
            }
        }
    }
}

/// A state dict a run starts from: the file, its SHA-256 (a changed file is refused, so the
/// configuration keeps determining the run), and module prefixes left at the seed's
/// initialisation (e.g. "fc"). When the file's classifier has another class count than the
/// data, the classifier is left freshly initialised without being named.
public struct InitialWeights: Sendable, Codable, Equatable {
    public var path: String
    public var sha256: String
    public var skip: [String]
    /// The classifier starts freshly initialised whatever its class count.
    public var reinitHead: Bool
    public init(path: String, sha256: String, skip: [String] = [], reinitHead: Bool = false) {
        self.path = path
        self.sha256 = sha256
        self.skip = skip
        self.reinitHead = reinitHead
    }

    /// The weights in `path` as they are now: the file read and hashed.
    public static func reading(_ path: String, skip: [String] = [], reinitHead: Bool = false) throws -> InitialWeights {
        guard let bytes = FileManager.default.contents(atPath: path) else { throw EngineError("\(path): cannot read the initial weights") }
        return InitialWeights(path: path, sha256: SHA256Hex.digest([UInt8](bytes)), skip: skip, reinitHead: reinitHead)
    }

    /// Reads the file and checks its hash; the file and the report of loading it into `state`.
    public func load(into state: ModelState) throws -> Checkpoint.LoadReport {
        guard let data = FileManager.default.contents(atPath: path) else { throw EngineError("\(path): cannot read the initial weights") }
        let bytes = [UInt8](data)
        let digest = SHA256Hex.digest(bytes)
        guard digest == sha256 else {
            throw EngineError("\(path): SHA-256 \(digest) is not the \(sha256) this run was configured with (the file changed)")
        }
        let file = try SafetensorsFile.parse(path: path, bytes: bytes)
        var skips = skip
        if let fc = Checkpoint.classifierPrefix(of: state.model), !skips.contains(fc),
           reinitHead || file[fc + ".weight"].map({ $0.shape.first != state.model.numClasses }) == true {
            skips.append(fc)
        }
        return try Checkpoint.load(into: state, file: file, source: path, skip: skips)
    }
}

public struct EpochMetrics: Sendable, Codable, Equatable {
    public var epoch: Int
    public var lr: Float                   // learning rate at the epoch's last step
    public var trainLoss: Double
    public var trainAccuracy: Double       // against the labels trained on (noisy), during the epoch; Mixup: lambda-weighted
    public var perturbedLoss: Double?      // mean loss at w + e (SAM-family runs)
    /// Memorisation: eval-mode accuracy on the corrupted training samples against their noisy
    /// labels, and against their true labels (nil without noise).
    public var corruptedNoisyAccuracy: Double?
    public var corruptedCleanAccuracy: Double?
    public var validationLoss: Double?
    public var validationAccuracy: Double?
    public var testLoss: Double
    public var testAccuracy: Double
    public var seconds: Double
    public var imagesPerSecond: Double     // training images per second
    /// Co-teaching: the epoch's forget rate tau, the label precision of each network's own
    /// small-loss selection (the share of clean labels among the samples it kept for the
    /// other), and the second network's test accuracy (nil for other methods).
    public var forgetRate: Double? = nil
    public var selectionPrecision: Double? = nil
    public var peerSelectionPrecision: Double? = nil
    public var peerTestAccuracy: Double? = nil
}

/// How a stage of a run ended (the store's `RunStatus` adds the states of a run not yet ended).
public enum StageStatus: Sendable, Codable, Equatable {
    case done
    /// Loss not finite, or above `divergenceFactor` x the first step's loss, at this step.
    case diverged(step: Int, epoch: Int, loss: Double?)

    public var name: String { if case .done = self { "done" } else { "diverged" } }
}

/// One stage of a run: `train` (every run), then `bootstrap` when asked for.
public struct StageResult: Sendable, Codable, Equatable {
    public var stage: String
    public var status: StageStatus
    public var epochs: [EpochMetrics]
    public var sharpness: SharpnessMetrics?
    /// For the bootstrap stage: training labels the first stage's model changed.
    public var relabelled: Int?
    /// The test set's confusion matrix after the last epoch of a finished stage: row = true
    /// class, column = predicted class, counts (nil for a diverged stage, and in results made
    /// before it).
    public var confusion: [[Int]]?
    /// How well the final model's per-sample loss picks out the corrupted training samples
    /// (nil for a diverged stage, and in results made before it).
    public var detection: NoisyLabelDetection?
}

public struct RunResult: Sendable, Codable, Equatable {
    public var stages: [StageResult]
    /// The last stage's status (a diverged first stage ends the run).
    public var status: StageStatus { stages.last!.status }
    public var epochs: [EpochMetrics] { stages.last!.epochs }
}

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

    public init(config: TrainConfig, data: PreparedData) throws {
        try config.validate()
        guard data.trainIndices.count >= config.batchSize else {
            throw EngineError("training set has \(data.trainIndices.count) images, fewer than one batch of \(config.batchSize)")
        }
        self.config = config
        self.data = data
        model = try Architectures.make(config.model, numClasses: data.classes, dropout: config.dropout, inputSize: config.imageSize ?? 32)
        state = ModelState(model: model, seed: config.seed)
        if let w = config.initialWeights { initialWeightsReport = try w.load(into: state) }
        _ = try config.lrSchedule(iterationsPerEpoch: data.trainIndices.count / config.batchSize)
    }

    /// Where a run stands; saved with the weights after every epoch when checkpointing.
    struct Progress: Codable {
        var config: TrainConfig
        var stage: String
        var completedEpochs: Int
        var iteration: Int
        var firstLoss: Double?
        var history: [EpochMetrics]
        /// Stages finished before this one.
        var finished: [StageResult]
        var relabelled: Int?
    }

    static let progressKey = "sambench.progress"

    /// Runs every stage, calling `onEpoch(stage, metrics)` after each epoch and
    /// `onBatch(stage, epoch, batchesDone, batchesPerEpoch)` after each training step.
    ///
    /// With `checkpoint`, the weights, optimizer state and progress are written there
    /// (atomically) after every epoch, and a run that finds the file resumes after its last
    /// epoch and ends exactly as if it had never stopped: batch order, augmentation, dropout and
    /// the learning rate depend only on the seed, the epoch and the step. A checkpoint made by
    /// another configuration is refused. The file is left in place; the caller removes it.
    @discardableResult
    public func run(checkpoint: String? = nil, onEpoch: (String, EpochMetrics) throws -> Void = { _, _ in },
                    onBatch: (String, Int, Int, Int) -> Void = { _, _, _, _ in }) throws -> RunResult {
        var resume: (progress: Progress, file: SafetensorsFile)?
        if let checkpoint, FileManager.default.fileExists(atPath: checkpoint) {
            let (progress, file) = try Trainer.readCheckpoint(checkpoint)
            guard progress.config == config else {
                throw EngineError("\(checkpoint): made by another configuration; remove it or run that configuration")
            }
            resume = (progress, file)
        }
        var stages = resume?.progress.finished ?? []
        if stages.isEmpty {
            let r = resume?.progress.stage == "train" ? resume : nil
            stages.append(try runStage("train", data: data, resume: r, checkpoint: checkpoint, finished: [], onEpoch: onEpoch, onBatch: onBatch))
        }
        if config.bootstrap, stages.count == 1, stages[0].status == .done {
            var relabelled = data
            let r = resume?.progress.stage == "bootstrap" ? resume : nil
            let changed: Int
            if let r {
                guard let labels = r.file["bootstrap.labels"] else { throw EngineError("\(checkpoint ?? ""): bootstrap labels missing") }
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
            stages.append(try runStage("bootstrap", data: relabelled, resume: r, checkpoint: checkpoint, finished: stages,
                                       relabelled: changed, onEpoch: onEpoch, onBatch: onBatch))
        }
        return RunResult(stages: stages)
    }

    /// The epochs a checkpoint has recorded, by stage (for a caller that must not lose any of them).
    public static func history(inCheckpoint path: String) throws -> [(stage: String, metrics: EpochMetrics)] {
        let (progress, _) = try readCheckpoint(path)
        return progress.finished.flatMap { s in s.epochs.map { (s.stage, $0) } } + progress.history.map { (progress.stage, $0) }
    }

    /// A run checkpoint that cannot be trusted: unreadable, cut short, without its progress
    /// record, or with bytes that are not the ones written (its checksum). What it held is lost;
    /// the run can only start again from scratch (the worker does, with a warning).
    public struct CorruptCheckpoint: Error, CustomStringConvertible {
        public let description: String
    }

    static let checksumKey = "sambench.sha256"

    /// The checksum a run checkpoint carries: SHA-256 over every tensor (name, dtype, shape,
    /// bytes, in name order) and the progress record.
    static func checksum(tensors: [String: SafetensorsTensor], progress: String) -> String {
        var parts: [[UInt8]] = []
        for name in tensors.keys.sorted() {
            let t = tensors[name]!
            parts += [Array("\(name) \(t.dtype.rawValue) \(t.shape)".utf8), t.bytes]
        }
        return SHA256Hex.digest(parts: parts + [Array(progress.utf8)])
    }

    /// A run checkpoint read and checked: it parses, has a progress record, and its checksum
    /// matches. Anything else is a `CorruptCheckpoint`.
    static func readCheckpoint(_ path: String) throws -> (Progress, SafetensorsFile) {
        let file: SafetensorsFile
        do { file = try SafetensorsFile.read(path) } catch { throw CorruptCheckpoint(description: "\(error)") }
        guard let json = file.metadata[progressKey], let progress = try? JSONDecoder().decode(Progress.self, from: Data(json.utf8)) else {
            throw CorruptCheckpoint(description: "\(path): not a sambench training checkpoint (no progress record)")
        }
        guard let stored = file.metadata[checksumKey] else {
            throw CorruptCheckpoint(description: "\(path): no checksum (\(checksumKey)): not written by this sambench, or damaged")
        }
        guard stored == checksum(tensors: file.tensors, progress: json) else {
            throw CorruptCheckpoint(description: "\(path): checksum mismatch: its bytes are not the ones written (a damaged disk or copy?)")
        }
        return (progress, file)
    }

    private func runStage(_ name: String, data: PreparedData, resume: (progress: Progress, file: SafetensorsFile)?, checkpoint: String?,
                          finished: [StageResult], relabelled: Int? = nil,
                          onEpoch: (String, EpochMetrics) throws -> Void, onBatch: (String, Int, Int, Int) -> Void) throws -> StageResult {
        let stage = try Stage(trainer: self, name: name, data: data, checkpoint: checkpoint, finished: finished, relabelled: relabelled)
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

/// One stage of a run as it goes: its loader, schedule and step, the epochs so far, and the
/// parts `Trainer.runStage` strings together (resume, train an epoch, evaluate, checkpoint,
/// sharpness).
private final class Stage {
    let trainer: Trainer
    let name: String
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

    init(trainer: Trainer, name: String, data: PreparedData, checkpoint: String?, finished: [StageResult], relabelled: Int?) throws {
        (self.trainer, self.name, self.data, self.checkpoint, self.finished, self.relabelled) = (trainer, name, data, checkpoint, finished, relabelled)
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
        // The progress record is the file's word: out of range it would crash (a negative epoch
        // range) or train silently wrong (an iteration far past the schedule: learning rate 0).
        let p = r.progress
        guard (0...config.epochs).contains(p.completedEpochs), p.iteration == p.completedEpochs * perEpoch,
              p.history.map(\.epoch) == Array(0..<p.completedEpochs).map({ $0 + 1 }) else {
            throw EngineError("""
                \(checkpoint ?? "checkpoint"): a progress record no run of this configuration writes: \(p.completedEpochs) epochs \
                completed of \(config.epochs), iteration \(p.iteration) (expected \(perEpoch) per epoch), \(p.history.count) epochs recorded
                """)
        }
        try Checkpoint.load(into: trainer.state, file: r.file, source: checkpoint ?? "checkpoint", allowUnexpected: true)
        try step.restoreOptimizer(from: r.file, source: checkpoint ?? "checkpoint")
        try peer?.restore(from: r.file, source: checkpoint ?? "checkpoint")
        history = r.progress.history
        iteration = r.progress.iteration
        firstLoss = r.progress.firstLoss
        startEpoch = r.progress.completedEpochs + 1
    }

    /// Writes the checkpoint (when the run has one) after `completedEpochs` epochs.
    func save(completedEpochs epoch: Int) throws {
        guard let checkpoint else { return }
        let progress = Trainer.Progress(config: config, stage: name, completedEpochs: epoch, iteration: iteration, firstLoss: firstLoss,
                                        history: history, finished: finished, relabelled: relabelled)
        var tensors = Checkpoint.tensors(of: trainer.state).merging(step.optimizerTensors()) { a, _ in a }
        if let peer { tensors.merge(peer.tensors()) { a, _ in a } }
        if name == "bootstrap" { tensors["bootstrap.labels"] = SafetensorsTensor(int64s: data.trainLabels.map { Int64($0) }) }
        let json = String(decoding: try JSONEncoder().encode(progress), as: UTF8.self)
        try SafetensorsFile(tensors: tensors, metadata: [Trainer.progressKey: json, Trainer.checksumKey: Trainer.checksum(tensors: tensors, progress: json),
                                                         "model": trainer.model.name, "format": "pt"]).write(to: checkpoint)
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
    func testConfusion() -> [[Int]] {
        let predicted = evaluator.predict(images: data.testImages, indices: Array(data.testLabels.indices))
        var m = [[Int]](repeating: [Int](repeating: 0, count: data.classes), count: data.classes)
        for (truth, p) in zip(data.testLabels, predicted) { m[Int(truth)][Int(p)] += 1 }
        return m
    }

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
        StageResult(stage: name, status: status, epochs: history, sharpness: sharpness, relabelled: relabelled)
    }
}

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

extension TrainConfig {
    /// The training step of this configuration for a model state (a run's network, or Co-teaching's second).
    func trainStep(state: ModelState, data: PreparedData) throws -> TrainStep {
        try TrainStep(state: state, batchSize: batchSize, sgd: sgd, optimizer: optimizer, labelSmoothing: labelSmoothing, method: method, seed: seed,
                      samples: data.cleanTrainLabels.count, frozenBatchNorm: freezeBN == true, freeze: freeze ?? [])
    }
}

extension Trainer {
    /// The initialisation seed of Co-teaching's second network: a run's seed mixed with a
    /// constant ("coteach!"), so that it is not another seed's first network.
    public static func peerSeed(_ seed: UInt64) -> UInt64 { splitMix64(seed ^ 0x636F_7465_6163_6821) }
}
