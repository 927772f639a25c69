import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One writer per results database: an exclusive `flock` on `DB.lock`, held for the writer's
/// lifetime. The kernel releases it when the process ends, however it ends (SIGKILL included),
/// so a crashed runner never leaves the database locked. The file records who holds it.
public final class WriterLock {
    private let fd: Int32
    public let path: String

    /// Takes the lock or throws, naming the holder.
    public init(database: String, purpose: String) throws {
        try? FileManager.default.createDirectory(at: URL(fileURLWithPath: database).deletingLastPathComponent(), withIntermediateDirectories: true)
        path = WriterLock.path(for: database)
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw StoreError("\(path): cannot open the lock file (\(String(cString: strerror(errno))))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let holder = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            close(fd)
            throw StoreError("""
                \(database) is in use by another sambench process\(holder.isEmpty ? "" : " (\(holder))"). \
                Only one writer at a time: wait for it to finish, or give this one its own --db and combine them later \
                with `sambench merge`.
                """)
        }
        let note = "pid \(getpid()) on \(ProcessInfo.processInfo.hostName), \(purpose), since \(ISO8601DateFormatter().string(from: Date()))\n"
        _ = ftruncate(fd, 0)
        _ = note.withCString { pwrite(fd, $0, strlen($0), 0) }
    }

    /// `DB.lock`, with the directory's symlinks resolved: the same database reached by another
    /// path takes the same lock.
    static func path(for database: String) -> String {
        let url = URL(fileURLWithPath: database)
        return url.deletingLastPathComponent().resolvingSymlinksInPath().standardizedFileURL
            .appendingPathComponent(url.lastPathComponent).path + ".lock"
    }

    /// Whether a writer holds the lock now (for readers that show `running` runs as they are).
    public static func isHeld(database: String) -> Bool {
        let fd = open(WriterLock.path(for: database), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        if flock(fd, LOCK_EX | LOCK_NB) == 0 {
            flock(fd, LOCK_UN)
            return false
        }
        return true
    }

    deinit {
        _ = ftruncate(fd, 0)
        flock(fd, LOCK_UN)
        close(fd)
    }
}
