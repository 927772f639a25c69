import Foundation
import GRDB
import Suites

/// A run as stored, with what a report needs: its configuration, status, final metrics, noise
/// realisation and per-epoch curve.
public struct StoredRun: Sendable {
    public var key: String
    public var group: String
    /// The setting key (the group with SGD as its optimizer), and the family and base keys
    /// computed from the stored configuration (see `RunKey.Keys`).
    public var setting: String
    public var family: String
    public var base: String
    public var label: String
    public var status: RunStatus
    public var spec: RunSpec
    public var identity: String
    public var epochsDone: Int
    public var error: String?
    public var metrics: Metrics?
    /// SHA-256 of the noisy labels (nil without noise, or before the run started).
    public var noiseLabels: String?
    public var realisedRate: Double?
    /// The last stage's epochs, in order.
    public var curve: [EpochPoint]
    /// The test set's confusion matrix after the last epoch (true class by predicted class).
    public var confusion: [[Int]]?
    /// Provenance, timings, noise and sharpness, for a report's per-run details.
    public var details = Details()

    public struct Details: Sendable {
        public var host: String?
        public var sambenchVersion: String?
        public var gitRevision: String?
        public var threads: Int?
        public var attempts = 0
        public var startedAt: String?
        public var finishedAt: String?
        public var trainSeconds: Double?
        /// The median over the last stage's epochs.
        public var imagesPerSecond: Double?
        public var noiseSelection: String?
        public var noiseSeed: Int64?
        public var corrupted: Int?
        public var mSharpness: Double?
        public var hessianTop: Double?
        public init() {}
    }

    /// A run whose stored keys are `keys` (the family and base keys come from it too).
    public init(keys: RunKey.Keys, label: String, status: RunStatus, spec: RunSpec, identity: String, epochsDone: Int,
                error: String?, metrics: Metrics?, noiseLabels: String?, realisedRate: Double?, curve: [EpochPoint]) {
        (key, group, setting, family, base) = (keys.key, keys.group, keys.setting, keys.family, keys.base)
        (self.label, self.status, self.spec, self.identity) = (label, status, spec, identity)
        (self.epochsDone, self.error, self.metrics, self.noiseLabels, self.realisedRate, self.curve) = (epochsDone, error, metrics, noiseLabels, realisedRate, curve)
    }

    public struct Metrics: Sendable {
        public var lastTestAccuracy: Double
        public var bestTestAccuracy: Double
        public var valTestAccuracy: Double?
        public var valAccuracy: Double?
        public var lastMemorised: Double?
        public var lastValidationAccuracy: Double?
        /// Noisy-label detection by the final model's per-sample loss (nil: no noise, or a run
        /// finished before it was measured): AUROC, and precision at the noise count.
        public var detectionAUROC: Double?
        public var detectionPrecision: Double?

        public init(lastTestAccuracy: Double, bestTestAccuracy: Double, valTestAccuracy: Double?, valAccuracy: Double?,
                    lastMemorised: Double?, lastValidationAccuracy: Double?) {
            (self.lastTestAccuracy, self.bestTestAccuracy, self.valTestAccuracy) = (lastTestAccuracy, bestTestAccuracy, valTestAccuracy)
            (self.valAccuracy, self.lastMemorised, self.lastValidationAccuracy) = (valAccuracy, lastMemorised, lastValidationAccuracy)
        }
    }

    public struct EpochPoint: Sendable, Codable, Equatable {
        public var epoch: Int
        public var testAccuracy: Double
        public var memorised: Double?
        public var validationAccuracy: Double?

        public init(epoch: Int, testAccuracy: Double, memorised: Double?, validationAccuracy: Double?) {
            (self.epoch, self.testAccuracy, self.memorised, self.validationAccuracy) = (epoch, testAccuracy, memorised, validationAccuracy)
        }
    }
}

extension Store {
    /// A `runs` row's configuration, decoded; an error names the database and the run.
    static func spec(of row: Row, in path: String) throws -> RunSpec {
        guard let spec = try? JSONDecoder().decode(RunSpec.self, from: Data((row["config"] as String).utf8)) else {
            throw StoreError("\(path): run \(row["key"] as String) has a configuration this sambench cannot read")
        }
        return spec
    }

    /// A `runs` row's keys: run, group and setting as stored, family and base from its
    /// configuration. A database opened read-only before migration v2 has no setting key stored;
    /// it is computed the same way.
    static func keys(of row: Row, spec: RunSpec) -> RunKey.Keys {
        var keys = RunKey.keys(spec, identity: row["data_identity"])
        (keys.key, keys.group) = (row["key"], row["group_key"])
        if row.hasColumn("setting_key") { keys.setting = row["setting_key"] }
        return keys
    }
}

public extension Store {
    /// The names of the stored suites, oldest first.
    func suiteNames() throws -> [String] {
        try db.read { try String.fetchAll($0, sql: "SELECT name FROM suites GROUP BY name ORDER BY min(id)") }
    }

    /// The newest stored text of each suite named (every suite when nil), oldest suite first.
    func suiteTexts(_ names: [String]? = nil) throws -> [(name: String, text: String)] {
        try db.read { db in
            try Row.fetchAll(db, sql: "SELECT name, text FROM suites WHERE id IN (SELECT max(id) FROM suites GROUP BY name) ORDER BY id")
                .map { (name: $0["name"] as String, text: $0["text"] as String) }
                .filter { names?.contains($0.name) ?? true }
        }
    }

    /// The runs of the suites called `suite` (every run when nil), in suite order.
    func storedRuns(suite: String? = nil) throws -> [StoredRun] {
        try db.read { db in
            // A database opened read-only is not migrated: one from before v5 has no confusion matrices.
            let columns = try db.columns(in: "metrics").map(\.name)
            let confusion = columns.contains("test_confusion") ? "m.test_confusion" : "NULL AS test_confusion"
            // ...and one from before v7 no detection.
            let detection = columns.contains("detection_auroc") ? "m.detection_auroc, m.detection_precision"
                : "NULL AS detection_auroc, NULL AS detection_precision"
            let rows = try Row.fetchAll(db, sql: """
                SELECT r.*, m.last_test_accuracy, m.best_test_accuracy, m.val_test_accuracy, m.val_accuracy, m.last_memorised,
                       m.stage AS metric_stage, m.last_epoch, \(confusion), \(detection), m.m_sharpness, m.hessian_top,
                       n.labels_sha256, n.realised_rate, n.selection AS noise_selection, n.seed AS noise_seed, n.corrupted,
                       (SELECT min(s.suite_id * 1000000 + s.position) FROM suite_runs s JOIN suites t ON t.id = s.suite_id
                        WHERE s.run_key = r.key AND (?1 IS NULL OR t.name = ?1)) AS position
                FROM runs r LEFT JOIN metrics m ON m.run_key = r.key LEFT JOIN noise n ON n.run_key = r.key
                WHERE position IS NOT NULL
                ORDER BY position
                """, arguments: [suite])
            return try rows.map { r in
                let key: String = r["key"]
                let spec = try Store.spec(of: r, in: path)
                let epochRows = try CurvePointRecord.fetchAll(db, sql: """
                    SELECT epoch, test_accuracy, corrupted_noisy_accuracy, validation_accuracy, images_per_second FROM epochs
                    WHERE run_key = ? AND stage = (SELECT stage FROM epochs WHERE run_key = ?1 ORDER BY stage = 'train' LIMIT 1)
                    ORDER BY epoch
                    """, arguments: [key])
                let curve = epochRows.map {
                    StoredRun.EpochPoint(epoch: $0.epoch, testAccuracy: $0.testAccuracy, memorised: $0.corruptedNoisyAccuracy,
                                         validationAccuracy: $0.validationAccuracy)
                }
                var metrics: StoredRun.Metrics?
                if let last = r["last_test_accuracy"] as Double? {
                    metrics = .init(lastTestAccuracy: last, bestTestAccuracy: r["best_test_accuracy"], valTestAccuracy: r["val_test_accuracy"],
                                    valAccuracy: r["val_accuracy"], lastMemorised: r["last_memorised"],
                                    lastValidationAccuracy: curve.last?.validationAccuracy)
                    (metrics!.detectionAUROC, metrics!.detectionPrecision) = (r["detection_auroc"], r["detection_precision"])
                }
                var run = StoredRun(keys: Store.keys(of: r, spec: spec), label: r["label"], status: r["status"], spec: spec,
                                    identity: r["data_identity"], epochsDone: r["epochs_done"], error: r["error"], metrics: metrics,
                                    noiseLabels: r["labels_sha256"], realisedRate: r["realised_rate"], curve: curve)
                if let json = r["test_confusion"] as String? {
                    guard let m = try? JSONDecoder().decode([[Int]].self, from: Data(json.utf8)) else {
                        throw StoreError("\(path): run \(key): the stored confusion matrix is not a JSON array of count rows")
                    }
                    run.confusion = m
                }
                var d = StoredRun.Details()
                (d.host, d.sambenchVersion, d.gitRevision, d.threads) = (r["host"], r["sambench_version"], r["git_revision"], r["threads"])
                (d.attempts, d.startedAt, d.finishedAt, d.trainSeconds) = (r["attempts"], r["started_at"], r["finished_at"], r["train_seconds"])
                let rates = epochRows.map(\.imagesPerSecond).sorted()
                d.imagesPerSecond = rates.isEmpty ? nil : rates[rates.count / 2]
                (d.noiseSelection, d.noiseSeed, d.corrupted) = (r["noise_selection"], r["noise_seed"], r["corrupted"])
                (d.mSharpness, d.hessianTop) = (r["m_sharpness"], r["hessian_top"])
                run.details = d
                return run
            }
        }
    }
}

/// One training sample as the final model of a run scored it (`sambench runs --samples`).
public struct SampleLoss: Sendable, Codable, Equatable {
    /// Its index in the training images.
    public var sample: Int
    /// The label it was trained on, and its true label.
    public var given: Int
    public var truth: Int
    public var corrupted: Bool
    /// Cross-entropy of the final model (eval mode) against the given label.
    public var loss: Double

    public init(sample: Int, given: Int, truth: Int, loss: Double) {
        (self.sample, self.given, self.truth, corrupted, self.loss) = (sample, given, truth, given != truth, loss)
    }
}

public extension Store {
    /// The per-sample losses stored for run `key` (prefix of a key accepted when unique), in
    /// sample order, with the full key; empty for a run finished before they were stored.
    func sampleLosses(run key: String) throws -> (key: String, samples: [SampleLoss]) {
        try db.read { db in
            let keys = try String.fetchAll(db, sql: "SELECT key FROM runs WHERE key = ? OR key LIKE ? || '%' ORDER BY key != ?", arguments: [key, key, key])
            guard let full = keys.first else { throw StoreError("\(path): no run with key \(key) (sambench runs lists them)") }
            guard keys.count == 1 || full == key else {
                throw StoreError("\(path): \(keys.count) runs have keys starting with \(key): \(keys.prefix(4).joined(separator: ", "))...; give more of it")
            }
            guard try db.tableExists("sample_losses") else { return (full, []) }
            let rows = try SampleLossRecord.filter(Column("run_key") == full).order(Column("sample")).fetchAll(db)
            return (full, rows.map { SampleLoss(sample: $0.sample, given: $0.given, truth: $0.truth, loss: $0.loss) })
        }
    }
}
