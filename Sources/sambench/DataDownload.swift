import ArgumentParser
import Datasets
import Foundation

struct DownloadData: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "download",
        abstract: "Download an official archive, check its size and MD5, and extract its data files.",
        discussion: """
        The archive is written to <name>.partial and renamed only once its size and MD5 match, \
        so an interrupted download never passes for a good one, and an archive already there is \
        replaced only by one that passed. The data files are extracted (regular files with the \
        expected names only; an archive with an absolute or `..` member is refused) to a staging \
        directory, read back there (sizes, record counts, labels) and only then swapped in: data \
        already extracted is never lost to a bad archive. --url takes a mirror (http, https or \
        file://); --no-verify skips the checksum, and says so (the archive is then kept only if \
        its data reads back).
        """
    )

    @Argument(help: "The dataset.") var dataset: CIFARName
    @OptionGroup var dataDirectory: DataDirOption
    var dataDir: String? { dataDirectory.dataDir }
    @Option(help: "Download from this URL instead (http, https or file://).") var url: String?
    @Flag(help: "Do not check the archive's size and MD5 (the result is marked unverified).") var noVerify = false

    func run() throws {
        let archive = dataset.archive
        let root = DataDirectory.resolve(dataDir)
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        guard let source = URL(string: url ?? archive.url), source.scheme != nil else { throw ValidationError("--url: not a URL: \(url ?? "")") }
        let dest = (root as NSString).appendingPathComponent(archive.archiveName)
        // Unverified, the download stays apart until its data has read back: it replaces nothing before.
        let fetched = noVerify ? dest + ".unverified" : dest
        if !noVerify, FileManager.default.fileExists(atPath: dest), (try? Download.md5Hex(of: dest)) == archive.md5 {
            emit("\(dest) is already here and its MD5 matches: not downloading again")
        } else {
            emit("downloading \(source.absoluteString)\n  to \(fetched)")
            let bar = ProgressBar(label: archive.archiveName)
            try Download.fetch(source, to: fetched, expectedSize: noVerify ? nil : archive.size, md5: noVerify ? nil : archive.md5) { done, total in
                bar.update(done, total)
            }
            bar.finish()
            if !noVerify { emit("MD5 \(archive.md5) ok") }
        }
        do {
            try Download.extract(fetched, archive, into: root) { staged in
                _ = dataset == .cifar10 ? try CIFAR.loadCIFAR10(root: staged) : try CIFAR.loadCIFAR100(root: staged)
            }
        } catch {
            if noVerify { try? FileManager.default.removeItem(atPath: fetched) }
            throw error
        }
        let marker = (root as NSString).appendingPathComponent("\(archive.directory).UNVERIFIED")
        if noVerify {
            guard rename(fetched, dest) == 0 else { throw DataError("\(dest): cannot move the download into place") }
            emit("WARNING: --no-verify: the archive's checksum was not checked")
            try Data("unverified: downloaded with --no-verify from \(source.absoluteString)\n".utf8).write(to: URL(fileURLWithPath: marker))
        } else {
            try? FileManager.default.removeItem(atPath: marker)
        }
        emit("extracted \((root as NSString).appendingPathComponent(archive.directory))")
        try VerifyData.check(dataset, root: root)
    }
}

final class ProgressBar: @unchecked Sendable {
    let label: String
    let tty = isatty(STDERR_FILENO) != 0
    var lastDecile = -1
    let lock = NSLock()
    init(label: String) { self.label = label }

    func update(_ done: Int64, _ total: Int64?) {
        lock.lock(); defer { lock.unlock() }
        let mib = Double(done) / 1_048_576
        if let total, total > 0 {
            let f = Double(done) / Double(total)
            if tty {
                let width = 30, filled = Int(f * Double(width))
                let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
                FileHandle.standardError.write(Data(String(format: "\r  %@ [%@] %5.1f%% %.1f MiB", label, bar, 100 * f, mib).utf8))
            } else if Int(f * 10) > lastDecile {
                lastDecile = Int(f * 10)
                FileHandle.standardError.write(Data(String(format: "  %@: %3d%% (%.1f MiB)\n", label, lastDecile * 10, mib).utf8))
            }
        } else if tty {
            FileHandle.standardError.write(Data(String(format: "\r  %@ %.1f MiB", label, mib).utf8))
        }
    }

    func finish() { if tty { FileHandle.standardError.write(Data("\n".utf8)) } }
}
