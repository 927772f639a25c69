// Selecting runs: --filter conditions and --shard parts.
import Foundation
import Store
import Suites

/// `--filter`: comma-separated conditions (see `Conditions`), all of which a run must meet,
/// e.g. `optimizer=sam,rho<=0.05,noise_rate>=0.4` or `label~seed 0`.
public struct RunFilter: Sendable {
    let conditions: Conditions

    /// Every axis (see `Axes`), the seed, the key and the label.
    public static var fields: [String] { Axes.names + ["seed", "key", "label"] }

    public init(_ expression: String) throws {
        do { conditions = try Conditions(expression, fields: RunFilter.fields) } catch { throw RunnerError("--filter: \(error)") }
    }

    static func field(_ name: String, of run: KeyedRun) -> String? {
        let s = run.spec
        switch name {
        // Clean runs have rate 0 here, so `noise_rate<0.4` includes them.
        case "noise_rate": return "\(s.data.noise.rate)"
        case "seed": return "\(s.config.seed)"
        case "key": return run.key
        case "label": return s.label
        default: return Axes.values(s)[name]
        }
    }

    public func matches(_ run: KeyedRun) -> Bool { conditions.matches { RunFilter.field($0, of: run) } }
}

/// `--shard K/N`: the runs whose position among the sorted keys is K-1 modulo N. Keys, not grid
/// order, decide, so every machine computes the same parts from the same suite.
public struct Shard: Sendable, Equatable {
    public var index: Int
    public var count: Int

    public init(_ text: String) throws {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let k = Int(parts[0]), let n = Int(parts[1]), n >= 1, (1...n).contains(k) else {
            throw RunnerError("--shard: expected K/N with 1 <= K <= N, e.g. 2/4; got '\(text)'")
        }
        index = k
        count = n
    }

    public func select(_ runs: [KeyedRun]) -> [KeyedRun] {
        let sorted = runs.map(\.key).sorted()
        let mine = Set(sorted.enumerated().filter { $0.offset % count == index - 1 }.map(\.element))
        return runs.filter { mine.contains($0.key) }
    }
}
