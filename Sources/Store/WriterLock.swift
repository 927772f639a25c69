import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One writer per results database, and one runner per checkpoint folder: an exclusive `flock` on
/// the database file itself (or the folder itself), held for the writer's lifetime. The lock
/// belongs to the file's identity (device and inode), so every name of it (a symlink, a hard
/// link, `./` spellings) takes the same lock; the kernel releases it when the process ends,
/// however it ends (SIGKILL included), so a crashed runner never leaves anything locked.
/// `DB.lock` beside the database records who holds it, for the message a second writer gets.
public final class WriterLock {
    private let identity: FileIdentity
    /// The note naming the holder (`DB.lock`, or `.sambench-lock` in a folder).
    public let path: String
    /// The database file this lock created (removed again if nothing was ever written to it).
    private var created: String?

    /// Takes the database's lock (creating the file, empty, when it does not exist: SQLite takes
    /// an empty file for a new database) or throws, naming the holder.
    public init(database: String, purpose: String) throws {
        try Store.refuseOtherThanAFile(database)
        try? FileManager.default.createDirectory(at: URL(fileURLWithPath: database).deletingLastPathComponent(), withIntermediateDirectories: true)
        path = WriterLock.notePath(for: database)
        let note = path
        let existed = FileManager.default.fileExists(atPath: database)
        identity = try FileLocks.shared.lock(database, directory: false) { holder in
            """
            \(database) is in use by another sambench process\(holder.map { " (\($0))" } ?? " (through another name of the same file)"). \
            Only one writer at a time: wait for it to finish, or give this one its own --db and combine them later \
            with `sambench merge`.
            """
        } note: { WriterLock.note(at: note) }
        created = existed ? nil : database
        writeNote(purpose)
    }

    /// Takes a checkpoint folder (creating it) for a runner: two runners on two databases with
    /// one suite would otherwise write the same runs' checkpoints into one folder.
    public init(checkpoints folder: String, purpose: String) throws {
        do { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) } catch {
            throw StoreError("\(folder): cannot create the checkpoint folder (\(error.localizedDescription))")
        }
        path = (folder as NSString).appendingPathComponent(".sambench-lock")
        let note = path
        identity = try FileLocks.shared.lock(folder, directory: true) { holder in
            """
            the checkpoint folder \(folder) is in use by another sambench runner\(holder.map { " (\($0))" } ?? ""). \
            Give this one its own --checkpoints folder.
            """
        } note: { WriterLock.note(at: note) }
        writeNote(purpose)
    }

    private func writeNote(_ purpose: String) {
        let text = "pid \(getpid()) on \(ProcessInfo.processInfo.hostName), \(purpose), since \(ISO8601DateFormatter().string(from: Date()))\n"
        try? text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    private static func note(at path: String) -> String? {
        (try? String(contentsOfFile: path, encoding: .utf8)).map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// `DB.lock` beside the file that a symlinked name leads to.
    static func notePath(for database: String) -> String {
        URL(fileURLWithPath: database).resolvingSymlinksInPath().standardizedFileURL.path + ".lock"
    }

    /// Whether a writer holds the database now (for readers that show `running` runs as they are).
    public static func isHeld(database: String) -> Bool { FileLocks.shared.isHeld(database) }

    deinit {
        try? FileManager.default.removeItem(atPath: path)
        if let created, (try? FileManager.default.attributesOfItem(atPath: created)[.size] as? Int) == 0 {
            try? FileManager.default.removeItem(atPath: created)
        }
        FileLocks.shared.unlock(identity)
    }
}

/// A file's device and inode: the same file however it is reached (symlink, hard link).
struct FileIdentity: Hashable {
    let device: UInt64
    let inode: UInt64

    init(device: UInt64, inode: UInt64) { (self.device, self.inode) = (device, inode) }

    init(_ s: stat) { self.init(device: UInt64(s.st_dev), inode: UInt64(s.st_ino)) }

    init?(_ path: String) {
        var s = stat()
        guard stat(path, &s) == 0 else { return nil }
        self.init(s)
    }
}

/// The descriptors this process has opened to take `flock`s, one per file identity, kept open
/// until the process ends: closing any descriptor of a file drops the POSIX locks SQLite holds on
/// it in this process, so a lock's descriptor is never closed while a database may be open.
final class FileLocks: @unchecked Sendable {
    static let shared = FileLocks()
    private let mutex = NSLock()
    private var open: [FileIdentity: (fd: Int32, held: Bool)] = [:]

    /// The descriptor for `path` (opened and remembered the first time), or nil when it does not
    /// exist and `create` is false. The identity is read by name first, so a file this process
    /// has a descriptor for is never opened (and closed) again.
    private func descriptor(_ path: String, create: Bool, directory: Bool) throws -> (FileIdentity, Int32)? {
        if let id = FileIdentity(path), let known = open[id] { return (id, known.fd) }
        var fd = directory ? Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : Glibc.open(path, O_RDWR | (create ? O_CREAT : 0) | O_CLOEXEC, 0o644)
        let failure = errno
        // A database that cannot be written is still locked (reading it needs no lock; writing
        // it fails later with its own message).
        if fd < 0, !directory, failure == EACCES || failure == EROFS { fd = Glibc.open(path, O_RDONLY | O_CLOEXEC) }
        guard fd >= 0 else {
            if failure == ENOENT && !create { return nil }
            throw StoreError("\(path): cannot create or open it for the writer's lock (\(String(cString: strerror(failure))))")
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else { let e = errno; close(fd); throw StoreError("\(path): cannot stat (\(String(cString: strerror(e))))") }
        let id = FileIdentity(st)
        open[id] = (fd, false)
        return (id, fd)
    }

    func lock(_ path: String, directory: Bool, refusal: (String?) -> String, note: () -> String?) throws -> FileIdentity {
        mutex.lock(); defer { mutex.unlock() }
        guard let (id, fd) = try descriptor(path, create: true, directory: directory) else { throw StoreError("\(path): cannot create") }
        guard open[id]?.held != true, flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            throw StoreError(refusal(open[id]?.held == true ? "this same process" : note()))
        }
        open[id]?.held = true
        return id
    }

    func unlock(_ id: FileIdentity) {
        mutex.lock(); defer { mutex.unlock() }
        guard let entry = open[id] else { return }
        flock(entry.fd, LOCK_UN)
        open[id]?.held = false
    }

    func isHeld(_ path: String) -> Bool {
        mutex.lock(); defer { mutex.unlock() }
        guard let (id, fd) = try? descriptor(path, create: false, directory: false) else { return false }
        if open[id]?.held == true { return true }
        if flock(fd, LOCK_EX | LOCK_NB) == 0 {
            flock(fd, LOCK_UN)
            return false
        }
        return true
    }
}
