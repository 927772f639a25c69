import Datasets
import Engine
import Foundation
import Suites

/// The readers of files sambench did not write, each driven by arbitrary bytes: what the libFuzzer
/// targets (fuzz/, scripts/fuzz.sh) and the replay test (every committed seed and every input that
/// once crashed) call. A thrown error is the right answer to bad input; a trap, a hang or a memory
/// error is a defect.
public enum FuzzEntry: String, CaseIterable, Sendable {
    case safetensors, npy, pt, cifar, archive, suite

    /// Feeds `bytes` to the reader; returns whether it accepted them (errors are swallowed).
    @discardableResult
    public func run(_ bytes: [UInt8]) -> Bool {
        do {
            switch self {
            case .safetensors:
                let file = try SafetensorsFile.parse(path: "fuzz.safetensors", bytes: bytes)
                // A file that parses is also loaded strictly into a small model: names, shapes,
                // dtypes and non-finite values are checked there.
                try Checkpoint.load(into: ModelState(model: FuzzEntry.smallModel, seed: 0), file: file, source: "fuzz.safetensors")
            case .npy:
                _ = try NPY.parseLabels(bytes, source: "fuzz.npy")
            case .pt:
                _ = try TorchLabels.parseArrays(bytes, source: "fuzz.pt")
            case .cifar:
                // First byte: the layout (CIFAR-10 or CIFAR-100 records) and how many records
                // the file is expected to hold (0-3); the rest is the file.
                guard let head = bytes.first else { return false }
                let labelBytes = head & 1 == 0 ? 1 : 2
                _ = try CIFAR.parseRecords(Array(bytes.dropFirst()), source: "fuzz.bin", expected: Int(head >> 1) & 3,
                                           labelBytes: labelBytes, classes: labelBytes == 1 ? 10 : 100)
            case .archive:
                // First byte even: the rest is a tar, read from memory; odd: a tar.gz, streamed as
                // `Download.extract` streams a file (decompressed under a small cap, read to its end).
                guard let head = bytes.first else { return false }
                let rest = Array(bytes.dropFirst())
                if head & 1 == 0 {
                    _ = try Archive.untar(rest, wanted: FuzzEntry.wantedMembers, source: "fuzz.tar")
                } else {
                    var at = 0
                    let gz = try Archive.Gunzip(source: "fuzz.tar.gz", maxOutput: 1 << 24) { count in
                        defer { at = min(rest.count, at + count) }
                        return Array(rest[at..<min(rest.count, at + count)])
                    }
                    var written = 0
                    try Archive.untar(read: gz.read, wanted: FuzzEntry.wantedMembers, source: "fuzz.tar.gz") { _, chunk, _ in written += chunk.count }
                    try gz.finish()
                }
            case .suite:
                _ = try Suite.parse(String(decoding: bytes, as: UTF8.self), file: "fuzz.toml")
            }
            return true
        } catch {
            return false
        }
    }

    /// The body of a libFuzzer target's `LLVMFuzzerTestOneInput`.
    public func libFuzzer(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
        run(Array(UnsafeBufferPointer(start: data, count: size)))
        return 0
    }

    /// The smallest model there is (ResNet-8), built once.
    static let smallModel: Model = try! Architectures.make("resnet8")

    static let wantedMembers: Set<String> = Set(
        (CIFAR.cifar10TrainFiles + [CIFAR.cifar10TestFile]).map { "\(CIFAR.cifar10Directory)/\($0)" } +
        ["train.bin", "test.bin"].map { "\(CIFAR.cifar100Directory)/\($0)" })
}
