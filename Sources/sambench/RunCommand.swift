import ArgumentParser
import Datasets
import Foundation
import Runner
import Store
import Suites
import Training

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a suite: every run of its grid, each stored in the results database as it goes.",
        discussion: """
        The suite (TOML, see docs/SUITES.md) expands into runs; each run has a key, a hash of its \
        fully resolved configuration and of its data's checksums. Runs already finished in the \
        database are skipped, so the same command can be run again at any time: after Ctrl-C, a \
        crash or a kill, unfinished runs resume from their last finished epoch (checkpoints under \
        results/checkpoints/<key>/, removed when a run is done). A failed or diverged run never \
        stops the suite; failed runs are tried again by the next `sambench run`. A worker that \
        reports no progress for --stall-timeout seconds (a batch, an epoch; 30 minutes by default) \
        is ended and its run marked failed, so a stopped or hung process never stalls the suite.

        Each run trains in a worker process; --jobs N trains N at once (with --threads each, by \
        default the cores divided by N) and this process is the only one writing the database. \
        A second `sambench run` on the same database is refused. --shard K/N runs a fixed K-th of \
        N parts of the grid, for other machines with their own --db; `sambench merge` combines \
        the databases afterwards.

        Exit status: 0 when every run finished (done or diverged), 1 when some failed, 2 for a \
        bad suite or option, 130 when interrupted (stopped by a signal, or a worker ended from outside).
        """
    )

    @Argument(help: "The suite file, e.g. suites/quick.toml.") var suite: String
    @OptionGroup var database: DatabaseOption
    @Option(parsing: .unconditional, help: "Runs trained at once, each in its own process.") var jobs: Int = 1
    @OptionGroup var threadsOption: ThreadsOption
    /// oneDNN threads per run: as asked, else the cores divided by --jobs.
    var threads: Int { threadsOption.resolved(max(1, ProcessInfo.processInfo.activeProcessorCount / jobs)) }
    @Flag(help: "Print the runs and their status without training, and the wall time they would take here (from a few steps of each model, timed now).") var dryRun = false
    @Option(help: "Only the runs that match, e.g. 'optimizer=sam,rho<=0.05,noise_rate>=0.4' (fields: \(RunFilter.fields.joined(separator: ", "))).")
    var filter: String?
    @Option(help: "Run the K-th of N deterministic parts of the grid, e.g. 2/4.") var shard: String?
    @OptionGroup var dataDirectory: DataDirOption
    var dataDir: String? { dataDirectory.dataDir }
    @Option(help: "Where run checkpoints go.") var checkpoints: String = "results/checkpoints"
    @Flag(help: "Keep each run's last checkpoint when it is done.") var keepCheckpoints = false
    @Option(help: ArgumentHelp("End a worker that reports nothing for this many seconds (stopped or hung) and mark its run failed; 0: never.",
                               valueName: "seconds"))
    var stallTimeout: Int = 1800
    @Flag(help: "Print failures and the summary only.") var quiet = false
    @Flag(help: "Print every epoch, also on a terminal.") var verbose = false

    func validate() throws {
        guard jobs >= 1 else { throw ValidationError("--jobs must be >= 1") }
        guard stallTimeout >= 0 else { throw ValidationError("--stall-timeout must be >= 0 (0: never)") }
        guard !(quiet && verbose) else { throw ValidationError("--quiet and --verbose contradict each other") }
    }

    func run() throws {
        let plan = try usageFailure { try SuitePlan(suite: self.suite, dataDir: dataDir, filter: filter, shard: shard) }
        let (suite, runs, folded) = (plan.suite, plan.runs, plan.folded)
        if dryRun { return try printPlan(plan) }

        let lock = try usageFailure { try WriterLock(database: database.db, purpose: "sambench run \(self.suite)") }
        let checkpointLock = try usageFailure { try WriterLock(checkpoints: checkpoints, purpose: "sambench run \(self.suite) --db \(database.db)") }
        let store = try usageFailure { try Store(path: database.db) }
        let stale = try store.recoverStaleRuns()
        if stale > 0 && !quiet { emit("\(stale) runs left running by a runner that did not end cleanly: resuming them") }
        try store.register(suite: suite, runs: runs)
        if !quiet {
            emit("suite \(suite.name): \(runs.count) runs\(folded > 0 ? " (\(folded) duplicates folded)" : ""), " +
                 "database \(database.db), \(jobs) at a time, \(threads) threads each")
        }
        var options = RunnerOptions(executable: ThisExecutable.path,
                                    provenance: Provenance(host: ProcessInfo.processInfo.hostName, version: SambenchVersion.string,
                                                           gitRevision: ThisExecutable.gitRevision(), threads: threads))
        options.jobs = jobs
        options.threads = threads
        options.dataDir = dataDir
        options.checkpointRoot = checkpoints
        options.pretrainedRoot = ((database.db as NSString).deletingLastPathComponent as NSString).appendingPathComponent("pretrained")
        options.keepCheckpoints = keepCheckpoints
        options.stallTimeout = stallTimeout > 0 ? TimeInterval(stallTimeout) : nil
        let display = ConsoleDisplay.forStandardOutput(quiet ? .quiet : verbose ? .verbose : .normal)
        let summary = try Runner(store: store, runs: runs, options: options, display: display).run()
        withExtendedLifetime((lock, checkpointLock)) {}
        if summary.stopped || summary.interrupted > 0 { throw ExitCode(130) }
        if summary.failed > 0 { throw ExitCode(1) }
    }

    func printPlan(_ plan: SuitePlan) throws {
        let (suite, runs) = (plan.suite, plan.runs)
        let statuses = FileManager.default.fileExists(atPath: database.db) ? try usageFailure { try Store(path: database.db, readOnly: true).statuses() } : [:]
        emit("suite \(suite.name): \(runs.count) runs\(plan.folded > 0 ? " (\(plan.folded) duplicates folded)" : "")")
        if !suite.description.isEmpty { emit(suite.description.trimmingCharacters(in: .whitespacesAndNewlines)) }
        // A few thousand lines per write: a suite of 100,000 runs is listed in a fraction of a second.
        for start in stride(from: 0, to: runs.count, by: 4096) {
            emit(runs[start..<min(runs.count, start + 4096)].map { "\($0.key)  \(pad(statuses[$0.key]?.rawValue ?? "new", 11)) \($0.spec.label)" }
                .joined(separator: "\n"))
        }
        let units = plan.workLeft(statuses: statuses)
        let finished = runs.filter { statuses[$0.key]?.finished == true }.count
        let left = runs.filter { statuses[$0.key]?.finished != true }
        guard !left.isEmpty else { return emit("\(finished) finished, nothing to run") }
        let estimate = try WallTimeEstimate.make(left, jobs: jobs, threads: threads, progress: { FileHandle.standardError.write(Data("\($0)\n".utf8)) })
        for (id, r) in estimate.rates.sorted(by: { $0.key < $1.key }) {
            emit("measured \(id.replacingOccurrences(of: " ", with: " at batch ")): SGD step \(Self.seconds(r.sgdStep)), SAM step \(Self.seconds(r.samStep)), " +
                 "eval \(String(format: "%.0f", 1 / r.evalImage)) images/s (\(threads) thread\(threads == 1 ? "" : "s"))")
        }
        emit("\(finished) finished, \(left.count) to run: about \(ConsoleDisplay.duration(estimate.wall)) of wall time with --jobs \(jobs) " +
             "--threads \(threads) (\(ConsoleDisplay.duration(estimate.perRun.reduce(0, +))) of run time; \(units < 1e5 ? "<0.1" : String(format: "%.1f", units / 1e6)) " +
             "million training images, a SAM step counting as its two passes). An estimate from steps timed just now: jobs that share cores run slower.")
    }

    static func seconds(_ s: Double) -> String { s < 1 ? String(format: "%.0f ms", 1000 * s) : String(format: "%.2f s", s) }
}
