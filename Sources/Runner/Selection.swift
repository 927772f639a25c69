import Foundation
import Store
import Suites

/// `--filter`: comma-separated conditions (see `Conditions`), all of which a run must meet,
/// e.g. `optimizer=sam,rho<=0.05,noise_rate>=0.4` or `label~seed 0`.
public struct RunFilter: Sendable {
    let conditions: Conditions

    public static let fields = ["dataset", "model", "optimizer", "rho", "noise", "noise_rate", "seed", "epochs", "batch_size", "lr", "key", "label"]

    public init(_ expression: String) throws {
        do { conditions = try Conditions(expression, fields: RunFilter.fields) } catch { throw RunnerError("--filter: \(error)") }
    }

    static func field(_ name: String, of run: KeyedRun) -> String? {
        let s = run.spec
        switch name {
        case "dataset": return s.data.dataset
        case "model": return s.config.model
        case "optimizer": return s.optimizerName
        case "rho": return s.rho.map { "\(Float($0))" }
        case "noise": return s.data.noise.kind.rawValue
        case "noise_rate": return "\(s.data.noise.rate)"
        case "seed": return "\(s.config.seed)"
        case "epochs": return "\(s.config.epochs)"
        case "batch_size": return "\(s.config.batchSize)"
        case "lr": return "\(s.config.lr)"
        case "key": return run.key
        default: return s.label
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
