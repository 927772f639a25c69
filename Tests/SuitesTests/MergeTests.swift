import Datasets
import Foundation
import GRDB
import TestSupport
import XCTest

/// `sambench merge` as a cluster user meets it: unfinished copies in the target, two shards that
/// disagree, shards of other training semantics or an older sambench, the same merge twice. A
/// refused merge must leave the target as it was (or absent).
final class MergeTests: XCTestCase {
    var binary: URL!
    var dir: URL!

    override func setUpWithError() throws {
        binary = try sambenchExecutable()
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("merge-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try RunnerTests.suite.write(to: dir.appendingPathComponent("s.toml"), atomically: true, encoding: .utf8)
        // The whole suite, trained once: every test derives its databases from this one.
        let r = try runSeparated(binary, ["run", path("s.toml"), "--db", path("full.sqlite"), "--checkpoints", path("ck"), "--threads", "1", "--quiet"])
        XCTAssertEqual(r.status, 0, r.err)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    func copy(_ from: String, _ to: String) throws {
        try FileManager.default.copyItem(atPath: path(from), toPath: path(to))
    }

    func sql(_ db: String, _ statements: String) throws {
        // Outside a transaction, so that `PRAGMA foreign_keys = OFF` can break a link as a hand edit does.
        try DatabaseQueue(path: path(db)).writeWithoutTransaction { try $0.execute(sql: statements) }
    }

    func merge(_ sources: [String], into: String, _ extra: [String] = []) throws -> (status: Int32, out: String, err: String) {
        try runSeparated(binary, ["merge"] + sources.map(path) + ["--into", path(into)] + extra)
    }

    /// Every row of the tables a merge writes, timings included, as text: equal dumps are equal databases.
    func dump(_ db: String) throws -> [String] {
        try DatabaseQueue(path: path(db)).read { db in
            var lines: [String] = []
            for (table, order) in [("runs", "key"), ("epochs", "run_key, stage, epoch"), ("noise", "run_key"), ("metrics", "run_key"),
                                   ("suites", "sha256"), ("suite_runs", "run_key")] {
                let columns = table == "suite_runs" ? "run_key, position" : table == "suites" ? "name, text, sha256" : "*"
                for row in try Row.fetchAll(db, sql: "SELECT \(columns) FROM \(table) ORDER BY \(order)") { lines.append("\(table) \(row)") }
            }
            return lines
        }
    }

    func keys(_ db: String, _ order: String = "key") throws -> [String] {
        try DatabaseQueue(path: path(db)).read { try String.fetchAll($0, sql: "SELECT key FROM runs ORDER BY \(order)") }
    }

    func sha(_ db: String) throws -> String {
        SHA256Hex.digest(Array(try Data(contentsOf: URL(fileURLWithPath: path(db)))))
    }

    func checks(_ db: String) throws -> (integrity: String, foreignKeys: Int) {
        try DatabaseQueue(path: path(db)).read {
            (try String.fetchOne($0, sql: "PRAGMA integrity_check")!, try Row.fetchAll($0, sql: "PRAGMA foreign_key_check").count)
        }
    }

    /// A target holding interrupted, failed and pending copies of runs (as a crashed or cancelled
    /// shard leaves them) takes the finished copies: this used to fail on the suite-links foreign key.
    func testUnfinishedCopiesInTheTargetAreReplaced() throws {
        let k = try keys("full.sqlite")
        try copy("full.sqlite", "target.sqlite")
        try sql("target.sqlite", """
            UPDATE runs SET status = 'interrupted', epochs_done = 1 WHERE key = '\(k[0])';
            DELETE FROM epochs WHERE run_key = '\(k[0])' AND epoch > 1;
            UPDATE runs SET status = 'failed', error = 'worker killed by signal 9' WHERE key = '\(k[1])';
            UPDATE runs SET status = 'pending', epochs_done = 0 WHERE key = '\(k[2])';
            DELETE FROM epochs WHERE run_key IN ('\(k[1])', '\(k[2])');
            DELETE FROM metrics WHERE run_key IN ('\(k[0])', '\(k[1])', '\(k[2])');
            DELETE FROM noise WHERE run_key = '\(k[2])';
            """)
        let m = try merge(["full.sqlite"], into: "target.sqlite")
        XCTAssertEqual(m.status, 0, m.err)
        XCTAssertTrue(m.out.contains("0 added, 3 replacing unfinished copies, 1 already there"), m.out)
        XCTAssertEqual(try dump("target.sqlite"), try dump("full.sqlite"))
        let c = try checks("target.sqlite")
        XCTAssertEqual(c.integrity, "ok")
        XCTAssertEqual(c.foreignKeys, 0)
        // And the other way round: an unfinished source never replaces a finished copy.
        try copy("full.sqlite", "partial.sqlite")
        try sql("partial.sqlite", "UPDATE runs SET status = 'interrupted' WHERE key = '\(k[3])'; DELETE FROM metrics WHERE run_key = '\(k[3])'")
        let before = try dump("target.sqlite")
        let back = try merge(["partial.sqlite"], into: "target.sqlite")
        XCTAssertEqual(back.status, 0, back.err)
        XCTAssertTrue(back.out.contains("0 added, 0 replacing unfinished copies, 4 already there"), back.out)
        XCTAssertTrue(back.out.contains("not finished: interrupted"), back.out)
        XCTAssertEqual(try dump("target.sqlite"), before)
    }

    /// Two copies of a finished run with other results (metrics, an epoch, the noise realisation)
    /// are conflicts: listed with both values, refused without --prefer, the target untouched or
    /// never created; --prefer first and last keep the copy they name. Timings alone differ between
    /// any two machines and are not a conflict.
    func testConflictsAreReportedAndRefusedUnlessPreferred() throws {
        let k = try keys("full.sqlite")
        try copy("full.sqlite", "other.sqlite")
        try sql("other.sqlite", """
            UPDATE metrics SET last_test_accuracy = 0.123456 WHERE run_key = '\(k[0])';
            UPDATE epochs SET test_loss = test_loss + 1 WHERE run_key = '\(k[1])' AND epoch = 2;
            UPDATE noise SET realised_rate = 0.5 WHERE run_key = '\(k[2])';
            UPDATE epochs SET seconds = seconds * 3 + 1, images_per_second = 1 WHERE run_key = '\(k[3])';
            """)
        let original = try DatabaseQueue(path: path("full.sqlite")).read {
            try Double.fetchOne($0, sql: "SELECT last_test_accuracy FROM metrics WHERE run_key = ?", arguments: [k[0]])!
        }
        // Into a new target: refused, nothing created.
        let fresh = try merge(["full.sqlite", "other.sqlite"], into: "new.sqlite")
        XCTAssertEqual(fresh.status, 2, fresh.out + fresh.err)
        XCTAssertTrue(fresh.err.contains("3 runs are finished in two databases with different results"), fresh.err)
        XCTAssertTrue(fresh.err.contains(k[0]) && fresh.err.contains("metrics.last_test_accuracy \(original) vs 0.123456"), fresh.err)
        XCTAssertTrue(fresh.err.contains(k[1]) && fresh.err.contains("epochs.test_loss (train epoch 2)"), fresh.err)
        XCTAssertTrue(fresh.err.contains(k[2]) && fresh.err.contains("noise.realised_rate"), fresh.err)
        XCTAssertFalse(fresh.err.contains(k[3]), "timings alone are no conflict: \(fresh.err)")
        XCTAssertTrue(fresh.err.contains("--prefer"), fresh.err)
        for f in ["new.sqlite", "new.sqlite.lock", "new.sqlite-wal"] { XCTAssertFalse(FileManager.default.fileExists(atPath: path(f)), f) }

        // Into an existing target: refused, its file byte for byte as it was.
        try copy("full.sqlite", "target.sqlite")
        let before = try sha("target.sqlite")
        let refused = try merge(["other.sqlite"], into: "target.sqlite")
        XCTAssertEqual(refused.status, 2, refused.out + refused.err)
        XCTAssertEqual(try sha("target.sqlite"), before)

        // --prefer first keeps the target's copies; --prefer last takes the later source's.
        let first = try merge(["other.sqlite"], into: "target.sqlite", ["--prefer", "first"])
        XCTAssertEqual(first.status, 0, first.err)
        XCTAssertTrue(first.out.contains("3 runs finished in two databases with different results; kept the first copy"), first.out)
        XCTAssertEqual(try dump("target.sqlite"), try dump("full.sqlite"))
        let last = try merge(["full.sqlite", "other.sqlite"], into: "last.sqlite", ["--prefer", "last"])
        XCTAssertEqual(last.status, 0, last.err)
        let taken = try DatabaseQueue(path: path("last.sqlite")).read {
            try Double.fetchOne($0, sql: "SELECT last_test_accuracy FROM metrics WHERE run_key = ?", arguments: [k[0]])!
        }
        XCTAssertEqual(taken, 0.123456)
        // The run that differed only in timings kept the first copy's.
        let seconds = try DatabaseQueue(path: path("last.sqlite")).read {
            try Double.fetchAll($0, sql: "SELECT seconds FROM epochs WHERE run_key = ? ORDER BY epoch", arguments: [k[3]])
        }
        let firstSeconds = try DatabaseQueue(path: path("full.sqlite")).read {
            try Double.fetchAll($0, sql: "SELECT seconds FROM epochs WHERE run_key = ? ORDER BY epoch", arguments: [k[3]])
        }
        XCTAssertEqual(seconds, firstSeconds)
        XCTAssertEqual(try checks("last.sqlite").foreignKeys, 0)
    }

    /// Runs keyed under another run-key version (other training semantics) are refused, whether
    /// the target exists or not, and nothing changes.
    func testOtherTrainingSemanticsAreRefused() throws {
        try copy("full.sqlite", "old.sqlite")
        try sql("old.sqlite", "UPDATE runs SET key_version = 0")
        let fresh = try merge(["full.sqlite", "old.sqlite"], into: "new.sqlite")
        XCTAssertEqual(fresh.status, 2, fresh.out + fresh.err)
        XCTAssertTrue(fresh.err.contains("old.sqlite: its runs were keyed under run-key version 0 and this sambench's is 1"), fresh.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("new.sqlite")))
        try copy("full.sqlite", "target.sqlite")
        try sql("target.sqlite", "DELETE FROM suite_runs; DELETE FROM epochs; DELETE FROM metrics; DELETE FROM noise; DELETE FROM sample_losses; DELETE FROM runs")
        let before = try sha("target.sqlite")
        let r = try merge(["old.sqlite"], into: "target.sqlite")
        XCTAssertEqual(r.status, 2, r.out + r.err)
        XCTAssertEqual(try sha("target.sqlite"), before)
    }

    /// A source holding values no run of sambench stores (a status outside the enum, a BLOB where
    /// text or a number belongs, a count or an accuracy out of range, a non-finite loss, a
    /// configuration edited after the run, a done run without metrics) is refused with the
    /// source, the run and the value, before anything is decoded into a trap or copied into a
    /// report; the target stays as it was.
    func testImplausibleSourcesAreRefused() throws {
        let k = try keys("full.sqlite")
        try copy("full.sqlite", "target.sqlite")
        try sql("target.sqlite", "DELETE FROM suite_runs; DELETE FROM epochs; DELETE FROM metrics; DELETE FROM noise; DELETE FROM sample_losses; DELETE FROM runs")
        let before = try sha("target.sqlite")
        let cases: [(String, String, String)] = [
            ("a status outside the enum", "PRAGMA ignore_check_constraints = ON; UPDATE runs SET status = 'bogus' WHERE key = '\(k[0])'", "status = \"bogus\""),
            ("a BLOB status", "PRAGMA ignore_check_constraints = ON; UPDATE runs SET status = x'00ff' WHERE key = '\(k[0])'", "status = Data(2 bytes)"),
            ("a BLOB label", "UPDATE runs SET label = x'00ff' WHERE key = '\(k[0])'", "label = Data(2 bytes), expected text"),
            ("a BLOB where an integer belongs", "UPDATE runs SET epochs_done = x'01' WHERE key = '\(k[0])'", "epochs_done = Data(1 bytes)"),
            ("negative epochs", "UPDATE runs SET epochs_done = -5 WHERE key = '\(k[0])'", "epochs_done = -5"),
            ("an accuracy of 5700%", "UPDATE epochs SET test_accuracy = 57 WHERE run_key = '\(k[1])' AND epoch = 1", "epochs: test_accuracy = 57"),
            ("an infinite loss", "UPDATE metrics SET last_test_loss = 9e999 WHERE run_key = '\(k[1])'", "metrics: last_test_loss = inf"),
            ("a configuration that no longer hashes to its key", "UPDATE runs SET config = replace(config, '\"epochs\":3', '\"epochs\":4') WHERE key = '\(k[2])'",
             "hashes to the key"),
            ("a done run without metrics", "DELETE FROM metrics WHERE run_key = '\(k[3])'", "done, without its metrics"),
            ("a realised rate above 1", "UPDATE noise SET realised_rate = 1.5 WHERE run_key = '\(k[3])'", "noise: realised_rate = 1.5"),
            ("a terminal escape in a label", "UPDATE runs SET label = 'run \u{1B}]0;owned\u{07}' WHERE key = '\(k[0])'",
             "a control character (U+001B) in its label"),
            ("a newline in a label", "UPDATE runs SET label = 'run' || char(10) || 'done' WHERE key = '\(k[0])'", "(U+000A) in its label"),
            // Copied, these failed the target's foreign keys at commit: "FOREIGN KEY constraint failed", naming no source.
            ("a suite's link to a missing run", "PRAGMA foreign_keys = OFF; INSERT INTO suite_runs (suite_id, run_key, position) " +
             "SELECT id, 'no-such-run', 99 FROM suites LIMIT 1", "the first, in suite_runs (suite_id 1, run_key \"no-such-run\"), to a missing row of runs"),
            ("the epochs of a missing run", "PRAGMA foreign_keys = OFF; DELETE FROM suite_runs WHERE run_key = '\(k[0])'; DELETE FROM runs WHERE key = '\(k[0])'",
             "rows refer to rows that are not there"),
        ]
        for (i, (what, statements, expected)) in cases.enumerated() {
            let source = "bad-\(i).sqlite"
            try copy("full.sqlite", source)
            try sql(source, statements)
            let r = try merge([source], into: "target.sqlite")
            XCTAssertEqual(r.status, 2, "\(what): \(r.out + r.err)")
            XCTAssertTrue(r.err.contains(path(source)) && r.err.contains(expected) && r.err.contains("nothing was merged"), "\(what): \(r.err)")
            XCTAssertEqual(try sha("target.sqlite"), before, what)
        }
        // The untouched database merges.
        XCTAssertEqual(try merge(["full.sqlite"], into: "target.sqlite").status, 0)
    }

    /// The target named again as a source, through a symlink or a hard link, is refused.
    func testTheTargetAsItsOwnSourceIsRefused() throws {
        try FileManager.default.createSymbolicLink(atPath: path("alias.sqlite"), withDestinationPath: path("full.sqlite"))
        try FileManager.default.linkItem(atPath: path("full.sqlite"), toPath: path("hard.sqlite"))
        let before = try sha("full.sqlite")
        for alias in ["alias.sqlite", "hard.sqlite", "full.sqlite"] {
            let r = try merge([alias], into: "full.sqlite")
            XCTAssertEqual(r.status, 2, r.out + r.err)
            XCTAssertTrue(r.err.contains("is the target database itself"), r.err)
        }
        XCTAssertEqual(try sha("full.sqlite"), before)
    }

    /// Merging the same shards twice: the second time nothing is added or replaced, and every row
    /// (timings and suite links included) is what the first merge wrote.
    func testMergingTwiceChangesNothing() throws {
        for k in 1...2 {
            let r = try runSeparated(binary, ["run", path("s.toml"), "--shard", "\(k)/2", "--db", path("shard\(k).sqlite"),
                                              "--checkpoints", path("ck\(k)"), "--threads", "1", "--quiet"])
            XCTAssertEqual(r.status, 0, r.err)
        }
        let once = try merge(["shard1.sqlite", "shard2.sqlite"], into: "all.sqlite")
        XCTAssertEqual(once.status, 0, once.err)
        XCTAssertTrue(once.out.contains("2 added"), once.out)
        let first = try dump("all.sqlite")
        let twice = try merge(["shard1.sqlite", "shard2.sqlite"], into: "all.sqlite", ["--suite", path("s.toml")])
        XCTAssertEqual(twice.status, 0, twice.err)
        XCTAssertEqual(twice.out.components(separatedBy: "0 added, 0 replacing unfinished copies, 2 already there; 0 new suites").count, 3, twice.out)
        XCTAssertTrue(twice.out.contains("suite kill: 4 of 4 runs finished"), twice.out)
        XCTAssertEqual(try dump("all.sqlite"), first)
        // The shards' runs are the whole suite's, with the same numbers (one thread each).
        XCTAssertEqual(try dump("all.sqlite").filter { $0.hasPrefix("metrics") }, try dump("full.sqlite").filter { $0.hasPrefix("metrics") })
        // With --suite, an incomplete target says what is missing and exits 1.
        let part = try merge(["shard1.sqlite"], into: "part.sqlite", ["--suite", path("s.toml")])
        XCTAssertEqual(part.status, 1, part.out + part.err)
        XCTAssertTrue(part.out.contains("suite kill: 2 of 4 runs finished") && part.out.contains("absent: "), part.out)
    }

    /// A shard written by an older sambench (before the run-key version column) merges through a
    /// migrated copy; the shard itself is not modified.
    func testAnOlderSourceIsReadThroughAMigratedCopy() throws {
        try copy("full.sqlite", "older.sqlite")
        try sql("older.sqlite", """
            ALTER TABLE runs DROP COLUMN key_version;
            DELETE FROM grdb_migrations WHERE identifier LIKE 'v4:%';
            """)
        let before = try sha("older.sqlite")
        let r = try merge(["older.sqlite"], into: "new.sqlite")
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("made by an older sambench: read through a migrated copy") && r.out.contains("4 added"), r.out)
        XCTAssertEqual(try sha("older.sqlite"), before)
        XCTAssertEqual(try dump("new.sqlite"), try dump("full.sqlite"))
    }
}
