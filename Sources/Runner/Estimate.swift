// The dry run's wall-time estimate from a few timed steps of each model.
import Datasets
import Foundation
import Store
import Suites
import Training

/// The wall time a set of runs will take on this machine, from a short benchmark of each
/// distinct model and batch size (an SGD step, a SAM step and an eval pass, with the threads
/// each run gets), scaled by each run's steps and evaluated images. An estimate: data loading,
/// checkpoints and sharpness are not counted, and jobs sharing the cores slow each other.
public struct WallTimeEstimate: Sendable {
    public struct Rates: Sendable {
        /// Seconds per step and per evaluated image.
        public var sgdStep: Double, samStep: Double, evalImage: Double
        public init(sgdStep: Double, samStep: Double, evalImage: Double) { (self.sgdStep, self.samStep, self.evalImage) = (sgdStep, samStep, evalImage) }
    }

    /// Seconds per run, in the order given.
    public var perRun: [Double]
    /// Wall seconds for them all with `jobs` at once (the busiest lane when taken in order).
    public var wall: Double
    /// The rates measured, by "model batch".
    public var rates: [String: Rates]

    /// Measures each distinct model and batch size with `measure` (by default `Benchmark.run`,
    /// 2 warm-up and 3 timed steps), then sums.
    public static func make(_ runs: [KeyedRun], jobs: Int, threads: Int,
                            measure: (_ model: String, _ mode: Benchmark.Mode, _ batch: Int, _ threads: Int) throws -> Double = { model, mode, batch, threads in
                                try Benchmark.run(model: model, mode: mode, batch: batch, threads: threads, warmup: 2, steps: 3).step_time_s.median
                            }, progress: (String) -> Void = { _ in }) throws -> WallTimeEstimate {
        var rates: [String: Rates] = [:]
        for r in runs {
            let c = r.spec.config, id = "\(c.model) \(c.batchSize)"
            guard rates[id] == nil else { continue }
            progress("measuring \(c.model) at batch \(c.batchSize) (\(threads) thread\(threads == 1 ? "" : "s")): SGD, SAM and eval steps")
            let sgd = try measure(c.model, .sgd, c.batchSize, threads), sam = try measure(c.model, .sam, c.batchSize, threads)
            rates[id] = Rates(sgdStep: sgd, samStep: sam, evalImage: try measure(c.model, .eval, c.batchSize, threads) / Double(c.batchSize))
        }
        let perRun = runs.map { seconds($0, rates["\($0.spec.config.model) \($0.spec.config.batchSize)"]!) }
        // Runs taken in order by the first free lane, as the runner does.
        var lanes = [Double](repeating: 0, count: max(jobs, 1))
        for s in perRun { lanes[lanes.indices.min { lanes[$0] < lanes[$1] }!] += s }
        return WallTimeEstimate(perRun: perRun, wall: lanes.max() ?? 0, rates: rates)
    }

    /// One run: its steps (a SAM-family step at SGD plus the extra pass, LookSAM's one in k,
    /// times the method's passes per step) and its evaluations (test set, validation split and corrupted samples after every epoch).
    public static func seconds(_ run: KeyedRun, _ r: Rates) -> Double {
        let c = run.spec.config, d = run.spec.data
        let images = d.trainSubset ?? d.dataset.trainImages ?? d.syntheticTrain
        let validation = Int((Double(images) * d.validationFraction).rounded())
        let train = images - validation
        let steps = Double(train / max(c.batchSize, 1))
        let step = (c.optimizer.sam.map { r.sgdStep + (r.samStep - r.sgdStep) / Double($0.lookInterval) } ?? r.sgdStep)
            * Methods.passesPerStep(c.method)
        let test = d.testSubset ?? (d.dataset == Dataset.synthetic ? d.syntheticTest : 10_000)
        let corrupted = d.noise.kind == NoiseKind.none ? 0 : Int(Double(train) * d.noise.rate)
        let evaluated = Double(test + validation + corrupted)
        return Double(c.epochs * (c.bootstrap ? 2 : 1)) * (steps * step + evaluated * r.evalImage)
    }
}
