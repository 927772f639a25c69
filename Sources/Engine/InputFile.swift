// What an input path must be before sambench reads it: a regular file it can open, of a bounded size.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Every file sambench reads comes through here, so that a path which is not a readable regular
/// file is refused saying what it is (a directory, a FIFO, a loop of symbolic links, missing,
/// unreadable), never "cannot read" or a read that blocks on a FIFO forever, and so that a file
/// is never read whole beyond what its reader can use (`limit`) or when only parts of it are
/// needed (`Handle.read(at:count:)`).
public enum InputFile {
    public struct Unreadable: Error, CustomStringConvertible, Sendable {
        public let path: String
        /// What the file was to be ("the checkpoint") and why it cannot be read ("it is a directory, not a file").
        public let what: String, reason: String
        public var description: String { path.isEmpty ? "an empty path for \(what): name a file" : "\(path): cannot read \(what): \(reason)" }
    }

    /// An open regular file, read at offsets; closed when released.
    public final class Handle {
        public let path: String
        public let size: Int
        private let fd: Int32
        private let what: String

        fileprivate init(path: String, what: String, fd: Int32, size: Int) {
            (self.path, self.what, self.fd, self.size) = (path, what, fd, size)
        }

        deinit { close(fd) }

        /// Exactly `count` bytes from `offset` (which the caller has checked against `size`).
        public func read(at offset: Int, count: Int) throws -> [UInt8] {
            precondition(offset >= 0 && count >= 0 && offset <= size && count <= size - offset, "read beyond the checked size")
            var out = [UInt8](repeating: 0, count: count)
            var done = 0
            while done < count {
                let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, min(count - done, 1 << 26), off_t(offset + done)) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else {
                    throw Unreadable(path: path, what: what,
                                     reason: n == 0 ? "the file ended at byte \(offset + done), \(size) were there when it was opened (changed while read?)"
                                                    : String(cString: strerror(errno)))
                }
                done += n
            }
            return out
        }
    }

    /// Opens `path` (named in errors as `what`, e.g. "the checkpoint") for reading.
    public static func open(_ path: String, what: String) throws -> Handle {
        func fail(_ why: String) -> Unreadable { Unreadable(path: path, what: what, reason: why) }
        guard !path.isEmpty else { throw fail("an empty path") }
        var st = stat()
        guard stat(path, &st) == 0 else { throw fail(reason(errno)) }
        if let kind = OutputFile.kind(st) { throw fail("it is \(kind), not a file") }
        // O_NONBLOCK: should the path become a FIFO between the stat and the open, the open does not wait for a writer.
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw fail(reason(errno)) }
        guard fstat(fd, &st) == 0, OutputFile.kind(st) == nil else { close(fd); throw fail("it is not a regular file") }
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 { _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
        return Handle(path: path, what: what, fd: fd, size: Int(st.st_size))
    }

    /// The whole file, refused unread when it is larger than `limit` bytes (what its reader can use).
    public static func contents(_ path: String, what: String, limit: Int) throws -> [UInt8] {
        let file = try open(path, what: what)
        guard file.size <= limit else {
            throw Unreadable(path: path, what: what, reason: "\(file.size) bytes, more than the \(describe(bytes: limit)) any such file has")
        }
        return try file.read(at: 0, count: file.size)
    }

    static func reason(_ code: Int32) -> String {
        switch code {
        case ENOENT: return "no such file"
        case ELOOP: return "a loop of symbolic links"
        case EACCES: return "permission denied"
        case ENOTDIR: return "a component of the path is not a directory"
        default: return String(cString: strerror(code))
        }
    }

    static func describe(bytes: Int) -> String {
        bytes >= 1 << 30 ? "\(bytes >> 30) GiB" : bytes >= 1 << 20 ? "\(bytes >> 20) MiB" : "\(bytes) bytes"
    }
}
