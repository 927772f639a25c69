// Noisy-label detection: how well the final model's per-sample loss picks out the corrupted samples.
import Datasets
import Engine
import Foundation

/// How well a trained model's per-sample loss separates the training samples whose label the
/// noise corrupted from the clean ones: the quantity sample-selection methods (Co-teaching's
/// small-loss trick) live on. Measured once, after the run's last epoch, in eval mode and
/// without augmentation, on every training sample (the validation split excluded) against the
/// label it was trained on (the noisy one).
public struct NoisyLabelDetection: Sendable, Codable, Equatable {
    /// Training samples scored, and how many of them the noise corrupted.
    public var samples: Int
    public var corrupted: Int
    /// The probability that a corrupted sample's loss exceeds a clean one's, ties counted half
    /// (the Mann-Whitney statistic, equal to scikit-learn's `roc_auc_score(corrupted, loss)`);
    /// nil when either class is empty (a run without noise has nothing to detect).
    /// A loss that is not finite is stored as the largest float (it ranks first).
    public var auroc: Double?
    /// Of the `corrupted` samples with the largest losses, the share that are corrupted (ties
    /// broken by the lower sample index first); nil without corrupted samples.
    public var precisionAtNoise: Double?
    /// Per sample, in `indices` order: its index in the training images, the label it was
    /// trained on, its true label, its loss (cross-entropy against the given label).
    public var indices: [Int]
    public var given: [Int32]
    public var truth: [Int32]
    public var losses: [Float]

    /// A sample is corrupted where its given label is not its true one.
    public init(indices: [Int], given: [Int32], truth: [Int32], losses: [Float]) {
        precondition(indices.count == losses.count && losses.count == given.count && given.count == truth.count)
        (self.indices, self.given, self.truth, self.losses) = (indices, given, truth, losses)
        let isCorrupted = zip(given, truth).map { $0 != $1 }
        samples = losses.count
        corrupted = isCorrupted.filter { $0 }.count
        auroc = Self.auroc(scores: losses.map(Double.init), positive: isCorrupted)
        precisionAtNoise = Self.precisionAtK(scores: losses.map(Double.init), positive: isCorrupted, k: corrupted)
    }

    /// AUROC of `scores` for `positive` from average ranks (ties share their mean rank):
    /// (sum of the positives' ranks - P(P+1)/2) / (P N). nil when P or N is 0; a NaN score
    /// ranks above every number (a sample the model cannot score is flagged).
    public static func auroc(scores: [Double], positive: [Bool]) -> Double? {
        let p = positive.filter { $0 }.count, n = positive.count - p
        guard p > 0, n > 0 else { return nil }
        let order = scores.indices.sorted { key(scores[$0]) < key(scores[$1]) }
        var rankSum = 0.0
        var i = 0
        while i < order.count {
            var j = i
            while j + 1 < order.count, key(scores[order[j + 1]]) == key(scores[order[i]]) { j += 1 }
            let mean = Double(i + j) / 2 + 1  // ranks from 1
            for k in i...j where positive[order[k]] { rankSum += mean }
            i = j + 1
        }
        return (rankSum - Double(p) * Double(p + 1) / 2) / (Double(p) * Double(n))
    }

    /// The share of positives among the `k` highest scores (ties: lower position first).
    public static func precisionAtK(scores: [Double], positive: [Bool], k: Int) -> Double? {
        guard k > 0 else { return nil }
        let top = scores.indices.sorted { key(scores[$0]) != key(scores[$1]) ? key(scores[$0]) > key(scores[$1]) : $0 < $1 }.prefix(k)
        return Double(top.filter { positive[$0] }.count) / Double(top.count)
    }

    private static func key(_ v: Double) -> Double { v.isNaN ? .infinity : v }

    /// The detection of the model behind `evaluator` on `data`'s training samples.
    static func measure(_ evaluator: BatchEvaluator, data: PreparedData) -> NoisyLabelDetection {
        let indices = data.trainIndices, c = evaluator.executor.model.numClasses
        var losses = [Float](repeating: 0, count: indices.count)
        evaluator.forEachBatch(images: data.trainImages, indices: indices) { logits, n, start in
            for r in 0..<n {
                let row = logits + r * c
                let l = Float(LossRows.logSumExp(row, c) - Double(row[Int(data.trainLabels[indices[start + r]])]))
                // A sample the model cannot score (overflowing logits) ranks first; JSON has no inf or NaN.
                losses[start + r] = l.isFinite ? l : .greatestFiniteMagnitude
            }
        }
        return NoisyLabelDetection(indices: indices, given: indices.map { data.trainLabels[$0] },
                                   truth: indices.map { data.cleanTrainLabels[$0] }, losses: losses)
    }
}
