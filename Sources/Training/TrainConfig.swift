// A run's configuration: TrainConfig (everything a run needs besides its data), its schedules and initial weights.
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
public struct TrainConfig: Sendable, Codable, Hashable {
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

    /// The largest values a run may have: far beyond any real run, small enough that no count
    /// overflows (epochs x steps) and no buffer is sized from a crafted number.
    public static let bounds = (epochs: 100_000, batchSize: 65_536, augmentation: 64)

    public func validate() throws {
        guard epochs >= 1 else { throw ConfigurationError("epochs", "epochs must be >= 1, got \(epochs)") }
        guard batchSize >= 1 else { throw ConfigurationError("batch_size", "batch size must be >= 1, got \(batchSize)") }
        if let s = imageSize { guard (8...512).contains(s) else { throw ConfigurationError("image_size", "image size must be in [8, 512], got \(s)") } }
        guard divergenceFactor > 1 else { throw ConfigurationError("divergence_factor", "divergence factor must be > 1, got \(divergenceFactor)") }
        guard augmentation.cropPadding >= 0, augmentation.cutout >= 0 else { throw ConfigurationError(augmentation.cropPadding < 0 ? "crop_padding" : "cutout", "augmentation sizes must be >= 0") }
        // Upper bounds, before anything multiplies or allocates with these numbers (a count near
        // Int.max passed the checks above and then overflowed in the schedule or the loader).
        let b = Self.bounds
        guard epochs <= b.epochs else { throw ConfigurationError("epochs", "epochs must be <= \(b.epochs), got \(epochs)") }
        guard batchSize <= b.batchSize else { throw ConfigurationError("batch_size", "batch size must be <= \(b.batchSize), got \(batchSize)") }
        guard (0...epochs).contains(warmupEpochs) else { throw ConfigurationError("warmup_epochs", "warmup must be in [0, epochs = \(epochs)], got \(warmupEpochs)") }
        if let bad = milestones.first(where: { !(0...epochs).contains($0) }) {
            throw ConfigurationError("milestones", "milestones must be epochs in [0, \(epochs)], got \(bad)")
        }
        guard augmentation.cropPadding <= b.augmentation else {
            throw ConfigurationError("crop_padding", "crop padding must be <= \(b.augmentation), got \(augmentation.cropPadding)")
        }
        guard augmentation.cutout <= b.augmentation else { throw ConfigurationError("cutout", "cutout must be <= \(b.augmentation), got \(augmentation.cutout)") }
        guard lr.isFinite else { throw ConfigurationError("lr", "learning rate must be finite, got \(lr)") }
        guard gamma.isFinite, gamma > 0 else { throw ConfigurationError("gamma", "gamma must be a finite number > 0, got \(gamma)") }
        guard divergenceFactor <= 1e6 else { throw ConfigurationError("divergence_factor", "divergence factor must be <= 1e6, got \(divergenceFactor)") }
        guard (0..<1).contains(labelSmoothing) else { throw ConfigurationError("label_smoothing", "label smoothing must be in [0, 1), got \(labelSmoothing)") }
        guard (0..<1).contains(dropout) else { throw ConfigurationError("dropout", "dropout must be in [0, 1), got \(dropout)") }
        try sgd.validate()
        try optimizer.sam?.validate(batchSize: batchSize)
        if let method {
            try Methods.validate(method)
            if method.name == "ls", labelSmoothing > 0 {
                throw ConfigurationError("label_smoothing", "method ls smooths the labels itself (its epsilon): leave the run's label_smoothing at 0")
            }
            if method.name == "coteaching", optimizer.sam?.microBatch != nil {
                throw ConfigurationError("micro_batch", "coteaching ranks the whole batch before each step: not with m-sharpness (micro_batch)")
            }
        }
        if let s = sharpness {
            guard s.batches >= 1, s.rho > 0, s.hessianIterations >= 0, s.finiteDifferenceStep > 0 else {
                throw ConfigurationError("sharpness", "sharpness: batches >= 1, rho > 0, iterations >= 0 and a positive step needed")
            }
        }
    }
}

/// A state dict a run starts from: the file, its SHA-256 (a changed file is refused, so the
/// configuration keeps determining the run), and module prefixes left at the seed's
/// initialisation (e.g. "fc"). When the file's classifier has another class count than the
/// data, the classifier is left freshly initialised without being named.
public struct InitialWeights: Sendable, Codable, Hashable {
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

    /// The largest weights file read whole (to hash it): the largest model sambench builds,
    /// Wide-ResNet-100-16, is about 1.5 GB in float32.
    public static let maxBytes = 2 << 30

    /// The weights in `path` as they are now: the file read and hashed.
    public static func reading(_ path: String, skip: [String] = [], reinitHead: Bool = false) throws -> InitialWeights {
        let bytes = try InputFile.contents(path, what: "the initial weights", limit: maxBytes)
        return InitialWeights(path: path, sha256: SHA256Hex.digest(bytes), skip: skip, reinitHead: reinitHead)
    }

    /// Reads the file and checks its hash; the file and the report of loading it into `state`.
    public func load(into state: ModelState) throws -> Checkpoint.LoadReport {
        let bytes = try InputFile.contents(path, what: "the initial weights", limit: Self.maxBytes)
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

extension TrainConfig {
    /// The training step of this configuration for a model state (a run's network, or Co-teaching's second).
    func trainStep(state: ModelState, data: PreparedData) throws -> TrainStep {
        try TrainStep(state: state, batchSize: batchSize, sgd: sgd, optimizer: optimizer, labelSmoothing: labelSmoothing, method: method, seed: seed,
                      samples: data.cleanTrainLabels.count, frozenBatchNorm: freezeBN == true, freeze: freeze ?? [])
    }
}

