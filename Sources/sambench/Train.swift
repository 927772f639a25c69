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
        One run, on the built-in synthetic dataset (CIFAR-shaped, generated from --data-seed: \
        no download). Prints one line per epoch: learning rate, training loss and accuracy, \
        (SAM: the loss at the perturbed weights,) test loss and accuracy, seconds and images/s; \
        then the sharpness measured at the end (m-sharpness and the top Hessian eigenvalue). \
        A run that diverges (non-finite loss, or above --divergence-factor x its first loss) \
        ends with status "diverged" and the step (exit status 3). --save writes the final weights as \
        safetensors with PyTorch state_dict names.

        Optimizers: sgd; sam (Foret et al.), asam (Kwon et al.), each with --rho; \
        m-sharpness with --micro-batch m; LookSAM with --look-interval k (see docs/OPTIMIZERS.md).
        """
    )

    @Option(help: "Model: \(Architectures.names).") var model: String = "tiny"
    @Option(help: "Dataset: synthetic (CIFAR data arrives with `sambench data`).") var dataset: String = "synthetic"
    @Option(help: "Classes of the synthetic dataset (10 or 100).") var classes: Int = 10
    @Option(help: "Training images (synthetic).") var trainSize: Int = 5000
    @Option(help: "Test images (synthetic).") var testSize: Int = 1000
    @Option(help: "Seed of the synthetic data.") var dataSeed: UInt64 = 1
    @Option(help: "Epochs.") var epochs: Int = 5
    @Option(help: "Batch size.") var batch: Int = 128
    @Option(help: "Base learning rate.") var lr: Float = 0.05
    @Option(help: "Learning-rate schedule, stepped per iteration: constant, cosine, multistep.") var schedule: String = "cosine"
    @Option(help: "Epochs at which multistep multiplies the rate by --gamma, comma-separated.") var milestones: String = ""
    @Option(help: "Multistep factor.") var gamma: Float = 0.1
    @Option(help: "Epochs of linear warmup.") var warmupEpochs: Int = 0
    @Option(help: "SGD momentum.") var momentum: Float = 0.9
    @Option(help: "Weight decay (added to the gradient before momentum, as PyTorch).") var weightDecay: Float = 5e-4
    @Flag(help: "Nesterov momentum.") var nesterov = false
    @Option(help: "Optimizer: sgd, sam or asam (the SAM family uses the SGD settings as its base optimizer).") var optimizer: String = "sgd"
    @Option(help: "SAM/ASAM radius rho (default 0.05 for sam, 0.5 for asam).") var rho: Float?
    @Option(help: "ASAM eta.") var eta: Float = 0.01
    @Option(help: "Gradient in the perturbation: loss (davda54/sam) or loss+wd (official JAX code).") var samGradient: String = "loss"
    @Option(help: "BN running statistics in a SAM step: first-pass or both-passes.") var bnPolicy: String = "first-pass"
    @Option(help: "m-sharpness: micro-batch size m (must divide --batch); default: the whole batch.") var microBatch: Int?
    @Option(help: "LookSAM: full SAM gradient every k steps (1 = SAM).") var lookInterval: Int = 1
    @Option(help: "LookSAM alpha.") var lookAlpha: Float = 0.7
    @Flag(help: "Bootstrap: after training, relabel the training set with the model's predictions and train a fresh model on them.") var bootstrap = false
    @Flag(help: "Skip the sharpness measurement at the end of the run.") var noSharpness = false
    @Option(help: "End the run as diverged when the loss exceeds this multiple of its first value.") var divergenceFactor: Double = 10
    @Option(help: "Label smoothing of the cross-entropy.") var labelSmoothing: Float = 0
    @Option(help: "Dropout between the convs of a Wide-ResNet block.") var dropout: Float = 0
    @Option(help: "Seed of initialisation, shuffling and dropout.") var seed: UInt64 = 0
    @Option(help: "Threads for oneDNN (default: all cores).") var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: "Write the final weights to this .safetensors file.") var save: String?

    func validate() throws {
        guard dataset == "synthetic" else {
            throw ValidationError("dataset '\(dataset)' is not available yet; use --dataset synthetic")
        }
        guard classes == 10 || classes == 100 else { throw ValidationError("--classes must be 10 or 100") }
        guard trainSize >= batch else { throw ValidationError("--train-size (\(trainSize)) must be at least one batch (\(batch))") }
        guard testSize >= 1 else { throw ValidationError("--test-size must be >= 1") }
        guard threads >= 1 else { throw ValidationError("--threads must be >= 1") }
        guard (0..<1).contains(labelSmoothing) else { throw ValidationError("--label-smoothing must be in [0, 1)") }
        for m in milestones.split(separator: ",") where Int(m.trimmingCharacters(in: .whitespaces)) == nil {
            throw ValidationError("--milestones: '\(m)' is not an integer epoch")
        }
        _ = try optimizerConfig()
    }

    func optimizerConfig() throws -> OptimizerConfig {
        if optimizer == "sgd" { return .sgd }
        guard let variant = SAMVariant(rawValue: optimizer) else { throw ValidationError("--optimizer must be sgd, sam or asam, got '\(optimizer)'") }
        guard let gradient = PerturbationGradient(rawValue: samGradient) else { throw ValidationError("--sam-gradient must be loss or loss+wd") }
        guard let policy = BNPolicy(rawValue: bnPolicy) else { throw ValidationError("--bn-policy must be first-pass or both-passes") }
        let c = SAMConfig(variant: variant, rho: rho, eta: eta, perturbationGradient: gradient, bnPolicy: policy,
                          microBatch: microBatch, lookInterval: lookInterval, lookAlpha: lookAlpha)
        do { try c.validate(batchSize: batch) } catch { throw ValidationError("\(error)") }
        return .sam(c)
    }

    func run() throws {
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
        config.seed = seed
        config.optimizer = try optimizerConfig()
        config.bootstrap = bootstrap
        config.divergenceFactor = divergenceFactor
        config.sharpness = noSharpness ? nil : SharpnessConfig()

        let train = SyntheticData.make(count: trainSize, classes: classes, seed: dataSeed)
        let test = SyntheticData.make(count: testSize, classes: classes, seed: dataSeed)
        let trainer = try Trainer(config: config, train: train, test: test)
        emit("sambench \(SambenchVersion.string): \(model) (\(trainer.state.model.parameterCount) parameters) on \(dataset) " +
              "(\(trainSize) train / \(testSize) test, \(classes) classes), \(epochs) epochs, batch \(batch), \(threads) threads")
        emit("stage     epoch        lr  train loss  train acc  perturbed  test loss  test acc      s    img/s")
        let result = try trainer.run { stage, m in
            let perturbed = m.perturbedLoss.map { String(format: "%10.4f", $0) } ?? String(repeating: " ", count: 9) + "-"
            emit(String(format: "%-9@ %5d %9.5f %11.4f %9.2f%% %@ %10.4f %8.2f%% %6.1f %8.1f", stage, m.epoch, m.lr, m.trainLoss,
                        100 * m.trainAccuracy, perturbed, m.testLoss, 100 * m.testAccuracy, m.seconds, m.imagesPerSecond))
        }
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
        if result.status != .done { throw ExitCode(3) }
        if let save {
            try Checkpoint.save(trainer.state, to: save, metadata: ["sambench_version": SambenchVersion.string, "seed": String(seed)])
            emit("saved \(save)")
        }
    }
}
