import ArgumentParser
import Charts
import Datasets
import Report
import Foundation
import Runner
import Store
import Suites
import Training

/// Errors a user fixes (a bad suite, a locked or foreign database, missing data): printed as
/// they are, exit status 2.
func usageFailure<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let e where e is SuiteError || e is StoreError || e is RunnerError || e is DataError || e is ChartError || e is CheckError {
        FileHandle.standardError.write(Data("error: \(e)\n".utf8))
        throw ExitCode(2)
    }
}

struct DatabaseOption: ParsableArguments {
    @Option(help: "The results database.") var db: String = "results/sambench.sqlite"
}

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
        stops the suite; failed runs are tried again by the next `sambench run`.

        Each run trains in a worker process; --jobs N trains N at once (with --threads each, by \
        default the cores divided by N) and this process is the only one writing the database. \
        A second `sambench run` on the same database is refused. --shard K/N runs a fixed K-th of \
        N parts of the grid, for other machines with their own --db; `sambench merge` combines \
        the databases afterwards.

        Exit status: 0 when every run finished (done or diverged), 1 when some failed, 2 for a \
        bad suite or option, 130 when interrupted.
        """
    )

    @Argument(help: "The suite file, e.g. suites/quick.toml.") var suite: String
    @OptionGroup var database: DatabaseOption
    @Option(help: "Runs trained at once, each in its own process.") var jobs: Int = 1
    @Option(help: "oneDNN threads per run (default: the cores divided by --jobs).") var threads: Int?
    @Flag(help: "Print the runs and their status without training.") var dryRun = false
    @Option(help: "Only the runs that match, e.g. 'optimizer=sam,rho<=0.05,noise_rate>=0.4' (fields: \(RunFilter.fields.joined(separator: ", "))).")
    var filter: String?
    @Option(help: "Run the K-th of N deterministic parts of the grid, e.g. 2/4.") var shard: String?
    @Option(help: "Data directory for CIFAR (default: $SAMBENCH_DATA, else ~/.local/share/sambench).") var dataDir: String?
    @Option(help: "Where run checkpoints go.") var checkpoints: String = "results/checkpoints"
    @Flag(help: "Keep each run's last checkpoint when it is done.") var keepCheckpoints = false
    @Flag(help: "Print failures and the summary only.") var quiet = false
    @Flag(help: "Print every epoch, also on a terminal.") var verbose = false

    func validate() throws {
        guard jobs >= 1 else { throw ValidationError("--jobs must be >= 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be >= 1") }
        guard !(quiet && verbose) else { throw ValidationError("--quiet and --verbose contradict each other") }
    }

    func run() throws {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let (suite, runs, folded) = try usageFailure { try Self.resolve(suite: self.suite, dataDir: dataDir, filter: filter, shard: shard) }
        if dryRun { return try printPlan(suite, runs, folded: folded) }

        let lock = try usageFailure { try WriterLock(database: database.db, purpose: "sambench run \(self.suite)") }
        let store = try usageFailure { try Store(path: database.db) }
        let stale = try store.recoverStaleRuns()
        if stale > 0 && !quiet { emit("\(stale) runs left running by a runner that did not end cleanly: resuming them") }
        try store.register(suite: suite, runs: runs)
        if !quiet {
            emit("suite \(suite.name): \(runs.count) runs\(folded > 0 ? " (\(folded) duplicates folded)" : ""), " +
                 "database \(database.db), \(jobs) at a time, \(threads ?? max(1, cores / jobs)) threads each")
        }
        var options = RunnerOptions(executable: Self.executable(),
                                    provenance: Provenance(host: ProcessInfo.processInfo.hostName, version: SambenchVersion.string,
                                                           gitRevision: Self.gitRevision(), threads: threads ?? max(1, cores / jobs)))
        options.jobs = jobs
        options.threads = threads ?? max(1, cores / jobs)
        options.dataDir = dataDir
        options.checkpointRoot = checkpoints
        options.keepCheckpoints = keepCheckpoints
        let display = ConsoleDisplay.forStandardOutput(quiet ? .quiet : verbose ? .verbose : .normal)
        let summary = try Runner(store: store, runs: runs, options: options, display: display).run()
        withExtendedLifetime(lock) {}
        if summary.stopped { throw ExitCode(130) }
        if summary.failed > 0 { throw ExitCode(1) }
    }

    /// The suite's runs with their keys, duplicates folded, filtered and sharded.
    static func resolve(suite path: String, dataDir: String?, filter: String?, shard: String?) throws -> (Suite, [KeyedRun], Int) {
        let suite = try Suite.load(path)
        let identity = DataIdentity(dataDir: dataDir)
        var seen = Set<String>()
        var runs: [KeyedRun] = []
        for spec in suite.runs {
            let id = try identity.of(spec.data)
            let (key, group) = RunKey.compute(spec, identity: id)
            if seen.insert(key).inserted { runs.append(KeyedRun(spec: spec, key: key, group: group, identity: id)) }
        }
        let folded = suite.runs.count - runs.count
        if let filter {
            let f = try RunFilter(filter)
            runs = runs.filter(f.matches)
            if runs.isEmpty { throw RunnerError("--filter '\(filter)' matches none of the suite's \(suite.runs.count) runs") }
        }
        if let shard { runs = try Shard(shard).select(runs) }
        return (suite, runs, folded)
    }

    func printPlan(_ suite: Suite, _ runs: [KeyedRun], folded: Int) throws {
        let statuses = FileManager.default.fileExists(atPath: database.db) ? try usageFailure { try Store(path: database.db, readOnly: true).statuses() } : [:]
        emit("suite \(suite.name): \(runs.count) runs\(folded > 0 ? " (\(folded) duplicates folded)" : "")")
        if !suite.description.isEmpty { emit(suite.description.trimmingCharacters(in: .whitespacesAndNewlines)) }
        var units = 0.0
        for r in runs {
            emit("\(r.key)  \(pad(statuses[r.key] ?? "new", 11)) \(r.spec.label)")
            if !["done", "diverged"].contains(statuses[r.key] ?? "") {
                units += Double(r.spec.config.epochs * (r.spec.data.trainSubset ?? (r.spec.data.dataset == "synthetic" ? r.spec.data.syntheticTrain : 50_000)))
                    * Runner.cost(r)
            }
        }
        let finished = runs.filter { ["done", "diverged"].contains(statuses[$0.key] ?? "") }.count
        emit("\(finished) finished, \(runs.count - finished) to run: about \(units < 1e5 ? "<0.1" : String(format: "%.1f", units / 1e6)) million " +
             "training images (a SAM step counts as its two passes)")
    }

    /// This executable, for the workers.
    static func executable() -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    /// The git revision of the checkout this executable was built in ("+dirty" with local
    /// changes), or nil outside one.
    static func gitRevision() -> String? {
        var dir = (executable() as NSString).deletingLastPathComponent
        while dir != "/" && !dir.isEmpty {
            if FileManager.default.fileExists(atPath: (dir as NSString).appendingPathComponent(".git")) { break }
            dir = (dir as NSString).deletingLastPathComponent
        }
        guard dir != "/", !dir.isEmpty else { return nil }
        func git(_ args: [String]) -> String? {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["git", "-C", dir] + args
            let out = Pipe()
            p.standardOutput = out
            p.standardError = FileHandle.nullDevice
            guard (try? p.run()) != nil else { return nil }
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            return p.terminationStatus == 0 ? String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : nil
        }
        guard let head = git(["rev-parse", "--short=12", "HEAD"]) else { return nil }
        let dirty = !(git(["status", "--porcelain", "--untracked-files=no"]) ?? "").isEmpty
        return head + (dirty ? "+dirty" : "")
    }
}

struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "worker", abstract: "Internal: one run for `sambench run`.",
                                                    shouldDisplay: false)
    @Option(help: "The job, as JSON.") var job: String

    func run() throws {
        let j = try JSONDecoder().decode(WorkerJob.self, from: Data(job.utf8))
        let status = Worker.run(j)
        if status != 0 { throw ExitCode(status) }
    }
}

struct RunsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runs",
        abstract: "List the runs in the results database with their status and results.",
        discussion: "Accuracies are on the test set: at the last epoch, the best epoch, and the epoch chosen on the validation split (when the suite has one). Memorised: accuracy on the corrupted training samples against their noisy labels at the last epoch."
    )
    @OptionGroup var database: DatabaseOption
    @Option(help: "Only runs with this status: pending, running, done, failed, diverged, interrupted.") var status: String?
    @Option(help: "text or json.") var format: String = "text"

    func validate() throws {
        if let status, !["pending", "running", "done", "failed", "diverged", "interrupted"].contains(status) {
            throw ValidationError("--status must be pending, running, done, failed, diverged or interrupted")
        }
        guard ["text", "json"].contains(format) else { throw ValidationError("--format must be text or json") }
    }

    func run() throws {
        let store = try usageFailure { try Store(path: database.db, readOnly: true) }
        // `running` with no runner holding the database: its runner was killed; the next
        // `sambench run` resumes it.
        let writer = WriterLock.isHeld(database: database.db)
        let rows = try store.runs().map { r in
            var r = r
            if r.status == "running" && !writer { r.status = "interrupted" }
            return r
        }.filter { status == nil || $0.status == status }
        if format == "json" {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            emit(String(decoding: try encoder.encode(rows), as: UTF8.self))
            return
        }
        func pct(_ v: Double?) -> String { v.map { String(format: "%6.2f", 100 * $0) } ?? "     -" }
        emit("key                   status         epochs   last   best    val   mem'd     time  run")
        for r in rows {
            let time = r.trainSeconds.map { ConsoleDisplay.duration($0) } ?? "-"
            emit("\(r.key)  \(pad(r.status, 11)) " + pad("\(r.epochsDone)/\(r.epochs)", 9, left: true) +
                 " \(pct(r.lastTestAccuracy)) \(pct(r.bestTestAccuracy)) \(pct(r.valTestAccuracy)) \(pct(r.lastMemorised)) " +
                 pad(time, 7, left: true) + "  \(r.label)")
            if let e = r.error, r.status == "failed" { emit("    error: " + e.split(separator: "\n").prefix(3).joined(separator: " / ")) }
        }
        var counts: [String: Int] = [:]
        for r in rows { counts[r.status, default: 0] += 1 }
        emit("\(rows.count) runs: " + counts.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", "))
    }
}

struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Merge results databases (e.g. shards run on other machines) into one, without duplicates.",
        discussion: "Suites are matched by their text and runs by key. A run finished in a source and unfinished (or absent) in the target is taken with its epochs, noise and metrics; a run the target already finished is kept. Merging the same database twice changes nothing. The sources are only read."
    )
    @Argument(help: "The databases to merge.") var sources: [String]
    @Option(help: "The database to merge into (created if absent).") var into: String

    func validate() throws {
        guard !sources.isEmpty else { throw ValidationError("name at least one database to merge") }
        let target = URL(fileURLWithPath: into).standardizedFileURL.path
        if sources.contains(where: { URL(fileURLWithPath: $0).standardizedFileURL.path == target }) {
            throw ValidationError("--into \(into) is also a source")
        }
    }

    func run() throws {
        for s in sources where !FileManager.default.fileExists(atPath: s) { _ = try usageFailure { throw StoreError("\(s): no such database") } }
        let lock = try usageFailure { try WriterLock(database: into, purpose: "sambench merge") }
        let store = try usageFailure { try Store(path: into) }
        for s in sources {
            let c = try usageFailure { try store.merge(from: s) }
            emit("\(s): \(c.added) runs added, \(c.updated) finished runs replaced unfinished ones, \(c.kept) already there; \(c.suites) new suites")
        }
        withExtendedLifetime(lock) {}
    }
}
