import Foundation
import GRDB
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Faults injected into real runs of the `sambench` executable (docs/RELIABILITY.md): a worker
/// stopped or killed half way through a checkpoint write, a corrupt checkpoint, the database on a
/// full or read-only file system or empty, data changed under a suite. Every fault is placed at a
/// point the runner reports (a run started, an epoch stored), never after a wall-clock delay.
final class FaultTests: XCTestCase {
    var binary: URL!
    var dir: URL!

    static let suite = """
        name = "faults"
        [defaults]
        dataset = "synthetic"
        synthetic_train = 256
        synthetic_test = 64
        model = "tiny"
        epochs = 3
        batch_size = 64
        sharpness = false
        [[noise]]
        kind = "symmetric"
        rate = 0.2
        [[optimizer]]
        name = "sgd"
        """

    override func setUpWithError() throws {
        binary = try sambenchExecutable()
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("faults-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try Self.suite.write(toFile: path("s.toml"), atomically: true, encoding: .utf8)
    }

    override func tearDownWithError() throws {
        for m in mounts.reversed() { _ = umount2(m, Int32(MNT_DETACH)) }
        try? FileManager.default.removeItem(at: dir)
    }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    func run(_ db: String, suite: String = "s.toml", _ extra: [String] = [], environment: [String: String] = [:]) throws -> (status: Int32, out: String, err: String) {
        try runSeparated(binary, ["run", path(suite), "--db", db, "--checkpoints", path("ck"), "--threads", "1"] + extra, environment: environment)
    }

    func query<T: DatabaseValueConvertible>(_ db: String, _ sql: String) throws -> [T] {
        try DatabaseQueue(path: db).read { try T.fetchAll($0, sql: sql) }
    }

    /// A runner on `db` with every start and epoch on its standard output; returns once `marker`
    /// has been printed `count` times (or the runner ended: false).
    func runUntil(_ db: String, _ marker: String, count: Int = 1, extra: [String] = []) throws -> (Process, Bool) {
        let p = Process()
        p.executableURL = binary
        p.arguments = ["run", path("s.toml"), "--db", db, "--checkpoints", path("ck"), "--threads", "1", "--verbose"] + extra
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        var seen = 0, buffer = Data()
        while seen < count {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { return (p, false) }
            buffer += chunk
            while let nl = buffer.firstIndex(of: 0x0A) {
                if String(decoding: buffer[buffer.startIndex..<nl], as: UTF8.self).hasPrefix(marker) { seen += 1 }
                buffer = Data(buffer[(nl + 1)...])
            }
        }
        return (p, true)
    }

    /// The worker of a runner (its only child).
    func worker(of runner: pid_t) -> pid_t? {
        let text = (try? String(contentsOfFile: "/proc/\(runner)/task/\(runner)/children", encoding: .utf8)) ?? ""
        return text.split(separator: " ").compactMap { pid_t($0) }.first
    }

    var mounts: [String] = []

    /// A tmpfs of `kilobytes` at `name`, or a skip where this machine cannot mount (not root).
    func mountTmpfs(_ name: String, kilobytes: Int) throws -> String {
        let target = path(name)
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        guard mount("tmpfs", target, "tmpfs", 0, "size=\(kilobytes)k") == 0 else {
            throw XCTSkip("cannot mount a tmpfs here (\(String(cString: strerror(errno)))): needs root, as in CI")
        }
        mounts.append(target)
        return target
    }

    func remountReadOnly(_ target: String) throws {
        XCTAssertEqual(mount("tmpfs", target, "tmpfs", UInt(MS_REMOUNT | MS_RDONLY), nil), 0, String(cString: strerror(errno)))
    }

    /// SIGSTOP a worker after its first epoch: the runner ends it after --stall-timeout, marks the
    /// run failed saying why, and the next run resumes it from its checkpoint.
    func testAStalledWorkerIsEndedAndItsRunFailed() throws {
        let db = path("stall.sqlite")
        let (runner, reached) = try runUntil(db, "epoch ", extra: ["--stall-timeout", "5"])
        defer { if runner.isRunning { kill(runner.processIdentifier, SIGKILL) } }
        XCTAssertTrue(reached)
        let w = try XCTUnwrap(worker(of: runner.processIdentifier))
        kill(w, SIGSTOP)
        runner.waitUntilExit()
        XCTAssertEqual(runner.terminationStatus, 1)
        let errors: [String] = try query(db, "SELECT error FROM runs WHERE status = 'failed'")
        XCTAssertEqual(errors.count, 1)
        XCTAssertTrue(errors.first?.contains("reported no progress for 5 s") == true, "\(errors)")
        let again = try run(db)
        XCTAssertEqual(again.status, 0, again.err)
        XCTAssertTrue(again.out.contains("resuming after epoch"), again.out)
        XCTAssertEqual(try query(db, "SELECT status FROM runs") as [String], ["done"])
        XCTAssertEqual(try query(db, "SELECT count(*) FROM epochs") as [Int], [3])
    }

    /// A worker killed half way through writing a checkpoint (the old one stays whole under its
    /// name), a checkpoint corrupted on disk (a warning, a restart from scratch): both end with
    /// the numbers of a run never disturbed.
    func testCheckpointFaultsLoseNothing() throws {
        let reference = try run(path("ref.sqlite"))
        XCTAssertEqual(reference.status, 0, reference.err)
        let expected: [Double] = try query(path("ref.sqlite"), "SELECT test_accuracy FROM epochs ORDER BY epoch")
        XCTAssertEqual(expected.count, 3)

        // Killed while its 2nd checkpoint was half written: the 1st resumes.
        let killed = try run(path("kill.sqlite"), environment: ["SAMBENCH_FAULT": "kill-in-checkpoint-write:2"])
        XCTAssertEqual(killed.status, 1, killed.out + killed.err)
        let checkpoints = try FileManager.default.subpathsOfDirectory(atPath: path("ck"))
        XCTAssertTrue(checkpoints.contains { $0.hasSuffix("/checkpoint.safetensors") }, "\(checkpoints)")
        let resumed = try run(path("kill.sqlite"))
        XCTAssertEqual(resumed.status, 0, resumed.err)
        XCTAssertTrue(resumed.out.contains("resuming after epoch 1"), resumed.out)
        XCTAssertFalse(resumed.out.contains("WARNING"), resumed.out)
        XCTAssertEqual(try query(path("kill.sqlite"), "SELECT test_accuracy FROM epochs ORDER BY epoch"), expected)
        XCTAssertFalse(try FileManager.default.subpathsOfDirectory(atPath: path("ck")).contains { $0.contains(".partial-") }, "a partial file was left")

        // Corrupted between two runs: a warning, the file set aside, the run trained from scratch.
        let db = path("corrupt.sqlite")
        let (runner, reached) = try runUntil(db, "epoch ")
        XCTAssertTrue(reached)
        kill(runner.processIdentifier, SIGKILL)
        runner.waitUntilExit()
        let file = try XCTUnwrap(try FileManager.default.subpathsOfDirectory(atPath: path("ck")).first { $0.hasSuffix("checkpoint.safetensors") })
        let handle = try XCTUnwrap(FileHandle(forUpdatingAtPath: path("ck/\(file)")))
        let size = try handle.seekToEnd()
        try handle.seek(toOffset: size - 40)
        try handle.write(contentsOf: Data(repeating: 0x7F, count: 8))
        try handle.close()
        // Without --keep-checkpoints: the run's folder goes when it is done, the set-aside file stays.
        let restarted = try run(db)
        XCTAssertEqual(restarted.status, 0, restarted.err)
        XCTAssertTrue(restarted.out.contains("WARNING") && restarted.out.contains("checksum mismatch") &&
                      restarted.out.contains("starts again from scratch"), restarted.out)
        // Epoch 1 trained again, after the warning.
        let warned = try XCTUnwrap(restarted.out.range(of: "WARNING"))
        XCTAssertTrue(restarted.out[warned.upperBound...].contains(" 1/3: "), restarted.out)
        let key = try XCTUnwrap(file.split(separator: "/").first)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("ck/\(key)")))
        let kept = try FileManager.default.subpathsOfDirectory(atPath: path("ck"))
        XCTAssertTrue(kept.contains("\(key).corrupt.safetensors"), "\(kept)")
        XCTAssertTrue(restarted.out.contains("moved to \(path("ck/\(key).corrupt.safetensors"))"), restarted.out)
        XCTAssertEqual(try query(db, "SELECT test_accuracy FROM epochs ORDER BY epoch"), expected)
    }

    /// A run whose checkpoint is gone (deleted between two sittings) while the database holds some
    /// of its epochs: its start says so instead of "resuming", it trains again from scratch, and the
    /// stored epochs are replaced, never mixed with the new ones. The earlier attempt is the
    /// reference run itself, its three epochs marked (-1) and its status set back to interrupted.
    func testAGoneCheckpointIsSaidAndItsStoredEpochsReplaced() throws {
        let reference = try run(path("ref.sqlite"))
        XCTAssertEqual(reference.status, 0, reference.err)
        let expected: [Double] = try query(path("ref.sqlite"), "SELECT test_accuracy FROM epochs ORDER BY epoch")
        XCTAssertEqual(expected.count, 3)
        let db = path("gone.sqlite")
        try FileManager.default.copyItem(atPath: path("ref.sqlite"), toPath: db)
        try DatabaseQueue(path: db).write {
            try $0.execute(sql: "UPDATE epochs SET test_accuracy = -1")
            try $0.execute(sql: "UPDATE runs SET status = 'interrupted'")
        }

        // Killed while writing its 2nd checkpoint: only the new attempt's first epoch is stored.
        let killed = try run(db, environment: ["SAMBENCH_FAULT": "kill-in-checkpoint-write:2"])
        XCTAssertEqual(killed.status, 1, killed.out + killed.err)
        XCTAssertTrue(killed.out.contains("3 epochs are stored but its checkpoint") &&
                      killed.out.contains("is gone: the run trains again from scratch"), killed.out)
        XCTAssertFalse(killed.out.contains("resuming after epoch"), killed.out)
        let stored: [Double] = try query(db, "SELECT test_accuracy FROM epochs ORDER BY epoch")
        XCTAssertEqual(stored, [expected[0]], "the earlier attempt's epochs were kept")
        XCTAssertEqual(try query(db, "SELECT epochs_done FROM runs") as [Int], [1])

        let resumed = try run(db)
        XCTAssertEqual(resumed.status, 0, resumed.err)
        XCTAssertTrue(resumed.out.contains("resuming after epoch 1"), resumed.out)
        XCTAssertFalse(resumed.out.contains("is gone"), resumed.out)
        XCTAssertEqual(try query(db, "SELECT test_accuracy FROM epochs ORDER BY epoch"), expected)
    }

    /// The database on a file system that fills up while runs are stored: a message that says
    /// so (not a raw SQLite error), the database intact, and the suite completed once there is room.
    func testAFullFileSystemLosesNothing() throws {
        let fs = try mountTmpfs("small", kilobytes: 8192)
        let db = fs + "/full.sqlite"
        XCTAssertEqual(try run(db).status, 0)
        // Leave a few KiB: the next suite's runs fill it.
        var st = statvfs()
        XCTAssertEqual(statvfs(fs, &st), 0)
        let free = Int(st.f_bavail) * Int(st.f_frsize)
        FileManager.default.createFile(atPath: fs + "/filler", contents: Data(count: max(free - 24 * 1024, 0)))
        var bigger = Self.suite
        bigger += "\n[grid]\nseed = [\((1...30).map(String.init).joined(separator: ", "))]\n"
        try bigger.write(toFile: path("big.toml"), atomically: true, encoding: .utf8)
        let full = try run(db, suite: "big.toml")
        XCTAssertNotEqual(full.status, 0)
        XCTAssertTrue(full.err.contains("\(db): the disk is full"), full.err)
        XCTAssertFalse(full.err.contains("not a sambench results database"), full.err)
        try FileManager.default.removeItem(atPath: fs + "/filler")
        XCTAssertEqual(try query(db, "PRAGMA integrity_check") as [String], ["ok"])
        let done = try run(db, suite: "big.toml")
        XCTAssertEqual(done.status, 0, done.err)
        XCTAssertEqual(try query(db, "SELECT DISTINCT status FROM runs") as [String], ["done"])
        XCTAssertEqual(try query(db, "SELECT count(*) FROM runs") as [Int], [31])
        XCTAssertEqual(try query(db, "SELECT count(*) FROM epochs") as [Int], [31 * 3])
    }

    /// A read-only file system and an empty database file: messages that say so, for writers
    /// and readers, never "not a sambench database, or damaged", and nothing changed.
    /// A --db that is not a file (a directory, a FIFO, a link to a device) is named for what it
    /// is by every command, never "input/output error", a raw SQLite message or "an empty file",
    /// and a FIFO is never opened (that would block).
    func testDatabasePathsThatAreNotFilesAreNamed() throws {
        let folder = path("a-folder.sqlite"), fifo = path("a-fifo.sqlite"), link = path("a-link.sqlite")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "/dev/null")
        for (db, what) in [(folder, "a directory"), (fifo, "a FIFO"), (link, "a character device")] {
            for command in [["run", path("s.toml"), "--db", db, "--checkpoints", path("ck"), "--threads", "1"], ["runs", "--db", db], ["report", "--db", db]] {
                let r = try runSeparated(binary, command)
                XCTAssertEqual(r.status, 2, "\(command): \(r.out) \(r.err)")
                XCTAssertTrue(r.err.contains("\(db) is \(what)"), "\(command): \(r.err)")
            }
        }
        var st = stat()
        XCTAssertEqual(lstat(link, &st), 0)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFLNK, "the link was replaced")
    }

    func testReadOnlyAndEmptyDatabasesAreExplained() throws {
        let fs = try mountTmpfs("ro", kilobytes: 4096)
        let db = fs + "/r.sqlite"
        XCTAssertEqual(try run(db).status, 0)
        try remountReadOnly(fs)
        for (what, result) in [("run", try run(db)), ("run on a new file", try run(fs + "/new.sqlite")),
                               ("report", try runSeparated(binary, ["report", "--db", db])),
                               ("runs", try runSeparated(binary, ["runs", "--db", db]))] {
            XCTAssertNotEqual(result.status, 0, "\(what): \(result.out) \(result.err)")
            XCTAssertTrue(result.err.contains("read-only file system") || result.err.contains("Read-only file system"), "\(what): \(result.err)")
            XCTAssertFalse(result.err.contains("damaged"), "\(what): \(result.err)")
        }
        FileManager.default.createFile(atPath: path("empty.sqlite"), contents: Data())
        for command in ["report", "runs"] {
            let r = try runSeparated(binary, [command, "--db", path("empty.sqlite")])
            XCTAssertNotEqual(r.status, 0, command)
            XCTAssertTrue(r.err.contains("an empty file (0 bytes), no results yet"), "\(command): \(r.err)")
        }
        // An SQLite file with no tables (what `cp` of a live database can copy: its writes still in
        // the -wal file) is said so by the readers, not met with "no such table".
        let noTables = path("no-tables.sqlite")
        try DatabaseQueue(path: noTables).write { try $0.execute(sql: "CREATE TABLE x(a); DROP TABLE x") }
        for command in ["report", "runs"] {
            let r = try runSeparated(binary, [command, "--db", noTables])
            XCTAssertNotEqual(r.status, 0, command)
            XCTAssertTrue(r.err.contains("an SQLite database with no tables") && r.err.contains(".backup"), "\(command): \(r.err)")
            XCTAssertFalse(r.err.contains("no such table"), "\(command): \(r.err)")
        }
        try (Self.suite + "\n[[expect]]\nwhat = \"all-done\"\n").write(toFile: path("expect.toml"), atomically: true, encoding: .utf8)
        let check = try runSeparated(binary, ["check", "--db", noTables, "--suite", path("expect.toml")])
        XCTAssertTrue(check.err.contains("an SQLite database with no tables"), "check: \(check.err)")
        // A runner takes an empty file for a new database.
        XCTAssertEqual(try run(path("empty.sqlite")).status, 0)
        XCTAssertEqual(try query(path("empty.sqlite"), "SELECT status FROM runs") as [String], ["done"])
    }

    /// A label file changed while a suite runs: the runs still queued are refused (their keys
    /// name the old file), the next invocation trains the new data under new keys, and the
    /// results on the old data stay apart.
    func testDataChangedUnderASuiteIsNeverMixed() throws {
        let data = path("data")
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        func writeLabels(_ labels: [Int64]) throws {
            var header = "{'descr': '<i8', 'fortran_order': False, 'shape': (\(labels.count),), }"
            while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
            header += "\n"
            var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(header.utf8.count), 0] + Array(header.utf8)
            for v in labels { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
            try Data(bytes).write(to: URL(fileURLWithPath: data + "/labels.npy"))
        }
        try writeLabels((0..<256).map { Int64($0 * 7 % 10) })
        let suite = Self.suite.replacingOccurrences(of: "kind = \"symmetric\"\nrate = 0.2", with: "kind = \"human\"\nlabels = \"labels.npy\"")
            + "\n[grid]\nseed = [1, 2]\n"
        XCTAssertTrue(suite.contains("human"))
        try suite.write(toFile: path("s.toml"), atomically: true, encoding: .utf8)
        let db = path("data.sqlite")
        let (runner, reached) = try runUntil(db, "epoch ", extra: ["--data-dir", data])
        XCTAssertTrue(reached)
        try writeLabels((0..<256).map { Int64($0 * 3 % 10) })
        runner.waitUntilExit()
        XCTAssertEqual(runner.terminationStatus, 1)
        let failed: [String] = try query(db, "SELECT error FROM runs WHERE status = 'failed'")
        XCTAssertEqual(failed.count, 1, "\(failed)")
        XCTAssertTrue(failed.first?.contains("the data changed since this suite was resolved") == true, "\(failed)")
        let oldIdentity: [String] = try query(db, "SELECT DISTINCT data_identity FROM runs")
        XCTAssertEqual(oldIdentity.count, 1)

        let again = try run(db, ["--data-dir", data])
        XCTAssertEqual(again.status, 0, again.err)
        let rows = try DatabaseQueue(path: db).read { try Row.fetchAll($0, sql: "SELECT data_identity, status FROM runs") }
        XCTAssertEqual(rows.count, 4)
        let new = rows.filter { ($0["data_identity"] as String) != oldIdentity[0] }
        XCTAssertEqual(new.count, 2)
        XCTAssertTrue(new.allSatisfy { ($0["status"] as String) == "done" })
        // No epoch of a new run came from the old data's runs, and each run has its own three.
        XCTAssertEqual(try query(db, "SELECT count(*) FROM epochs") as [Int], [3 + 2 * 3])
    }
}
