import Foundation
import GRDB
import Suites
#if canImport(Glibc)
import Glibc
#endif

/// Which copy `merge` keeps of a run finished in two databases with different results.
public enum MergePreference: String, Sendable, CaseIterable {
    /// The target's copy, or the earlier source's.
    case first
    /// The later source's copy.
    case last
}

/// A run finished in two databases with different results (two machines, two builds, or a
/// run edited by hand): its key and label, the two databases and what differs.
public struct MergeConflict: Sendable, CustomStringConvertible {
    public var key: String
    public var label: String
    public var first: String
    public var last: String
    public var difference: String

    public var description: String { "\(key) \(label): \(difference) (\(first) vs \(last))" }
}

/// One source's part in a merge, as planned.
public struct MergeSource: Sendable {
    public var path: String
    /// Runs new to the target.
    public var added = 0
    /// Finished runs that replace an unfinished copy (in the target or an earlier source).
    public var replaced = 0
    /// Runs already there: finished in the target (or an earlier source) with the same results,
    /// or unfinished in both.
    public var kept = 0
    /// Runs finished here and, with other results, in the target or an earlier source.
    public var conflicts = 0
    /// The source's runs by status.
    public var statuses: [RunStatus: Int] = [:]
    /// Its runs that have not finished: label, status and error.
    public var unfinished: [(label: String, status: RunStatus, error: String?)] = []
    /// A runner holds its writer lock now: merged as it stands.
    public var beingWritten = false
    /// Made by an older sambench (an older schema): read through a migrated copy.
    public var migrated = false
}

/// What `Store.planMerge` decided, read without writing anything: per source what it adds,
/// replaces and keeps, the conflicts, and which keys each source's copy wins. `Store.apply`
/// carries it out.
public final class MergePlan: @unchecked Sendable {
    public let target: String
    public internal(set) var sources: [MergeSource] = []
    public internal(set) var conflicts: [MergeConflict] = []
    public let prefer: MergePreference?
    /// Per source, the keys copied from it, applied in order (a key a later source wins is
    /// replaced again then): when a source's suite links are copied, every run they name is there.
    var take: [[String]] = []
    /// The paths attached for each source (a migrated temporary copy for an older one).
    var readPaths: [String] = []
    var temporaries: [String] = []

    init(target: String, prefer: MergePreference?) {
        self.target = target
        self.prefer = prefer
    }

    deinit {
        for t in temporaries {
            for suffix in ["", "-wal", "-shm", "-journal"] { try? FileManager.default.removeItem(atPath: t + suffix) }
        }
    }
}

public extension Store {
    /// Plans merging `sources` (shards run elsewhere) into the database at `target`, in that
    /// order, reading every database and writing none (the target need not exist). A run
    /// finished (done or diverged) in a source replaces an unfinished copy; one finished in two
    /// databases is compared (status, metrics, noise realisation, every epoch but its timings):
    /// equal copies are one run, different ones a conflict, which refuses the merge unless
    /// `prefer` says which copy to keep. Refused too: a source that is missing, not a sambench
    /// database, made by a newer sambench, the target itself, or keyed under another run-key
    /// version (other training semantics). Sources from an older sambench are read through a
    /// migrated temporary copy.
    static func planMerge(into target: String, from sources: [String], prefer: MergePreference? = nil) throws -> MergePlan {
        let plan = MergePlan(target: target, prefer: prefer)
        let targetFile = FileIdentity(target)
        // The target's reader (nil when it does not exist yet, or is the empty file the writer's
        // lock created for it), then each source's.
        var readers: [DatabasePool?] = []
        // Each key's copy so far: its status and where it is (-1 the target, else the source's index).
        var holders: [String: (status: RunStatus, holder: Int)] = [:]
        let targetSize = (try? FileManager.default.attributesOfItem(atPath: target)[.size] as? Int) ?? nil
        if let targetSize, targetSize > 0 {
            let t = try Store(path: target, readOnly: true)
            for row in try t.db.read({ try Row.fetchAll($0, sql: "SELECT key, status FROM runs") }) {
                holders[row["key"]] = (row["status"], -1)
            }
            readers.append(t.db)
        } else {
            readers.append(nil)
        }
        let all = Store.migrator.migrations
        for (i, path) in sources.enumerated() {
            guard FileManager.default.fileExists(atPath: path) else { throw StoreError("\(path): no such database; nothing was merged") }
            if let t = targetFile, FileIdentity(path) == t { throw StoreError("\(path) is the target database itself; nothing was merged") }
            var source = MergeSource(path: path)
            let store = try Store(path: path, readOnly: true)
            var reader = store.db
            let applied = try reader.read { try Store.migrator.appliedIdentifiers($0) }
            var readPath = path
            if applied != Set(all) {
                // Older (newer ones were refused when opened): a migrated copy, the source untouched.
                let copy = FileManager.default.temporaryDirectory.appendingPathComponent("sambench-merge-\(UUID().uuidString).sqlite").path
                plan.temporaries.append(copy)
                let queue = try DatabaseQueue(path: copy)
                try reader.backup(to: queue)
                try Store.migrator.migrate(queue)
                reader = try DatabasePool(path: copy, configuration: { var c = Configuration(); c.readonly = true; return c }())
                readPath = copy
                source.migrated = true
            }
            let versions = try reader.read { try Int.fetchAll($0, sql: "SELECT DISTINCT key_version FROM runs ORDER BY 1") }
            if let other = versions.first(where: { $0 != RunKey.version }) {
                throw StoreError("""
                    \(path): its runs were keyed under run-key version \(other) and this sambench's is \(RunKey.version): \
                    their training semantics differ, so they are not merged (merge them with the sambench that made them, \
                    or run them again with this one); nothing was merged
                    """)
            }
            source.beingWritten = WriterLock.isHeld(database: path)
            if let why = try reader.read({ try Store.danglingReference(in: $0) }) {
                throw StoreError("\(path): \(why): a sambench database keeps these whole; nothing was merged")
            }
            readers.append(reader)
            var take: Set<String> = []
            for row in try reader.read({ try Row.fetchAll($0, sql: "SELECT key, status, label, error FROM runs ORDER BY rowid") }) {
                // Checked before anything of the row is decoded (a crafted value must not trap a
                // decode) or copied (the report would print it).
                guard case let .string(key) = (row["key"] as DatabaseValue).storage else {
                    throw StoreError("\(path): a run whose key is \(row["key"] as DatabaseValue), not text: no run of sambench stores this; nothing was merged")
                }
                if let why = try reader.read({ try Store.implausibility(ofRun: key, in: $0) }) {
                    throw StoreError("\(path): run \(key): \(why): no run of sambench stores this; nothing was merged")
                }
                let status: RunStatus = row["status"], label: String = row["label"]
                source.statuses[status, default: 0] += 1
                if !status.finished { source.unfinished.append((label, status, row["error"])) }
                guard let had = holders[key] else {
                    source.added += 1
                    holders[key] = (status, i)
                    take.insert(key)
                    continue
                }
                if !had.status.finished && status.finished {
                    source.replaced += 1
                } else if had.status.finished && status.finished {
                    let mine = try readers[had.holder + 1]!.read { try Store.results(of: key, in: $0) }
                    let theirs = try reader.read { try Store.results(of: key, in: $0) }
                    guard let difference = Store.difference(mine, theirs) else {
                        source.kept += 1
                        continue
                    }
                    source.conflicts += 1
                    plan.conflicts.append(MergeConflict(key: key, label: label, first: had.holder < 0 ? target : sources[had.holder],
                                                        last: path, difference: difference))
                    if prefer != .last { continue }
                } else {
                    source.kept += 1
                    continue
                }
                holders[key] = (status, i)
                take.insert(key)
            }
            plan.sources.append(source)
            plan.readPaths.append(readPath)
            plan.take.append(take.sorted())
        }
        if !plan.conflicts.isEmpty && prefer == nil {
            let shown = plan.conflicts.prefix(20).map { "  \($0)" }.joined(separator: "\n")
            let more = plan.conflicts.count > 20 ? "\n  ... and \(plan.conflicts.count - 20) more" : ""
            throw StoreError("""
                \(plan.conflicts.count) runs are finished in two databases with different results:
                \(shown)\(more)
                Nothing was merged. Two copies of one run key should be identical; they differ when the shards ran on \
                different machines (other CPU kernels) or builds. Keep one copy with --prefer first (the target's, or the \
                earlier source's) or --prefer last (the later source's).
                """)
        }
        return plan
    }

    /// Carries out a plan made for this database: one transaction per source, so an error
    /// leaves every source merged or not, never half. Returns the suites each source added.
    @discardableResult
    func apply(_ plan: MergePlan) throws -> [Int] {
        try explainingErrors { try db.writeWithoutTransaction { db in
            var suites: [Int] = []
            for (i, path) in plan.readPaths.enumerated() {
                try db.execute(sql: "ATTACH DATABASE ? AS src", arguments: [path])
                defer { try? db.execute(sql: "DETACH DATABASE src") }
                // A constraint the plan's checks did not foresee is the source's doing: say which.
                do { try db.inTransaction {
                    // A run's row is replaced while its suite links point at it: checked at commit.
                    try db.execute(sql: "PRAGMA defer_foreign_keys = ON")
                    let before = try Int.fetchOne(db, sql: "SELECT count(*) FROM main.suites")!
                    try db.execute(sql: """
                        INSERT OR IGNORE INTO main.suites (name, description, path, text, sha256, added_at)
                        SELECT name, description, path, text, sha256, added_at FROM src.suites ORDER BY id
                        """)
                    suites.append(try Int.fetchOne(db, sql: "SELECT count(*) FROM main.suites")! - before)
                    for key in plan.take[i] {
                        for table in ["epochs", "noise", "metrics", "sample_losses"] {
                            try db.execute(sql: "DELETE FROM main.\(table) WHERE run_key = ?", arguments: [key])
                        }
                        try db.execute(sql: "DELETE FROM main.runs WHERE key = ?", arguments: [key])
                        try db.execute(sql: "INSERT INTO main.runs SELECT * FROM src.runs WHERE key = ?", arguments: [key])
                        for table in ["epochs", "noise", "metrics", "sample_losses"] {
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
                } } catch let e as DatabaseError where e.resultCode == .SQLITE_CONSTRAINT {
                    throw StoreError("""
                        \(plan.sources[i].path): its rows break a constraint of \(plan.target) (SQLite: \(e.message ?? "\(e)")); \
                        nothing of it was merged\(i > 0 ? " (the sources before it were)" : "")
                        """)
                }
            }
            return suites
        } }
    }

    /// Plans and applies in one go (see `planMerge`); throws where the plan is refused.
    @discardableResult
    func merge(from sources: [String], prefer: MergePreference? = nil) throws -> MergePlan {
        let plan = try Store.planMerge(into: path, from: sources, prefer: prefer)
        try apply(plan)
        return plan
    }

    /// What two copies of a finished run must agree on: its status, metrics, noise realisation
    /// and epochs (all but their timings, which differ between machines and runs).
    internal static func results(of key: String, in db: Database) throws -> [(part: String, rows: [Row])] {
        let epochs = "stage, epoch, lr, train_loss, train_accuracy, perturbed_loss, corrupted_noisy_accuracy, corrupted_clean_accuracy, " +
            "validation_loss, validation_accuracy, test_loss, test_accuracy, forget_rate, selection_precision, peer_selection_precision, peer_test_accuracy"
        let noise = "kind, selection, seed, target_rate, realised_rate, corrupted, classes, transition, labels_sha256"
        return [
            ("runs", try Row.fetchAll(db, sql: "SELECT status, diverged_step, diverged_epoch FROM runs WHERE key = ?", arguments: [key])),
            ("metrics", try Row.fetchAll(db, sql: "SELECT * FROM metrics WHERE run_key = ?", arguments: [key])),
            ("noise", try Row.fetchAll(db, sql: "SELECT \(noise) FROM noise WHERE run_key = ?", arguments: [key])),
            ("epochs", try Row.fetchAll(db, sql: "SELECT \(epochs) FROM epochs WHERE run_key = ? ORDER BY stage, epoch", arguments: [key])),
        ]
    }

    /// The first difference between two runs' results, and how many values differ; nil when equal.
    internal static func difference(_ a: [(part: String, rows: [Row])], _ b: [(part: String, rows: [Row])]) -> String? {
        var first: String?
        var count = 0
        for (x, y) in zip(a, b) {
            if x.rows.count != y.rows.count {
                count += 1
                first = first ?? "\(x.part): \(x.rows.count) rows vs \(y.rows.count)"
                continue
            }
            for (r, s) in zip(x.rows, y.rows) where r != s {
                for column in r.columnNames {
                    let (u, v): (DatabaseValue, DatabaseValue) = (r[column], s[column])
                    guard u != v else { continue }
                    count += 1
                    let at = x.part == "epochs" ? " (\(r["stage"] as String) epoch \(r["epoch"] as Int))" : ""
                    first = first ?? "\(x.part).\(column)\(at) \(u) vs \(v)"
                }
            }
        }
        guard let first else { return nil }
        return count > 1 ? "\(first), and \(count - 1) more values differ" : first
    }
}
