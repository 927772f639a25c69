import ArgumentParser
import Foundation
import Runner
import Store
import Suites

extension MergePreference: ExpressibleByArgument {}

struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Merge results databases (e.g. shards run on other machines) into one, without duplicates.",
        discussion: """
        Suites are matched by their text and runs by key, the sources taken in the order given. A run \
        new to the target is added with its epochs, noise and metrics, finished or not; a finished run \
        replaces an unfinished copy (failed, interrupted, pending); a run the target already finished is \
        kept. A run finished in two databases with different results (status, metrics, noise, or any \
        epoch's numbers: shards run on different machines or builds) is a conflict: they are listed \
        with both values and the merge is refused unless --prefer says which copy to keep. Refused \
        too: sources made by a newer sambench or keyed under another run-key version (other training \
        semantics). A refused merge creates and changes nothing. Merging the same database twice \
        changes nothing; the sources are only read (an older sambench's through a migrated copy).

        With --suite, the merge ends by saying how much of that suite the target holds finished, \
        and exits with status 1 when some of it has not finished (so that a cluster's merge job \
        shows it). Exit status 2 when the merge is refused.
        """
    )
    @Argument(help: "The databases to merge, in order.") var sources: [String]
    @Option(help: "The database to merge into (created if absent).") var into: String
    @Option(help: "For runs finished in two databases with different results: keep the first copy (the target's or the earlier source's) or the last (the later source's). Without it such a merge is refused.")
    var prefer: MergePreference?
    @Option(help: "A suite file: say how many of its runs the target holds finished, listing the others.") var suite: String?
    @OptionGroup var dataDirectory: DataDirOption

    func validate() throws {
        guard !sources.isEmpty else { throw ValidationError("name at least one database to merge") }
    }

    func run() throws {
        // Planned before anything is locked or created: a refused merge leaves no trace.
        _ = try usageFailure { try Store.planMerge(into: into, from: sources, prefer: prefer) }
        let lock = try usageFailure { try WriterLock(database: into, purpose: "sambench merge") }
        // Planned again under the lock (what is applied is what the target holds now), and only
        // then is the target created or migrated.
        let plan = try usageFailure { try Store.planMerge(into: into, from: sources, prefer: prefer) }
        let store = try usageFailure { try Store(path: into) }
        let suites = try store.apply(plan)
        for (s, added) in zip(plan.sources, suites) { report(s, suites: added) }
        if !plan.conflicts.isEmpty {
            emit("\(plan.conflicts.count) runs finished in two databases with different results; kept the \(prefer == .last ? "later" : "first") copy (--prefer \(prefer!.rawValue)):")
            for c in plan.conflicts.prefix(20) { emit("  \(c)") }
            if plan.conflicts.count > 20 { emit("  ... and \(plan.conflicts.count - 20) more") }
        }
        let statuses = try store.statuses()
        emit("\(into): \(statuses.count) runs (\(tally(statuses.values.reduce(into: [:]) { $0[$1, default: 0] += 1 })))")
        withExtendedLifetime(lock) {}
        if let suite {
            let plan = try usageFailure { try SuitePlan(suite: suite, dataDir: dataDirectory.dataDir) }
            let (s, runs) = (plan.suite, plan.runs)
            let open = runs.filter { statuses[$0.key]?.finished != true }
            emit("suite \(s.name): \(runs.count - open.count) of \(runs.count) runs finished in \(into)")
            guard !open.isEmpty else { return }
            for r in open.prefix(20) { emit("  \(statuses[r.key]?.rawValue ?? "absent"): \(r.spec.label) (\(r.key))") }
            if open.count > 20 { emit("  ... and \(open.count - 20) more") }
            throw ExitCode(1)
        }
    }

    private func report(_ s: MergeSource, suites: Int) {
        var notes: [String] = []
        if s.migrated { notes.append("made by an older sambench: read through a migrated copy") }
        if s.beingWritten { notes.append("a runner is writing it now: merged as it stands") }
        let runs = s.statuses.values.reduce(0, +)
        emit("\(s.path): \(runs) runs (\(tally(s.statuses))): \(s.added) added, " +
             "\(s.replaced) replacing unfinished copies, \(s.kept) already there\(s.conflicts > 0 ? ", \(s.conflicts) conflicting" : ""); " +
             "\(suites) new suites\(notes.isEmpty ? "" : " (\(notes.joined(separator: "; ")))")")
        for u in s.unfinished.prefix(20) {
            emit("  not finished: \(u.status): \(u.label)\(u.error.map { ": " + ($0.split(separator: "\n").first.map(String.init) ?? "") } ?? "")")
        }
        if s.unfinished.count > 20 { emit("  ... and \(s.unfinished.count - 20) more not finished") }
    }

    /// "15 done, 2 interrupted, 1 pending", in the statuses' order.
    private func tally(_ counts: [RunStatus: Int]) -> String {
        let parts = RunStatus.allCases.compactMap { s in counts[s].map { "\($0) \(s)" } }
        return parts.isEmpty ? "none" : parts.joined(separator: ", ")
    }
}
