// `sambench bench`: timed eval and training steps on random data, measured like the PyTorch benchmark.
import Engine
import Foundation
import Optim

/// `sambench bench`: images/s of an eval forward and an SGD training step on random data,
/// measured like ../shared/anchors/torch_bench.py (same models, batch, SGD settings, FLOP
/// count), so the two JSON files compare directly.
public enum Benchmark {
    /// What a benchmark times: an eval forward, or a training step of an optimizer.
    public enum Mode: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
        /// eval; sgd; sam and asam (rho 0.05 / 0.5); msam (SAM with m = 32); looksam (k = 5, alpha 0.7).
        case eval, sgd, sam, asam, msam, looksam
        public var description: String { rawValue }

        func optimizer(batch: Int) -> OptimizerConfig {
            switch self {
            case .sam: .sam(SAMConfig(variant: .sam))
            case .asam: .sam(SAMConfig(variant: .asam))
            case .msam: .sam(SAMConfig(variant: .sam, microBatch: batch % 32 == 0 ? 32 : batch))
            case .looksam: .sam(SAMConfig(variant: .sam, lookInterval: 5))
            case .eval, .sgd: .sgd
            }
        }

        /// FLOPs of a step as a multiple of the forward (as torch_bench.py counts them).
        /// LookSAM with k = 5 takes one SAM step (6x) and four SGD steps (3x) in five.
        public var flopMultiplier: Double {
            switch self {
            case .eval: 1
            case .sgd: 3
            case .sam, .asam, .msam: 6
            case .looksam: 3.6
            }
        }
    }

    public struct Stats: Codable, Sendable { public var min: Double, median: Double, max: Double }

    public struct Result: Codable, Sendable {
        public var model: String
        public var mode: Mode
        /// The training method timed (its label, "mixup(alpha=1)"); nil: cross-entropy.
        public var method: String?
        public var memory_format: String
        public var batch: Int
        public var threads: Int
        public var warmup: Int
        public var timed_steps: Int
        public var step_times_s: [Double]
        public var step_time_s: Stats
        public var images_per_s: Stats
        public var params: Int
        public var fwd_macs_per_image: Int
        public var fwd_flops_per_image: Int
        public var assumed_flops_per_image_for_mode: Double
        public var achieved_gflops_median: Double
        public var peak_rss_bytes: Int
        public var engine_buffer_bytes: Int
        public var finite: Bool
        /// With `--profile`: where the time of a step goes.
        public var profile: Profile?
    }

    /// Where a step's time goes (`sambench bench --profile`), measured over `steps` further steps
    /// after the timed ones, every primitive waited for and timed; times are per step.
    public struct Profile: Codable, Sendable {
        public var steps: Int
        /// The machine's ceiling in the same run: GFLOP/s of oneDNN's SGEMM (2048^3) on the same threads.
        public var sgemm_gflops: Double
        /// The timed median's GFLOP/s as a share of that ceiling.
        public var share_of_ceiling: Double
        /// Seconds per step in each phase (executor forward and backward, loss, optimizer update,
        /// SAM's perturbation); the executor's phases contain the ops below.
        public var phases: [Phase]
        /// Seconds per step by op kind and pass (convolution/forward, batch norm/backward...).
        public var kinds: [Kind]
        /// Every step of the executor's plans, in order.
        public var ops: [Op]
        /// Per convolution shape and pass, the best rate any layer of that shape reached.
        public var best_convolution_rates: [ShapeRate]
        /// The convolution passes whose implementation this build chose by timing (empty when the
        /// choices were already recorded for this machine, or tuning is off).
        public var tuned: [TunedPass]

        public struct Phase: Codable, Sendable { public var phase: String, seconds: Double }
        public struct Kind: Codable, Sendable { public var kind: String, pass: String, seconds: Double, share: Double }
        public struct Op: Codable, Sendable {
            public var layer: String, operation: String, pass: String, implementation: String, shape: String
            public var seconds: Double, gflops: Double?
        }
        public struct ShapeRate: Codable, Sendable { public var shape: String, operation: String, gflops: Double, share_of_ceiling: Double }
    }

    /// `method`: the training method of the step (nil: cross-entropy); its passes per step
    /// scale the FLOPs a step is counted as.
    public static func run(model name: String, mode: Mode, batch: Int, threads: Int, warmup: Int, steps: Int,
                           method: MethodConfig? = nil, profile: Bool = false, progress: (String) -> Void = { _ in }) throws -> Result {
        guard batch >= 1, steps >= 1, warmup >= 0 else { throw ConfigurationError("batch_size", "bench: batch and steps must be >= 1, warmup >= 0") }
        EngineThreads.set(threads)
        let model = try Architectures.make(name)
        let state = ModelState(model: model, seed: 0)
        let input = FloatBuffer(count: batch * model.tensors[0].perImage)
        var rng = Xoshiro256(seed: 1)
        for i in 0..<input.count { input.pointer[i] = Float(rng.nextNormal()) }
        let labels = UnsafeMutablePointer<Int32>.allocate(capacity: batch)
        defer { labels.deallocate() }
        for i in 0..<batch { labels[i] = Int32(rng.nextInt(below: model.numClasses)) }

        // Eval runs on an evaluation-only executor (no gradients, activations shared), as `sambench eval` does.
        let sgd = SGDConfig(momentum: 0.9, weightDecay: 5e-4, nesterov: true)
        let trainStep = mode == .eval ? nil : try TrainStep(state: state, batchSize: batch, sgd: sgd, optimizer: mode.optimizer(batch: batch), method: method, seed: 1)
        let executor: Executor = try trainStep?.executor ?? DNNLExecutor(state: state, batchSize: batch, training: false)
        // Co-teaching steps two networks: its second, timed with the first (the selection between them costs next to nothing).
        let peerStep = mode != .eval && method?.name == "coteaching"
            ? try TrainStep(state: ModelState(model: model, seed: 1), batchSize: batch, sgd: sgd, optimizer: mode.optimizer(batch: batch), method: method, seed: 1) : nil
        var finite = true
        let body: () -> Void
        if let trainStep {
            var iteration = 0
            body = {
                finite = finite && trainStep.step(input: input.pointer, labels: labels, lr: 0.1, iteration: iteration).loss.isFinite
                if let peerStep { finite = finite && peerStep.step(input: input.pointer, labels: labels, lr: 0.1, iteration: iteration).loss.isFinite }
                iteration += 1
            }
        } else {
            body = {
                let out = executor.forward(input: input.pointer, mode: .eval)
                finite = finite && out[0].isFinite
            }
        }
        // LookSAM's steps differ in cost (one full SAM step in k): a timed unit is a whole
        // cycle of k steps, reported per step, so the median is not that of the cheap steps.
        let unit = mode == .looksam ? (mode.optimizer(batch: batch).sam?.lookInterval ?? 1) : 1
        for _ in 0..<(warmup * unit) { body() }
        var times: [Double] = []
        for i in 0..<steps {
            let t0 = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<unit { body() }
            times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9 / Double(unit))
            if (i + 1) % 5 == 0 { progress("\(name) \(mode): \(i + 1)/\(steps) steps") }
        }
        let sorted = times.sorted()
        let median = sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        let macs = model.forwardMACsPerImage
        let mult = mode.flopMultiplier * (mode == .eval ? 1 : Methods.passesPerStep(method))
        let gflops = mult * Double(2 * macs * batch) / median / 1e9
        var measured: Profile?
        if profile, let executor = executor as? DNNLExecutor {
            progress("\(name) \(mode): profiling \(steps) steps")
            executor.resetProfile(); trainStep?.resetProfile()
            executor.profiling = true; trainStep?.profiling = true
            let t0 = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<(steps * unit) { body() }
            let total = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            executor.profiling = false; trainStep?.profiling = false
            measured = makeProfile(executor.profile(), trainStep: trainStep, steps: steps * unit,
                                   total: total, gflops: gflops, ceiling: MachineCeiling.sgemmGFLOPs(), tuned: executor.tuned)
        }
        return Result(model: name, mode: mode, method: mode == .eval ? nil : method?.label, memory_format: "oneDNN blocked", batch: batch, threads: EngineThreads.current,
                      warmup: warmup, timed_steps: steps, step_times_s: times,
                      step_time_s: Stats(min: sorted.first!, median: median, max: sorted.last!),
                      images_per_s: Stats(min: Double(batch) / sorted.last!, median: Double(batch) / median, max: Double(batch) / sorted.first!),
                      params: model.parameterCount, fwd_macs_per_image: macs, fwd_flops_per_image: 2 * macs,
                      assumed_flops_per_image_for_mode: mult * Double(2 * macs),
                      achieved_gflops_median: gflops,
                      peak_rss_bytes: peakResidentBytes(), engine_buffer_bytes: (executor as? DNNLExecutor)?.bufferBytes ?? 0, finite: finite,
                      profile: measured)
    }

    static func makeProfile(_ entries: [StepProfile], trainStep: TrainStep?, steps: Int, total: Double, gflops: Double,
                            ceiling: Double, tuned: [TunedPass]) -> Profile {
        let per = 1 / Double(steps)
        var phases = trainStep.map { t in t.phases.map { Profile.Phase(phase: $0, seconds: t.phaseSeconds[$0]! * per) } } ?? []
        phases.insert(Profile.Phase(phase: "step", seconds: total * per), at: 0)
        // Seconds per (kind, pass), in the order first met, largest first.
        var kinds: [Profile.Kind] = []
        for e in entries {
            if let k = kinds.firstIndex(where: { $0.kind == e.label.kind && $0.pass == e.pass }) {
                kinds[k].seconds += e.seconds * per
            } else {
                kinds.append(Profile.Kind(kind: e.label.kind, pass: e.pass, seconds: e.seconds * per, share: 0))
            }
        }
        for k in kinds.indices { kinds[k].share = kinds[k].seconds / (total * per) }
        kinds.sort { $0.seconds > $1.seconds }
        let ops = entries.map { e in
            Profile.Op(layer: e.label.layer, operation: e.label.operation, pass: e.pass, implementation: e.label.implementation,
                       shape: e.label.shape, seconds: e.seconds * per, gflops: e.gflops)
        }
        // The best rate per (shape, pass), in the order first met.
        var best: [Profile.ShapeRate] = []
        for e in entries {
            guard let g = e.gflops else { continue }
            let rate = Profile.ShapeRate(shape: e.label.shape, operation: e.label.operation, gflops: g, share_of_ceiling: g / ceiling)
            if let k = best.firstIndex(where: { $0.shape == rate.shape && $0.operation == rate.operation }) {
                if g > best[k].gflops { best[k] = rate }
            } else {
                best.append(rate)
            }
        }
        return Profile(steps: steps, sgemm_gflops: ceiling, share_of_ceiling: gflops / ceiling, phases: phases, kinds: kinds,
                       ops: ops, best_convolution_rates: best, tuned: tuned)
    }

    /// The process's peak resident set (VmHWM), in bytes; 0 where /proc is not available.
    public static func peakResidentBytes() -> Int {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in s.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            let kb = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
            return kb * 1024
        }
        return 0
    }
}
