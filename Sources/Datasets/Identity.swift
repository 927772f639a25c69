import Foundation

/// What identifies the data a run trains on beyond its `DataSpec`: the checksums of the dataset
/// files (CIFAR) and of a human-noise label file. Two runs with the same spec on different
/// files get different identities, so their results are never mixed up.
public final class DataIdentity {
    private let dataDir: String?
    private var cache: [String: String] = [:]

    public init(dataDir: String?) { self.dataDir = dataDir }

    /// `synthetic`, or `cifar10:sha256:<hex over the six files>`, plus `;labels:sha256:<hex>` for
    /// human noise.
    public func of(_ spec: DataSpec) throws -> String {
        var id: String
        switch spec.dataset {
        case .cifar10:
            let dir = (DataDirectory.resolve(dataDir) as NSString).appendingPathComponent(CIFAR.cifar10Directory)
            id = "cifar10:sha256:" + (try digest((CIFAR.cifar10TrainFiles + [CIFAR.cifar10TestFile]).map { (dir as NSString).appendingPathComponent($0) }))
        case .cifar100:
            let dir = (DataDirectory.resolve(dataDir) as NSString).appendingPathComponent(CIFAR.cifar100Directory)
            id = "cifar100:sha256:" + (try digest(["train.bin", "test.bin"].map { (dir as NSString).appendingPathComponent($0) }))
        case .synthetic:
            id = "synthetic"
        }
        if let labels = spec.noise.labelsFile {
            id += ";labels:sha256:" + (try digest([resolveLabelPath(labels.path)]))
        }
        return id
    }

    /// A label file path as given in a suite: absolute, or relative to the data directory.
    public func resolveLabelPath(_ path: String) -> String {
        path.hasPrefix("/") ? path : (DataDirectory.resolve(dataDir) as NSString).appendingPathComponent(path)
    }

    /// SHA-256 over the files' bytes in order, computed once per set of files.
    private func digest(_ paths: [String]) throws -> String {
        let cacheKey = paths.joined(separator: "\n")
        if let d = cache[cacheKey] { return d }
        let h = ByteDigest(.sha256)
        for p in paths {
            guard let handle = FileHandle(forReadingAtPath: p) else {
                throw DataError("\(p): missing (run `sambench data download` or pass --data-dir)")
            }
            defer { try? handle.close() }
            while let chunk = try handle.read(upToCount: 1 << 22), !chunk.isEmpty { h.update(chunk) }
        }
        let d = ByteDigest.hex(h.finalize())
        cache[cacheKey] = d
        return d
    }
}
