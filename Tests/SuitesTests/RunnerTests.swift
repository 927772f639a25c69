import Engine
import Foundation
import GRDB
import Store
import TestSupport
import XCTest

/// `sambench run` as a user runs it: killed, raced, sharded, merged.
final class RunnerTests: XCTestCase {
    var binary: URL!
    var dir: URL!

    static let suite = """
        name = "kill"
        description = "four small runs"

        [defaults]
        dataset = "synthetic"
        synthetic_train = 512
        synthetic_test = 256
        model = "tiny"
        epochs = 3
        batch_size = 64
        validation = 0.125
        sharpness = false

        [grid]
        seed = [0, 1]

        [[noise]]
        kind = "symmetric"
        rate = 0.4

        [[optimizer]]
        name = "sgd"

        [[optimizer]]
        name = "sam"
        rho = 0.05
        """

    override func setUpWithError() throws {
        binary = try sambenchExecutable()
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("runner-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try Self.suite.write(to: dir.appendingPathComponent("s.toml"), atomically: true, encoding: .utf8)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    func args(_ db: String, _ extra: [String] = []) -> [String] {
        ["run", path("s.toml"), "--db", path(db), "--checkpoints", path("ck-" + db), "--threads", "1", "--quiet"] + extra
    }

    /// A runner on `db` printing every start and epoch, its standard output on the returned pipe.
    func startVerbose(_ db: String) throws -> (Process, Pipe) {
        let p = Process()
        p.executableURL = binary
        p.arguments = args(db).filter { $0 != "--quiet" } + ["--verbose"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        return (p, out)
    }

    func start(_ arguments: [String]) throws -> Process {
        let p = Process()
        p.executableURL = binary
        p.arguments = arguments
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }

    /// Every epoch row of a database, by (key, stage, epoch), with the values that must match.
    func epochs(_ db: String) throws -> [String: [Double]] {
        let q = try DatabaseQueue(path: path(db))
        return try q.read { db in
            var out: [String: [Double]] = [:]
            for r in try Row.fetchAll(db, sql: "SELECT * FROM epochs") {
                let k = "\(r["run_key"] as String) \(r["stage"] as String) \(r["epoch"] as Int)"
                XCTAssertNil(out[k], "duplicate epoch row \(k)")
                out[k] = [r["lr"], r["train_loss"], r["train_accuracy"], r["perturbed_loss"] ?? -1, r["corrupted_noisy_accuracy"],
                          r["validation_accuracy"], r["test_loss"], r["test_accuracy"]]
            }
            return out
        }
    }

    /// Every run's noisy-label detection and per-sample losses, by key: what an exact resume must reproduce too.
    func detections(_ db: String) throws -> [String: [Double]] {
        try DatabaseQueue(path: path(db)).read { db in
            var out: [String: [Double]] = [:]
            for r in try Row.fetchAll(db, sql: "SELECT run_key, detection_auroc, detection_precision, detection_samples FROM metrics") {
                let losses = try Double.fetchAll(db, sql: "SELECT loss FROM sample_losses WHERE run_key = ? ORDER BY sample", arguments: [r["run_key"] as String])
                out[r["run_key"]] = [r["detection_auroc"] ?? -1, r["detection_precision"] ?? -1, r["detection_samples"] ?? -1] + losses
            }
            return out
        }
    }

    func statuses(_ db: String) throws -> [String: String] {
        try DatabaseQueue(path: path(db)).read { db in
            Dictionary(uniqueKeysWithValues: try Row.fetchAll(db, sql: "SELECT key, status FROM runs").map { ($0["key"], $0["status"]) })
        }
    }

    func integrity(_ db: String) throws -> String {
        try DatabaseQueue(path: path(db)).read { try String.fetchOne($0, sql: "PRAGMA integrity_check")! }
    }

    /// SIGKILL at random progress points, again and again, until a run of the command completes:
    /// every run done exactly once, no duplicate rows, no finished epoch lost, and every number
    /// equal to an uninterrupted run's (resumption is exact). The kills land at points the runner
    /// reports (a run started, an epoch stored; chosen by a seeded generator), never after a
    /// wall-clock delay, so the test does the same on a fast machine and a loaded one.
    func testKilledAtRandomMomentsLosesNothing() throws {
        let reference = try runSeparated(binary, args("ref.sqlite"))
        XCTAssertEqual(reference.status, 0, reference.err)
        let expected = try epochs("ref.sqlite")
        XCTAssertEqual(expected.count, 4 * 3)

        var rng = Xoshiro256(seed: 2026)
        var kills = 0, completed = false
        for _ in 0..<200 {
            // Kill at the start of a run one time in four (no progress), else after 1 or 2 stored epochs.
            let atStart = rng.nextInt(below: 4) == 0
            let target = atStart ? 1 : 1 + rng.nextInt(below: 2)
            let marker = atStart ? "start " : "epoch "
            let (p, out) = try startVerbose("kill.sqlite")
            var seen = 0, buffer = Data(), reached = false
            while !reached {
                let chunk = out.fileHandleForReading.availableData
                if chunk.isEmpty { break }   // the runner ended
                buffer += chunk
                while let nl = buffer.firstIndex(of: 0x0A) {
                    let line = String(decoding: buffer[buffer.startIndex..<nl], as: UTF8.self)
                    buffer = Data(buffer[(nl + 1)...])
                    if line.hasPrefix(marker) { seen += 1 }
                    if seen >= target { reached = true; break }
                }
            }
            if !reached {
                p.waitUntilExit()
                XCTAssertEqual(p.terminationStatus, 0)
                completed = true
                break
            }
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            kills += 1
        }
        XCTAssertTrue(completed, "never completed after \(kills) kills")
        print("RunnerTests: sambench run killed \(kills) times before it completed")
        XCTAssertGreaterThanOrEqual(kills, 5, "the kills should land in the middle of the work")
        // Orphaned workers die with their runner: none may be left writing checkpoints.
        usleep(200_000)
        let ps = try runCommand("/bin/ps", ["-eo", "args"])
        XCTAssertFalse(ps.output.contains(path("ck-kill.sqlite")), "a worker outlived its runner")

        XCTAssertEqual(try integrity("kill.sqlite"), "ok")
        let status = try statuses("kill.sqlite")
        XCTAssertEqual(status.count, 4)
        XCTAssertTrue(status.values.allSatisfy { $0 == "done" }, "\(status)")
        let got = try epochs("kill.sqlite")
        XCTAssertEqual(Set(got.keys), Set(expected.keys))
        for (k, v) in expected { XCTAssertEqual(got[k], v, "epoch \(k) differs from the uninterrupted run") }
        XCTAssertEqual(try detections("kill.sqlite"), try detections("ref.sqlite"), "the final models' per-sample losses differ")
        // Runs were resumed (some started more than once) and never trained again once done.
        let attempts = try DatabaseQueue(path: path("kill.sqlite")).read { try Int.fetchAll($0, sql: "SELECT attempts FROM runs") }
        XCTAssertTrue(attempts.contains { $0 > 1 }, "no run was ever interrupted: \(attempts)")
        // Checkpoints of finished runs are gone; running again does nothing.
        let left = (try? FileManager.default.contentsOfDirectory(atPath: path("ck-kill.sqlite"))) ?? []
        XCTAssertTrue(left.isEmpty, "\(left)")
        let again = try runSeparated(binary, args("kill.sqlite").filter { $0 != "--quiet" })
        XCTAssertEqual(again.status, 0, again.err)
        XCTAssertTrue(again.out.contains("4 already finished"), again.out)
        XCTAssertEqual(try epochs("kill.sqlite").count, expected.count)
    }

    /// Every finished run stores how well its final model's per-sample loss picks out the
    /// corrupted samples: the AUROC and precision at the noise count equal a direct computation
    /// (every corrupted-clean pair, ties counted half) on the losses `runs --samples` exports,
    /// whose labels agree with the stored noise; the report shows the AUROC.
    func testDetectionIsStoredAndExported() throws {
        let r = try runSeparated(binary, args("d.sqlite"))
        XCTAssertEqual(r.status, 0, r.err)
        let stored = try DatabaseQueue(path: path("d.sqlite")).read { db in
            try Row.fetchAll(db, sql: "SELECT m.run_key, m.detection_auroc, m.detection_precision, m.detection_samples, m.detection_corrupted, n.corrupted FROM metrics m JOIN noise n USING (run_key)")
        }
        XCTAssertEqual(stored.count, 4)
        for row in stored {
            let key: String = row["run_key"]
            let csv = try runSeparated(binary, ["runs", "--db", path("d.sqlite"), "--samples", String(key.prefix(10))])
            XCTAssertEqual(csv.status, 0, csv.err)
            var lines = csv.out.split(separator: "\n").map(String.init)
            XCTAssertEqual(lines.removeFirst(), "sample,given,truth,corrupted,loss")
            let samples = lines.map { $0.split(separator: ",").map(String.init) }
            // 512 images less the validation eighth (stratified: 64 or 65).
            XCTAssertEqual(samples.count, row["detection_samples"] as Int)
            XCTAssertTrue((447...448).contains(samples.count), "\(samples.count)")
            let corrupted = samples.filter { $0[3] == "1" }, clean = samples.filter { $0[3] == "0" }
            XCTAssertTrue(samples.allSatisfy { ($0[1] != $0[2]) == ($0[3] == "1") })
            XCTAssertEqual(row["detection_corrupted"] as Int, corrupted.count)
            XCTAssertGreaterThan(corrupted.count, 100)
            // Largest loss first.
            let losses = samples.map { Double($0[4])! }
            XCTAssertEqual(losses, losses.sorted(by: >))
            var wins = 0.0
            for c in corrupted { for k in clean {
                let (a, b) = (Double(c[4])!, Double(k[4])!)
                wins += a > b ? 1 : a == b ? 0.5 : 0
            } }
            let auroc = wins / Double(corrupted.count * clean.count)
            XCTAssertEqual(row["detection_auroc"] as Double, auroc, accuracy: 1e-12, key)
            let precision = Double(samples.prefix(corrupted.count).filter { $0[3] == "1" }.count) / Double(corrupted.count)
            XCTAssertEqual(row["detection_precision"] as Double, precision, accuracy: 1e-12, key)
        }
        let report = try runSeparated(binary, ["report", "--db", path("d.sqlite"), "--no-charts"])
        XCTAssertEqual(report.status, 0, report.err)
        XCTAssertTrue(report.out.contains("detect."), report.out)
        let unknown = try runSeparated(binary, ["runs", "--db", path("d.sqlite"), "--samples", "nosuchkey"])
        XCTAssertEqual(unknown.status, 2)
        XCTAssertTrue(unknown.err.contains("no run with key nosuchkey"), unknown.err)
    }

    /// A second runner on the same database is refused while the first runs; the database stays sound.
    func testSecondRunnerIsRefused() throws {
        let first = try start(args("one.sqlite"))
        defer { if first.isRunning { kill(first.processIdentifier, SIGKILL) }; first.waitUntilExit() }
        // Wait until the first holds the database.
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, !WriterLock.isHeld(database: path("one.sqlite")) { usleep(10_000) }
        XCTAssertTrue(WriterLock.isHeld(database: path("one.sqlite")))
        // Reached through another spelling of the same path, a symlink or a hard link, too: the
        // lock is the file's, not the name's.
        try FileManager.default.createSymbolicLink(atPath: path("link.sqlite"), withDestinationPath: path("one.sqlite"))
        try FileManager.default.linkItem(atPath: path("one.sqlite"), toPath: path("hard.sqlite"))
        for db in [path("one.sqlite"), dir.path + "/./one.sqlite", path("link.sqlite"), path("hard.sqlite")] {
            let second = try runSeparated(binary, ["run", path("s.toml"), "--db", db, "--checkpoints", path("ck-second"), "--threads", "1"])
            XCTAssertEqual(second.status, 2, second.out + second.err)
            XCTAssertTrue(second.err.contains("in use by another sambench process"), second.err)
            if db != path("hard.sqlite") { XCTAssertTrue(second.err.contains("pid \(first.processIdentifier)"), second.err) }
        }
        // Another database, the first runner's checkpoint folder: refused before anything is written.
        let shared = try runSeparated(binary, ["run", path("s.toml"), "--db", path("two.sqlite"), "--checkpoints", path("ck-one.sqlite"), "--threads", "1"])
        XCTAssertEqual(shared.status, 2, shared.out + shared.err)
        XCTAssertTrue(shared.err.contains("checkpoint folder \(path("ck-one.sqlite")) is in use") && shared.err.contains("pid \(first.processIdentifier)"), shared.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("two.sqlite")))
        first.waitUntilExit()
        XCTAssertEqual(first.terminationStatus, 0)
        XCTAssertEqual(try integrity("one.sqlite"), "ok")
        XCTAssertTrue(try statuses("one.sqlite").values.allSatisfy { $0 == "done" })
    }

    /// SIGTERM (and Ctrl-C) end cleanly: the active run is marked interrupted, exit status 130,
    /// and the next run resumes it.
    func testTerminationMarksInterrupted() throws {
        let p = try start(args("term.sqlite"))
        let deadline = Date().addingTimeInterval(20)
        // Wait for the first finished epoch, then stop the runner.
        while Date() < deadline {
            if FileManager.default.fileExists(atPath: path("term.sqlite")),
               let n = try? DatabaseQueue(path: path("term.sqlite")).read({ try Int.fetchOne($0, sql: "SELECT count(*) FROM epochs") }), n > 0 { break }
            usleep(20_000)
        }
        kill(p.processIdentifier, SIGTERM)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 130)
        let s = try statuses("term.sqlite")
        XCTAssertTrue(s.values.contains("interrupted"), "\(s)")
        XCTAssertFalse(s.values.contains("running"), "\(s)")
        let again = try runSeparated(binary, args("term.sqlite"))
        XCTAssertEqual(again.status, 0, again.err)
        XCTAssertTrue(try statuses("term.sqlite").values.allSatisfy { $0 == "done" })
    }

    /// A worker ended by SIGTERM from outside sambench (a batch system's cancellation signals
    /// every process of the job, so a worker may die before its runner hears its own signal)
    /// leaves its run interrupted, not failed; the runner goes on, exits 130, and the next run
    /// resumes it.
    func testWorkerEndedFromOutsideIsInterrupted() throws {
        let (p, out) = try startVerbose("outside.sqlite")
        var text = "", killed = false
        while true {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
            // At the first run's start its worker exists: end it as a batch system would.
            if !killed, text.contains("start ") {
                let children = try String(contentsOfFile: "/proc/\(p.processIdentifier)/task/\(p.processIdentifier)/children", encoding: .utf8)
                    .split(separator: " ").compactMap { Int32($0) }
                XCTAssertEqual(children.count, 1, text)
                for c in children { kill(c, SIGTERM) }
                killed = !children.isEmpty
            }
        }
        p.waitUntilExit()
        XCTAssertTrue(killed)
        XCTAssertEqual(p.terminationStatus, 130, text)
        XCTAssertTrue(text.contains("INTERRUPTED") && text.contains("ended by signal 15 from outside sambench"), text)
        let s = try statuses("outside.sqlite")
        XCTAssertEqual(s.values.filter { $0 == "interrupted" }.count, 1, "\(s)")
        XCTAssertEqual(s.values.filter { $0 == "done" }.count, 3, "\(s)")
        let again = try runSeparated(binary, args("outside.sqlite"))
        XCTAssertEqual(again.status, 0, again.err)
        XCTAssertTrue(try statuses("outside.sqlite").values.allSatisfy { $0 == "done" })
    }

    /// Two workers at once store the same numbers as one at a time (one thread each: the
    /// results do not depend on scheduling).
    func testJobsDoNotChangeResults() throws {
        let one = try runSeparated(binary, args("one.sqlite"))
        XCTAssertEqual(one.status, 0, one.err)
        let two = try runSeparated(binary, args("two.sqlite", ["--jobs", "2"]))
        XCTAssertEqual(two.status, 0, two.err)
        XCTAssertEqual(try epochs("two.sqlite"), try epochs("one.sqlite"))
        XCTAssertEqual(try statuses("two.sqlite"), try statuses("one.sqlite"))
        XCTAssertEqual(try integrity("two.sqlite"), "ok")
    }

    /// Shards on "other machines" merge into the whole, without duplicates, idempotently.
    func testShardsMergeIntoTheWhole() throws {
        for k in 1...2 {
            let r = try runSeparated(binary, args("shard\(k).sqlite", ["--shard", "\(k)/2"]))
            XCTAssertEqual(r.status, 0, r.err)
        }
        let a = try statuses("shard1.sqlite"), b = try statuses("shard2.sqlite")
        XCTAssertEqual(a.count, 2)
        XCTAssertEqual(b.count, 2)
        XCTAssertTrue(Set(a.keys).isDisjoint(with: b.keys))
        for _ in 0..<2 {
            let m = try runSeparated(binary, ["merge", path("shard1.sqlite"), path("shard2.sqlite"), "--into", path("all.sqlite")])
            XCTAssertEqual(m.status, 0, m.err)
        }
        XCTAssertEqual(try statuses("all.sqlite").count, 4)
        XCTAssertEqual(try epochs("all.sqlite").count, 12)
        XCTAssertEqual(try integrity("all.sqlite"), "ok")
        let suites = try DatabaseQueue(path: path("all.sqlite")).read { try Int.fetchOne($0, sql: "SELECT count(*) FROM suites")! }
        XCTAssertEqual(suites, 1)
        // The merged database is complete: running the whole suite against it does nothing.
        let r = try runSeparated(binary, args("all.sqlite").filter { $0 != "--quiet" })
        XCTAssertTrue(r.out.contains("4 already finished"), r.out)
    }

    /// A failed run (here a sound checkpoint of another run put in its folder: a corrupt one
    /// restarts from scratch instead, FaultTests) and a diverged run never stop the suite.
    func testFailuresDoNotStopTheSuite() throws {
        let text = Self.suite.replacingOccurrences(of: "sharpness = false", with: "sharpness = false\nlr = 0.05")
            .replacingOccurrences(of: "rho = 0.05", with: "rho = 0.05\n\n[[optimizer]]\nname = \"asam\"\nrho = 1e6")
        try text.write(to: dir.appendingPathComponent("s.toml"), atomically: true, encoding: .utf8)
        let plan = try runSeparated(binary, ["run", path("s.toml"), "--dry-run", "--db", path("f.sqlite")])
        XCTAssertEqual(plan.status, 0, plan.err)
        XCTAssertTrue(plan.out.contains("of wall time with --jobs 1") && plan.out.contains("measured tiny at batch"), plan.out)
        let firstKey = String(plan.out.split(separator: "\n").first { $0.contains("sgd seed 0") }!.prefix(20))
        let otherKey = String(plan.out.split(separator: "\n").first { $0.contains("sgd seed 1") }!.prefix(20))
        let other = try runSeparated(binary, ["run", path("s.toml"), "--db", path("other.sqlite"), "--checkpoints", path("ck-other"),
                                              "--filter", "optimizer=sgd,seed=1", "--keep-checkpoints", "--threads", "1", "--quiet"])
        XCTAssertEqual(other.status, 0, other.err)
        try FileManager.default.createDirectory(atPath: path("ck-f.sqlite/\(firstKey)"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: path("ck-other/\(otherKey)/checkpoint.safetensors"),
                                         toPath: path("ck-f.sqlite/\(firstKey)/checkpoint.safetensors"))
        let r = try runSeparated(binary, args("f.sqlite"))
        XCTAssertEqual(r.status, 1, r.out + r.err)
        XCTAssertTrue(r.out.contains("FAILED") && r.out.contains("checkpoint.safetensors"), r.out)
        let s = try statuses("f.sqlite")
        XCTAssertEqual(s[firstKey], "failed")
        XCTAssertEqual(s.values.filter { $0 == "diverged" }.count, 2, "\(s)")
        XCTAssertEqual(s.values.filter { $0 == "done" }.count, 3, "\(s)")
        let runs = try runSeparated(binary, ["runs", "--db", path("f.sqlite"), "--status", "failed"])
        XCTAssertTrue(runs.out.contains("error:") && runs.out.contains("made by another configuration"), runs.out)
    }

    func testForeignDatabaseIsRefused() throws {
        let q = try DatabaseQueue(path: path("other.sqlite"))
        try q.write { try $0.execute(sql: "CREATE TABLE t (x)") }
        let r = try runSeparated(binary, args("other.sqlite"))
        XCTAssertEqual(r.status, 2)
        XCTAssertTrue(r.err.contains("not a sambench results database"), r.err)
        try Data("garbage".utf8).write(to: URL(fileURLWithPath: path("garbage.sqlite")))
        let g = try runSeparated(binary, ["runs", "--db", path("garbage.sqlite")])
        XCTAssertEqual(g.status, 2)
        XCTAssertTrue(g.err.contains("garbage.sqlite"), g.err)
        let missing = try runSeparated(binary, ["runs", "--db", path("none.sqlite")])
        XCTAssertEqual(missing.status, 2)
        XCTAssertTrue(missing.err.contains("no results database"), missing.err)
    }
}
