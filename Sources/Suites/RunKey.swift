// Run keys: hashes of a run's resolved configuration and data identity (run, group, setting, family).
import Datasets
import Foundation
import Training

/// Run keys: a hash of the fully resolved configuration and the data's identity. Reordering a
/// suite, or spelling out a default, leaves a key unchanged; any value that changes the run
/// changes it. Threads, jobs, paths and labels are not part of it.
public enum RunKey {
    /// Bumped when the meaning of a configuration changes, so old results are not mistaken for new.
    public static let version = 1

    fileprivate struct Canonical: Encodable, Hashable, Sendable {
        var version: Int
        var task: RunTask
        var config: TrainConfig
        var data: DataSpec
        var identity: String
        /// finetune: the key of the pretrain run started from, and a classifier started fresh
        /// (nil otherwise, so that the keys of train runs are what they were).
        var pretrain: String?
        var reinitHead: Bool?
    }

    /// The key of the `[[pretrain]]` run a finetune run starts from (nil: none).
    public static func pretrainKey(_ spec: RunSpec, identity: String) -> String? {
        var cache = Cache()
        return pretrainKey(spec, identity: identity, cache: &cache)
    }

    private static func pretrainKey(_ spec: RunSpec, identity: String, cache: inout Cache) -> String? {
        spec.pretrain.map { keys($0.spec, identity: $0.identity ?? identity, cache: &cache).key }
    }

    /// Hashes already computed, by what they hash: the runs of a suite share their group,
    /// setting, family and base, so each of those is hashed once per suite, not once per run.
    public struct Cache {
        fileprivate var hashes: [Canonical: String] = [:]
        public init() {}
    }

    /// The keys of a run: its own; its group's (the same configuration with the seeds that
    /// follow the run's seed set to zero: the runs of a group differ only in seed); its
    /// setting's (the group with SGD as its optimizer and cross-entropy as its method: the
    /// baseline every other group of the setting is paired with); its family's (the setting at noise rate 0: the groups an accuracy-against-noise
    /// chart draws); and its base's (the setting without label noise: where a clean group joins
    /// a family at rate 0).
    public struct Keys: Sendable, Equatable {
        public var key: String
        public var group: String
        public var setting: String
        public var family: String
        public var base: String
    }

    public static func keys(_ spec: RunSpec, identity: String) -> Keys {
        var cache = Cache()
        return keys(spec, identity: identity, cache: &cache)
    }

    /// The run's own key alone (`keys(...).key`, without the four shared ones).
    public static func key(_ spec: RunSpec, identity: String) -> String {
        var cache = Cache()
        return hash(canonical(spec, identity, pretrainKey(spec, identity: identity, cache: &cache)))
    }

    /// `keys` of many runs (the same keys as one at a time), on every core, each lane of runs with
    /// its own cache of the shared hashes, which a suite has few of (a suite may have 100,000 runs).
    public static func keys(_ runs: [(spec: RunSpec, identity: String)]) -> [Keys] {
        var out = [Keys](repeating: Keys(key: "", group: "", setting: "", family: "", base: ""), count: runs.count)
        let lanes = max(1, min(ProcessInfo.processInfo.activeProcessorCount, runs.count / 256))
        out.withUnsafeMutableBufferPointer { buffer in
            let target = SendableBuffer(buffer)
            DispatchQueue.concurrentPerform(iterations: lanes) { lane in
                var cache = Cache()
                for i in runs.count * lane / lanes..<runs.count * (lane + 1) / lanes {
                    target.buffer[i] = keys(runs[i].spec, identity: runs[i].identity, cache: &cache)
                }
            }
        }
        return out
    }

    /// Lanes write disjoint elements.
    private struct SendableBuffer: @unchecked Sendable {
        let buffer: UnsafeMutableBufferPointer<Keys>
        init(_ buffer: UnsafeMutableBufferPointer<Keys>) { self.buffer = buffer }
    }

    private static func keys(_ spec: RunSpec, identity: String, cache: inout Cache) -> Keys {
        var (keys, own) = sharedKeys(spec, identity: identity, cache: &cache)
        keys.key = hash(own)
        return keys
    }

    /// The four shared keys (the run's own left empty) and what the run's own key hashes.
    private static func sharedKeys(_ spec: RunSpec, identity: String, cache: inout Cache) -> (Keys, Canonical) {
        var group = spec
        group.config.seed = 0
        if spec.noiseSeedFollowsRun { group.data.noise.seed = 0 }
        if spec.splitSeedFollowsRun { group.data.splitSeed = 0 }
        var setting = group
        setting.config.optimizer = .sgd
        setting.config.method = nil
        var family = setting
        family.data.noise.rate = 0
        var base = setting
        base.data.noise = NoiseSpec(kind: .none)
        let pretrain = pretrainKey(spec, identity: identity, cache: &cache)
        // The run's own key is its alone: not kept in the cache.
        return (Keys(key: "", group: hash(group, identity, pretrain, cache: &cache), setting: hash(setting, identity, pretrain, cache: &cache),
                     family: hash(family, identity, pretrain, cache: &cache), base: hash(base, identity, pretrain, cache: &cache)),
                canonical(spec, identity, pretrain))
    }

    /// The run's key and its group's key.
    public static func compute(_ spec: RunSpec, identity: String) -> (key: String, group: String) {
        let k = keys(spec, identity: identity)
        return (k.key, k.group)
    }

    private static func hash(_ spec: RunSpec, _ identity: String, _ pretrain: String?, cache: inout Cache) -> String {
        let c = canonical(spec, identity, pretrain)
        if let h = cache.hashes[c] { return h }
        let h = hash(c)
        cache.hashes[c] = h
        return h
    }

    private static func canonical(_ spec: RunSpec, _ identity: String, _ pretrain: String?) -> Canonical {
        var data = spec.data
        // The label file's content is in the identity; of its path only the array name counts.
        if let f = data.noise.labelsFile { data.noise.labelsFile = LabelSpec(path: f.identityPart == "npy" ? "npy" : "pt", key: f.key) }
        var config = spec.config
        // A checkpoint file counts by its content (the SHA-256), not where it lies.
        config.initialWeights?.path = ""
        return Canonical(version: version, task: spec.task, config: config, data: data, identity: identity,
                         pretrain: pretrain, reinitHead: spec.reinitHead == true ? true : nil)
    }

    private static func hash(_ c: Canonical) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = try! encoder.encode(c)
        return String(SHA256Hex.digest([UInt8](json)).prefix(20))
    }
}
