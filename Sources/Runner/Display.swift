// The runner's live view and log lines on a terminal or a pipe.
import Engine
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
    func epoch(_ label: String, stage: Stage, _ m: EpochMetrics, of epochs: Int)
    func ended(_ label: String, status: RunStatus, detail: String)
    func warning(_ label: String, _ message: String)
    func stopping()
    func refresh(_ progress: Progress)
    func end(_ summary: RunSummary)
}

public enum Verbosity: Sendable { case quiet, normal, verbose }

/// On a terminal: a live view (a progress bar for the suite with its ETA, and for each active
/// run a bar, its epoch and batch, images/s, elapsed time and ETA, fitted to the terminal's
/// width) under the log of started and finished runs. In a pipe or CI: one
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
        write(escapingControlCharacters(line) + "\n")     // labels and a worker's errors: no terminal codes
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

    public func epoch(_ label: String, stage: Stage, _ m: EpochMetrics, of epochs: Int) {
        guard !live || verbosity == .verbose else { return }
        var s = "epoch   \(label)" + (stage == .train ? "" : " [\(stage)]") + " \(m.epoch)/\(epochs):"
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

    public func warning(_ label: String, _ message: String) {
        log("WARNING \(label): \(message)", always: true)
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
        let lines = ConsoleDisplay.lines(p, width: width)
        write(lines.joined(separator: "\n") + "\n")
        blockLines = lines.count
    }

    /// The live view: the suite's bar and counts, then one line per active run (bar, epoch and
    /// batch, images/s, elapsed, ETA, then the label, shortened from the left to fit), every
    /// line at most `width` columns. Accuracies are shown where the width allows.
    public static func lines(_ p: Progress, width: Int) -> [String] {
        let width = max(width, 30)
        let barWidth = width >= 100 ? 20 : 10
        let done = p.total > 0 ? Double(p.finished) / Double(p.total) : 0
        // The suite's fraction counts the active runs' progress too.
        let moving = p.total > 0 ? (Double(p.finished) + p.active.map(\.fraction).reduce(0, +)) / Double(p.total) : done
        var head = "\(bar(moving, barWidth)) \(p.finished)/\(p.total) runs"
        if p.failed > 0 { head += " (\(p.failed) failed)" }
        head += ", \(p.active.count) active"
        head += p.eta.map { ", ETA " + duration($0) } ?? ", ETA measuring"
        var lines = [fit(head, width)]
        let narrow = width < 100
        for a in p.active {
            // Narrow terminals get the compact form, so that the label keeps some room.
            var s = "  " + (narrow ? bar(a.fraction, 8, percent: false) : bar(a.fraction, barWidth)) + " "
            s += (a.stages > 1 ? "\(a.stage) " : "") + (narrow ? "e" : "ep ") + "\(min(a.epoch + 1, a.epochs))/\(a.epochs)"
            if a.batches > 0 { s += (narrow ? " b" : " b ") + "\(a.batch)/\(a.batches)" }
            s += a.imagesPerSecond.map { String(format: narrow ? " %.0fim/s" : " %.0f img/s", $0) } ?? ""
            s += " " + duration(a.elapsed) + " ETA " + (a.eta.map(duration) ?? "?")
            if width >= 110 {
                if let t = a.testAccuracy { s += String(format: " test %.1f%%", 100 * t) }
                if let m = a.memorised { s += String(format: " mem. %.1f%%", 100 * m) }
            }
            if let label = shorten(a.label, width - s.count - 2) { s += "  " + label }
            lines.append(fit(s, width))
        }
        return lines
    }

    static func bar(_ fraction: Double, _ width: Int, percent: Bool = true) -> String {
        let f = min(max(fraction, 0), 1)
        let filled = Int((f * Double(width)).rounded(.down))
        return "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled) + "]" +
            (percent ? String(format: "%4.0f%%", 100 * f) : "")
    }

    /// A text within `room` columns, for display only: whole words dropped from the front (where
    /// a suite's runs agree: dataset, model), then cut; nil when there is no useful room.
    static func shorten(_ text: String, _ room: Int) -> String? {
        guard room >= 8 else { return nil }
        if text.count <= room { return text }
        var rest = Substring(text)
        while let space = rest.firstIndex(of: " ") {
            rest = rest[rest.index(after: space)...]
            if rest.count + 1 <= room { return "…" + rest }
        }
        return "…" + String(text.suffix(room - 1))
    }

    static func fit(_ s: String, _ width: Int) -> String { s.count <= width ? s : String(s.prefix(width - 1)) + "…" }

    public static func duration(_ s: Double) -> String {
        let t = Int(s.rounded())
        if t >= 3600 { return "\(t / 3600)h \(t % 3600 / 60)m" }
        if t >= 60 { return "\(t / 60)m \(t % 60)s" }
        return "\(t)s"
    }
}
