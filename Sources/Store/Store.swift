import Engine
import Foundation
import GRDB
import Suites
import Training

public struct StoreError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The results database: SQLite through GRDB in WAL mode, with append-only migrations (a
/// migration, once released, is never edited; changes come as new ones). docs/STORE.md
/// documents the schema. One process writes (the runner, or merge, holding `WriterLock`); any
/// number may read.
public final class Store: @unchecked Sendable {
    public let path: String
    let db: DatabasePool

    /// Opens (creating when `create`) and migrates the database. Read-only opens never migrate
    /// or create anything.
    /// A database path that is there but not a file (a directory, a FIFO, which opening would
    /// block on, a link to a device) is refused saying what it is, before anything opens it.
    static func refuseOtherThanAFile(_ path: String) throws {
        if let what = OutputFile.otherThanAFile(path) {
            throw StoreError("\(path) is \(what), not a results database: pass --db a file (new or made by sambench)")
        }
    }

    public init(path: String, create: Bool = true, readOnly: Bool = false) throws {
        self.path = path
        try Store.refuseOtherThanAFile(path)
        let exists = FileManager.default.fileExists(atPath: path)
        if !exists && (readOnly || !create) {
            throw StoreError("\(path): no results database here (run a suite first: `sambench run SUITE`, or pass --db)")
        }
        if !exists {
            let dir = (path as NSString).deletingLastPathComponent
            if !dir.isEmpty { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        }
        if readOnly, (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) == 0 {
            throw StoreError("\(path): an empty file (0 bytes), no results yet: a runner fills it (`sambench run SUITE --db \(path)`)")
        }
        var config = Configuration()
        config.busyMode = .timeout(30)
        config.readonly = readOnly
        do {
            db = try DatabasePool(path: path, configuration: config)
            let (applied, tables) = try db.read { db in
                (try Store.migrator.appliedIdentifiers(db), try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master WHERE type = 'table'") ?? 0)
            }
            if applied.isEmpty && tables > 0 { throw StoreError("\(path): not a sambench results database (it has other tables)") }
            // Readers do not create the schema. A copy of a database a runner is writing, taken with
            // `cp`, can hold no tables at all: what is not yet checkpointed lives in its -wal file.
            if readOnly && applied.isEmpty {
                throw StoreError("\(path): an SQLite database with no tables, so no results. A copy of a database that a runner is "
                    + "writing, taken with `cp`, looks like this (recent writes live in its -wal file): copy one with "
                    + "`sqlite3 DB \".backup COPY\"`, or read the database itself")
            }
            if try db.read({ try Store.migrator.hasBeenSuperseded($0) }) {
                throw StoreError("\(path): written by a newer sambench (unknown migrations); upgrade sambench to use it")
            }
            if !readOnly {
                try Store.migrator.migrate(db)
                try db.write { try Store.refreshSettingsView($0) }
            }
        } catch let e as StoreError {
            throw e
        } catch let e as DatabaseError {
            throw Store.explain(e, path: path, opening: true, readOnly: readOnly)
        }
    }

    /// A write in one transaction, its SQLite errors said in words (see `explain`).
    func write<T>(_ body: (Database) throws -> T) throws -> T {
        try explainingErrors { try db.write(body) }
    }

    func explainingErrors<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as DatabaseError { throw Store.explain(e, path: path, opening: false, readOnly: false) }
    }

    /// What an SQLite error means for the user: a full disk, a read-only file system or file, a
    /// file that is not a database. A failed write leaves the database as it was before that
    /// transaction (SQLite's journal), which the messages say.
    static func explain(_ e: DatabaseError, path: String, opening: Bool, readOnly: Bool) -> StoreError {
        let sqlite = e.message ?? "\(e)"
        let dir = (path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent
        var fs = statvfs()
        let known = statvfs(dir, &fs) == 0
        let readOnlyFS = known && fs.f_flag & UInt(ST_RDONLY) != 0
        let freeBytes = known ? UInt64(fs.f_bavail) * UInt64(fs.f_frsize) : nil
        let kept = opening ? "" : " The write that failed was not kept; everything stored before it is intact, and running the suite again resumes."
        if readOnlyFS && [ResultCode.SQLITE_READONLY, .SQLITE_CANTOPEN, .SQLITE_PERM, .SQLITE_IOERR].contains(e.resultCode) {
            let how = readOnly
                ? "SQLite needs to create \((path as NSString).lastPathComponent)-shm beside a WAL database even to read it; copy the database to a writable folder"
                : "a runner writes the database and SQLite's -wal and -shm files beside it; pass a --db on a writable file system"
            return StoreError("\(path): on a read-only file system: \(how).\(kept) (SQLite: \(sqlite))")
        }
        // SQLite says "disk I/O error", not "full", when it cannot grow its -shm or -wal file.
        if e.resultCode == .SQLITE_FULL || e.resultCode == .SQLITE_IOERR && (freeBytes ?? .max) < 1 << 20 {
            let free = freeBytes.map { " (\($0 / 1024) KiB free)" } ?? ""
            return StoreError("\(path): the disk is full\(free).\(kept) Free some space or pass another --db. (SQLite: \(sqlite))")
        }
        switch e.resultCode {
        case .SQLITE_READONLY, .SQLITE_PERM:
            return StoreError("\(path): not writable (permissions of the file or its folder \(dir)).\(kept) (SQLite: \(sqlite))")
        case .SQLITE_CANTOPEN:
            return StoreError("\(path): cannot be opened (is \(dir) a writable folder?) (SQLite: \(sqlite))")
        case .SQLITE_IOERR:
            return StoreError("\(path): input/output error (a full or failing disk?).\(kept) (SQLite: \(sqlite))")
        case .SQLITE_NOTADB, .SQLITE_CORRUPT:
            return StoreError("\(path): not a sambench results database, or damaged (SQLite: \(sqlite))")
        default:
            return StoreError("\(path): \(sqlite)\(opening ? " (not a sambench results database, or damaged)" : "")")
        }
    }

    /// Append-only: add migrations at the end, never edit a released one.
    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1: suites, runs, epochs, noise, metrics") { db in
            try db.execute(sql: """
                CREATE TABLE suites (
                    id INTEGER PRIMARY KEY,
                    name TEXT NOT NULL,
                    description TEXT NOT NULL,
                    path TEXT NOT NULL,
                    text TEXT NOT NULL,
                    sha256 TEXT NOT NULL UNIQUE,
                    added_at TEXT NOT NULL
                );
                CREATE TABLE runs (
                    key TEXT PRIMARY KEY,
                    group_key TEXT NOT NULL,
                    label TEXT NOT NULL,
                    task TEXT NOT NULL,
                    dataset TEXT NOT NULL,
                    model TEXT NOT NULL,
                    optimizer TEXT NOT NULL,
                    rho REAL,
                    noise_kind TEXT NOT NULL,
                    noise_rate REAL NOT NULL,
                    noise_labels TEXT,
                    seed INTEGER NOT NULL,
                    epochs INTEGER NOT NULL,
                    batch_size INTEGER NOT NULL,
                    lr REAL NOT NULL,
                    weight_decay REAL NOT NULL,
                    train_subset INTEGER,
                    validation REAL NOT NULL,
                    config TEXT NOT NULL,
                    data_identity TEXT NOT NULL,
                    status TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'running', 'done', 'failed', 'diverged', 'interrupted')),
                    attempts INTEGER NOT NULL DEFAULT 0,
                    epochs_done INTEGER NOT NULL DEFAULT 0,
                    created_at TEXT NOT NULL,
                    started_at TEXT,
                    finished_at TEXT,
                    train_seconds REAL,
                    host TEXT,
                    sambench_version TEXT,
                    git_revision TEXT,
                    threads INTEGER,
                    error TEXT,
                    diverged_step INTEGER,
                    diverged_epoch INTEGER
                );
                CREATE INDEX runs_group ON runs(group_key);
                CREATE INDEX runs_status ON runs(status);
                CREATE TABLE suite_runs (
                    suite_id INTEGER NOT NULL REFERENCES suites(id),
                    run_key TEXT NOT NULL REFERENCES runs(key),
                    position INTEGER NOT NULL,
                    PRIMARY KEY (suite_id, run_key)
                );
                CREATE TABLE epochs (
                    run_key TEXT NOT NULL REFERENCES runs(key),
                    stage TEXT NOT NULL,
                    epoch INTEGER NOT NULL,
                    lr REAL NOT NULL,
                    train_loss REAL NOT NULL,
                    train_accuracy REAL NOT NULL,
                    perturbed_loss REAL,
                    corrupted_noisy_accuracy REAL,
                    corrupted_clean_accuracy REAL,
                    validation_loss REAL,
                    validation_accuracy REAL,
                    test_loss REAL NOT NULL,
                    test_accuracy REAL NOT NULL,
                    seconds REAL NOT NULL,
                    images_per_second REAL NOT NULL,
                    PRIMARY KEY (run_key, stage, epoch)
                );
                CREATE TABLE noise (
                    run_key TEXT PRIMARY KEY REFERENCES runs(key),
                    kind TEXT NOT NULL,
                    selection TEXT NOT NULL,
                    seed INTEGER NOT NULL,
                    target_rate REAL NOT NULL,
                    realised_rate REAL NOT NULL,
                    corrupted INTEGER NOT NULL,
                    classes INTEGER NOT NULL,
                    transition TEXT NOT NULL,
                    labels_sha256 TEXT NOT NULL,
                    labels BLOB NOT NULL
                );
                CREATE TABLE metrics (
                    run_key TEXT PRIMARY KEY REFERENCES runs(key),
                    stage TEXT NOT NULL,
                    last_epoch INTEGER NOT NULL,
                    last_test_accuracy REAL NOT NULL,
                    last_test_loss REAL NOT NULL,
                    last_train_accuracy REAL NOT NULL,
                    last_memorised REAL,
                    last_corrupted_clean REAL,
                    best_epoch INTEGER NOT NULL,
                    best_test_accuracy REAL NOT NULL,
                    val_epoch INTEGER,
                    val_accuracy REAL,
                    val_test_accuracy REAL,
                    m_sharpness REAL,
                    hessian_top REAL,
                    relabelled INTEGER
                );
                """)
        }
        m.registerMigration("v2: setting keys and the settings view") { db in
            // What SAM and SGD are paired on, stored beside the group key; filled from each run's
            // configuration for databases written before it.
            try db.execute(sql: "ALTER TABLE runs ADD COLUMN setting_key TEXT NOT NULL DEFAULT ''")
            for row in try Row.fetchAll(db, sql: "SELECT key, config, data_identity FROM runs") {
                let spec = try Store.spec(of: row, in: "the results database")
                try db.execute(sql: "UPDATE runs SET setting_key = ? WHERE key = ?",
                               arguments: [RunKey.keys(spec, identity: row["data_identity"]).setting, row["key"] as String])
            }
            try db.execute(sql: "CREATE INDEX runs_setting ON runs(setting_key)")
            try db.execute(sql: Store.settingsViewV2)
        }
        m.registerMigration("v3: finetune settings in the settings view") { db in
            try db.execute(sql: "DROP VIEW settings")
            try db.execute(sql: Store.settingsViewV3)
        }
        m.registerMigration("v4: the run-key version of each run") { db in
            // The training semantics a run was keyed under (`RunKey.version`): `merge` refuses
            // shards keyed under another. Every run stored before this migration was keyed under 1.
            try db.execute(sql: "ALTER TABLE runs ADD COLUMN key_version INTEGER NOT NULL DEFAULT 1")
        }
        m.registerMigration("v5: the test set's final confusion matrix") { db in
            // JSON rows (true class) of counts by predicted class; NULL for runs finished before it.
            try db.execute(sql: "ALTER TABLE metrics ADD COLUMN test_confusion TEXT")
        }
        m.registerMigration("v6: the training method and its parameters in the settings view") { db in
            try db.execute(sql: "DROP VIEW settings")
            try db.execute(sql: Store.settingsViewV6)
        }
        m.registerMigration("v7: noisy-label detection per run") { db in
            // How well the final model's per-sample loss separates the corrupted training samples
            // from the clean ones (Training's NoisyLabelDetection); NULL for runs finished before it.
            try db.execute(sql: """
                ALTER TABLE metrics ADD COLUMN detection_samples INTEGER;
                ALTER TABLE metrics ADD COLUMN detection_corrupted INTEGER;
                ALTER TABLE metrics ADD COLUMN detection_auroc REAL;
                ALTER TABLE metrics ADD COLUMN detection_precision REAL;
                CREATE TABLE sample_losses (
                    run_key TEXT NOT NULL REFERENCES runs(key),
                    sample INTEGER NOT NULL,
                    given INTEGER NOT NULL,
                    truth INTEGER NOT NULL,
                    loss REAL NOT NULL,
                    PRIMARY KEY (run_key, sample)
                ) WITHOUT ROWID;
                """)
        }
        m.registerMigration("v8: Co-teaching's per-epoch numbers") { db in
            // The epoch's forget rate, the label precision of each network's small-loss selection and
            // the second network's test accuracy; NULL for other methods and runs made before.
            try db.execute(sql: """
                ALTER TABLE epochs ADD COLUMN forget_rate REAL;
                ALTER TABLE epochs ADD COLUMN selection_precision REAL;
                ALTER TABLE epochs ADD COLUMN peer_selection_precision REAL;
                ALTER TABLE epochs ADD COLUMN peer_test_accuracy REAL;
                """)
        }
        return m
    }

    /// Recreates the `settings` view where the database's differs from this build's (a method
    /// parameter with a new name registered in `Methods.all`), so a new parameter is declared
    /// once, in that list, and needs no migration of its own. The view holds no data.
    static func refreshSettingsView(_ db: Database) throws {
        func normal(_ sql: String) -> String { sql.trimmingCharacters(in: .whitespacesAndNewlines.union(CharacterSet(charactersIn: ";"))) }
        let stored = try String.fetchOne(db, sql: "SELECT sql FROM sqlite_master WHERE type = 'view' AND name = 'settings'")
        guard stored.map(normal) != normal(settingsViewV6) else { return }
        try db.execute(sql: "DROP VIEW IF EXISTS settings")
        try db.execute(sql: settingsViewV6)
    }

    /// The v3 view with the training method (`ce` for runs without one) and a column per method
    /// parameter of `Methods.all` (NULL where the run's method has no such parameter); kept up
    /// to date with that list by `refreshSettingsView` whenever a database is opened for writing.
    static var settingsViewV6: String {
        let parameters = Methods.parameterNames.map { "json_extract(config, '$.config.method.parameters.\($0)') AS \($0)" }
        return settingsViewV3.replacingOccurrences(of: "\nFROM runs", with: ",\n    " + (["coalesce(json_extract(config, '$.config.method.name'), 'ce') AS method"] + parameters)
            .joined(separator: ",\n    ") + "\nFROM runs")
    }

    /// The v2 view with the settings finetune suites added (classes, pretrain, checkpoint,
    /// reinit_head, freeze_bn, freeze, image_size).
    static let settingsViewV3 = settingsViewV2.replacingOccurrences(of: "\nFROM runs", with: """
        ,
            json_extract(config, '$.data.classes') AS classes,
            coalesce(json_extract(config, '$.pretrain.name'),
                     CASE WHEN task = 'finetune' AND json_type(config, '$.config.initialWeights') IS NULL THEN 'none' END) AS pretrain,
            'sha256:' || substr(json_extract(config, '$.config.initialWeights.sha256'), 1, 12) AS checkpoint,
            CASE WHEN task = 'finetune' THEN coalesce(json_extract(config, '$.reinitHead'), 0) END AS reinit_head,
            CASE WHEN json_extract(config, '$.config.freezeBN') THEN 1 WHEN task = 'finetune' THEN 0 END AS freeze_bn,
            replace(json_extract(config, '$.config.freeze'), '"', '') AS freeze,
            json_extract(config, '$.config.imageSize') AS image_size
        FROM runs
        """)

    /// `settings`: one row per run with every axis a suite can sweep as a column, named as in
    /// suites (docs/STORE.md). A later migration that adds a setting replaces the view.
    static let settingsViewV2 = """
        CREATE VIEW settings AS SELECT
            key AS run_key, group_key, setting_key, label, status, task, seed,
            json_extract(config, '$.data.dataset') AS dataset,
            json_extract(config, '$.config.model') AS model,
            json_extract(config, '$.config.epochs') AS epochs,
            json_extract(config, '$.config.batchSize') AS batch_size,
            json_extract(config, '$.config.lr') AS lr,
            json_extract(config, '$.config.schedule') AS schedule,
            json_extract(config, '$.config.milestones') AS milestones,
            json_extract(config, '$.config.gamma') AS gamma,
            json_extract(config, '$.config.warmupEpochs') AS warmup_epochs,
            json_extract(config, '$.config.sgd.momentum') AS momentum,
            json_extract(config, '$.config.sgd.weightDecay') AS weight_decay,
            json_extract(config, '$.config.sgd.nesterov') AS nesterov,
            json_extract(config, '$.config.labelSmoothing') AS label_smoothing,
            json_extract(config, '$.config.dropout') AS dropout,
            json_extract(config, '$.config.augmentation.cropPadding') AS crop_padding,
            json_extract(config, '$.config.augmentation.flip') AS flip,
            json_extract(config, '$.config.augmentation.cutout') AS cutout,
            json_extract(config, '$.data.validationFraction') AS validation,
            CASE json_extract(config, '$.data.validationNoisy') WHEN 1 THEN 'noisy' ELSE 'clean' END AS validation_labels,
            json_extract(config, '$.data.trainSubset') AS subset,
            CASE json_extract(config, '$.data.subsetStratified') WHEN 1 THEN 'stratified' ELSE 'first' END AS subset_mode,
            json_extract(config, '$.data.testSubset') AS test_subset,
            CASE WHEN json_extract(config, '$.splitSeedFollowsRun') THEN NULL ELSE json_extract(config, '$.data.splitSeed') END AS split_seed,
            json_extract(config, '$.config.bootstrap') AS bootstrap,
            json_extract(config, '$.config.divergenceFactor') AS divergence_factor,
            json_type(config, '$.config.sharpness') IS 'object' AS sharpness,
            json_extract(config, '$.data.syntheticClasses') AS synthetic_classes,
            json_extract(config, '$.data.syntheticTrain') AS synthetic_train,
            json_extract(config, '$.data.syntheticTest') AS synthetic_test,
            json_extract(config, '$.data.syntheticSeed') AS synthetic_seed,
            json_extract(config, '$.data.noise.kind') AS noise,
            CASE WHEN json_extract(config, '$.data.noise.kind') IN ('none', 'human') THEN NULL
                 ELSE json_extract(config, '$.data.noise.rate') END AS noise_rate,
            CASE WHEN json_extract(config, '$.data.noise.kind') IN ('none', 'human') THEN NULL
                 ELSE json_extract(config, '$.data.noise.selection') END AS noise_selection,
            CASE WHEN json_extract(config, '$.data.noise.kind') = 'none' OR json_extract(config, '$.noiseSeedFollowsRun') THEN NULL
                 ELSE json_extract(config, '$.data.noise.seed') END AS noise_seed,
            CASE WHEN json_extract(config, '$.data.noise.kind') = 'instance' THEN json_extract(config, '$.data.noise.instanceStd') END AS noise_std,
            json_extract(config, '$.data.noise.labelsFile') AS noise_labels,
            coalesce(json_extract(config, '$.config.optimizer.sam._0.variant'), 'sgd') AS optimizer,
            json_extract(config, '$.config.optimizer.sam._0.rho') AS rho,
            CASE WHEN json_extract(config, '$.config.optimizer.sam._0.variant') = 'asam' THEN json_extract(config, '$.config.optimizer.sam._0.eta') END AS eta,
            json_extract(config, '$.config.optimizer.sam._0.perturbationGradient') AS gradient,
            json_extract(config, '$.config.optimizer.sam._0.bnPolicy') AS bn_policy,
            json_extract(config, '$.config.optimizer.sam._0.microBatch') AS micro_batch,
            json_extract(config, '$.config.optimizer.sam._0.lookInterval') AS look_interval,
            CASE WHEN json_extract(config, '$.config.optimizer.sam._0.lookInterval') > 1
                 THEN json_extract(config, '$.config.optimizer.sam._0.lookAlpha') END AS look_alpha
        FROM runs
        """

    /// `PRAGMA integrity_check` ("ok" when sound).
    public func integrityCheck() throws -> String {
        try db.read { try String.fetchAll($0, sql: "PRAGMA integrity_check").joined(separator: "; ") }
    }

    static func now() -> String { ISO8601DateFormatter().string(from: Date()) }
}
