// The run checkpoint's format: the progress record, the checksum, reading and checking a checkpoint.
import Datasets
import Engine
import Foundation
import Optim

extension Trainer {
    /// Where a run stands; saved with the weights after every epoch when checkpointing.
    struct Progress: Codable {
        var config: TrainConfig
        var stage: Stage
        var completedEpochs: Int
        var iteration: Int
        var firstLoss: Double?
        var history: [EpochMetrics]
        /// Stages finished before this one.
        var finished: [StageResult]
        var relabelled: Int?
    }

    static let progressKey = "sambench.progress"
    /// The bootstrap stage's training labels (the first stage's predictions), in its checkpoints.
    static let bootstrapLabelsKey = "bootstrap.labels"

    /// The epochs a checkpoint has recorded, by stage (for a caller that must not lose any of them).
    public static func history(inCheckpoint path: String) throws -> [(stage: Stage, metrics: EpochMetrics)] {
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

}

extension StageRun {
    /// Writes the checkpoint (when the run has one) after `completedEpochs` epochs.
    func save(completedEpochs epoch: Int) throws {
        guard let checkpoint else { return }
        let progress = Trainer.Progress(config: config, stage: stage, completedEpochs: epoch, iteration: iteration, firstLoss: firstLoss,
                                        history: history, finished: finished, relabelled: relabelled)
        var tensors = Checkpoint.tensors(of: trainer.state).merging(step.optimizerTensors()) { a, _ in a }
        if let peer { tensors.merge(peer.tensors()) { a, _ in a } }
        if stage == .bootstrap { tensors[Trainer.bootstrapLabelsKey] = SafetensorsTensor(int64s: data.trainLabels.map { Int64($0) }) }
        let json = String(decoding: try JSONEncoder().encode(progress), as: UTF8.self)
        try SafetensorsFile(tensors: tensors, metadata: [Trainer.progressKey: json, Trainer.checksumKey: Trainer.checksum(tensors: tensors, progress: json),
                                                         "model": trainer.model.name, "format": "pt"]).write(to: checkpoint, halfWritten: trainer.checkpointHalfWritten)
    }
}
