import Engine
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The official CIFAR archives and what `sambench data download` does with them.
public struct CIFARArchive: Sendable {
    public let name: String
    public let url: String
    public let size: Int
    public let md5: String
    public let directory: String
    public let files: [String]

    public init(name: String, url: String, size: Int, md5: String, directory: String, files: [String]) {
        self.name = name
        self.url = url
        self.size = size
        self.md5 = md5
        self.directory = directory
        self.files = files
    }

    public static let cifar10 = CIFARArchive(
        name: "cifar10", url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", size: 170_052_171,
        md5: "c32a1d4ab5d03f1284b67883e8d87530", directory: CIFAR.cifar10Directory,
        files: CIFAR.cifar10TrainFiles + [CIFAR.cifar10TestFile, "batches.meta.txt"])
    public static let cifar100 = CIFARArchive(
        name: "cifar100", url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", size: 168_513_733,
        md5: "03b5dce01913d631647c71ecec9e9cb8", directory: CIFAR.cifar100Directory,
        files: ["train.bin", "test.bin", "fine_label_names.txt", "coarse_label_names.txt"])

    public static func named(_ n: String) throws -> CIFARArchive {
        switch n {
        case "cifar10": return .cifar10
        case "cifar100": return .cifar100
        default: throw DataError("unknown dataset '\(n)' (cifar10, cifar100)")
        }
    }

    public var archiveName: String { URL(string: url)!.lastPathComponent }
}

public enum Download {
    /// Downloads (http, https or file URL) to `<dest>.partial`, checks size and MD5 when given,
    /// then renames it over `dest`. A file already at `dest` is replaced only by a download that
    /// passed (a failure, an offline machine, or a URL naming `dest` itself leaves it as it was).
    /// `progress(bytesSoFar, totalOrNil)` is called as data arrives.
    public static func fetch(_ url: URL, to dest: String, expectedSize: Int?, md5: String?,
                             progress: @escaping @Sendable (Int64, Int64?) -> Void) throws {
        let partial = dest + ".partial"
        try? FileManager.default.removeItem(atPath: partial)
        do {
            if url.isFileURL {
                try copyWithProgress(url.path, to: partial, progress: progress)
            } else {
                try httpDownload(url, to: partial, progress: progress)
            }
            if let expectedSize {
                let size = (try FileManager.default.attributesOfItem(atPath: partial)[.size] as? NSNumber)?.intValue ?? -1
                guard size == expectedSize else {
                    throw DataError("\(url.absoluteString): downloaded \(size) bytes, expected \(expectedSize) (interrupted or wrong file)")
                }
            }
            if let md5 {
                let got = try md5Hex(of: partial)
                guard got == md5 else { throw DataError("\(url.absoluteString): MD5 \(got), expected \(md5): refusing the file") }
            }
            guard rename(partial, dest) == 0 else { throw DataError("\(dest): cannot move the download into place") }
        } catch {
            try? FileManager.default.removeItem(atPath: partial)
            throw error
        }
    }

    public static func md5Hex(of path: String) throws -> String {
        guard let h = FileHandle(forReadingAtPath: path) else { throw DataError("\(path): cannot read") }
        defer { try? h.close() }
        let md5 = ByteDigest(.md5)
        while let chunk = try h.read(upToCount: 1 << 22), !chunk.isEmpty { md5.update(chunk) }
        return ByteDigest.hex(md5.finalize())
    }

    static func copyWithProgress(_ src: String, to dst: String, progress: (Int64, Int64?) -> Void) throws {
        guard let input = FileHandle(forReadingAtPath: src) else { throw DataError("\(src): cannot read") }
        defer { try? input.close() }
        let total = (try? FileManager.default.attributesOfItem(atPath: src)[.size] as? NSNumber)?.int64Value
        guard FileManager.default.createFile(atPath: dst, contents: nil), let output = FileHandle(forWritingAtPath: dst) else {
            throw DataError("\(dst): cannot write")
        }
        defer { try? output.close() }
        var done: Int64 = 0
        while let chunk = try input.read(upToCount: 1 << 22), !chunk.isEmpty {
            try output.write(contentsOf: chunk)
            done += Int64(chunk.count)
            progress(done, total)
        }
    }

    /// A download task with a delegate for progress; waits for it to finish.
    static func httpDownload(_ url: URL, to dst: String, progress: @escaping @Sendable (Int64, Int64?) -> Void) throws {
        final class Delegate: NSObject, URLSessionDownloadDelegate, @unchecked Sendable {
            let dst: String
            let progress: @Sendable (Int64, Int64?) -> Void
            let done = DispatchSemaphore(value: 0)
            var error: Error?
            init(dst: String, progress: @escaping @Sendable (Int64, Int64?) -> Void) { self.dst = dst; self.progress = progress }
            func urlSession(_ session: URLSession, downloadTask: URLSessionDownloadTask, didWriteData bytesWritten: Int64,
                            totalBytesWritten: Int64, totalBytesExpectedToWrite: Int64) {
                progress(totalBytesWritten, totalBytesExpectedToWrite > 0 ? totalBytesExpectedToWrite : nil)
            }
            func urlSession(_ session: URLSession, downloadTask: URLSessionDownloadTask, didFinishDownloadingTo location: URL) {
                if let http = downloadTask.response as? HTTPURLResponse, !(200..<300).contains(http.statusCode) {
                    error = DataError("\(downloadTask.originalRequest?.url?.absoluteString ?? "download"): HTTP \(http.statusCode)")
                    return
                }
                do {
                    try? FileManager.default.removeItem(atPath: dst)
                    try FileManager.default.moveItem(at: location, to: URL(fileURLWithPath: dst))
                } catch { self.error = error }
            }
            func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
                if let error { self.error = DataError("\(task.originalRequest?.url?.absoluteString ?? "download"): \(error.localizedDescription)") }
                done.signal()
            }
        }
        let delegate = Delegate(dst: dst, progress: progress)
        let session = URLSession(configuration: .ephemeral, delegate: delegate, delegateQueue: nil)
        session.downloadTask(with: url).resume()
        delegate.done.wait()
        session.finishTasksAndInvalidate()
        if let e = delegate.error { throw e }
        guard FileManager.default.fileExists(atPath: dst) else { throw DataError("\(url.absoluteString): download produced no file") }
    }

    /// Extracts the archive's expected files into `root/<directory>/`, all or nothing: files go
    /// to a staging root first (`root/.staging-<directory>-<pid>/<directory>/`), `check` reads
    /// them there, and only then does the staged directory replace the old one, so data that was
    /// there is never lost to an archive that turns out bad. The archive is streamed: read,
    /// decompressed and written a megabyte at a time, never held in memory.
    public static func extract(_ archivePath: String, _ archive: CIFARArchive, into root: String,
                               check: (_ stagingRoot: String) throws -> Void = { _ in }) throws {
        let file: InputFile.Handle
        do { file = try InputFile.open(archivePath, what: "the archive") } catch { throw DataError("\(error)") }
        var offset = 0
        let gz = try Archive.Gunzip(source: archivePath) { count in
            let chunk = try file.read(at: offset, count: min(count, file.size - offset))
            offset += chunk.count
            return chunk
        }
        let wanted = Set(archive.files.map { "\(archive.directory)/\($0)" })
        let fm = FileManager.default
        let stagingRoot = (root as NSString).appendingPathComponent(".staging-\(archive.directory)-\(getpid())")
        let staging = (stagingRoot as NSString).appendingPathComponent(archive.directory)
        try? fm.removeItem(atPath: stagingRoot)
        defer { try? fm.removeItem(atPath: stagingRoot) }
        try fm.createDirectory(atPath: staging, withIntermediateDirectories: true)
        var output: FileHandle?
        defer { try? output?.close() }
        let found = try Archive.untar(read: gz.read, wanted: wanted, source: archivePath) { name, chunk, first in
            let path = (staging as NSString).appendingPathComponent((name as NSString).lastPathComponent)
            if first {
                try output?.close()
                guard fm.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
                    throw DataError("\(path): cannot write")
                }
                output = handle
            }
            do { try output?.write(contentsOf: chunk) } catch { throw DataError("\(path): cannot write: \(error.localizedDescription)") }
        }
        try output?.close()
        output = nil
        try gz.finish()
        let missing = wanted.subtracting(found).filter { !$0.hasSuffix(".txt") }
        guard missing.isEmpty else { throw DataError("\(archivePath): archive lacks \(missing.sorted().joined(separator: ", "))") }
        try check(stagingRoot)
        let final = (root as NSString).appendingPathComponent(archive.directory)
        let old = (root as NSString).appendingPathComponent(".\(archive.directory).old-\(getpid())")
        try? fm.removeItem(atPath: old)
        let hadOld = fm.fileExists(atPath: final)
        if hadOld { try fm.moveItem(atPath: final, toPath: old) }
        do { try fm.moveItem(atPath: staging, toPath: final) } catch {
            if hadOld { try? fm.moveItem(atPath: old, toPath: final) }
            throw DataError("\(final): cannot move the extracted files into place: \(error.localizedDescription)")
        }
        try? fm.removeItem(atPath: old)
    }
}
