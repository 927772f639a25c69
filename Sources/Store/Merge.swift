import Foundation
import GRDB

public struct MergeCounts: Sendable, Equatable {
    /// Runs new to the target.
    public var added = 0
    /// Runs the target had unfinished and the source had finished.
    public var updated = 0
    /// Runs the target already had finished (or had and the source had not finished).
    public var kept = 0
    public var suites = 0
}

public extension Store {
    /// Merges another results database (a shard run elsewhere) into this one, in one
    /// transaction: suites by text, runs by key. A run finished (done or diverged) in either
    /// database is taken from one that finished it, with its epochs, noise and metrics; nothing is
    /// duplicated, and merging the same source twice changes nothing.
    func merge(from source: String) throws -> MergeCounts {
        // Validates the source without writing to it.
        let src = try Store(path: source, readOnly: true)
        let (mine, theirs) = (try db.read { try Store.migrator.appliedIdentifiers($0) }, try src.db.read { try Store.migrator.appliedIdentifiers($0) })
        guard mine == theirs else { throw StoreError("\(source): made by another sambench version (schema differs); open it with this one first") }
        return try db.writeWithoutTransaction { db in
            try db.execute(sql: "ATTACH DATABASE ? AS src", arguments: [source])
            defer { try? db.execute(sql: "DETACH DATABASE src") }
            var c = MergeCounts()
            try db.inTransaction {
                let before = try Int.fetchOne(db, sql: "SELECT count(*) FROM main.suites")!
                try db.execute(sql: """
                    INSERT OR IGNORE INTO main.suites (name, description, path, text, sha256, added_at)
                    SELECT name, description, path, text, sha256, added_at FROM src.suites ORDER BY id
                    """)
                c.suites = try Int.fetchOne(db, sql: "SELECT count(*) FROM main.suites")! - before
                let keys = try Row.fetchAll(db, sql: """
                    SELECT s.key, m.status AS mine, s.status AS theirs FROM src.runs s LEFT JOIN main.runs m ON m.key = s.key
                    """)
                for row in keys {
                    let key: String = row["key"]
                    let mine: RunStatus? = row["mine"], theirs: RunStatus = row["theirs"]
                    if mine == nil {
                        c.added += 1
                    } else if !mine!.finished && theirs.finished {
                        c.updated += 1
                    } else {
                        c.kept += 1
                        continue
                    }
                    for table in ["epochs", "noise", "metrics"] {
                        try db.execute(sql: "DELETE FROM main.\(table) WHERE run_key = ?", arguments: [key])
                    }
                    try db.execute(sql: "DELETE FROM main.runs WHERE key = ?", arguments: [key])
                    try db.execute(sql: "INSERT INTO main.runs SELECT * FROM src.runs WHERE key = ?", arguments: [key])
                    for table in ["epochs", "noise", "metrics"] {
                        try db.execute(sql: "INSERT INTO main.\(table) SELECT * FROM src.\(table) WHERE run_key = ?", arguments: [key])
                    }
                    // A run another process left running is resumable, not running, here.
                    try db.execute(sql: "UPDATE main.runs SET status = ? WHERE key = ? AND status = ?",
                                   arguments: [RunStatus.interrupted, key, RunStatus.running])
                }
                try db.execute(sql: """
                    INSERT OR IGNORE INTO main.suite_runs (suite_id, run_key, position)
                    SELECT m.id, sr.run_key, sr.position FROM src.suite_runs sr
                    JOIN src.suites s ON s.id = sr.suite_id JOIN main.suites m ON m.sha256 = s.sha256
                    """)
                return .commit
            }
            return c
        }
    }
}
