// What an output path may be before sambench writes a file there: absent, or a regular file.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Every file sambench writes goes through a temporary file renamed over the path, which
/// replaces whatever is there: a device node (as root, `--out /dev/full` replaced the device), a
/// FIFO, a socket. So before writing, the path must be absent or a regular file (a symbolic
/// link is judged by what it points to); anything else is refused, saying what it is.
public enum OutputFile {
    public struct Refused: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public static func check(_ path: String) throws {
        guard !path.isEmpty else { throw Refused(description: "an empty output path: name a file") }
        if let what = otherThanAFile(path) {
            throw Refused(description: "\(path) is \(what), not a file sambench may replace; name a file (nothing was written)")
        }
    }

    /// What is at `path` when it is there and not a regular file ("a directory", "a FIFO (named
    /// pipe)"...), following symbolic links; nil for a regular file or nothing (a dangling link or
    /// an unreadable folder is for the reader or writer to report).
    public static func otherThanAFile(_ path: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return kind(st)
    }

    /// What a stat describes when it is not a regular file; nil for a regular file.
    static func kind(_ st: stat) -> String? {
        switch st.st_mode & S_IFMT {
        case S_IFREG: return nil
        case S_IFDIR: return "a directory"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFIFO: return "a FIFO (named pipe)"
        case S_IFSOCK: return "a socket"
        default: return "not a regular file"
        }
    }
}
