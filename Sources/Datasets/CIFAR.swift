import Engine
import Foundation

public struct DataError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Images as they are stored: uint8 CHW (1024 R, 1024 G, 1024 B, row-major) per image.
public struct RawImages: Sendable {
    public var pixels: [UInt8]
    public var labels: [Int32]
    /// CIFAR-100's coarse (superclass) labels; nil for CIFAR-10.
    public var coarseLabels: [Int32]?
    public var count: Int { labels.count }
    public static let imageBytes = 3072
}

/// CIFAR-10 and CIFAR-100 in the official binary layouts.
public enum CIFAR {
    public static let cifar10Directory = "cifar-10-batches-bin"
    public static let cifar100Directory = "cifar-100-binary"
    public static let cifar10TrainFiles = (1...5).map { "data_batch_\($0).bin" }
    public static let cifar10TestFile = "test_batch.bin"

    /// Reads `cifar-10-batches-bin/` under `root`: 50,000 training and 10,000 test records of
    /// 1 label byte + 3072 pixel bytes. File sizes and labels are validated.
    public static func loadCIFAR10(root: String) throws -> (train: RawImages, test: RawImages, classNames: [String]) {
        let dir = (root as NSString).appendingPathComponent(cifar10Directory)
        var train = RawImages(pixels: [], labels: [])
        for f in cifar10TrainFiles {
            let part = try readRecords((dir as NSString).appendingPathComponent(f), expected: 10_000, labelBytes: 1, classes: 10)
            train.pixels += part.pixels
            train.labels += part.labels
        }
        let test = try readRecords((dir as NSString).appendingPathComponent(cifar10TestFile), expected: 10_000, labelBytes: 1, classes: 10)
        let names = (try? String(contentsOfFile: (dir as NSString).appendingPathComponent("batches.meta.txt"), encoding: .utf8))?
            .split(whereSeparator: \.isNewline).map(String.init).filter { !$0.isEmpty } ?? []
        return (train, test, names.count == 10 ? names : cifar10ClassNames)
    }

    /// Reads `cifar-100-binary/` under `root`: `train.bin` (50,000) and `test.bin` (10,000)
    /// records of coarse byte, fine byte, 3072 pixel bytes.
    public static func loadCIFAR100(root: String) throws -> (train: RawImages, test: RawImages, classNames: [String]) {
        let dir = (root as NSString).appendingPathComponent(cifar100Directory)
        let train = try readRecords((dir as NSString).appendingPathComponent("train.bin"), expected: 50_000, labelBytes: 2, classes: 100)
        let test = try readRecords((dir as NSString).appendingPathComponent("test.bin"), expected: 10_000, labelBytes: 2, classes: 100)
        let names = (try? String(contentsOfFile: (dir as NSString).appendingPathComponent("fine_label_names.txt"), encoding: .utf8))?
            .split(whereSeparator: \.isNewline).map(String.init).filter { !$0.isEmpty } ?? []
        return (train, test, names.count == 100 ? names : (0..<100).map { "class\($0)" })
    }

    public static let cifar10ClassNames = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    /// Records of `labelBytes` label bytes (CIFAR-100: coarse then fine) and 3072 pixel bytes.
    static func readRecords(_ path: String, expected: Int, labelBytes: Int, classes: Int) throws -> RawImages {
        guard FileManager.default.fileExists(atPath: path) else {
            throw DataError("\(path): missing (run `sambench data download` or pass --data-dir)")
        }
        let data: [UInt8]
        do { data = try InputFile.contents(path, what: "the CIFAR file", limit: 1 << 30) } catch { throw DataError("\(error)") }
        return try parseRecords(data, source: path, expected: expected, labelBytes: labelBytes, classes: classes)
    }

    /// `expected` records from a file's bytes already read (errors name `source`): the size must
    /// be exact and every label in range.
    public static func parseRecords(_ data: [UInt8], source path: String, expected: Int, labelBytes: Int, classes: Int) throws -> RawImages {
        let record = labelBytes + RawImages.imageBytes
        guard data.count == expected * record else {
            throw DataError("\(path): \(data.count) bytes, expected \(expected * record) (\(expected) records of \(record) bytes); truncated or not a CIFAR binary file")
        }
        var out = RawImages(pixels: [UInt8](repeating: 0, count: expected * RawImages.imageBytes), labels: [Int32](repeating: 0, count: expected),
                            coarseLabels: labelBytes == 2 ? [Int32](repeating: 0, count: expected) : nil)
        try data.withUnsafeBufferPointer { bytes in
            try out.pixels.withUnsafeMutableBufferPointer { px in
                for r in 0..<expected {
                    let base = r * record
                    let label = Int(bytes[base + labelBytes - 1])
                    guard label < classes else { throw DataError("\(path): record \(r) has label \(label), outside 0..<\(classes)") }
                    out.labels[r] = Int32(label)
                    if labelBytes == 2 {
                        let coarse = Int(bytes[base])
                        guard coarse < 20 else { throw DataError("\(path): record \(r) has coarse label \(coarse), outside 0..<20") }
                        out.coarseLabels![r] = Int32(coarse)
                    }
                    (px.baseAddress! + r * RawImages.imageBytes).update(from: bytes.baseAddress! + base + labelBytes, count: RawImages.imageBytes)
                }
            }
        }
        return out
    }
}
