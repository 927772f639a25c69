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

    func run() throws {
        let store = try usageFailure { try Store(path: database.db, readOnly: true) }
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
}

