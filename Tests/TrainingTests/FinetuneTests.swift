import Datasets
import Engine
import Foundation
import Optim
import TestSupport
import Training
import XCTest

/// Starting a run from saved weights (`TrainConfig.initialWeights`, `train --init`) and
/// evaluating saved weights (`sambench eval`).
final class FinetuneTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("finetune-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func config(epochs: Int, lr: Float = 0.05) -> TrainConfig {
        var c = TrainConfig()
        c.model = "tiny"
        c.epochs = epochs
        c.batchSize = 64
        c.lr = lr
        c.seed = 3
        c.sharpness = nil
        return c
    }

    func data(train: Int, subset: Int? = nil) throws -> PreparedData {
        var spec = DataSpec()
        spec.syntheticTrain = train
        spec.syntheticTest = 500
        spec.trainSubset = subset
        return try DataPreparation.prepare(spec, dataDir: nil)
    }

    /// One epoch on 256 images from a model trained on the full set beats one epoch from scratch
    /// by far; a file changed after configuring is refused; a classifier of another class count
    /// is left fresh by itself.
    func testFinetuneFromAGoodCheckpointBeatsScratch() throws {
        EngineThreads.set(2)
        let pretrain = try Trainer(config: config(epochs: 4), data: try data(train: 3000))
        let pretrained = try pretrain.run().epochs.last!.testAccuracy
        let weights = dir.appendingPathComponent("pretrained.safetensors").path
        try pretrain.saveWeights(to: weights)
        let saved = try SafetensorsFile.read(weights)
        XCTAssertNotNil(saved.metadata[WeightsMetadata.config])
        XCTAssertEqual(try Checkpoint.recordedNormalization(in: saved, source: weights), .synthetic)

        let small = try data(train: 3000, subset: 256)
        let scratch = try Trainer(config: config(epochs: 1, lr: 0.01), data: small).run().epochs.last!.testAccuracy
        var c = config(epochs: 1, lr: 0.01)
        c.initialWeights = try InitialWeights.reading(weights)
        let finetuner = try Trainer(config: c, data: small)
        XCTAssertEqual(finetuner.initialWeightsReport?.keptFromState, [])
        let finetuned = try finetuner.run().epochs.last!.testAccuracy
        XCTAssertGreaterThan(pretrained, 0.7)
        XCTAssertGreaterThan(finetuned, scratch + 0.3, "finetuned \(finetuned) vs scratch \(scratch) after one epoch on 256 images")

        // Skipping the classifier by name, and by itself when the class count differs.
        c.initialWeights = try InitialWeights.reading(weights, skip: ["fc"])
        XCTAssertEqual(try Trainer(config: c, data: small).initialWeightsReport?.keptFromState, ["fc.weight", "fc.bias"])
        var five = DataSpec()
        five.syntheticTrain = 512
        five.syntheticClasses = 5
        c.initialWeights = try InitialWeights.reading(weights)
        XCTAssertEqual(try Trainer(config: c, data: try DataPreparation.prepare(five, dataDir: nil)).initialWeightsReport?.keptFromState,
                       ["fc.weight", "fc.bias"])

        // The configuration names the file's hash: a changed file is refused.
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: weights)))
        bytes[bytes.count - 1] ^= 1
        try Data(bytes).write(to: URL(fileURLWithPath: weights))
        XCTAssertThrowsError(try Trainer(config: c, data: small)) { XCTAssertTrue("\($0)".contains("SHA-256"), "\($0)") }
    }

    /// A finetune run interrupted after its first epoch resumes from its checkpoint (not from the
    /// initial weights again) and ends exactly as the uninterrupted run.
    func testInterruptedFinetuneResumesExactly() throws {
        EngineThreads.set(2)
        let pretrain = try Trainer(config: config(epochs: 1), data: try data(train: 1000))
        _ = try pretrain.run()
        let weights = dir.appendingPathComponent("p.safetensors").path
        try pretrain.saveWeights(to: weights)
        var c = config(epochs: 3, lr: 0.02)
        c.initialWeights = try InitialWeights.reading(weights)
        c.freezeBN = true
        c.freeze = ["conv1"]
        let small = try data(train: 1000, subset: 256)
        let whole = try Trainer(config: c, data: small).run().epochs
        struct Stop: Error {}
        let checkpoint = dir.appendingPathComponent("ft.ckpt").path
        XCTAssertThrowsError(try Trainer(config: c, data: small).run(checkpoint: checkpoint) { _, m in if m.epoch == 1 { throw Stop() } })
        let resumed = try Trainer(config: c, data: small).run(checkpoint: checkpoint).epochs
        XCTAssertEqual(resumed.map(\.testAccuracy), whole.map(\.testAccuracy))
        XCTAssertEqual(resumed.map(\.trainLoss), whole.map(\.trainLoss))
    }

    /// `freeze`: the parameters under the prefixes keep their values through SGD and SAM steps
    /// (SAM with weight decay in the perturbation, which would move them if they took part),
    /// the others train; a prefix naming nothing is refused.
    func testFrozenParametersKeepTheirValues() throws {
        let model = try Architectures.make("tiny")
        var rng = Xoshiro256(seed: 4)
        let input = (0..<(16 * 3 * 32 * 32)).map { _ in Float(rng.nextNormal()) }
        let labels = (0..<16).map { _ in Int32(rng.nextInt(below: 10)) }
        let frozenPrefixes = ["conv1", "bn1"]
        for optimizer: OptimizerConfig in [.sgd, .sam(SAMConfig(variant: .sam, rho: 0.05, perturbationGradient: .lossPlusWeightDecay))] {
            let state = ModelState(model: model, seed: 1)
            let start = state.params.array
            let step = try TrainStep(state: state, batchSize: 16, sgd: SGDConfig(momentum: 0.9, weightDecay: 5e-4), optimizer: optimizer,
                                     freeze: frozenPrefixes)
            for _ in 0..<3 { step.step(input: input, labels: labels, lr: 0.1) }
            for p in model.params {
                let before = Array(start[p.offset..<(p.offset + p.count)]), after = Array(state.view(p))
                if frozenPrefixes.contains(where: { Checkpoint.name(p.name, isUnder: $0) }) {
                    XCTAssertEqual(after, before, "\(optimizer.family) moved frozen \(p.name)")
                } else {
                    XCTAssertNotEqual(after, before, "\(optimizer.family) did not train \(p.name)")
                }
            }
        }
        XCTAssertThrowsError(try TrainStep(state: ModelState(model: model, seed: 1), batchSize: 16, sgd: SGDConfig(), freeze: ["layer9"])) {
            XCTAssertTrue("\($0)".contains("'layer9' names no parameter of tiny"), "\($0)")
        }
    }

    /// `image_size`: a run trains at 48x48 (the loader resizes, the model is built for it), and
    /// `eval` of its saved weights resizes the same way by itself, from the recorded configuration:
    /// the same test accuracy as the run's last epoch.
    func testImageSizeTrainsAndEvaluatesResized() throws {
        let binary = try sambenchExecutable()
        let weights = dir.appendingPathComponent("tiny48.safetensors").path
        let train = try runSeparated(binary, ["train", "--image-size", "48", "--epochs", "1", "--train-size", "256", "--test-size", "1000",
                                              "--batch", "64", "--threads", "2", "--save", weights])
        XCTAssertEqual(train.status, 0, train.err)
        XCTAssertTrue(train.out.contains("sharpness over"), train.out)
        let lastEpoch = try XCTUnwrap(train.out.split(separator: "\n").last { $0.hasPrefix("train ") })
        let testAccuracy = try XCTUnwrap(lastEpoch.split(separator: " ").last { $0.hasSuffix("%") }.map { Double($0.dropLast())! })
        let eval = try runSeparated(binary, ["eval", "--checkpoint", weights, "--dataset", "synthetic", "--threads", "2", "--format", "json"])
        XCTAssertEqual(eval.status, 0, eval.err)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(eval.out.utf8)) as? [String: Any])
        let correct = try XCTUnwrap(json["correct"] as? Int)
        XCTAssertEqual(Double(correct) / 10, testAccuracy, accuracy: 0.005, "eval at the recorded 48x48 vs the run's last test accuracy")
        let text = try runSeparated(binary, ["eval", "--checkpoint", weights, "--dataset", "synthetic", "--threads", "2"])
        XCTAssertTrue(text.out.contains("resized bilinearly from 32x32 to 48x48"), text.out)
    }

    /// From the command line: `train --save`, `eval` of the saved file (the same test accuracy
    /// as the run's last epoch, its recorded normalization), and `--init` of another model's file
    /// refused with every mismatch listed before anything trains.
    func testEvalAndInitFromTheCommandLine() throws {
        let binary = try sambenchExecutable()
        let weights = dir.appendingPathComponent("tiny.safetensors").path
        let train = try runSeparated(binary, ["train", "--epochs", "2", "--train-size", "512", "--test-size", "1000", "--batch", "64",
                                              "--threads", "2", "--no-sharpness", "--save", weights])
        XCTAssertEqual(train.status, 0, train.err)
        let lastEpoch = try XCTUnwrap(train.out.split(separator: "\n").last { $0.hasPrefix("train ") })
        let testAccuracy = try XCTUnwrap(lastEpoch.split(separator: " ").last { $0.hasSuffix("%") }.map { Double($0.dropLast())! })

        let eval = try runSeparated(binary, ["eval", "--checkpoint", weights, "--dataset", "synthetic", "--threads", "2", "--format", "json"])
        XCTAssertEqual(eval.status, 0, eval.err)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(eval.out.utf8)) as? [String: Any])
        XCTAssertEqual(json["model"] as? String, "tiny")
        XCTAssertEqual(json["total"] as? Int, 1000)
        let correct = try XCTUnwrap(json["correct"] as? Int)
        XCTAssertEqual(Double(correct) / 10, testAccuracy, accuracy: 0.005, "eval vs the run's own last test accuracy")
        let confusion = try XCTUnwrap(json["confusion"] as? [[Int]])
        XCTAssertEqual(confusion.count, 10)
        XCTAssertEqual(confusion.joined().reduce(0, +), 1000)
        XCTAssertEqual((0..<10).map { confusion[$0][$0] }.reduce(0, +), correct)
        XCTAssertEqual((json["per_class"] as? [Double])?.count, 10)
        XCTAssertEqual(json["accuracy"] as? Double ?? -1, Double(correct) / 1000, accuracy: 1e-12)

        let text = try runSeparated(binary, ["eval", "--checkpoint", weights, "--dataset", "synthetic", "--threads", "2"])
        XCTAssertEqual(text.status, 0, text.err)
        XCTAssertTrue(text.out.contains("(the checkpoint's metadata)") && text.out.contains("confusion"), text.out)

        let wrong = try runSeparated(binary, ["train", "--model", "resnet8", "--init", weights, "--epochs", "1", "--train-size", "128",
                                              "--test-size", "32", "--batch", "64", "--threads", "2"])
        XCTAssertNotEqual(wrong.status, 0)
        for w in [weights, "does not fit model resnet8", "missing from the file", "layer1.0.conv1.weight",
                  "in the file but not in the model", "conv2.weight"] {
            XCTAssertTrue(wrong.err.contains(w), "the error does not mention '\(w)': \(wrong.err)")
        }
        XCTAssertFalse(wrong.out.contains("stage     epoch"), "training started: \(wrong.out)")

        let evalWrong = try runSeparated(binary, ["eval", "--checkpoint", weights, "--model", "resnet8", "--dataset", "synthetic"])
        XCTAssertNotEqual(evalWrong.status, 0)
        XCTAssertTrue(evalWrong.err.contains("does not fit model resnet8"), evalWrong.err)
    }
}
