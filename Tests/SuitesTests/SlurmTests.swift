import Foundation
import Runner
import TestSupport
import XCTest

/// `sambench slurm` without a cluster: the scripts it writes, run by bash with a stand-in for
/// sambench, and `--submit` against stand-ins for sbatch and squeue that record what they were
/// asked. scripts/test-slurm.sh proves the same on a real Slurm.
final class SlurmTests: XCTestCase {
    var binary: URL!
    var dir: URL!

    override func setUpWithError() throws {
        binary = try sambenchExecutable()
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("slurm-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try RunnerTests.suite.write(to: dir.appendingPathComponent("s.toml"), atomically: true, encoding: .utf8)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    /// An executable script at `name` that appends its arguments, one per line, to `name.calls`
    /// (a blank line after each call), then runs `body`.
    func stub(_ name: String, _ body: String = "") throws {
        let text = "#!/bin/bash\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >> \(shellQuoted(path(name) + ".calls"))\necho >> \(shellQuoted(path(name) + ".calls"))\n\(body)\n"
        try text.write(toFile: path(name), atomically: true, encoding: .utf8)
        chmod(path(name), 0o755)
    }

    func calls(_ name: String) -> [[String]] {
        let text = (try? String(contentsOfFile: path(name) + ".calls", encoding: .utf8)) ?? ""
        return text.components(separatedBy: "\n\n").filter { !$0.isEmpty }.map { $0.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) }
    }

    func bash(_ script: String, _ environment: [String: String] = [:]) throws -> (status: Int32, out: String, err: String) {
        try runSeparated(URL(fileURLWithPath: "/bin/bash"), [script], environment: environment)
    }

    /// Shard `k` of `n` run here into out/shard-k.sqlite, as its array task would.
    func runShard(_ k: Int, of n: Int) throws {
        let r = try runSeparated(binary, ["run", path("s.toml"), "--shard", "\(k)/\(n)", "--db", path("out/shard-\(k).sqlite"),
                                          "--checkpoints", path("ck"), "--threads", "1", "--quiet"])
        XCTAssertEqual(r.status, 0, r.err)
    }

    func job(dataDir: String? = nil) -> SlurmJob {
        SlurmJob(executable: path("fake-sambench"), suite: path("s.toml"), suiteSHA256: "", suiteName: "kill", shards: 3, out: path("out"),
                 target: path("all.sqlite"), dataDir: dataDir, time: "04:00:00", cpusPerTask: 4, mem: "8G", arrayParallelism: 2,
                 extra: ["#SBATCH --account=ml", "export MARK=set"])
    }

    /// Task K runs shard K/N into its own database and checkpoints, with the job's threads and
    /// data folder (quoted whatever it holds); the header carries the resources, the stop signal
    /// and the extra lines; the script refuses an edited suite and a run outside an array.
    func testTheShardsScriptRunsItsShard() throws {
        try stub("fake-sambench", "echo \"MARK=$MARK\"")
        var j = job(dataDir: path("my 'data' $HOME"))
        j.suiteSHA256 = fileSHA256(path("s.toml"))
        try j.validate()
        try j.write()
        let text = try String(contentsOfFile: j.shardsScript, encoding: .utf8)
        for line in ["#SBATCH --array=1-3%2", "#SBATCH --cpus-per-task=4", "#SBATCH --time=04:00:00", "#SBATCH --mem=8G",
                     "#SBATCH --signal=B:TERM@120", "#SBATCH --account=ml", "#SBATCH --job-name=\(j.jobName)",
                     "#SBATCH --output=\(path("out"))/logs/shard-%a.%A.out"] {
            XCTAssertTrue(text.contains(line + "\n"), "\(line) in\n\(text)")
        }
        let r = try bash(j.shardsScript, ["SLURM_ARRAY_TASK_ID": "2"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("MARK=set"), r.out)
        XCTAssertEqual(calls("fake-sambench"), [["run", path("s.toml"), "--shard", "2/3", "--db", path("out/shard-2.sqlite"),
                                                 "--checkpoints", path("out/checkpoints/shard-2"), "--jobs", "1", "--threads", "4",
                                                 "--data-dir", path("my 'data' $HOME")]])
        // Outside an array.
        let bare = try bash(j.shardsScript)
        XCTAssertNotEqual(bare.status, 0)
        XCTAssertTrue(bare.err.contains("run this script with sbatch"), bare.err)
        // The suite edited after the script was written: refused, sambench not called.
        try (RunnerTests.suite + "\n# edited\n").write(toFile: path("s.toml"), atomically: true, encoding: .utf8)
        let edited = try bash(j.shardsScript, ["SLURM_ARRAY_TASK_ID": "1"])
        XCTAssertEqual(edited.status, 2)
        XCTAssertTrue(edited.err.contains("changed since this script was written"), edited.err)
        XCTAssertEqual(calls("fake-sambench").count, 1)
    }

    /// The merge job merges the shard databases that exist, names the ones that do not, and asks
    /// merge for the suite's completeness.
    func testTheMergeScriptMergesWhatExists() throws {
        try stub("fake-sambench")
        let j = job()
        try j.write()
        let text = try String(contentsOfFile: j.mergeScript, encoding: .utf8)
        XCTAssertTrue(text.contains("#SBATCH --job-name=\(j.jobName)-merge\n") && text.contains("#SBATCH --cpus-per-task=1\n"), text)
        XCTAssertFalse(text.contains("--array"), text)
        for k in [1, 3] { FileManager.default.createFile(atPath: j.shardDatabase(k), contents: Data()) }
        let r = try bash(j.mergeScript)
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("shards without a database (the task never started, or ended before its first write): 2"), r.out)
        XCTAssertEqual(calls("fake-sambench"), [["merge", j.shardDatabase(1), j.shardDatabase(3), "--into", path("all.sqlite"), "--suite", path("s.toml")]])
        for k in [1, 3] { try FileManager.default.removeItem(atPath: j.shardDatabase(k)) }
        let none = try bash(j.mergeScript)
        XCTAssertEqual(none.status, 1)
        XCTAssertTrue(none.out.contains("no shard database to merge"), none.out)
    }

    /// What Slurm would reject or a script could not hold is refused before anything is written.
    func testBadOptionsAreRefused() throws {
        var bad: [SlurmJob] = []
        for change in [{ (j: inout SlurmJob) in j.time = "4 hours" }, { $0.mem = "lots" }, { $0.shards = 0 }, { $0.cpusPerTask = 0 },
                       { $0.arrayParallelism = 0 }, { $0.out = "/tmp/my results" }, { $0.target = "/tmp/a%b.sqlite" },
                       { $0.partition = "two words" }, { $0.extra = ["#SBATCH --a\n#SBATCH --b"] },
                       // A line break in a name would end the script's comment (a shell line of its own), in a path a
                       // file name the task's checksum line cannot check: refused, whatever parsed them.
                       { $0.suiteName = "x\nrm -rf ~" }, { $0.suiteName = "x\u{1B}[2J" }, { $0.suite = "/tmp/a\nb.toml" },
                       { $0.dataDir = "/tmp/data\n" }] {
            var j = job()
            change(&j)
            bad.append(j)
        }
        for j in bad { XCTAssertThrowsError(try j.validate(), "\(j)") }
        for time in ["04:00:00", "90", "1-12:00:00", "30:00"] {
            var j = job()
            j.time = time
            XCTAssertNoThrow(try j.validate(), time)
        }
        XCTAssertEqual(job().arraySpec([1, 2, 3]), "1-3%2")
        XCTAssertEqual(job().arraySpec([2, 3]), "2,3%2")
        for s in ["plain", "with space", "it's", "$(echo no)", "a\"b", "", "back\\slash", "new\nline"] {
            try "printf '%s' \(shellQuoted(s))".write(toFile: path("echo.sh"), atomically: true, encoding: .utf8)
            XCTAssertEqual(try bash(path("echo.sh")).out, s, "quoting \(s)")
        }
    }

    /// `--submit` against stand-ins for sbatch and squeue: the array then the merge job after it
    /// (afterany); again after some shards finished, only the others; with every shard finished,
    /// the merge alone; refused while an earlier submission's jobs are queued.
    func testSubmitSubmitsWhatIsUnfinished() throws {
        let env = ["PATH": path("bin") + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")]
        let args = ["slurm", path("s.toml"), "--shards", "2", "--cpus-per-task", "1", "--out", path("out"), "--db", path("all.sqlite"), "--submit"]
        try FileManager.default.createDirectory(atPath: path("bin"), withIntermediateDirectories: true)
        try stub("bin/sbatch", "n=$(cat \(shellQuoted(path("bin/next"))) 2>/dev/null || echo 100); echo $((n + 1)) > \(shellQuoted(path("bin/next"))); echo \"$n;cluster\"")
        try stub("bin/squeue", "[ -f \(shellQuoted(path("bin/busy"))) ] && echo '  77 sambench-kill-x RUNNING'; true")

        let first = try runSeparated(binary, args, environment: env)
        XCTAssertEqual(first.status, 0, first.err)
        XCTAssertTrue(first.out.contains("submitted shards 1-2 as job array 100") && first.out.contains("merge job 101"), first.out)
        let out = path("out")
        XCTAssertEqual(calls("bin/sbatch"), [["--parsable", "--array=1-2", out + "/shards.sbatch"],
                                             ["--parsable", "--dependency=afterany:100", out + "/merge.sbatch"]])
        XCTAssertTrue(calls("bin/squeue").first?.contains { $0.hasPrefix("--name=sambench-kill-") } == true, "\(calls("bin/squeue"))")

        // Shard 1 finished (run here as its task would), shard 2 not: only shard 2 again.
        try runShard(1, of: 2)
        let again = try runSeparated(binary, args, environment: env)
        XCTAssertEqual(again.status, 0, again.err)
        XCTAssertTrue(again.out.contains("submitted shards 2 (1 of 2 have finished) as job array 102"), again.out)
        XCTAssertEqual(calls("bin/sbatch").suffix(2), [["--parsable", "--array=2", out + "/shards.sbatch"],
                                                       ["--parsable", "--dependency=afterany:102", out + "/merge.sbatch"]])

        // Both finished: the merge alone.
        try runShard(2, of: 2)
        let merge = try runSeparated(binary, args, environment: env)
        XCTAssertEqual(merge.status, 0, merge.err)
        XCTAssertTrue(merge.out.contains("every shard has finished in its database: submitted the merge alone"), merge.out)
        XCTAssertEqual(calls("bin/sbatch").last, ["--parsable", out + "/merge.sbatch"])
        let log = try String(contentsOfFile: path("out/submissions.log"), encoding: .utf8)
        XCTAssertEqual(log.split(separator: "\n").count, 3, log)

        // An earlier submission still queued: refused, nothing submitted.
        FileManager.default.createFile(atPath: path("bin/busy"), contents: Data())
        let before = calls("bin/sbatch").count
        let busy = try runSeparated(binary, args, environment: env)
        XCTAssertEqual(busy.status, 2)
        XCTAssertTrue(busy.err.contains("still queued or running") && busy.err.contains("77 sambench-kill-x RUNNING"), busy.err)
        XCTAssertEqual(calls("bin/sbatch").count, before)

        // More shards than runs, and no sbatch at all.
        let many = try runSeparated(binary, ["slurm", path("s.toml"), "--shards", "5", "--out", path("o2")])
        XCTAssertEqual(many.status, 2)
        XCTAssertTrue(many.err.contains("the suite has 4 runs"), many.err)
        let noSlurm = try runSeparated(binary, ["slurm", path("s.toml"), "--shards", "2", "--out", path("o3"), "--submit"],
                                       environment: ["PATH": path("nothing")])
        XCTAssertEqual(noSlurm.status, 2)
        XCTAssertTrue(noSlurm.err.contains("squeue not found"), noSlurm.err)
    }
}

/// The SHA-256 of a file, in hex.
private func fileSHA256(_ path: String) -> String {
    let r = try! runCommand("/usr/bin/sha256sum", [path])
    return String(r.output.prefix(64))
}
