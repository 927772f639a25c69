// The event loop of one `Runner.run`: workers started, their messages stored, stalls and signals handled.
import Datasets
import CProcess
import Foundation
import Store
import Suites
import Training
#if canImport(Glibc)
import Glibc
#endif

/// One `Runner.run`: the queue, the worker slots and what they report, driven by `poll` over
/// the workers' pipes and the signal pipe.
final class EventLoop {
    private final class Slot {
        let run: KeyedRun
        let child: Child
        var active: ActiveRun
        var finished = false
        var error: String?
        /// When the worker last said anything, and why the runner ended it (if it did).
        var lastHeard = Date()
        var stalled: String?
        init(run: KeyedRun, child: Child) {
            self.run = run
            self.child = child
            active = ActiveRun(label: run.spec.label, epochs: run.spec.config.epochs, batchSize: run.spec.config.batchSize,
                               stages: run.spec.config.bootstrap ? 2 : 1, started: Date())
        }
    }

    let runner: Runner
    var store: Store { runner.store }
    var options: RunnerOptions { runner.options }
    var display: RunnerDisplay { runner.display }
    var queue: [KeyedRun]
    var summary: RunSummary
    var epochsDone: [String: Int]
    var progress: Progress
    var secondsPerUnit: (seconds: Double, units: Double) = (0, 0)
    private var slots: [Slot] = []
    var stopping = false

    init(runner: Runner, queue: [KeyedRun], summary: RunSummary, epochsDone: [String: Int]) {
        self.runner = runner
        self.queue = queue
        self.summary = summary
        self.epochsDone = epochsDone
        progress = Progress(total: runner.runs.count)
    }

    func run() throws -> RunSummary {
        let signals = SignalPipe.install()
        defer { SignalPipe.uninstall() }
        defer { for s in slots { s.child.signal(SIGKILL); _ = s.child.wait() } }
        while true {
            if !stopping { while slots.count < options.jobs, let next = try takeStartable() { start(next) } }
            if slots.isEmpty { break }
            try pollOnce(signals: signals)
            endStalled()
            for slot in slots where !slot.child.open { try complete(slot) }
            slots.removeAll { !$0.child.open }
            updateProgress()
            display.refresh(progress)
        }
        summary.notStarted = stopping ? queue.count : 0
        display.end(summary)
        return summary
    }

    /// Waits up to half a second for a signal or a worker's output, and handles what came.
    private func pollOnce(signals: Int32) throws {
        var fds = [pollfd(fd: signals, events: Int16(POLLIN), revents: 0)]
        for s in slots {
            if s.child.stdout >= 0 { fds.append(pollfd(fd: s.child.stdout, events: Int16(POLLIN), revents: 0)) }
            if s.child.stderr >= 0 { fds.append(pollfd(fd: s.child.stderr, events: Int16(POLLIN), revents: 0)) }
        }
        _ = poll(&fds, nfds_t(fds.count), 500)
        if fds[0].revents != 0 {
            var b = [UInt8](repeating: 0, count: 16)
            _ = Glibc.read(signals, &b, 16)
            stop()
        }
        for f in fds.dropFirst() where f.revents != 0 {
            guard let slot = slots.first(where: { $0.child.stdout == f.fd || $0.child.stderr == f.fd }) else { continue }
            let lines = slot.child.read(f.fd)
            if f.fd == slot.child.stdout && !lines.isEmpty { slot.lastHeard = Date() }
            for line in lines { try handle(line, slot) }
        }
    }

    /// Ends (SIGKILL) every worker silent for longer than the stall timeout; `complete` then
    /// marks its run failed with the reason. Its checkpoint stays: run again, it resumes.
    private func endStalled() {
        guard let limit = options.stallTimeout, !stopping else { return }
        for slot in slots where slot.stalled == nil && slot.child.open && Date().timeIntervalSince(slot.lastHeard) > limit {
            slot.stalled = "its worker reported no progress for \(Int(limit)) s (stopped or hung) and was ended by the runner " +
                "(--stall-timeout); it resumes from its last epoch when run again"
            slot.child.signal(SIGKILL)
        }
    }

    /// The first signal ends the workers gently (they save nothing half-done), a second kills them.
    private func stop() {
        if stopping {
            for s in slots { s.child.signal(SIGKILL) }
        } else {
            stopping = true
            summary.stopped = true
            display.stopping()
            for s in slots { s.child.signal(SIGTERM) }
        }
    }

    /// Takes the first queued run that can start now: one that needs no pretrain, or whose
    /// pretrain's weights are saved. A run whose pretrain is queued or training waits; one whose
    /// pretrain ended without weights (failed, diverged, its file removed) ends failed, saying why.
    private func takeStartable() throws -> KeyedRun? {
        var i = 0
        while i < queue.count {
            let run = queue[i]
            guard let p = run.pretrainKey else { return queue.remove(at: i) }
            if queue.contains(where: { $0.key == p }) || slots.contains(where: { $0.run.key == p }) {
                i += 1
                continue
            }
            if FileManager.default.fileExists(atPath: runner.pretrainedWeights(p)) { return queue.remove(at: i) }
            queue.remove(at: i)
            let status = try store.statuses()[p]
            let name = run.spec.pretrain?.name ?? p
            let why = status == .done
                ? "pretrain \"\(name)\" (run \(p)) is done but its weights \(runner.pretrainedWeights(p)) are gone: restore the file, or give another --db to train it again"
                : "pretrain \"\(name)\" (run \(p)) ended \(status?.rawValue ?? "without running"), so there are no weights to start from"
            try store.markFailed(run.key, error: why)
            summary.failed += 1
            display.ended(run.spec.label, status: .failed, detail: why)
        }
        return nil
    }

    private func start(_ run: KeyedRun) {
        var job = WorkerJob(key: run.key, spec: run.spec, dataDir: options.dataDir,
                            checkpoint: (runner.checkpointDir(run.key) as NSString).appendingPathComponent("checkpoint.safetensors"),
                            threads: options.threads, parent: getpid())
        job.dataIdentity = run.identity
        if runner.pretrainKeys.contains(run.key) { job.saveWeights = runner.pretrainedWeights(run.key) }
        if let f = job.spec.data.noise.labelsFile {
            // Relative label files are in the data directory; made absolute, the worker (which
            // checks the data's identity again) reads the same file.
            let path = DataIdentity(dataDir: options.dataDir).resolveLabelPath(f.path)
            job.spec.data.noise.labelsFile = f.relocated(to: URL(fileURLWithPath: path).standardizedFileURL.path)
        }
        do {
            if let p = run.pretrainKey {
                // The pretrain's weights, by content: a file changed under a run is refused on resume.
                job.spec.config.initialWeights = try InitialWeights.reading(runner.pretrainedWeights(p), reinitHead: run.spec.reinitHead ?? false)
            }
            try store.markRunning(run.key, provenance: options.provenance)
            let json = String(decoding: try JSONEncoder().encode(job), as: UTF8.self)
            let slot = Slot(run: run, child: try Child(executable: options.executable, arguments: ["worker", "--job", json]))
            let stored = epochsDone[run.key] ?? 0
            let checkpointGone = stored > 0 && !FileManager.default.fileExists(atPath: job.checkpoint)
            if checkpointGone { epochsDone[run.key] = 0 }
            slot.active.epoch = epochsDone[run.key] ?? 0
            slots.append(slot)
            display.started(run.spec.label, resumedAfter: epochsDone[run.key] ?? 0)
            if checkpointGone {
                display.warning(run.spec.label, "\(stored) epochs are stored but its checkpoint \(job.checkpoint) is gone: the run trains again from scratch, and its stored epochs are replaced")
            }
        } catch {
            try? store.markFailed(run.key, error: "\(error)")
            summary.failed += 1
            display.ended(run.spec.label, status: .failed, detail: "\(error)")
        }
    }

    private func handle(_ line: Data, _ slot: Slot) throws {
        guard let message = try? JSONDecoder().decode(WorkerMessage.self, from: line) else {
            slot.error = String(decoding: line.prefix(2000), as: UTF8.self)
            return
        }
        let key = slot.run.key
        switch message {
        case let .started(noise, clean, resumed):
            if let noise, let clean { try store.recordNoise(key, noise, clean: clean) }
            try store.replaceEpochs(key, with: resumed.map { ($0.stage, $0.metrics) })
            epochsDone[key] = resumed.count
        case let .epoch(stage, m):
            try store.recordEpoch(key, stage: stage, m)
            epochsDone[key, default: 0] += 1
            secondsPerUnit.seconds += m.seconds
            secondsPerUnit.units += Runner.cost(slot.run)
            slot.active.endEpoch(stage: stage, epoch: m.epoch, at: Date())
            slot.active.testAccuracy = m.testAccuracy
            slot.active.memorised = m.corruptedNoisyAccuracy
            display.epoch(slot.run.spec.label, stage: stage, m, of: slot.run.spec.config.epochs)
        case let .batch(stage, epoch, done, total):
            slot.active.observe(stage: stage, epoch: epoch - 1, batch: done, batches: total, at: Date())
        case let .finished(result):
            try store.finish(key, result: result)
            slot.finished = true
            if !options.keepCheckpoints { try? FileManager.default.removeItem(atPath: runner.checkpointDir(key)) }
            let final = result.epochs.last
            var detail = final.map { String(format: "test %.2f%%", 100 * $0.testAccuracy) } ?? ""
            if case .done = result.status {
                summary.done += 1
            } else {
                summary.diverged += 1
                if case let .diverged(step, epoch, _) = result.status { detail = "at step \(step), epoch \(epoch)" }
            }
            display.ended(slot.run.spec.label, status: RunStatus(result.status), detail: detail)
        case let .failed(message):
            slot.error = message
        case let .warning(message):
            display.warning(slot.run.spec.label, message)
        }
    }

    /// A worker's pipes closed: it finished (stored already), was stopped, or died.
    private func complete(_ slot: Slot) throws {
        let exit = slot.child.wait()
        if slot.finished { return }
        // Stopped by us, or asked to stop from outside: a batch system's cancellation signals
        // every process of the job, so a worker may die of it before this runner hears its own.
        let stoppedFromOutside = slot.child.terminatingSignal.map { [SIGTERM, SIGHUP, SIGINT].contains($0) } ?? false
        if stopping || stoppedFromOutside {
            try store.markInterrupted(slot.run.key)
            summary.interrupted += 1
            if !stopping { display.ended(slot.run.spec.label, status: .interrupted, detail: "its worker was ended by signal \(slot.child.terminatingSignal!) from outside sambench; it resumes when run again") }
            return
        }
        let tail = String(decoding: slot.child.stderrTail, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        let message = slot.stalled ?? slot.error ?? ([exit ?? "worker ended without a result"] + (tail.isEmpty ? [] : [tail])).joined(separator: ": ")
        try store.markFailed(slot.run.key, error: message)
        summary.failed += 1
        display.ended(slot.run.spec.label, status: .failed, detail: message)
    }

    private func updateProgress() {
        progress.active = slots.map(\.active)
        progress.finished = summary.skipped + summary.done + summary.diverged + summary.failed
        progress.failed = summary.failed
        progress.eta = Progress.suiteETA(active: slots.map { ($0.active, Runner.cost($0.run)) },
                                         queued: queue.map { r in
                                             Double(max(r.spec.config.epochs * (r.spec.config.bootstrap ? 2 : 1) - (epochsDone[r.key] ?? 0), 0)) * Runner.cost(r)
                                         },
                                         secondsPerUnit: secondsPerUnit.units > 0 ? secondsPerUnit.seconds / secondsPerUnit.units : nil,
                                         jobs: options.jobs)
    }
}

