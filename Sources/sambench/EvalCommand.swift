import ArgumentParser
import Datasets
import Engine
import Foundation
import Training

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Evaluate a checkpoint (sambench's or PyTorch's, as safetensors) on a dataset split.",
        discussion: """
        Loads the state dict strictly (every tensor of the model, with its shape; nothing else) \
        and prints accuracy, mean cross-entropy, per-class accuracy and the confusion matrix \
        (rows: true class, columns: predicted), in eval mode (BN running statistics). The model \
        is --model, else the one a sambench checkpoint names in its metadata. Normalization: \
        --mean/--std, else what a sambench checkpoint recorded (`train --save`), else the \
        dataset's standard one. The synthetic dataset is the one `train` uses by default \
        (10 classes, 5000 train, 1000 test, data seed 1). docs/FINETUNE.md shows how to save a \
        compatible file from PyTorch.
        """
    )

    @Option(help: "The state dict to evaluate (.safetensors).") var checkpoint: String
    @Option(help: "Model: \(Architectures.names). Default: the checkpoint's metadata.") var model: String?
    @Option(help: "Dataset: cifar10, cifar100 or synthetic.") var dataset: Dataset = .cifar10
    @OptionGroup var dataDirectory: DataDirOption
    @Option(help: "Which split: test or train (all 50,000 training images, clean labels).") var split: Split = .test
    @Option(parsing: .unconditional, help: "Images per forward pass.") var batch: Int = 250
    @Option(parsing: .unconditional, help: "Resize the 32x32 images bilinearly to this size first (default: the size a sambench checkpoint trained at, else 32).") var imageSize: Int?
    @Option(help: "Per-channel mean, comma-separated (overrides the checkpoint's and the dataset's).") var mean: String?
    @Option(help: "Per-channel std, comma-separated.") var std: String?
    @Option(help: "Output format.") var format: TextOrJSON = .text
    @OptionGroup var threadsOption: ThreadsOption

    enum Split: String, ExpressibleByArgument, CaseIterable { case test, train }

    func validate() throws {
        guard batch >= 1 else { throw ValidationError("--batch must be >= 1") }
        guard batch <= TrainConfig.bounds.batchSize else { throw ValidationError("--batch must be <= \(TrainConfig.bounds.batchSize)") }
        if let imageSize, !(8...512).contains(imageSize) { throw ValidationError("--image-size must be in [8, 512]") }
        guard (mean == nil) == (std == nil) else { throw ValidationError("--mean and --std go together") }
        if let mean, let std { _ = try parseNormalization(mean, std) }
    }

    func parseNormalization(_ mean: String, _ std: String) throws -> Normalization {
        func floats(_ s: String, _ name: String) throws -> [Float] {
            let v = s.split(separator: ",").map { Float($0.trimmingCharacters(in: .whitespaces)) }
            guard v.count == 3, v.allSatisfy({ $0 != nil }) else { throw ValidationError("--\(name): three comma-separated numbers, got '\(s)'") }
            return v.map { $0! }
        }
        let n = Normalization(mean: try floats(mean, "mean"), std: try floats(std, "std"))
        guard n.std.allSatisfy({ $0 > 0 }) else { throw ValidationError("--std: every value must be > 0") }
        guard n.isUsable else { throw ValidationError("--mean and --std: finite numbers, means within +-1000, spreads in [1e-6, 1000]") }
        return n
    }

    func run() throws {
        enableConvolutionTuning()
        EngineThreads.set(threadsOption.resolved())
        let file = try SafetensorsFile.read(checkpoint)
        guard let modelName = model ?? file.metadata["model"] else {
            throw ValidationError("\(checkpoint) does not name its model (not written by sambench): give --model")
        }
        var spec = DataSpec()
        spec.dataset = dataset
        let data = try usageFailure { try DataPreparation.prepare(spec, dataDir: dataDirectory.dataDir) }
        let normalization: Normalization
        let normalizationSource: String
        if let mean, let std {
            (normalization, normalizationSource) = (try parseNormalization(mean, std), "--mean/--std")
        } else if let recorded = try Checkpoint.recordedNormalization(in: file, source: checkpoint) {
            (normalization, normalizationSource) = (recorded, "the checkpoint's metadata")
        } else {
            (normalization, normalizationSource) = (data.normalization, "\(dataset)'s standard")
        }
        let recordedConfig = file.metadata[WeightsMetadata.config].flatMap { try? JSONDecoder().decode(TrainConfig.self, from: Data($0.utf8)) }
        let net = try Architectures.make(modelName, numClasses: data.classes, inputSize: imageSize ?? recordedConfig?.imageSize ?? 32)
        // The file is checked against the model's description before its weights take memory: a
        // small file whose metadata names a model of gigabytes is refused at once.
        try Checkpoint.check(file, fits: net, source: checkpoint)
        let state = ModelState(model: net, seed: 0)
        let report = try Checkpoint.load(into: state, file: file, source: checkpoint)
        let executor = try DNNLExecutor(state: state, batchSize: batch, training: false)
        let evaluator = BatchEvaluator(executor: executor, normalization: normalization)
        let (images, labels) = split == .test ? (data.testImages, data.testLabels) : (data.trainImages, data.cleanTrainLabels)
        let result = evaluator.evaluate(images: images, labels: labels)

        if format == .json {
            struct Output: Encodable {
                let checkpoint: String, model: String, dataset: String, split: String
                let normalization: Normalization
                let result: EvaluationResult
                enum CodingKeys: String, CodingKey { case checkpoint, model, dataset, split, normalization }
                func encode(to encoder: Encoder) throws {
                    try result.encode(to: encoder)
                    var c = encoder.container(keyedBy: CodingKeys.self)
                    try c.encode(checkpoint, forKey: .checkpoint)
                    try c.encode(model, forKey: .model)
                    try c.encode(dataset, forKey: .dataset)
                    try c.encode(split, forKey: .split)
                    try c.encode(normalization, forKey: .normalization)
                }
            }
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try enc.encode(Output(checkpoint: checkpoint, model: modelName, dataset: dataset.rawValue,
                                                         split: split.rawValue, normalization: normalization, result: result)), as: UTF8.self))
            return
        }
        emit("\(checkpoint): \(modelName) (\(net.parameterCount) parameters) on \(dataset) \(split) (\(result.total) images)")
        if net.tensors[0].height != 32 { emit("inputs resized bilinearly from 32x32 to \(net.tensors[0].height)x\(net.tensors[0].height)") }
        emit("normalization: mean \(normalization.mean), std \(normalization.std) (\(normalizationSource))")
        if !report.missingBatchCounts.isEmpty {
            emit("note: the file has no num_batches_tracked for \(report.missingBatchCounts.count) BN layers (older PyTorch); set to 0")
        }
        emit(String(format: "accuracy %.2f%% (%d of %d correct), loss %.4f", 100 * result.accuracy, result.correct, result.total, result.loss))
        emit("per-class accuracy:")
        for (k, a) in result.perClass.enumerated() {
            emit(String(format: "%5d  ", k) + (a.map { String(format: "%6.2f%%", 100 * $0) } ?? "     -"))
        }
        guard result.confusion.count <= 20 else {
            emit("confusion matrix: \(result.confusion.count) classes, shown with --format json")
            return
        }
        emit("confusion (rows: true class, columns: predicted):")
        for (k, row) in result.confusion.enumerated() { emit(String(format: "%5d ", k) + row.map { String(format: "%6d", $0) }.joined()) }
    }
}
