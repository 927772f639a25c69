// The runner: its options, its summary, and the Runner that skips finished runs and starts the event loop.
import Foundation
import Store
import Suites
import Training

public struct RunnerOptions: Sendable {
    /// Runs trained at once, each in its own worker process.
    public var jobs = 1
    /// oneDNN threads per worker.
    public var threads = 1
    public var dataDir: String?
    /// Checkpoints go to `checkpointRoot/<key>/`, removed when the run is done unless kept.
    public var checkpointRoot = "results/checkpoints"
    public var keepCheckpoints = false
    /// A worker that reports nothing (no batch, epoch or result) for this long is ended and its
    /// run marked failed: a stopped (SIGSTOP) or hung worker must not stall the suite. Nil: never.
    public var stallTimeout: TimeInterval? = 1800
    /// The final weights of `[[pretrain]]` runs: `pretrainedRoot/<key>.safetensors`, kept (finetune
    /// runs of later invocations start from them).
    public var pretrainedRoot = "results/pretrained"
    /// The sambench executable that runs `sambench worker`.
    public var executable: String
    public var provenance: Provenance

    public init(executable: String, provenance: Provenance) {
        self.executable = executable
        self.provenance = provenance
    }
}

public struct RunSummary: Sendable {
    public var done = 0
    public var diverged = 0
    public var failed = 0
    public var interrupted = 0
    public var skipped = 0
    /// Left in the queue when the runner was stopped.
    public var notStarted = 0
    public var stopped = false
}

/// Runs suites: every run in a worker process (`jobs` at once), the runner the only writer to
/// the store. A run's epochs are stored as they finish; its checkpoint lets it resume after any
/// interruption. SIGINT/SIGTERM/SIGHUP end the workers and mark their runs interrupted; a second
/// signal kills them at once. Killed with SIGKILL, the runner takes its workers with it (they
/// die with their parent) and the next runner finds their runs `running` and resumes them.
public final class Runner {
    let store: Store
    let runs: [KeyedRun]
    let options: RunnerOptions
    let display: RunnerDisplay

    /// The runs some finetune run of `runs` starts from: their weights are saved.
    let pretrainKeys: Set<String>

    public init(store: Store, runs: [KeyedRun], options: RunnerOptions, display: RunnerDisplay) {
        self.store = store
        self.runs = runs
        self.options = options
        self.display = display
        pretrainKeys = Set(runs.compactMap(\.pretrainKey))
    }

    /// Relative cost of an epoch: a SAM step is two passes (LookSAM's one in k), times the
    /// method's passes per step.
    public static func cost(_ run: KeyedRun) -> Double {
        let c = run.spec.config
        return (c.optimizer.sam.map { 1 + 1 / Double($0.lookInterval) } ?? 1) * Methods.passesPerStep(c.method)
    }

    /// Skips the finished runs, then trains the others until the queue is empty or a signal
    /// stops it.
    public func run() throws -> RunSummary {
        let statuses = try store.statuses()
        var summary = RunSummary()
        var queue: [KeyedRun] = []
        for r in runs {
            if statuses[r.key]?.finished == true {
                summary.skipped += 1
                if !options.keepCheckpoints { try? FileManager.default.removeItem(atPath: checkpointDir(r.key)) }
            } else {
                queue.append(r)
            }
        }
        display.begin(total: runs.count, toRun: queue.count)
        guard !queue.isEmpty else {
            display.end(summary)
            return summary
        }
        var epochsDone: [String: Int] = [:]
        for r in queue { epochsDone[r.key] = 0 }
        for row in try store.runs() where epochsDone[row.key] != nil { epochsDone[row.key] = row.epochsDone }
        let loop = EventLoop(runner: self, queue: queue, summary: summary, epochsDone: epochsDone)
        return try loop.run()
    }

    func checkpointDir(_ key: String) -> String { (options.checkpointRoot as NSString).appendingPathComponent(key) }
    public func pretrainedWeights(_ key: String) -> String { (options.pretrainedRoot as NSString).appendingPathComponent("\(key).safetensors") }
}

