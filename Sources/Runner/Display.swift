import Foundation
import Store
import Training
#if canImport(Glibc)
import Glibc
#endif

/// What the runner reports as it goes.
public protocol RunnerDisplay: AnyObject {
    func begin(total: Int, toRun: Int)
    func started(_ label: String, resumedAfter: Int)
    func epoch(_ label: String, stage: String, _ m: EpochMetrics, of epochs: Int)
    func ended(_ label: String, status: RunStatus, detail: String)
    func stopping()
    func refresh(_ progress: Progress)
    func end(_ summary: RunSummary)
}

public enum Verbosity: Sendable { case quiet, normal, verbose }

/// On a terminal: a live view (runs done of total with an ETA, and each active run's epoch,
/// batch and latest accuracy) under the log of started and finished runs. In a pipe or CI: one
/// plain line per epoch and per run. Quiet: failures and the summary only.
public final class ConsoleDisplay: RunnerDisplay {
    let live: Bool
    let verbosity: Verbosity
    private var blockLines = 0
    private var lastDraw = Date.distantPast
    private var last = Progress()

    public init(live: Bool, verbosity: Verbosity) {
        self.live = live
        self.verbosity = verbosity
    }

    public static func forStandardOutput(_ verbosity: Verbosity) -> ConsoleDisplay {
        ConsoleDisplay(live: isatty(STDOUT_FILENO) != 0 && verbosity != .quiet && ProcessInfo.processInfo.environment["TERM"] != "dumb",
                       verbosity: verbosity)
    }

    private func log(_ line: String, always: Bool = false) {
        guard verbosity != .quiet || always else { return }
        if live { clearBlock() }
        write(line + "\n")
        if live { draw(last) }
    }

    /// Errors (a closed pipe) are ignored: the display must never end the runs.
    private func write(_ s: String) { try? FileHandle.standardOutput.write(contentsOf: Data(s.utf8)) }

    public func begin(total: Int, toRun: Int) {
        log("\(total) runs: \(total - toRun) already finished, \(toRun) to run")
    }

    public func started(_ label: String, resumedAfter: Int) {
        guard verbosity == .verbose || !live || resumedAfter > 0 else { return }
        log("start   \(label)" + (resumedAfter > 0 ? " (resuming after epoch \(resumedAfter))" : ""))
    }

    public func epoch(_ label: String, stage: String, _ m: EpochMetrics, of epochs: Int) {
        guard !live || verbosity == .verbose else { return }
        var s = "epoch   \(label)" + (stage == "train" ? "" : " [\(stage)]") + " \(m.epoch)/\(epochs):"
        s += String(format: " loss %.4f, train %.2f%%", m.trainLoss, 100 * m.trainAccuracy)
        if let c = m.corruptedNoisyAccuracy { s += String(format: ", memorised %.2f%%", 100 * c) }
        if let v = m.validationAccuracy { s += String(format: ", val %.2f%%", 100 * v) }
        s += String(format: ", test %.2f%% (%.1f s)", 100 * m.testAccuracy, m.seconds)
        log(s)
    }

    public func ended(_ label: String, status: RunStatus, detail: String) {
        let tag = status == .done ? "done   " : status.rawValue.uppercased() + " "
        log("\(tag)\(label)" + (detail.isEmpty ? "" : ": \(detail)"), always: status == .failed)
    }

    public func stopping() {
        log("stopping: ending the active runs (they resume from their last epoch when run again); signal again to kill at once", always: true)
    }

    public func refresh(_ progress: Progress) {
        last = progress
        guard live, Date().timeIntervalSince(lastDraw) >= 0.25 else { return }
        clearBlock()
        draw(progress)
    }

    public func end(_ summary: RunSummary) {
        if live { clearBlock() }
        var parts = ["\(summary.done) done"]
        if summary.diverged > 0 { parts.append("\(summary.diverged) diverged") }
        if summary.failed > 0 { parts.append("\(summary.failed) failed") }
        if summary.interrupted > 0 { parts.append("\(summary.interrupted) interrupted") }
        if summary.notStarted > 0 { parts.append("\(summary.notStarted) not started") }
        if summary.interrupted + summary.notStarted > 0 { parts.append("run the same command again to go on") }
        if summary.skipped > 0 { parts.append("\(summary.skipped) already finished") }
        write(parts.joined(separator: ", ") + "\n")
    }

    private func clearBlock() {
        guard blockLines > 0 else { return }
        write("\u{1B}[\(blockLines)F\u{1B}[J")
        blockLines = 0
    }

    private func draw(_ p: Progress) {
        guard live, p.total > 0 else { return }
        lastDraw = Date()
        var w = winsize()
        let width = ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &w) == 0 && w.ws_col > 20 ? Int(w.ws_col) - 1 : 99
        var lines = ["runs \(p.finished)/\(p.total)" + (p.failed > 0 ? " (\(p.failed) failed)" : "") + ", \(p.active.count) active" +
                     (p.eta.map { ", ETA " + ConsoleDisplay.duration($0) } ?? "")]
        for a in p.active {
            var s = "  \(a.label): epoch \(min(a.epoch + 1, a.epochs))/\(a.epochs)"
            if a.stage != "train" { s += " [\(a.stage)]" }
            if a.batches > 0 { s += " batch \(a.batch)/\(a.batches)" }
            if let t = a.testAccuracy { s += String(format: ", test %.1f%%", 100 * t) }
            if let m = a.memorised { s += String(format: ", memorised %.1f%%", 100 * m) }
            lines.append(s)
        }
        write(lines.map { String($0.prefix(width)) }.joined(separator: "\n") + "\n")
        blockLines = lines.count
    }

    public static func duration(_ s: Double) -> String {
        let t = Int(s.rounded())
        if t >= 3600 { return "\(t / 3600)h \(t % 3600 / 60)m" }
        if t >= 60 { return "\(t / 60)m \(t % 60)s" }
        return "\(t)s"
    }
}
