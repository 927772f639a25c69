import Foundation

/// Which implementation runs each convolution pass. Off (the default), an executor takes oneDNN's
/// first choice, as the library orders them. On, the first executor that meets a pass (its shape,
/// the layouts it is given, the thread count and the implementations on offer: oneDNN's, and for
/// 3x3 stride-1 passes on blocked layouts sambench's own Winograd kernels, Winograd.swift) times
/// every implementation on scratch buffers, keeps the fastest, and records it in a file shared by
/// every process of the machine; later executors (a resumed run, the next run, another worker)
/// read the choice instead of timing again, so a run's kernels, and so its arithmetic, are the
/// same every time it is built on this machine. The first choice recorded for a pass wins: a
/// process that timed another one takes the recorded one.
public final class ConvolutionTuning: @unchecked Sendable {
    public static let shared = ConvolutionTuning()

    private let lock = NSLock()
    private var choices: [String: String] = [:]
    private var file: URL?
    /// Passes timed by this process (a cached choice is not timed again).
    public private(set) var timedPasses = 0
    /// For tests and experiments: among the eligible implementations, those whose name passes
    /// this are taken before any faster one (to hold a kernel that timing might not pick to the
    /// twin and the PyTorch reference).
    public var preferred: (@Sendable (String) -> Bool)? {
        get { lock.withLock { _preferred } }
        set { lock.withLock { _preferred = newValue } }
    }
    private var _preferred: (@Sendable (String) -> Bool)?

    public init() {}

    /// Whether executors built from now on choose by timing.
    public var enabled: Bool { lock.withLock { file != nil } }

    /// Turns tuning on with its choices kept in `file` (read now if it exists; a file that cannot
    /// be read as choices is started afresh).
    public func enable(file: URL) {
        lock.withLock {
            self.file = file
            choices = Self.read(file)
        }
    }

    public func disable() { lock.withLock { file = nil; choices = [:] } }

    /// The recorded choice for a pass, if any.
    public func choice(for key: String) -> String? { lock.withLock { choices[key] } }

    /// Records `implementation` for `key` unless a choice is already recorded (here or in the file
    /// by another process), and returns the recorded one.
    public func record(_ implementation: String, for key: String) -> String {
        lock.withLock {
            timedPasses += 1
            guard let file else { return implementation }
            // Read, merge and write under an exclusive lock on a note beside the file.
            let lockPath = file.path + ".lock"
            try? FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            let fd = open(lockPath, O_RDWR | O_CREAT, 0o644)
            if fd >= 0 { flock(fd, LOCK_EX) }
            defer { if fd >= 0 { flock(fd, LOCK_UN); close(fd) } }
            choices.merge(Self.read(file)) { _, onDisk in onDisk }
            if let recorded = choices[key] { return recorded }
            choices[key] = implementation
            Self.write(choices, to: file)
            return implementation
        }
    }

    private struct Stored: Codable {
        var format = "sambench oneDNN implementation choices, version 1"
        var choices: [String: String]
    }

    private static func read(_ file: URL) -> [String: String] {
        // A cache that cannot be read (or is a FIFO, or huge) is as good as none: the layers are timed again.
        guard let bytes = try? InputFile.contents(file.path, what: "the tuning cache", limit: 16 << 20),
              let stored = try? JSONDecoder().decode(Stored.self, from: Data(bytes)) else { return [:] }
        return stored.choices
    }

    private static func write(_ choices: [String: String], to file: URL) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard let data = try? encoder.encode(Stored(choices: choices)) else { return }
        // A whole new file renamed over the old: a reader never sees half of one.
        let temporary = file.deletingLastPathComponent().appendingPathComponent(".\(file.lastPathComponent).\(getpid())")
        guard (try? data.write(to: temporary)) != nil else { return }
        if rename(temporary.path, file.path) != 0 { try? FileManager.default.removeItem(at: temporary) }
    }
}
