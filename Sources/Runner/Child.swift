// A worker child process read through non-blocking pipes, and the runner's error type.
import CProcess
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A child process whose stdout and stderr the parent reads through pipes (non-blocking), line
/// by line for stdout; the last few kilobytes of stderr are kept for error messages.
final class Child {
    let pid: pid_t
    private(set) var stdout: Int32
    private(set) var stderr: Int32
    private var buffer: [UInt8] = []
    private(set) var stderrTail: [UInt8] = []

    init(executable: String, arguments: [String]) throws {
        var out: [Int32] = [0, 0], err: [Int32] = [0, 0]
        guard sambench_pipe(&out, 0) == 0, sambench_pipe(&err, 0) == 0 else {
            throw RunnerError("cannot create pipes: \(String(cString: strerror(errno)))")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO)
        posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, nil, argv, environ)
        close(out[1])
        close(err[1])
        guard rc == 0 else {
            close(out[0])
            close(err[0])
            throw RunnerError("cannot start \(executable): \(String(cString: strerror(rc)))")
        }
        self.pid = pid
        stdout = out[0]
        stderr = err[0]
        _ = fcntl(stdout, F_SETFL, fcntl(stdout, F_GETFL) | O_NONBLOCK)
        _ = fcntl(stderr, F_SETFL, fcntl(stderr, F_GETFL) | O_NONBLOCK)
    }

    var open: Bool { stdout >= 0 || stderr >= 0 }

    /// Reads what `fd` has; returns the complete stdout lines. Closes a pipe at end of file.
    func read(_ fd: Int32) -> [Data] {
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        var lines: [Data] = []
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
            if n > 0 {
                if fd == stdout {
                    buffer.append(contentsOf: chunk[0..<n])
                    while let nl = buffer.firstIndex(of: 0x0A) {
                        lines.append(Data(buffer[..<nl]))
                        buffer.removeSubrange(...nl)
                    }
                } else {
                    stderrTail.append(contentsOf: chunk[0..<n])
                    if stderrTail.count > 8192 { stderrTail.removeFirst(stderrTail.count - 8192) }
                }
                continue
            }
            if n < 0 && (errno == EAGAIN || errno == EINTR) { break }
            // End of file (or an error): the child closed it.
            close(fd)
            if fd == stdout { stdout = -1 } else { stderr = -1 }
            break
        }
        return lines
    }

    /// The signal that ended the child (after `wait`), nil when it exited.
    private(set) var terminatingSignal: Int32?

    /// Waits for the child to exit; returns a description of how it ended when not with 0.
    func wait() -> String? {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        if status & 0x7f == 0 {
            let code = (status >> 8) & 0xff
            return code == 0 ? nil : "worker exited with status \(code)"
        }
        terminatingSignal = status & 0x7f
        return "worker killed by signal \(status & 0x7f)"
    }

    func signal(_ sig: Int32) { kill(pid, sig) }

    deinit {
        if stdout >= 0 { close(stdout) }
        if stderr >= 0 { close(stderr) }
    }
}

public struct RunnerError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
