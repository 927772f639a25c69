import Datasets
import Engine
import Training
import XCTest

/// Noisy-label detection: the AUROC and precision at the noise count of a run's per-sample losses.
final class DetectionTests: XCTestCase {
    /// AUROC by its definition: over every (positive, negative) pair, 1 when the positive scores
    /// higher, 1/2 on a tie.
    func pairwise(_ scores: [Double], _ positive: [Bool]) -> Double {
        var wins = 0.0, pairs = 0.0
        for i in scores.indices where positive[i] {
            for j in scores.indices where !positive[j] {
                wins += scores[i] > scores[j] ? 1 : scores[i] == scores[j] ? 0.5 : 0
                pairs += 1
            }
        }
        return wins / pairs
    }

    func testAUROCByHandAndByDefinition() {
        // scikit-learn's documented example: roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75.
        XCTAssertEqual(NoisyLabelDetection.auroc(scores: [0.1, 0.4, 0.35, 0.8], positive: [false, false, true, true])!, 0.75, accuracy: 1e-15)
        // Ties count half: every score equal is chance.
        XCTAssertEqual(NoisyLabelDetection.auroc(scores: [1, 1, 1, 1], positive: [true, false, true, false])!, 0.5, accuracy: 1e-15)
        XCTAssertNil(NoisyLabelDetection.auroc(scores: [1, 2], positive: [false, false]), "no positive: nothing to detect")
        XCTAssertNil(NoisyLabelDetection.auroc(scores: [1, 2], positive: [true, true]))
        var rng = Xoshiro256(seed: 11)
        for trial in 0..<20 {
            let n = 5 + rng.nextInt(below: 200)
            // Few distinct values, so that ties are common; positives score higher on average.
            let positive = (0..<n).map { _ in rng.nextInt(below: 3) == 0 }
            let scores = positive.map { Double(rng.nextInt(below: 8) + ($0 ? 2 : 0)) / 4 }
            guard positive.contains(true), positive.contains(false) else { continue }
            XCTAssertEqual(NoisyLabelDetection.auroc(scores: scores, positive: positive)!, pairwise(scores, positive), accuracy: 1e-12, "trial \(trial)")
        }
    }

    func testPrecisionAtTheNoiseCount() {
        // The 2 largest are 0.9 (positive) and 0.8 (negative).
        XCTAssertEqual(NoisyLabelDetection.precisionAtK(scores: [0.9, 0.1, 0.8, 0.3], positive: [true, true, false, false], k: 2)!, 0.5)
        // A tie at the boundary goes to the lower position.
        XCTAssertEqual(NoisyLabelDetection.precisionAtK(scores: [0.5, 0.5, 0.1], positive: [false, true, true], k: 1)!, 0)
        XCTAssertNil(NoisyLabelDetection.precisionAtK(scores: [0.5], positive: [false], k: 0))
        let d = NoisyLabelDetection(indices: [4, 7, 9], given: [1, 2, 3], truth: [1, 5, 3], losses: [0.2, 3.0, 0.1])
        XCTAssertEqual(d.corrupted, 1)
        XCTAssertEqual(d.samples, 3)
        XCTAssertEqual(d.auroc, 1)
        XCTAssertEqual(d.precisionAtNoise, 1)
    }

    /// A run measures it on every training sample (the validation split excluded) against the
    /// noisy labels; each loss is the final model's cross-entropy, so their mean is the batch
    /// evaluator's loss on those samples; a run without noise has nothing to detect.
    func testARunMeasuresItOnTheTrainingSamples() throws {
        var spec = DataSpec()
        (spec.syntheticTrain, spec.syntheticTest, spec.syntheticSeed) = (640, 128, 5)
        spec.validationFraction = 0.1
        spec.noise = NoiseSpec(kind: .symmetric, rate: 0.4, seed: 1)
        let noisy = try DataPreparation.prepare(spec, dataDir: nil)
        var c = TrainConfig()
        (c.model, c.epochs, c.batchSize, c.lr, c.seed, c.sharpness) = ("tiny", 3, 64, 0.05, 3, nil)
        let trainer = try Trainer(config: c, data: noisy)
        let d = try XCTUnwrap(try trainer.run().stages.last!.detection)
        XCTAssertEqual(d.indices, noisy.trainIndices)
        XCTAssertEqual(d.given, noisy.trainIndices.map { noisy.trainLabels[$0] })
        XCTAssertEqual(d.truth, noisy.trainIndices.map { noisy.cleanTrainLabels[$0] })
        XCTAssertEqual(d.corrupted, noisy.trainIndices.filter { noisy.trainLabels[$0] != noisy.cleanTrainLabels[$0] }.count)
        XCTAssertGreaterThan(d.corrupted, 150)
        let ex = try DNNLExecutor(state: trainer.state, batchSize: 64, training: false)
        let mean = BatchEvaluator(executor: ex, normalization: noisy.normalization)
            .lossAndAccuracy(images: noisy.trainImages, indices: noisy.trainIndices, labels: noisy.trainLabels).loss
        XCTAssertEqual(d.losses.map(Double.init).reduce(0, +) / Double(d.samples), mean, accuracy: 1e-5 * mean)
        XCTAssertEqual(d.auroc!, pairwise(d.losses.map(Double.init), zip(d.given, d.truth).map { $0 != $1 }), accuracy: 1e-12)

        spec.noise = NoiseSpec(kind: .none)
        let clean = try Trainer(config: c, data: try DataPreparation.prepare(spec, dataDir: nil)).run().stages.last!.detection!
        XCTAssertEqual(clean.corrupted, 0)
        XCTAssertNil(clean.auroc)
        XCTAssertNil(clean.precisionAtNoise)
    }
}
