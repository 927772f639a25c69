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
        history(try readCheckpoint(path).0)
    }

    static func history(_ progress: Progress) -> [(stage: Stage, metrics: EpochMetrics)] {
        progress.finished.flatMap { s in s.epochs.map { (s.stage, $0) } } + progress.history.map { (progress.stage, $0) }
    }

    /// The epochs this run's checkpoint at `path` has recorded, by stage, once it is checked in
    /// full against this run (`checkedCheckpoint`): what a worker stores before it resumes.
    public func checkedHistory(inCheckpoint path: String) throws -> [(stage: Stage, metrics: EpochMetrics)] {
        Trainer.history(try checkedCheckpoint(path).0)
    }

    /// This run's checkpoint at `path`, read and checked in full before anything of it is used: its
    /// bytes (`readCheckpoint`), its configuration (another one's is an error: remove the file or
    /// run that configuration), then everything a checksum cannot vouch for (`problem`), which
    /// makes it a `CorruptCheckpoint`: the run starts again from scratch, never retried into the
    /// same failure.
    func checkedCheckpoint(_ path: String) throws -> (Progress, SafetensorsFile) {
        let (progress, file) = try Trainer.readCheckpoint(path)
        guard progress.config == config else {
            throw EngineError("\(path): made by another configuration; remove it or run that configuration")
        }
        if let problem = problem(progress, file) {
            throw CorruptCheckpoint(description: "\(path): \(problem): not a checkpoint this run writes")
        }
        return (progress, file)
    }

    /// What a checkpoint with a valid checksum may still get wrong for this run (crafted, or
    /// written by a broken build), nil when nothing: the stages in order; the epochs, iteration and
    /// first loss a run of this configuration and data reaches; every recorded number finite and in
    /// range; each network's weights and BN statistics (loaded strictly into a scratch state, see
    /// `Checkpoint.load`), its step count and the optimizer buffers its steps must have made;
    /// ELR's targets; a bootstrap stage's labels.
    func problem(_ p: Progress, _ file: SafetensorsFile) -> String? {
        let perEpoch = data.trainIndices.count / config.batchSize
        switch p.stage {
        case .train:
            if !p.finished.isEmpty { return "a progress record with a train stage after \(p.finished.count) finished stages" }
        case .bootstrap:
            guard config.bootstrap, p.finished.count == 1, p.finished[0].stage == .train, p.finished[0].status == .done,
                  p.finished[0].epochs.map(\.epoch) == Array(1...config.epochs) else {
                return "a progress record with a bootstrap stage but not the whole train stage finished before it"
            }
        }
        guard (0...config.epochs).contains(p.completedEpochs), p.iteration == p.completedEpochs * perEpoch,
              p.history.map(\.epoch) == Array(0..<p.completedEpochs).map({ $0 + 1 }) else {
            return "a progress record no run of this configuration writes: \(p.completedEpochs) epochs completed of \(config.epochs), " +
                "iteration \(p.iteration) (\(perEpoch) per epoch), \(p.history.count) epochs recorded"
        }
        for m in p.finished.flatMap(\.epochs) + p.history {
            if let why = m.implausibility { return "a progress record with an epoch no run records: \(why)" }
        }
        if p.iteration > 0, !(p.firstLoss.map { $0.isFinite && $0 >= 0 } ?? false) {
            return "a progress record with the first loss \(p.firstLoss.map { "\($0)" } ?? "missing"), expected a finite loss >= 0"
        }
        if let r = p.relabelled, !(0...data.cleanTrainLabels.count).contains(r) {
            return "a progress record with \(r) labels relabelled of \(data.cleanTrainLabels.count)"
        }
        if let why = networkProblem(file, prefix: "", iteration: p.iteration) { return why }
        if config.method?.name == "coteaching", let why = networkProblem(file, prefix: CoTeachingPeer.prefix, iteration: p.iteration) { return why }
        if config.method?.name == "elr" {
            let shape = [data.cleanTrainLabels.count, data.classes]
            guard let t = file[ELR.stateName], t.dtype == .F32, t.shape == shape else { return "no \(ELR.stateName) F32 \(shape)" }
            if t.floats.contains(where: { !($0 >= 0 && $0 <= 1) }) { return "\(ELR.stateName) has values outside [0, 1]" }
        }
        if p.stage == .bootstrap {
            guard let t = file[Trainer.bootstrapLabelsKey], t.dtype == .I64, t.shape == [data.cleanTrainLabels.count] else {
                return "no \(Trainer.bootstrapLabelsKey) I64 [\(data.cleanTrainLabels.count)]"
            }
            if let bad = t.int64s.first(where: { !(0..<Int64(data.classes)).contains($0) }) {
                return "\(Trainer.bootstrapLabelsKey) has the label \(bad), outside the \(data.classes) classes"
            }
        }
        return nil
    }

    /// One network's part of a checkpoint (tensor names under `prefix`): weights and statistics
    /// that load strictly, the step count `iteration`, the momentum buffer once a step with
    /// momentum was taken, LookSAM's state exactly for LookSAM runs.
    private func networkProblem(_ file: SafetensorsFile, prefix: String, iteration: Int) -> String? {
        var own: [String: SafetensorsTensor] = [:]
        for (k, v) in file.tensors where k.hasPrefix(prefix) { own[String(k.dropFirst(prefix.count))] = v }
        do {
            try Checkpoint.load(into: ModelState(model: model, seed: 0), file: SafetensorsFile(tensors: own), source: "its \(prefix.isEmpty ? "" : "second ")network",
                                allowUnexpected: true)
        } catch { return "\(error)" }
        guard let count = own["optimizer.step_count"], count.dtype == .I64, count.elementCount == 1 else { return "no \(prefix)optimizer.step_count" }
        guard count.int64s[0] == Int64(iteration) else { return "\(prefix)optimizer.step_count \(count.int64s[0]) after \(iteration) steps" }
        let n = model.parameterCount
        func vector(_ name: String, required: Bool) -> String? {
            guard let t = own[name] else { return required ? "no \(prefix)\(name) after \(iteration) steps" : nil }
            guard t.dtype == .F32, t.shape == [n] else { return "\(prefix)\(name) is \(t.dtype) \(t.shape), expected F32 [\(n)]" }
            if t.floats.contains(where: { !($0.isFinite && abs($0) <= Checkpoint.maxMagnitude) }) { return "\(prefix)\(name) has non-finite or huge values" }
            return nil
        }
        if let why = vector("optimizer.momentum_buffer", required: iteration > 0 && config.sgd.momentum > 0) { return why }
        let lookSAM = (config.optimizer.sam?.lookInterval ?? 1) > 1
        if !lookSAM, own["optimizer.looksam_orthogonal"] != nil { return "a LookSAM state, but this run is not LookSAM" }
        if lookSAM, let why = vector("optimizer.looksam_orthogonal", required: iteration > 0) { return why }
        return nil
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
