import Crypto
import Datasets
import Foundation
import Training

/// Run keys: a hash of the fully resolved configuration and the data's identity. Reordering a
/// suite, or spelling out a default, leaves a key unchanged; any value that changes the run
/// changes it. Threads, jobs, paths and labels are not part of it.
public enum RunKey {
    /// Bumped when the meaning of a configuration changes, so old results are not mistaken for new.
    public static let version = 1

    private struct Canonical: Encodable {
        var version: Int
        var task: String
        var config: TrainConfig
        var data: DataSpec
        var identity: String
    }

    /// The run's key and its group's key (the same configuration with the seeds that follow the
    /// run's seed set to zero: the runs of a group differ only in seed).
    public static func compute(_ spec: RunSpec, identity: String) -> (key: String, group: String) {
        var group = spec
        group.config.seed = 0
        if spec.noiseSeedFollowsRun { group.data.noise.seed = 0 }
        if spec.splitSeedFollowsRun { group.data.splitSeed = 0 }
        return (hash(spec, identity), hash(group, identity))
    }

    private static func hash(_ spec: RunSpec, _ identity: String) -> String {
        var data = spec.data
        // The label file's content is in the identity; of its path only the array name counts.
        if let f = data.noise.labelsFile {
            data.noise.labelsFile = f.range(of: ".pt:", options: .backwards).map { "pt:" + f[$0.upperBound...] } ?? "npy"
        }
        let c = Canonical(version: version, task: spec.task, config: spec.config, data: data, identity: identity)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = try! encoder.encode(c)
        return SHA256.hash(data: json).prefix(10).map { String(format: "%02x", $0) }.joined()
    }
}
