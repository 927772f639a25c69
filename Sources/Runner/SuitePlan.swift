// A suite planned into the runs a command acts on, and the running executable's provenance.
import Datasets
import Foundation
import Store
import Suites

/// A suite resolved into the runs a command acts on: every run keyed (duplicates folded), then
/// `--filter` and `--shard` applied, with the pretrains the selected finetune runs need ahead of
/// them. `run`, `slurm`, `merge` and `report` all plan a suite through this one type.
public struct SuitePlan: Sendable {
    public let suite: Suite
    /// Every run of the suite with its key, duplicates folded, in the suite's order.
    public let all: [KeyedRun]
    /// The runs selected (filter, shard), pretrains first.
    public let runs: [KeyedRun]
    /// Runs of the grid that were the same run as an earlier one (same key) and were folded into it.
    public var folded: Int { suite.runs.count - all.count }

    /// Reads the suite at `path` and keys its runs against the data in `dataDir`.
    public init(suite path: String, dataDir: String?, filter: String? = nil, shard: String? = nil) throws {
        suite = try Suite.load(path)
        let identity = DataIdentity(dataDir: dataDir)
        var specs: [(spec: RunSpec, identity: String)] = []
        for var spec in suite.runs {
            if let p = spec.pretrain { spec.pretrain!.identity = try identity.of(p.data) }
            specs.append((spec, try identity.of(spec.data)))
        }
        var seen = Set<String>()
        var all: [KeyedRun] = []
        for (run, keys) in zip(specs, RunKey.keys(specs)) {
            let keyed = KeyedRun(spec: run.spec, identity: run.identity, keys: keys)
            if seen.insert(keyed.key).inserted { all.append(keyed) }
        }
        self.all = all
        var runs = all
        if let filter {
            let f = try RunFilter(filter)
            runs = runs.filter(f.matches)
            if runs.isEmpty { throw RunnerError("--filter '\(filter)' matches none of the suite's \(suite.runs.count) runs") }
        }
        if let shard { runs = try Shard(shard).select(runs) }
        self.runs = Self.withPretrains(runs, from: all)
    }

    /// The runs of shard `k` of `n` (1-based), pretrains first: what `run --shard k/n` trains.
    public func shard(_ k: Int, of n: Int) throws -> [KeyedRun] {
        Self.withPretrains(try Shard("\(k)/\(n)").select(all), from: all)
    }

    /// A finetune run needs its pretrain: `runs` with the pretrains they need (from `all`) ahead of them.
    static func withPretrains(_ runs: [KeyedRun], from all: [KeyedRun]) -> [KeyedRun] {
        let needed = Set(runs.compactMap(\.pretrainKey)).subtracting(runs.map(\.key))
        return all.filter { needed.contains($0.key) } + runs
    }

    /// Training images times epochs, weighted by each model's cost (`Runner.cost`), of the runs
    /// not finished in `statuses`: the dry run's measure of the work left.
    public func workLeft(statuses: [String: RunStatus]) -> Double {
        runs.filter { statuses[$0.key]?.finished != true }.reduce(0) { units, r in
            units + Double(r.spec.config.epochs * (r.spec.data.trainSubset ?? r.spec.data.dataset.trainImages ?? r.spec.data.syntheticTrain))
                * Runner.cost(r)
        }
    }
}

/// The running sambench executable, for workers and provenance.
public enum ThisExecutable {
    /// Its path (what workers are started from).
    public static var path: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    /// The git revision of the checkout it was built in ("+dirty" with local changes), or nil outside one.
    public static func gitRevision() -> String? {
        var dir = (path as NSString).deletingLastPathComponent
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
