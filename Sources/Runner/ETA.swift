// The display's model of progress: where each active run stands, its throughput and time left, and the suite's.
import Foundation
import Training

/// Where the active runs stand, for the display: the position (epoch and batch), the measured
/// throughput and what is left, from the run's own progress since it started here.
public struct ActiveRun: Sendable {
    public var label: String
    public var stage = Stage.train
    /// Epochs completed in the current stage.
    public var epoch = 0
    public var epochs: Int
    public var batch = 0
    public var batches = 0
    public var testAccuracy: Double?
    public var memorised: Double?
    public var batchSize = 0
    /// Stages of the run (2 with bootstrap), for the fraction done.
    public var stages = 1
    /// Training images per second over the latest batch reports (smoothed), nil before two reports.
    public var imagesPerSecond: Double?
    /// Seconds since the run started in this runner.
    public var elapsed = 0.0
    /// Seconds left, from the progress rate measured since the first report (evaluation included
    /// once an epoch has ended); nil until the run has moved.
    public var eta: Double?
    private var started: Date?
    private var first: (time: Date, done: Double)?
    private var lastBatch: (time: Date, epoch: Int, batch: Int)?

    public init(label: String, epochs: Int, batchSize: Int = 0, stages: Int = 1, started: Date? = nil) {
        (self.label, self.epochs, self.batchSize, self.stages, self.started) = (label, epochs, batchSize, stages, started)
    }

    /// The fraction of the whole run done, in [0, 1].
    public var fraction: Double {
        let stage = Stage.allCases.firstIndex(of: stage)!
        let within = batches > 0 ? Double(batch) / Double(batches) : 0
        return min(max((Double(stage * epochs + epoch) + within) / Double(max(stages * epochs, 1)), 0), 1)
    }

    /// Records a position at time `now`: the throughput and the time left follow.
    public mutating func observe(stage: Stage, epoch: Int, batch: Int, batches: Int, at now: Date) {
        if started == nil { started = now }
        if let last = lastBatch, last.epoch == epoch, batch > last.batch, now > last.time, self.stage == stage, batchSize > 0 {
            let rate = Double((batch - last.batch) * batchSize) / now.timeIntervalSince(last.time)
            imagesPerSecond = imagesPerSecond.map { 0.7 * $0 + 0.3 * rate } ?? rate
        }
        (self.stage, self.epoch, self.batch, self.batches) = (stage, epoch, batch, batches)
        lastBatch = (now, epoch, batch)
        update(at: now)
    }

    /// An epoch ended at `now` (its evaluation included).
    public mutating func endEpoch(stage: Stage, epoch: Int, at now: Date) {
        if started == nil { started = now }
        (self.stage, self.epoch, self.batch) = (stage, epoch, 0)
        lastBatch = nil
        update(at: now)
    }

    private mutating func update(at now: Date) {
        elapsed = now.timeIntervalSince(started ?? now)
        let done = fraction
        guard let first else { self.first = (now, done); return }
        let dt = now.timeIntervalSince(first.time), moved = done - first.done
        if dt > 0, moved > 0 { eta = (1 - done) * dt / moved }
    }
}

public struct Progress: Sendable {
    public var total = 0
    public var finished = 0
    public var failed = 0
    public var active: [ActiveRun] = []
    /// Seconds left for the suite, once some run has moved.
    public var eta: Double?

    /// The suite's time left: each active run's own ETA, then the queued runs' epochs (in cost
    /// units: a SAM epoch counts two) at the seconds per unit measured by finished epochs (or,
    /// before any, by the active runs' rates), shared among the jobs.
    public static func suiteETA(active: [(run: ActiveRun, cost: Double)], queued: [Double], secondsPerUnit: Double?, jobs: Int) -> Double? {
        // Seconds per cost unit (one epoch of one pass) from the active runs' rates.
        let measured = active.compactMap { a -> Double? in
            guard let eta = a.run.eta, a.run.fraction < 1 else { return nil }
            let unitsLeft = (1 - a.run.fraction) * Double(a.run.stages * a.run.epochs) * a.cost
            return unitsLeft > 0 ? eta / unitsLeft : nil
        }
        guard let perUnit = secondsPerUnit ?? (measured.isEmpty ? nil : measured.reduce(0, +) / Double(measured.count)) else { return nil }
        let activeLeft = active.map { a in a.run.eta ?? (1 - a.run.fraction) * Double(a.run.stages * a.run.epochs) * a.cost * perUnit }.reduce(0, +)
        let lanes = Double(max(1, min(jobs, active.count + queued.count)))
        return (activeLeft + queued.reduce(0, +) * perUnit) / lanes
    }
}

