import Datasets
import Foundation
import GRDB
import Suites
import Training

/// Where a run stands. Stored as the raw value; `finished` is defined here and only here.
public enum RunStatus: String, Sendable, Codable, CodingKeyRepresentable, CaseIterable, CustomStringConvertible, DatabaseValueConvertible {
    case pending, running, done, failed, diverged, interrupted

    /// Ended with a result: trained to the end (`done`) or stopped as diverged. Neither is run again.
    public var finished: Bool { self == .done || self == .diverged }

    public var description: String { rawValue }

    public init(_ stage: StageStatus) {
        switch stage { case .done: self = .done; case .diverged: self = .diverged }
    }
}

/// A run of a suite with its keys (see `RunKey.Keys`): what `register` stores.
public struct KeyedRun: Sendable {
    public var spec: RunSpec
    public var identity: String
    public var keys: RunKey.Keys

    public var key: String { keys.key }
    public var group: String { keys.group }
    public var setting: String { keys.setting }
    /// finetune: the key of the `[[pretrain]]` run it starts from.
    public let pretrainKey: String?

    public init(spec: RunSpec, identity: String) {
        self.init(spec: spec, identity: identity, keys: RunKey.keys(spec, identity: identity))
    }

    /// With its keys computed already (`RunKey.keys` of many runs at once).
    public init(spec: RunSpec, identity: String, keys: RunKey.Keys) {
        self.spec = spec
        self.identity = identity
        self.keys = keys
        pretrainKey = RunKey.pretrainKey(spec, identity: identity)
    }
}

/// Where a run stands, for `sambench runs` and the runner.
public struct RunRow: Sendable, Codable, Equatable {
    public var key: String
    public var group: String
    public var setting: String
    /// Its group's label (unique per group in the database, see `GroupLabels`) and its seed.
    public var label: String
    public var seed: UInt64
    /// Every axis of the run (see `Axes`), by name.
    public var axes: [String: String]
    public var status: RunStatus
    public var epochs: Int
    public var epochsDone: Int
    public var attempts: Int
    public var lastTestAccuracy: Double?
    public var bestTestAccuracy: Double?
    public var valTestAccuracy: Double?
    public var lastMemorised: Double?
    public var trainSeconds: Double?
    public var error: String?
}

/// Who is writing: stored with each run.
public struct Provenance: Sendable {
    public var host: String
    public var version: String
    public var gitRevision: String?
    public var threads: Int

    public init(host: String, version: String, gitRevision: String?, threads: Int) {
        self.host = host
        self.version = version
        self.gitRevision = gitRevision
        self.threads = threads
    }
}

public extension Store {
    /// Stores the suite (once per distinct text) and its runs (once per key: a key another suite
    /// already asked for is linked, not duplicated), in one transaction. Returns the suite's id.
    @discardableResult
    func register(suite: Suite, runs: [KeyedRun]) throws -> Int64 {
        let sha = SHA256Hex.digest(Array(suite.text.utf8))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try write { db in
            try SuiteRecord(name: suite.name, description: suite.description, path: suite.file, text: suite.text, sha256: sha, addedAt: Store.now())
                .insert(db, onConflict: .ignore)
            let id = try Int64.fetchOne(db, sql: "SELECT id FROM suites WHERE sha256 = ?", arguments: [sha])!
            let now = Store.now()
            for (position, r) in runs.enumerated() {
                let s = r.spec
                let config = String(decoding: try encoder.encode(s), as: UTF8.self)
                try RunRecord(key: r.key, groupKey: r.group, settingKey: r.setting, label: s.label, task: s.task.rawValue, dataset: s.data.dataset.rawValue,
                              model: s.config.model, optimizer: s.optimizer.rawValue, rho: s.config.optimizer.sam.map { decimal($0.rho) },
                              noiseKind: s.data.noise.kind.rawValue, noiseRate: s.data.noise.rate, noiseLabels: s.data.noise.labelsFile?.description,
                              seed: Int64(s.config.seed), epochs: s.config.epochs, batchSize: s.config.batchSize, lr: decimal(s.config.lr),
                              weightDecay: decimal(s.config.sgd.weightDecay), trainSubset: s.data.trainSubset, validation: s.data.validationFraction,
                              config: config, dataIdentity: r.identity, createdAt: now, keyVersion: RunKey.version)
                    .insert(db, onConflict: .ignore)
                try db.execute(sql: "INSERT OR IGNORE INTO suite_runs (suite_id, run_key, position) VALUES (?, ?, ?)",
                               arguments: [id, r.key, position])
            }
            return id
        }
    }

    /// The status of every stored run, by key.
    func statuses() throws -> [String: RunStatus] {
        try db.read { db in
            Dictionary(uniqueKeysWithValues: try Row.fetchAll(db, sql: "SELECT key, status FROM runs").map { ($0["key"], $0["status"]) })
        }
    }

    /// Runs left `running` by a runner that did not end cleanly (killed, machine down) become
    /// `interrupted`: they resume from their checkpoint. Only the lock holder may call this.
    @discardableResult
    func recoverStaleRuns() throws -> Int {
        try write { db in
            try db.execute(sql: "UPDATE runs SET status = ? WHERE status = ?", arguments: [RunStatus.interrupted, RunStatus.running])
            return db.changesCount
        }
    }

    func markRunning(_ key: String, provenance p: Provenance) throws {
        try write { db in
            try db.execute(sql: """
                UPDATE runs SET status = ?, attempts = attempts + 1, started_at = coalesce(started_at, ?), error = NULL,
                    host = ?, sambench_version = ?, git_revision = ?, threads = ? WHERE key = ?
                """, arguments: [RunStatus.running, Store.now(), p.host, p.version, p.gitRevision, p.threads, key])
        }
    }

    /// The realised noise: its rate, transition matrix and the labels themselves (uint8 each).
    func recordNoise(_ key: String, _ n: NoiseRealisation, clean: [Int32]) throws {
        let transition = String(decoding: try JSONEncoder().encode(n.transition), as: UTF8.self)
        let corrupted = zip(n.labels, clean).filter { $0 != $1 }.count
        let blob = Data(n.labels.map { UInt8(truncatingIfNeeded: $0) })
        try write { db in
            try NoiseRecord(runKey: key, kind: n.spec.kind.rawValue, selection: n.spec.selection.rawValue, seed: Int64(n.spec.seed),
                            targetRate: n.spec.rate, realisedRate: n.realisedRate, corrupted: corrupted, classes: n.transition.count,
                            transition: transition, labelsSha256: n.labelsSHA256, labels: blob)
                .insert(db, onConflict: .replace)
        }
    }

    /// One finished epoch (idempotent: the same epoch written twice is one row).
    func recordEpoch(_ key: String, stage: Stage, _ m: EpochMetrics) throws {
        try write { db in
            try insertEpoch(db, key, stage, m)
            try db.execute(sql: "UPDATE runs SET epochs_done = (SELECT count(*) FROM epochs WHERE run_key = ?) WHERE key = ?", arguments: [key, key])
        }
    }

    /// A worker's start: the run's stored epochs become exactly those its checkpoint holds (none
    /// when it starts from scratch), so that epochs of an earlier attempt the checkpoint no longer
    /// has (a checkpoint deleted or set aside) are never mixed with the new ones.
    func replaceEpochs(_ key: String, with epochs: [(stage: Stage, metrics: EpochMetrics)]) throws {
        try write { db in
            try db.execute(sql: "DELETE FROM epochs WHERE run_key = ?", arguments: [key])
            for e in epochs { try insertEpoch(db, key, e.stage, e.metrics) }
            try db.execute(sql: "UPDATE runs SET epochs_done = ? WHERE key = ?", arguments: [epochs.count, key])
        }
    }

    /// The run's end: every epoch (again, idempotently), the final metrics and the status, in one
    /// transaction.
    func finish(_ key: String, result: RunResult) throws {
        try write { db in
            for stage in result.stages { for m in stage.epochs { try insertEpoch(db, key, stage.stage, m) } }
            let last = result.stages.last!
            var divergedStep: Int?, divergedEpoch: Int?
            if case let .diverged(step, epoch, _) = last.status { (divergedStep, divergedEpoch) = (step, epoch) }
            let seconds = result.stages.flatMap(\.epochs).map(\.seconds).reduce(0, +)
            try db.execute(sql: """
                UPDATE runs SET status = ?, finished_at = ?, train_seconds = ?, diverged_step = ?, diverged_epoch = ?, error = NULL,
                    epochs_done = (SELECT count(*) FROM epochs WHERE run_key = ?) WHERE key = ?
                """, arguments: [RunStatus(last.status), Store.now(), seconds, divergedStep, divergedEpoch, key, key])
            try db.execute(sql: "DELETE FROM metrics WHERE run_key = ?", arguments: [key])
            try db.execute(sql: "DELETE FROM sample_losses WHERE run_key = ?", arguments: [key])
            guard let final = last.epochs.last else { return }
            let best = last.epochs.max { $0.testAccuracy < $1.testAccuracy }!
            let val = last.epochs.filter { $0.validationAccuracy != nil }.max { $0.validationAccuracy! < $1.validationAccuracy! }
            let d = last.detection
            try MetricsRecord(runKey: key, stage: last.stage.rawValue, lastEpoch: final.epoch, lastTestAccuracy: final.testAccuracy,
                              lastTestLoss: final.testLoss, lastTrainAccuracy: final.trainAccuracy, lastMemorised: final.corruptedNoisyAccuracy,
                              lastCorruptedClean: final.corruptedCleanAccuracy, bestEpoch: best.epoch, bestTestAccuracy: best.testAccuracy,
                              valEpoch: val?.epoch, valAccuracy: val?.validationAccuracy, valTestAccuracy: val?.testAccuracy,
                              mSharpness: last.sharpness?.mSharpness, hessianTop: last.sharpness?.topHessianEigenvalue, relabelled: last.relabelled,
                              testConfusion: try last.confusion.map { String(decoding: try JSONEncoder().encode($0), as: UTF8.self) },
                              detectionSamples: d?.samples, detectionCorrupted: d?.corrupted, detectionAuroc: d?.auroc,
                              detectionPrecision: d?.precisionAtNoise)
                .insert(db)
            guard let d else { return }
            let insert = try db.makeStatement(sql: "INSERT INTO sample_losses (run_key, sample, given, truth, loss) VALUES (?, ?, ?, ?, ?)")
            for i in d.indices.indices {
                try insert.execute(arguments: [key, d.indices[i], Int(d.given[i]), Int(d.truth[i]), Double(d.losses[i])])
            }
        }
    }

    func markFailed(_ key: String, error: String) throws {
        try write { db in
            try db.execute(sql: "UPDATE runs SET status = ?, error = ?, finished_at = ? WHERE key = ?",
                           arguments: [RunStatus.failed, error, Store.now(), key])
        }
    }

    func markInterrupted(_ key: String) throws {
        try write { db in
            try db.execute(sql: "UPDATE runs SET status = ? WHERE key = ? AND status = ?", arguments: [RunStatus.interrupted, key, RunStatus.running])
        }
    }

    /// Runs with their status and results, in suite order, labelled from their configurations.
    func runs() throws -> [RunRow] {
        try db.read { db in
            let rows = try Row.fetchAll(db, sql: """
                SELECT r.*,
                       m.last_test_accuracy, m.best_test_accuracy, m.val_test_accuracy, m.last_memorised
                FROM runs r LEFT JOIN metrics m ON m.run_key = r.key
                ORDER BY (SELECT min(suite_id * 1000000 + position) FROM suite_runs s WHERE s.run_key = r.key), r.created_at, r.key
                """)
            let specs = try rows.map { try Store.spec(of: $0, in: path) }
            let keys = zip(rows, specs).map { Store.keys(of: $0, spec: $1) }
            let labels = GroupLabels.make(zip(specs, keys).map { GroupLabels.Item(spec: $0, group: $1.group, setting: $1.setting, family: $1.family) })
            return rows.indices.map { i in
                let r = rows[i], spec = specs[i], k = keys[i]
                return RunRow(key: k.key, group: k.group, setting: k.setting, label: labels[k.group]!.group,
                       seed: spec.config.seed, axes: Axes.values(spec), status: r["status"], epochs: r["epochs"], epochsDone: r["epochs_done"],
                       attempts: r["attempts"], lastTestAccuracy: r["last_test_accuracy"], bestTestAccuracy: r["best_test_accuracy"],
                       valTestAccuracy: r["val_test_accuracy"], lastMemorised: r["last_memorised"], trainSeconds: r["train_seconds"],
                       error: r["error"])
            }
        }
    }

    /// A Float as the Double of its shortest decimal (0.05, not 0.0500000007450581), so that
    /// `rho = 0.05` in SQL finds it.
    private func decimal(_ f: Float) -> Double { Double("\(f)") ?? Double(f) }

    private func insertEpoch(_ db: Database, _ key: String, _ stage: Stage, _ m: EpochMetrics) throws {
        try EpochRecord(runKey: key, stage: stage.rawValue, epoch: m.epoch, lr: decimal(m.lr), trainLoss: m.trainLoss, trainAccuracy: m.trainAccuracy,
                        perturbedLoss: m.perturbedLoss, corruptedNoisyAccuracy: m.corruptedNoisyAccuracy, corruptedCleanAccuracy: m.corruptedCleanAccuracy,
                        validationLoss: m.validationLoss, validationAccuracy: m.validationAccuracy, testLoss: m.testLoss, testAccuracy: m.testAccuracy,
                        seconds: m.seconds, imagesPerSecond: m.imagesPerSecond, forgetRate: m.forgetRate, selectionPrecision: m.selectionPrecision,
                        peerSelectionPrecision: m.peerSelectionPrecision, peerTestAccuracy: m.peerTestAccuracy)
            .insert(db, onConflict: .replace)
    }
}
