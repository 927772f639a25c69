// The worker process: one run trained, its progress reported to the runner as JSON lines.
import Datasets
import Engine
import CProcess
import Foundation
import Suites
import Training
#if canImport(Glibc)
import Glibc
#endif

/// What the runner asks a worker process to do: one run.
public struct WorkerJob: Codable, Sendable {
    public var key: String
    public var spec: RunSpec
    public var dataDir: String?
    public var checkpoint: String
    public var threads: Int
    /// The runner's pid: the worker exits when its parent is gone.
    public var parent: Int32
    /// A `[[pretrain]]` run: where its final weights go when it ends done (before it reports so).
    public var saveWeights: String?
    /// The data identity the run's key was made with (checksums of its dataset and label files):
    /// data that changed since is refused, never trained under the old key.
    public var dataIdentity: String?
}

/// What a worker tells the runner, one JSON object per line on its standard output.
public enum WorkerMessage: Codable, Sendable {
    /// Data prepared; the noise realisation (nil without noise) and the epochs a checkpoint
    /// already holds (re-sent so that none is lost if the runner died before storing it).
    case started(noise: NoiseRealisation?, clean: [Int32]?, resumed: [ResumedEpoch])
    case epoch(stage: Stage, metrics: EpochMetrics)
    case batch(stage: Stage, epoch: Int, done: Int, total: Int)
    case finished(RunResult)
    case failed(String)
    /// Something the user must hear that does not end the run (a corrupt checkpoint set aside).
    case warning(String)

    public struct ResumedEpoch: Codable, Sendable {
        public var stage: Stage
        public var metrics: EpochMetrics
    }
}

/// The worker side: trains one run, checkpointing every epoch, and reports on stdout.
public enum Worker {
    public static func run(_ job: WorkerJob) -> Int32 {
        // Die with the runner, whatever kills it (SIGKILL included); the checkpoint is the state.
        _ = sambench_die_with_parent()
        if getppid() != job.parent { return 1 }
        // Ctrl-C reaches the whole process group: the runner decides, and ends us with SIGTERM.
        signal(SIGINT, SIG_IGN)
        EngineThreads.set(job.threads)
        do {
            let dir = (job.checkpoint as NSString).deletingLastPathComponent
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            var data = try DataPreparation.prepare(job.spec.data, dataDir: job.dataDir)
            if let expected = job.dataIdentity {
                let now = try DataIdentity(dataDir: job.dataDir).of(job.spec.data)
                guard now == expected else {
                    throw DataError("""
                        the data changed since this suite was resolved (now \(now), the run's key names \(expected)): \
                        run the suite again; runs on the new data get new keys and results stored on the old data stay apart
                        """)
                }
            }
            let halfWritten = plantFault(&data)
            let trainer = try Trainer(config: job.spec.config, data: data)
            trainer.checkpointHalfWritten = halfWritten
            var resumed: [WorkerMessage.ResumedEpoch] = []
            var warning: String?
            if FileManager.default.fileExists(atPath: job.checkpoint) {
                do {
                    resumed = try trainer.checkedHistory(inCheckpoint: job.checkpoint).map { .init(stage: $0.stage, metrics: $0.metrics) }
                } catch let corrupt as Trainer.CorruptCheckpoint {
                    // Retrying would fail the same way forever: the file is kept aside for a
                    // look, beside the run's folder (which goes when the run is done), and the run
                    // starts again from scratch (its epochs are stored anew).
                    let aside = Self.asidePath(for: job)
                    try FileManager.default.moveItem(atPath: job.checkpoint, toPath: aside)
                    warning = "\(corrupt); moved to \(aside), and the run starts again from scratch"
                }
            }
            try send(.started(noise: data.noise, clean: data.noise == nil ? nil : data.cleanTrainLabels, resumed: resumed))
            if let warning { try send(.warning(warning)) }
            var lastBatch = Date.distantPast
            let result = try trainer.run(checkpoint: job.checkpoint, onEpoch: { stage, m in
                try send(.epoch(stage: stage, metrics: m))
            }, onBatch: { stage, epoch, done, total in
                guard Date().timeIntervalSince(lastBatch) >= 0.5 else { return }
                lastBatch = Date()
                // Progress only: a runner that is gone is found at the next epoch's report.
                try? send(.batch(stage: stage, epoch: epoch, done: done, total: total))
            })
            if let path = job.saveWeights, result.status == .done {
                try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                try trainer.saveWeights(to: path, extra: ["sambench_run_key": job.key])
            }
            try send(.finished(result))
            return 0
        } catch is RunnerGone {
            return 1
        } catch {
            try? send(.failed("\(error)"))
            return 1
        }
    }

    /// The runner closed our standard output: nobody is left to store what we train.
    struct RunnerGone: Error {}

    /// Fault injection for the regression gate's own tests (docs/CI.md): with
    /// SAMBENCH_FAULT=noise-to-one-class, every corrupted training label becomes class 0, as a
    /// broken noise model would make it. The run's key and stored noise realisation are
    /// unchanged, as they would be for a real bug.
    ///
    /// For the reliability tests (docs/RELIABILITY.md), SAMBENCH_FAULT=kill-in-checkpoint-write:N
    /// kills the worker (SIGKILL) half way through writing its N-th checkpoint: the hook returned
    /// is the trainer's `checkpointHalfWritten`.
    static func plantFault(_ data: inout PreparedData) -> (() -> Void)? {
        let fault = ProcessInfo.processInfo.environment["SAMBENCH_FAULT"] ?? ""
        if fault.hasPrefix("kill-in-checkpoint-write:"), let n = Int(fault.dropFirst("kill-in-checkpoint-write:".count)) {
            var writes = 0
            return {
                writes += 1
                if writes == n { kill(getpid(), SIGKILL) }
            }
        }
        if fault == "noise-to-one-class" {
            for i in data.trainLabels.indices where data.trainLabels[i] != data.cleanTrainLabels[i] { data.trainLabels[i] = 0 }
        }
        return nil
    }

    /// Where a corrupt checkpoint of the job's run is kept: `<checkpoints>/<key>.corrupt.safetensors`
    /// beside the run's folder (numbered when one is there already), so that removing the folder
    /// of a finished run keeps it.
    static func asidePath(for job: WorkerJob) -> String {
        let root = ((job.checkpoint as NSString).deletingLastPathComponent as NSString).deletingLastPathComponent
        var path = (root as NSString).appendingPathComponent("\(job.key).corrupt.safetensors")
        var n = 1
        while FileManager.default.fileExists(atPath: path) {
            n += 1
            path = (root as NSString).appendingPathComponent("\(job.key).corrupt-\(n).safetensors")
        }
        return path
    }

    static func send(_ message: WorkerMessage) throws {
        var line = try! JSONEncoder().encode(message)
        line.append(0x0A)
        try line.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(STDOUT_FILENO, raw.baseAddress! + offset, raw.count - offset)
                if n <= 0 { if errno == EINTR { continue }; throw RunnerGone() }
                offset += n
            }
        }
    }
}
