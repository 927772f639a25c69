import Foundation
import GRDB

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
    public init(path: String, create: Bool = true, readOnly: Bool = false) throws {
        self.path = path
        let exists = FileManager.default.fileExists(atPath: path)
        if !exists && (readOnly || !create) {
            throw StoreError("\(path): no results database here (run a suite first: `sambench run SUITE`, or pass --db)")
        }
        if !exists {
            let dir = (path as NSString).deletingLastPathComponent
            if !dir.isEmpty { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
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
            if try db.read({ try Store.migrator.hasBeenSuperseded($0) }) {
                throw StoreError("\(path): written by a newer sambench (unknown migrations); upgrade sambench to use it")
            }
            if !readOnly { try Store.migrator.migrate(db) }
        } catch let e as StoreError {
            throw e
        } catch let e as DatabaseError {
            throw StoreError("\(path): \(e.message ?? "\(e)") (not a sambench results database, or damaged)")
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
        return m
    }

    /// `PRAGMA integrity_check` ("ok" when sound).
    public func integrityCheck() throws -> String {
        try db.read { try String.fetchAll($0, sql: "PRAGMA integrity_check").joined(separator: "; ") }
    }

    static func now() -> String { ISO8601DateFormatter().string(from: Date()) }
}
