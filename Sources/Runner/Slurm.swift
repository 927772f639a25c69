// A suite as a Slurm job array of shards and a merge job: the sbatch scripts and their submission.
import Datasets
import Engine
import Foundation
import Store
import Suites

/// A suite as a Slurm job array (`sambench slurm`): task K of N runs shard K/N of the suite
/// into its own database (SQLite over a shared filesystem is unsafe with more than one host on
/// one file), and a merge job, after every task has ended however it ended (`afterany`), merges
/// the shards that exist into the suite's database. Everything is an absolute path, so the
/// scripts run from any directory on any node that sees the same files. docs/CLUSTER.md.
public struct SlurmJob: Sendable {
    /// The sambench executable and the suite file, absolute; the suite's SHA-256 and name.
    public var executable: String
    public var suite: String
    public var suiteSHA256: String
    public var suiteName: String
    public var shards: Int
    /// The folder for the scripts, the shard databases, their checkpoints and the logs.
    public var out: String
    /// The database the merge job writes.
    public var target: String
    public var dataDir: String?
    public var partition: String?
    public var time: String?
    public var cpusPerTask: Int
    public var mem: String?
    /// At most this many tasks at once (`--array=...%K`).
    public var arrayParallelism: Int?
    /// `#SBATCH` lines for both scripts' headers; other lines (`module load ...`) run before sambench.
    public var extra: [String]

    public init(executable: String, suite: String, suiteSHA256: String, suiteName: String, shards: Int, out: String, target: String,
                dataDir: String? = nil, partition: String? = nil, time: String? = nil, cpusPerTask: Int = 2, mem: String? = nil,
                arrayParallelism: Int? = nil, extra: [String] = []) {
        (self.executable, self.suite, self.suiteSHA256, self.suiteName) = (executable, suite, suiteSHA256, suiteName)
        (self.shards, self.out, self.target, self.dataDir) = (shards, out, target, dataDir)
        (self.partition, self.time, self.cpusPerTask, self.mem) = (partition, time, cpusPerTask, mem)
        (self.arrayParallelism, self.extra) = (arrayParallelism, extra)
    }

    /// Checks what Slurm would otherwise reject later, or what would make a script wrong.
    public func validate() throws {
        guard shards >= 1 else { throw RunnerError("--shards must be >= 1") }
        guard cpusPerTask >= 1 else { throw RunnerError("--cpus-per-task must be >= 1") }
        if let k = arrayParallelism, k < 1 { throw RunnerError("--array-parallelism must be >= 1") }
        if let time, time.range(of: #"^(\d+-)?\d+(:\d{1,2}){0,2}$"#, options: .regularExpression) == nil {
            throw RunnerError("--time '\(time)': expected Slurm's form, e.g. 04:00:00, 90, 1-12:00:00")
        }
        if let mem, mem.range(of: #"^\d+[KMGT]?$"#, options: .regularExpression) == nil {
            throw RunnerError("--mem '\(mem)': expected a size such as 8G or 4000M")
        }
        if let partition, partition.isEmpty || partition.contains(where: { $0.isWhitespace }) {
            throw RunnerError("--partition '\(partition)': expected a partition name")
        }
        // #SBATCH lines cannot quote, and % starts Slurm's file-name patterns.
        for (option, path) in [("--out", out), ("--db", target)] where path.contains(where: { $0.isWhitespace || "%'\"\\".contains($0) }) {
            throw RunnerError("\(option) \(path): Slurm's #SBATCH lines cannot hold spaces, quotes or %; choose a plain path")
        }
        // A control character in a name or path would end a comment or a quoted word early (a
        // newline is a new shell line), or make a file name the script cannot check.
        for (what, value) in [("the suite's name", suiteName), ("the suite path", suite), ("the sambench path", executable), ("--data-dir", dataDir ?? ""),
                              ("--out", out), ("--db", target)] {
            if let c = firstControlCharacter(value) {
                throw RunnerError("\(what) \(String(reflecting: value)) holds a control character (\(c)); Slurm scripts need it on one line")
            }
        }
        for line in extra where line.contains("\n") || line.trimmingCharacters(in: .whitespaces).isEmpty {
            throw RunnerError("--extra '\(line)': give one non-empty line per --extra")
        }
    }

    /// The job name: the suite's name and the output folder's hash, so two folders of one suite
    /// do not see each other's jobs.
    public var jobName: String { "sambench-\(SlurmJob.plainName(suiteName))-\(SHA256Hex.digest(Array(out.utf8)).prefix(6))" }

    /// A suite name as a job name or folder name: letters, digits, `.`, `_` and `-`, others `_`.
    public static func plainName(_ name: String) -> String {
        name.map { $0.isLetter || $0.isNumber || "._-".contains($0) ? String($0) : "_" }.joined()
    }

    public var shardsScript: String { (out as NSString).appendingPathComponent("shards.sbatch") }
    public var mergeScript: String { (out as NSString).appendingPathComponent("merge.sbatch") }
    public var logs: String { (out as NSString).appendingPathComponent("logs") }
    public func shardDatabase(_ k: Int) -> String { (out as NSString).appendingPathComponent("shard-\(k).sqlite") }

    /// `--array=` for these shards (all of them in the script; the unfinished ones when resubmitting).
    public func arraySpec(_ indices: [Int]) -> String {
        let list = indices == Array(1...shards) ? "1-\(shards)" : indices.map(String.init).joined(separator: ",")
        return list + (arrayParallelism.map { "%\($0)" } ?? "")
    }

    private var headerExtra: [String] { extra.filter { $0.hasPrefix("#SBATCH") } }
    private var setup: [String] { extra.filter { !$0.hasPrefix("#SBATCH") } }

    private func common(_ cpus: Int) -> [String] {
        ["#SBATCH --cpus-per-task=\(cpus)", "#SBATCH --ntasks=1"]
            + [time.map { "#SBATCH --time=\($0)" }, mem.map { "#SBATCH --mem=\($0)" }, partition.map { "#SBATCH --partition=\($0)" }].compactMap { $0 }
    }

    private var dataArguments: String { dataDir.map { " --data-dir \(shellQuoted($0))" } ?? "" }

    /// The array job: task K runs shard K/N into its own database, then exits with sambench's status.
    public func shardsText(written: String) -> String {
        let lines = [
            "#!/bin/bash",
            "# Written by `sambench slurm` on \(written): suite \"\(suiteName)\" as \(shards) shards, one per array task.",
            "# Task K trains shard K/\(shards) into its own database; merge.sbatch merges them. See docs/CLUSTER.md.",
            "#SBATCH --job-name=\(jobName)",
            "#SBATCH --array=\(arraySpec(Array(1...shards)))",
        ] + common(cpusPerTask) + [
            // Two minutes before the time limit the runner is asked to stop: its runs end
            // `interrupted` and resume from their last epoch when the array is submitted again.
            "#SBATCH --signal=B:TERM@120",
            "#SBATCH --output=\(logs)/shard-%a.%A.out",
            "#SBATCH --open-mode=append",
        ] + headerExtra + [
            "set -euo pipefail",
        ] + setup + [
            "K=${SLURM_ARRAY_TASK_ID:?run this script with sbatch, as a job array}",
            "SUITE=\(shellQuoted(suite))",
            "# The suite as it was when this script was written: an edited suite would change the shards under it.",
            "printf '%s  %s\\n' \(suiteSHA256) \"$SUITE\" | sha256sum --check --status || {",
            "    echo \"error: $SUITE changed since this script was written; write the scripts again with sambench slurm\" >&2; exit 2; }",
            "echo \"shard $K/\(shards) of $SUITE on $(hostname) with --threads \(cpusPerTask)\"",
            "exec \(shellQuoted(executable)) run \"$SUITE\" --shard \"$K/\(shards)\" --db \(shellQuoted(out))/shard-\"$K\".sqlite \\",
            "    --checkpoints \(shellQuoted(out))/checkpoints/shard-\"$K\" --jobs 1 --threads \(cpusPerTask)\(dataArguments)",
        ]
        return lines.joined(separator: "\n") + "\n"
    }

    /// The merge job: merges the shard databases that exist into the target, lists the shards
    /// without one, and reports the suite's completeness (exit status 1 when incomplete).
    public func mergeText(written: String) -> String {
        let lines = [
            "#!/bin/bash",
            "# Written by `sambench slurm` on \(written): merges the shards of suite \"\(suiteName)\" into \(target).",
            "# Submitted with --dependency=afterany on the array: it runs however the shards ended. See docs/CLUSTER.md.",
            "#SBATCH --job-name=\(jobName)-merge",
        ] + common(1) + [
            "#SBATCH --output=\(logs)/merge.%j.out",
        ] + headerExtra + [
            "set -uo pipefail",
        ] + setup + [
            "present=(); missing=()",
            "for K in $(seq 1 \(shards)); do",
            "    f=\(shellQuoted(out))/shard-$K.sqlite",
            "    if [ -f \"$f\" ]; then present+=(\"$f\"); else missing+=(\"$K\"); fi",
            "done",
            "if [ ${#missing[@]} -gt 0 ]; then",
            "    echo \"shards without a database (the task never started, or ended before its first write): ${missing[*]}\"",
            "fi",
            "if [ ${#present[@]} -eq 0 ]; then echo \"no shard database to merge\"; exit 1; fi",
            "exec \(shellQuoted(executable)) merge \"${present[@]}\" --into \(shellQuoted(target)) --suite \(shellQuoted(suite))\(dataArguments)",
        ]
        return lines.joined(separator: "\n") + "\n"
    }

    /// Writes both scripts (and the logs folder).
    public func write(date: Date = Date()) throws {
        let written = ISO8601DateFormatter().string(from: date)
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)
        for (path, text) in [(shardsScript, shardsText(written: written)), (mergeScript, mergeText(written: written))] {
            do { try OutputFile.check(path) } catch { throw RunnerError("\(error)") }
            try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
            chmod(path, 0o755)
        }
    }
}

public extension SlurmJob {
    /// The shards whose runs are not all finished in their own databases (all of them before
    /// the first submission): `keys(K)` are shard K's run keys.
    func unfinishedShards(keys: (Int) -> [String]) throws -> [Int] {
        try (1...shards).filter { k in
            guard FileManager.default.fileExists(atPath: shardDatabase(k)) else { return true }
            let statuses = try Store(path: shardDatabase(k), readOnly: true).statuses()
            return !keys(k).allSatisfy { statuses[$0]?.finished == true }
        }
    }

    /// Jobs of an earlier submission from this folder still queued or running (by job name).
    func activeJobs() throws -> [String] {
        try Slurm.call("squeue", ["--noheader", "--name=\(jobName),\(jobName)-merge", "--format=%i %j %T"])
            .split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// Submits the array for `indices` (none: the merge alone) and the merge job after it;
    /// returns their job ids.
    func submit(_ indices: [Int]) throws -> (array: String?, merge: String) {
        var array: String?
        if !indices.isEmpty {
            array = try Slurm.jobID(Slurm.call("sbatch", ["--parsable", "--array=\(arraySpec(indices))", shardsScript]))
        }
        let merge = try Slurm.jobID(Slurm.call("sbatch", ["--parsable"] + (array.map { ["--dependency=afterany:\($0)"] } ?? []) + [mergeScript]))
        return (array, merge)
    }

    /// Appends a submission to OUT/submissions.log (date, array id, shards, merge id).
    func record(shards: [Int], ids: (array: String?, merge: String)) {
        let line = "\(ISO8601DateFormatter().string(from: Date())) array=\(ids.array ?? "-") " +
            "shards=\(shards.map(String.init).joined(separator: ",")) merge=\(ids.merge)\n"
        let log = (out as NSString).appendingPathComponent("submissions.log")
        if let h = FileHandle(forWritingAtPath: log) {
            h.seekToEndOfFile()
            h.write(Data(line.utf8))
            try? h.close()
        } else {
            try? Data(line.utf8).write(to: URL(fileURLWithPath: log))
        }
    }
}

/// Slurm's commands, called as a user would.
public enum Slurm {
    /// Runs `command` (found on PATH); its standard output, or an error with its standard error.
    public static func call(_ command: String, _ arguments: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [command] + arguments
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let output = out.fileHandleForReading.readDataToEndOfFile()
        let error = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        p.waitUntilExit()
        if p.terminationStatus == 127 {
            throw RunnerError("\(command) not found: run this on a Slurm login node, or submit the scripts yourself (docs/CLUSTER.md)")
        }
        guard p.terminationStatus == 0 else {
            throw RunnerError("\(([command] + arguments).joined(separator: " ")) failed (status \(p.terminationStatus))\(error.isEmpty ? "" : ": \(error)")")
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// The id `sbatch --parsable` prints ("id" or "id;cluster").
    static func jobID(_ output: String) throws -> String {
        let id = output.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ";").first.map(String.init) ?? ""
        guard !id.isEmpty, id.allSatisfy(\.isNumber) else { throw RunnerError("sbatch printed no job id: '\(output)'") }
        return id
    }
}

/// `s` as one word for bash, whatever it holds.
public func shellQuoted(_ s: String) -> String {
    if !s.isEmpty, s.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "/._-+=:,@%".contains($0)) }) { return s }
    return "'" + s.replacingOccurrences(of: "'", with: #"'\''"#) + "'"
}
