import ArgumentParser
import Datasets
import Engine
import Foundation
import Optim
import Training

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train one model with SGD or a SAM variant and print loss and accuracy per epoch.",
        discussion: """
        One run on the built-in synthetic dataset (CIFAR-shaped, generated from --data-seed: no \
        download) or CIFAR-10/100 (`sambench data download`), with optional label noise, a \
        validation split and a training subset. Prints one line per epoch: learning rate, \
        training loss and accuracy (against the labels trained on), the loss at the perturbed \
        weights (SAM), memorisation (accuracy on the corrupted training samples against their \
        noisy labels, and against their true ones), validation accuracy, test loss and \
        accuracy, seconds and images/s; \
        then the sharpness measured at the end (m-sharpness and the top Hessian eigenvalue). \
        A run that diverges (non-finite loss, or above --divergence-factor x its first loss) \
        ends with status "diverged" and the step (exit status 3). With --checkpoint the run \
        saves its weights, optimizer state and progress after every epoch and, started again \
        after an interruption, resumes exactly where it stopped. --save writes the final weights as \
        safetensors with PyTorch state_dict names.

        Optimizers: sgd; sam (Foret et al.), asam (Kwon et al.), each with --rho; \
        m-sharpness with --micro-batch m; LookSAM with --look-interval k (see docs/OPTIMIZERS.md).
        """
    )

    @Option(help: "Model: \(Architectures.names).") var model: String = "tiny"
    @Option(help: "Dataset: synthetic (built in, no download), cifar10 or cifar100 (see `sambench data`).") var dataset: Dataset = .synthetic
    @OptionGroup var dataDirectory: DataDirOption
    var dataDir: String? { dataDirectory.dataDir }
    @Option(name: [.customLong("synthetic-classes"), .customLong("classes")], parsing: .unconditional, help: "Classes of the synthetic dataset (suites: synthetic_classes).") var classes: Int = 10
    @Option(name: [.customLong("synthetic-train"), .customLong("train-size")], parsing: .unconditional, help: "Training images of the synthetic dataset (suites: synthetic_train).") var trainSize: Int = 5000
    @Option(name: [.customLong("synthetic-test"), .customLong("test-size")], parsing: .unconditional, help: "Test images of the synthetic dataset (suites: synthetic_test).") var testSize: Int = 1000
    @Option(name: [.customLong("synthetic-seed"), .customLong("data-seed")], parsing: .unconditional, help: "Seed of the synthetic dataset (suites: synthetic_seed).") var dataSeed: UInt64 = 1
    @Option(help: "Label noise (docs/NOISE.md; suites: a [[noise]] entry's kind).") var noise: NoiseKind = .none
    @Option(parsing: .unconditional, help: "Noise rate in [0, 1].") var noiseRate: Double = 0
    @Option(help: "Which samples are corrupted.") var noiseSelection: NoiseSelection = .exact
    @Option(parsing: .unconditional, help: "Seed of the noise realisation.") var noiseSeed: UInt64 = 0
    @Option(help: "Human noise labels: FILE.npy or FILE.pt:KEY (e.g. CIFAR-10_human.pt:worse_label).") var labels: LabelSpec?
    @Option(parsing: .unconditional, help: "Fraction of the training set held out, stratified, for validation.") var validation: Double = 0
    @Flag(help: "Score validation against the clean labels (default: the noisy ones, what a practitioner has).") var cleanValidation = false
    @Option(parsing: .unconditional, help: "Train on this many images only (stratified; after the validation split).") var subset: Int?
    @Flag(help: "The subset is the first N training images instead of a stratified N.") var subsetFirst = false
    @Option(parsing: .unconditional, help: "Random-crop padding (0: no crop).") var cropPadding: Int = 4
    @Flag(help: "No random horizontal flip.") var noFlip = false
    @Option(parsing: .unconditional, help: "Cutout square size (0: none).") var cutout: Int = 0
    @Option(parsing: .unconditional, help: "Epochs.") var epochs: Int = 5
    @Option(name: [.customLong("batch-size"), .customLong("batch")], parsing: .unconditional, help: "Batch size (suites: batch_size).") var batch: Int = 128
    @Option(parsing: .unconditional, help: "Base learning rate.") var lr: Float = 0.05
    @Option(help: "Learning-rate schedule, stepped per iteration.") var schedule: Schedule = .cosine
    @Option(help: "Epochs at which multistep multiplies the rate by --gamma, comma-separated.") var milestones: String = ""
    @Option(parsing: .unconditional, help: "Multistep factor.") var gamma: Float = 0.1
    @Option(parsing: .unconditional, help: "Epochs of linear warmup.") var warmupEpochs: Int = 0
    @Option(parsing: .unconditional, help: "SGD momentum.") var momentum: Float = 0.9
    @Option(parsing: .unconditional, help: "Weight decay (added to the gradient before momentum, as PyTorch).") var weightDecay: Float = 5e-4
    @Flag(help: "Nesterov momentum.") var nesterov = false
    @Option(help: "Optimizer (the SAM family uses the SGD settings as its base optimizer).") var optimizer: OptimizerFamily = .sgd
    @Option(parsing: .unconditional, help: "SAM/ASAM radius rho (default 0.05 for sam, 0.5 for asam).") var rho: Float?
    @Option(parsing: .unconditional, help: "ASAM eta.") var eta: Float = 0.01
    @Option(name: [.customLong("sam-gradient"), .customLong("gradient")], help: "Gradient in the perturbation: loss (davda54/sam) or loss+wd (official JAX code) (suites: gradient).") var samGradient: PerturbationGradient = .loss
    @Option(help: "BN running statistics in a SAM step.") var bnPolicy: BNPolicy = .firstPass
    @Option(parsing: .unconditional, help: "m-sharpness: micro-batch size m (must divide --batch); default: the whole batch.") var microBatch: Int?
    @Option(parsing: .unconditional, help: "LookSAM: full SAM gradient every k steps (1 = SAM).") var lookInterval: Int = 1
    @Option(parsing: .unconditional, help: "LookSAM alpha.") var lookAlpha: Float = 0.7
    @Option(parsing: .unconditional, help: "Resize the 32x32 inputs bilinearly to this size (for weights trained on larger images; the model is built for it).") var imageSize: Int = 32
    @Option(help: "Keep the parameters under this module prefix at their starting values (repeatable, e.g. --freeze conv1 --freeze layer1).") var freeze: [String] = []
    @Flag(help: "Freeze BN: eval-mode batch norm while training (running statistics used and left as they are; for finetuning).") var freezeBn = false
    @Flag(help: "Bootstrap: after training, relabel the training set with the model's predictions and train a fresh model on them.") var bootstrap = false
    @Flag(help: "Skip the sharpness measurement at the end of the run.") var noSharpness = false
    @Option(parsing: .unconditional, help: "End the run as diverged when the loss exceeds this multiple of its first value.") var divergenceFactor: Double = 10
    @Option(parsing: .unconditional, help: "Label smoothing of the cross-entropy (methods ce and mixup).") var labelSmoothing: Float = 0
    @Option(help: "Training method: \(Methods.all.map(\.name).joined(separator: ", ")) (docs/METHODS.md; suites: [[method]] name).") var method: String = "ce"
    @Option(parsing: .unconditional, help: ArgumentHelp(Methods.parameterHelp("q"))) var q: Double?
    @Option(parsing: .unconditional, help: ArgumentHelp(Methods.parameterHelp("alpha"))) var alpha: Double?
    @Option(parsing: .unconditional, help: ArgumentHelp(Methods.parameterHelp("beta"))) var beta: Double?
    @Option(parsing: .unconditional, help: ArgumentHelp(Methods.parameterHelp("log_zero"))) var logZero: Double?
    @Option(parsing: .unconditional, help: ArgumentHelp(Methods.parameterHelp("epsilon"))) var epsilon: Double?
    @Option(parsing: .unconditional, help: ArgumentHelp(Methods.parameterHelp("lambda"))) var lambda: Double?
    @Option(parsing: .unconditional, help: ArgumentHelp(Methods.parameterHelp("forget_rate"))) var forgetRate: Double?
    @Option(parsing: .unconditional, help: ArgumentHelp(Methods.parameterHelp("num_gradual"))) var numGradual: Double?
    @Option(parsing: .unconditional, help: ArgumentHelp(Methods.parameterHelp("exponent"))) var exponent: Double?
    @Option(parsing: .unconditional, help: "Dropout between the convs of a Wide-ResNet block.") var dropout: Float = 0
    @Option(parsing: .unconditional, help: "Seed of initialisation, shuffling and dropout.") var seed: UInt64 = 0
    @OptionGroup var threadsOption: ThreadsOption
    var threads: Int { threadsOption.resolved() }
    @Option(help: "Write the final weights to this .safetensors file (PyTorch state_dict names; the run's configuration and normalization in its metadata).") var save: String?
    @Option(name: .customLong("init"), help: "Start from this state dict (.safetensors, sambench's or PyTorch's) instead of a fresh initialisation; loaded strictly.") var initFrom: String?
    @Option(help: "With --init: leave the tensors under this module prefix freshly initialised (repeatable, e.g. --init-skip fc). The classifier is skipped by itself when its class count differs.") var initSkip: [String] = []
    @Option(help: "Checkpoint after every epoch to this file; a run that finds it resumes exactly where it stopped.") var checkpoint: String?
    @Flag(help: "Keep the checkpoint file when the run ends (default: remove it).") var keepCheckpoint = false

    func validate() throws {
        do { try dataSpec().validate() } catch { throw ValidationError("\(error)") }
        guard dataset != .synthetic || trainSize >= batch else { throw ValidationError("--train-size (\(trainSize)) must be at least one batch (\(batch))") }
        guard (0..<1).contains(labelSmoothing) else { throw ValidationError("--label-smoothing must be in [0, 1)") }
        for m in milestones.split(separator: ",") where Int(m.trimmingCharacters(in: .whitespaces)) == nil {
            throw ValidationError("--milestones: '\(m)' is not an integer epoch")
        }
        _ = try optimizerConfig()
        _ = try methodConfig()
        guard initFrom != nil || initSkip.isEmpty else { throw ValidationError("--init-skip needs --init") }
        guard (8...512).contains(imageSize) else { throw ValidationError("--image-size must be in [8, 512]") }
        // Files written during or after training: their folder is checked before any of it.
        for (flag, file) in [("--save", save), ("--checkpoint", checkpoint)] {
            guard let file else { continue }
            let folder = URL(fileURLWithPath: file).deletingLastPathComponent().path
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw ValidationError("\(flag) \(file): the folder \(folder) does not exist (create it first; nothing was trained)")
            }
            guard FileManager.default.isWritableFile(atPath: folder) else {
                throw ValidationError("\(flag) \(file): the folder \(folder) is not writable (nothing was trained)")
            }
        }
    }

    func dataSpec() throws -> DataSpec {
        var d = DataSpec()
        d.dataset = dataset
        d.syntheticClasses = classes
        d.syntheticTrain = trainSize
        d.syntheticTest = testSize
        d.syntheticSeed = dataSeed
        d.noise = NoiseSpec(kind: noise, rate: noiseRate, selection: noiseSelection, seed: noiseSeed, labelsFile: labels)
        d.validationFraction = validation
        d.validationNoisy = !cleanValidation
        d.trainSubset = subset
        d.subsetStratified = !subsetFirst
        d.splitSeed = seed
        return d
    }

    func optimizerConfig() throws -> OptimizerConfig {
        guard let variant = optimizer.variant else { return .sgd }
        let c = SAMConfig(variant: variant, rho: rho, eta: eta, perturbationGradient: samGradient, bnPolicy: bnPolicy,
                          microBatch: microBatch, lookInterval: lookInterval, lookAlpha: lookAlpha)
        do { try c.validate(batchSize: batch) } catch { throw ValidationError("\(error)") }
        return .sam(c)
    }

    /// The method and the parameters given by their flags (one flag per parameter of `Methods.all`,
    /// named as the suite key); a flag the method does not have is refused.
    func methodConfig() throws -> MethodConfig? {
        let given: [String: Double?] = ["q": q, "alpha": alpha, "beta": beta, "log_zero": logZero, "epsilon": epsilon, "lambda": lambda,
                                       "forget_rate": forgetRate, "num_gradual": numGradual, "exponent": exponent]
        precondition(Set(given.keys) == Set(Methods.parameterNames), "a method parameter without its flag")
        do { return try Methods.resolve(method, given.compactMapValues { $0 }) } catch {
            throw ValidationError("--method \(method): \(error) (a parameter's flag is its name: --q, --alpha, --beta, --log-zero, --epsilon, --lambda, --forget-rate, --num-gradual, --exponent)")
        }
    }

    func run() throws {
        enableConvolutionTuning()
        EngineThreads.set(threads)
        var config = TrainConfig()
        config.model = model
        config.dropout = dropout
        config.epochs = epochs
        config.batchSize = batch
        config.lr = lr
        config.schedule = schedule
        config.milestones = milestones.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        config.gamma = gamma
        config.warmupEpochs = warmupEpochs
        config.sgd = SGDConfig(momentum: momentum, weightDecay: weightDecay, nesterov: nesterov)
        config.labelSmoothing = labelSmoothing
        config.method = try methodConfig()
        config.seed = seed
        config.optimizer = try optimizerConfig()
        config.bootstrap = bootstrap
        config.freezeBN = freezeBn ? true : nil
        config.freeze = freeze.isEmpty ? nil : freeze
        config.imageSize = imageSize == 32 ? nil : imageSize
        config.divergenceFactor = divergenceFactor
        config.sharpness = noSharpness ? nil : SharpnessConfig()

        config.augmentation = Augmentation(cropPadding: cropPadding, flip: !noFlip, cutout: cutout)
        if let initFrom {
            do { config.initialWeights = try InitialWeights.reading(initFrom, skip: initSkip) } catch { throw ValidationError("--init: \(error)") }
        }
        let data = try DataPreparation.prepare(try dataSpec(), dataDir: dataDir)
        let trainer = try Trainer(config: config, data: data)
        emit("sambench \(SambenchVersion.string): \(model) (\(trainer.state.model.parameterCount) parameters) on \(dataset) " +
             "(\(data.trainIndices.count) train, \(data.validationIndices.count) validation, \(data.testLabels.count) test, \(data.classes) classes), " +
             "\(epochs) epochs, batch \(batch), \(threads) threads")
        if let w = config.initialWeights, let r = trainer.initialWeightsReport {
            emit("initial weights: \(w.path) (sha256 \(w.sha256.prefix(16))...)" +
                 (r.keptFromState.isEmpty ? "" : ", \(r.keptFromState.count) tensors freshly initialised: " + r.keptFromState.joined(separator: ", ")))
            if let fc = Checkpoint.classifierPrefix(of: trainer.model), !w.skip.contains(fc), r.keptFromState.contains(fc + ".weight") {
                emit("note: the file's classifier has another class count than \(dataset) (\(data.classes)); \(fc) starts fresh")
            }
        }
        if let n = data.noise {
            emit(String(format: "noise: %@ rate %.3f (%@), realised %.4f, labels sha256 %@", n.spec.kind.rawValue, n.spec.rate,
                        n.spec.selection.rawValue, n.realisedRate, n.labelsSHA256))
        }
        if let checkpoint, FileManager.default.fileExists(atPath: checkpoint) { emit("resuming from \(checkpoint)") }
        emit("stage     epoch        lr  train loss  train acc  perturbed  memorised  true-of-c  val acc  test loss  test acc      s    img/s")
        func column(_ v: Double?, percent: Bool = true) -> String {
            guard let v else { return String(repeating: " ", count: 8) + "-" }
            return percent ? String(format: "%8.2f%%", 100 * v) : String(format: "%9.4f", v)
        }
        // On a terminal, a line that counts the batches of the current epoch (cleared by the epoch's line).
        let tty = isatty(STDERR_FILENO) != 0
        var lastShown = Date.distantPast
        let result = try trainer.run(checkpoint: checkpoint, onEpoch: { stage, m in
            if tty { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
            emit(String(format: "%-9@ %5d %9.5f %11.4f %9.2f%% ", stage.rawValue, m.epoch, m.lr, m.trainLoss, 100 * m.trainAccuracy) +
                 [column(m.perturbedLoss, percent: false), column(m.corruptedNoisyAccuracy), column(m.corruptedCleanAccuracy),
                  column(m.validationAccuracy)].joined(separator: "  ") +
                 String(format: " %10.4f %8.2f%% %6.1f %8.1f", m.testLoss, 100 * m.testAccuracy, m.seconds, m.imagesPerSecond))
        }, onBatch: { stage, epoch, done, total in
            guard tty, Date().timeIntervalSince(lastShown) > 0.5 || done == total else { return }
            lastShown = Date()
            FileHandle.standardError.write(Data("\r\u{1B}[K  \(stage) epoch \(epoch): batch \(done)/\(total)".utf8))
        })
        for stage in result.stages {
            if let r = stage.relabelled { emit("\(stage.stage): trained on the first model's predictions (\(r) training labels changed)") }
            if case let .diverged(step, epoch, loss) = stage.status {
                emit("\(stage.stage): diverged at step \(step) (epoch \(epoch)), loss \(loss.map { String($0) } ?? "not finite")")
            }
            if let s = stage.sharpness {
                var line = String(format: "\(stage.stage): sharpness over %d batches of %d: m-sharpness (rho %.3g) %.5f", s.batches, s.batchSize, s.rho, s.mSharpness)
                if let l = s.topHessianEigenvalue, let r = s.hessianRelativeResidual {
                    line += String(format: ", top Hessian eigenvalue %.4g (residual %.2g after %d iterations)", l, r, s.hessianIterations ?? 0)
                }
                emit(line)
            }
        }
        emit("status: \(result.status.name)")
        if let checkpoint, !keepCheckpoint { try? FileManager.default.removeItem(atPath: checkpoint) }
        if result.status != .done { throw ExitCode(3) }
        if let save {
            try trainer.saveWeights(to: save, extra: ["sambench_version": SambenchVersion.string, "seed": String(seed)])
            emit("saved \(save)")
        }
    }
}
