import ArgumentParser
import Datasets
import Engine
import Foundation
import Optim
import Training

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train one model with SGD and print loss and accuracy per epoch.",
        discussion: """
        One run, on the built-in synthetic dataset (CIFAR-shaped, generated from --data-seed: \
        no download). Prints one line per epoch: learning rate, training loss and accuracy, \
        test loss and accuracy, seconds and images/s. --save writes the final weights as \
        safetensors with PyTorch state_dict names.
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

        let train = SyntheticData.make(count: trainSize, classes: classes, seed: dataSeed)
        let test = SyntheticData.make(count: testSize, classes: classes, seed: dataSeed)
        let trainer = try Trainer(config: config, train: train, test: test)
        emit("sambench \(SambenchVersion.string): \(model) (\(trainer.state.model.parameterCount) parameters) on \(dataset) " +
              "(\(trainSize) train / \(testSize) test, \(classes) classes), \(epochs) epochs, batch \(batch), \(threads) threads")
        emit("epoch        lr  train loss  train acc  test loss  test acc      s    img/s")
        try trainer.run { m in
            emit(String(format: "%5d %9.5f %11.4f %9.2f%% %10.4f %8.2f%% %6.1f %8.1f",
                         m.epoch, m.lr, m.trainLoss, 100 * m.trainAccuracy, m.testLoss, 100 * m.testAccuracy, m.seconds, m.imagesPerSecond))
        }
        if let save {
            try Checkpoint.save(trainer.state, to: save, metadata: ["sambench_version": SambenchVersion.string, "seed": String(seed)])
            emit("saved \(save)")
        }
    }
}
