// What a run produces: its stages, their status, per-epoch metrics and end-of-stage measurements.
import Foundation

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

extension EpochMetrics {
    /// What no epoch of a run can record, nil when nothing: an epoch number below 1, a loss, time
    /// or rate that is not finite (or negative where it cannot be), an accuracy or share outside
    /// [0, 1]. For numbers read back from a file (a checkpoint, a merged database).
    public var implausibility: String? {
        if epoch < 1 { return "epoch number \(epoch)" }
        let finite: [(String, Double?)] = [("lr", Double(lr)), ("train loss", trainLoss), ("perturbed loss", perturbedLoss),
                                           ("validation loss", validationLoss), ("test loss", testLoss)]
        for (name, v) in finite where v.map({ !$0.isFinite }) ?? false { return "\(name) \(v!)" }
        if lr < 0 { return "learning rate \(lr)" }
        for (name, v) in [("seconds", seconds), ("images per second", imagesPerSecond)] where !(v.isFinite && v >= 0) { return "\(name) \(v)" }
        let shares: [(String, Double?)] = [("train accuracy", trainAccuracy), ("memorised", corruptedNoisyAccuracy),
                                           ("corrupted clean accuracy", corruptedCleanAccuracy), ("validation accuracy", validationAccuracy),
                                           ("test accuracy", testAccuracy), ("forget rate", forgetRate), ("selection precision", selectionPrecision),
                                           ("peer selection precision", peerSelectionPrecision), ("peer test accuracy", peerTestAccuracy)]
        for (name, v) in shares where v.map({ !(0...1).contains($0) }) ?? false { return "\(name) \(v!), outside [0, 1]" }
        return nil
    }
}

/// How a stage of a run ended (the store's `RunStatus` adds the states of a run not yet ended).
public enum StageStatus: Sendable, Codable, Equatable {
    case done
    /// Loss not finite, or above `divergenceFactor` x the first step's loss, at this step.
    case diverged(step: Int, epoch: Int, loss: Double?)

    public var name: String { if case .done = self { "done" } else { "diverged" } }
}

/// The stages of a run, in order: `train` (every run), then `bootstrap` when asked for (a fresh
/// model trained on the first one's predictions). Stored by name (`rawValue`) in checkpoints and
/// the database.
public enum Stage: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    case train, bootstrap
    public var description: String { rawValue }
}

/// One stage of a run and how it ended.
public struct StageResult: Sendable, Codable, Equatable {
    public var stage: Stage
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

