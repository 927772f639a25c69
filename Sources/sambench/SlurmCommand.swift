import ArgumentParser
import Datasets
import Engine
import Foundation
import Runner
import Suites

struct SlurmCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "slurm",
        abstract: "Run a suite on a Slurm cluster: a job array of shards, each with its own database, then a merge job.",
        discussion: """
        Writes two sbatch scripts into --out: shards.sbatch, a job array whose task K runs \
        `sambench run SUITE --shard K/N` into OUT/shard-K.sqlite (its own database: never one SQLite \
        file shared by several hosts) with --cpus-per-task threads, and merge.sbatch, which merges the \
        shard databases that exist into --db and lists what has not finished. Paths are absolute: the \
        same sambench binary and suite file must be visible on the compute nodes. A task is asked to \
        stop two minutes before its time limit (its runs end interrupted and resume later).

        Without --submit the scripts are written for review. With --submit they are submitted with \
        sbatch: the array (only the shards not yet finished in their databases), then the merge job \
        with --dependency=afterany, so finished shards are merged even when another fails or is \
        cancelled. After a failure, a cancellation or a time limit, the same command submits what is \
        left: finished runs are never run again. A submission is refused while jobs of an earlier one \
        from the same --out are queued or running. docs/CLUSTER.md has the workflow.
        """
    )

    @Argument(help: "The suite file, e.g. suites/noise.toml.") var suite: String
    @Option(parsing: .unconditional, help: "Number of shards (array tasks); at most the suite's runs.") var shards: Int
    @Option(help: "Slurm partition (default: the cluster's).") var partition: String?
    @Option(help: "Time limit per task, e.g. 12:00:00 (default: the partition's).") var time: String?
    @Option(parsing: .unconditional, help: "CPUs per task, also sambench's threads per task.") var cpusPerTask: Int = 2
    @Option(help: "Memory per task, e.g. 8G (default: the cluster's).") var mem: String?
    @Option(parsing: .unconditional, help: "At most this many tasks running at once.") var arrayParallelism: Int?
    @Option(help: "A line for both scripts, repeatable: '#SBATCH --account=X' lines go to the header, others (e.g. 'module load X') run before sambench.")
    var extra: [String] = []
    @Option(help: "Folder for the scripts, shard databases, checkpoints and logs (default: results/slurm/<suite name>).") var out: String?
    @OptionGroup var database: DatabaseOption
    @OptionGroup var dataDirectory: DataDirOption
    @Flag(help: "Submit with sbatch and print the job ids (without it, only write the scripts).") var submit = false

    func run() throws {
        let plan = try usageFailure { try SuitePlan(suite: self.suite, dataDir: dataDirectory.dataDir) }
        let (suite, runs) = (plan.suite, plan.runs)
        if shards > runs.count {
            _ = try usageFailure { throw RunnerError("--shards \(shards): the suite has \(runs.count) runs, so some shards would be empty; use at most \(runs.count)") }
        }
        let folder = out ?? "results/slurm/\(SlurmJob.plainName(suite.name))"
        let bytes = try usageFailure { () throws -> [UInt8] in
            try InputFile.contents(self.suite, what: "the suite", limit: Suite.maxBytes)
        }
        let job = SlurmJob(executable: ThisExecutable.path, suite: Self.absolute(self.suite), suiteSHA256: SHA256Hex.digest(bytes),
                           suiteName: suite.name, shards: shards, out: Self.absolute(folder), target: Self.absolute(database.db),
                           dataDir: dataDirectory.dataDir.map(Self.absolute), partition: partition, time: time, cpusPerTask: cpusPerTask,
                           mem: mem, arrayParallelism: arrayParallelism, extra: extra)
        try usageFailure { try job.validate() }
        try job.write()
        emit("suite \(suite.name): \(runs.count) runs in \(shards) shards; wrote \(job.shardsScript) and \(job.mergeScript)")
        guard submit else {
            emit("review them, then submit with --submit (or by hand: A=$(sbatch --parsable \(job.shardsScript)) && sbatch --dependency=afterany:$A \(job.mergeScript))")
            return
        }
        let active = try usageFailure { try job.activeJobs() }
        if !active.isEmpty {
            _ = try usageFailure {
                throw RunnerError("""
                    jobs of an earlier submission from \(job.out) are still queued or running (\(active.joined(separator: "; "))): \
                    wait for them to end, or scancel them, then run this again (two runners must never write one shard database)
                    """)
            }
        }
        let keys = try (1...shards).map { try plan.shard($0, of: shards).map(\.key) }
        let todo = try usageFailure { try job.unfinishedShards { keys[$0 - 1] } }
        let ids = try usageFailure { try job.submit(todo) }
        if let array = ids.array {
            let done = shards - todo.count
            emit("submitted \(shards == 1 ? "the shard" : "shards " + (todo.count == shards ? "1-\(shards)" : todo.map(String.init).joined(separator: ",")))" +
                 (done > 0 ? " (\(done) of \(shards) have finished)" : "") + " as job array \(array)")
        } else {
            emit("every shard has finished in its database: submitted the merge alone")
        }
        emit("merge job \(ids.merge) merges into \(job.target)" + (ids.array.map { " after array \($0) has ended (afterany)" } ?? ""))
        emit("follow with: squeue -j \([ids.array, ids.merge].compactMap { $0 }.joined(separator: ",")); logs in \(job.logs)")
        emit("after a failure, a cancellation or a time limit, run this same command again: only what has not finished runs")
        job.record(shards: todo, ids: ids)
    }

    static func absolute(_ path: String) -> String { URL(fileURLWithPath: path).standardizedFileURL.path }
}
