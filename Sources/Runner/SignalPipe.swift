// Signals delivered as bytes on a pipe the event loop polls.
import CProcess
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Signals delivered as bytes on a pipe the runner polls (the only async-signal-safe way).
enum SignalPipe {
    nonisolated(unsafe) static var writeEnd: Int32 = -1
    nonisolated(unsafe) static var readEnd: Int32 = -1
    static let handled = [SIGINT, SIGTERM, SIGHUP]

    static func install() -> Int32 {
        var fds: [Int32] = [0, 0]
        _ = sambench_pipe(&fds, O_NONBLOCK)
        readEnd = fds[0]
        writeEnd = fds[1]
        for s in handled {
            signal(s) { sig in
                var b = UInt8(truncatingIfNeeded: sig)
                _ = write(SignalPipe.writeEnd, &b, 1)
            }
        }
        signal(SIGPIPE, SIG_IGN)
        return readEnd
    }

    static func uninstall() {
        for s in handled { signal(s, SIG_DFL) }
        close(readEnd)
        close(writeEnd)
    }
}
