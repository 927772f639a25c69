import ArgumentParser
import Foundation
import Runner
import Store
import Suites

struct RunsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runs",
        abstract: "List the runs in the results database with their status and results.",
        discussion: "Accuracies are on the test set: at the last epoch, the best epoch, and the epoch chosen on the validation split (when the suite has one). Memorised: accuracy on the corrupted training samples against their noisy labels at the last epoch."
    )
    @OptionGroup var database: DatabaseOption
    @Option(help: "Only runs with this status.") var status: RunStatus?
    @Option(help: "Output format (json: every run with its keys and axes).") var format: TextOrJSON = .text
    @Option(name: .customLong("samples"), help: ArgumentHelp(
        "Instead of the list: the per-sample losses of run KEY's final model, as CSV (json with --format json).",
        discussion: "One row per training sample: its index in the training images, the label it was trained on, its true label, whether the noise corrupted it and the final model's cross-entropy against the given label (eval mode, no augmentation). Sorted by loss, largest first: the samples most likely mislabelled come first. A unique prefix of the key is enough.",
        valueName: "KEY")) var samples: String?

    func run() throws {
        let store = try usageFailure { try Store(path: database.db, readOnly: true) }
        if let samples { return try exportSamples(store, samples) }
        // `running` with no runner holding the database: its runner was killed; the next
        // `sambench run` resumes it.
        let writer = WriterLock.isHeld(database: database.db)
        let rows = try store.runs().map { r in
            var r = r
            if r.status == .running && !writer { r.status = .interrupted }
            return r
        }.filter { status == nil || $0.status == status }
        if format == .json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            emit(String(decoding: try encoder.encode(rows), as: UTF8.self))
            return
        }
        func pct(_ v: Double?) -> String { v.map { String(format: "%6.2f", 100 * $0) } ?? "     -" }
        emit("key                   status         epochs   last   best    val   mem'd     time  run")
        for r in rows {
            let time = r.trainSeconds.map { ConsoleDisplay.duration($0) } ?? "-"
            emit("\(r.key)  \(pad(r.status.rawValue, 11)) " + pad("\(r.epochsDone)/\(r.epochs)", 9, left: true) +
                 " \(pct(r.lastTestAccuracy)) \(pct(r.bestTestAccuracy)) \(pct(r.valTestAccuracy)) \(pct(r.lastMemorised)) " +
                 pad(time, 7, left: true) + "  \(r.label) seed \(r.seed)")
            if let e = r.error, r.status == .failed { emit("    error: " + e.split(separator: "\n").prefix(3).joined(separator: " / ")) }
        }
        var counts: [String: Int] = [:]
        for r in rows { counts[r.status.rawValue, default: 0] += 1 }
        emit("\(rows.count) runs: " + counts.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", "))
    }

    /// `--samples KEY`: the run's per-sample losses, largest first.
    private func exportSamples(_ store: Store, _ key: String) throws {
        let (full, rows) = try usageFailure { try store.sampleLosses(run: key) }
        guard !rows.isEmpty else {
            throw ValidationError("run \(full) has no per-sample losses: it is not finished, or was finished by a sambench from before they were stored")
        }
        let sorted = rows.sorted { $0.loss != $1.loss ? $0.loss > $1.loss : $0.sample < $1.sample }
        if format == .json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            emit(String(decoding: try encoder.encode(sorted), as: UTF8.self))
            return
        }
        emit("sample,given,truth,corrupted,loss")
        for r in sorted { emit("\(r.sample),\(r.given),\(r.truth),\(r.corrupted ? 1 : 0),\(r.loss)") }
    }
}
