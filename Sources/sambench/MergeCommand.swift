import ArgumentParser
import Foundation
import Store

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
