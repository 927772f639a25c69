import ArgumentParser
import Datasets
import Foundation

struct VerifyData: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check a data directory: file sizes, record counts and label ranges."
    )

    @Argument(help: "The dataset (default: both, where present).") var dataset: CIFARName?
    @OptionGroup var dataDirectory: DataDirOption
    var dataDir: String? { dataDirectory.dataDir }

    func run() throws {
        let root = DataDirectory.resolve(dataDir)
        let names = dataset.map { [$0] } ?? CIFARName.allCases.filter {
            FileManager.default.fileExists(atPath: (root as NSString).appendingPathComponent($0.archive.directory))
        }
        guard !names.isEmpty else { throw ValidationError("no dataset under \(root); run `sambench data download cifar10`") }
        for n in names { try VerifyData.check(n, root: root) }
    }

    static func check(_ name: CIFARName, root: String) throws {
        let d = name == .cifar10 ? try CIFAR.loadCIFAR10(root: root) : try CIFAR.loadCIFAR100(root: root)
        let unverified = FileManager.default.fileExists(atPath: (root as NSString).appendingPathComponent("\(name.archive.directory).UNVERIFIED"))
        var counts = [Int](repeating: 0, count: d.classNames.count)
        for y in d.train.labels { counts[Int(y)] += 1 }
        emit("\(name): ok: \(d.train.count) training and \(d.test.count) test images, \(d.classNames.count) classes " +
             "(\(counts.min()!)-\(counts.max()!) training images per class)\(unverified ? "; downloaded WITHOUT checksum verification" : "")")
    }
}

/// A one-line progress bar on a terminal, or a line per 10% in a pipe.
