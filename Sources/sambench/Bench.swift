import ArgumentParser
import Engine
import Foundation
import Training

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure training and inference speed (images/s) on random data.",
        discussion: """
        Times an eval forward, an SGD step (lr 0.1, momentum 0.9, nesterov, weight decay \
        5e-4) and the SAM-family steps over that SGD (sam: rho 0.05; asam: rho 0.5, eta 0.01; \
        msam: SAM with m = 32; looksam: k = 5, alpha 0.7, timed per cycle of 5 steps) at the given batch size: the median of --steps timed steps after --warmup \
        untimed ones, with min and max. Reports FLOPs per image (2 x conv+linear MACs, the \
        count ../shared/anchors/torch_bench.py uses), achieved GFLOP/s and peak memory. The \
        json output mirrors torch_bench.py's (results[] with model, mode, batch, \
        images_per_s {min, median, max}) so the two compare directly.
        """
    )

    @Option(help: "Model: \(Architectures.names).") var model: String = "resnet20"
    @Option(name: [.customLong("batch-size"), .customLong("batch")], parsing: .unconditional, help: "Batch size (suites: batch_size).") var batch: Int = 128
    @OptionGroup var threadsOption: ThreadsOption
    var threads: Int { threadsOption.resolved() }
    @Option(parsing: .unconditional, help: "Timed steps per mode (the median is reported).") var steps: Int = 20
    @Option(parsing: .unconditional, help: "Untimed warm-up steps per mode.") var warmup: Int = 5
    @Option(help: "Modes to run, comma-separated: \(Benchmark.Mode.allCases.map(\.rawValue).joined(separator: ", ")).") var modes: String = "eval,sgd,sam"
    @Option(help: """
        The training method of the timed steps, with its default parameters (\(Methods.all.map(\.name).joined(separator: ", "))); \
        a method with more passes per step is counted with as many more FLOPs.
        """) var method: String = "ce"
    @Option(help: "Output format.") var format: TextOrJSON = .text
    @Flag(help: """
        After the timed steps, run as many again with every oneDNN primitive and step phase timed: \
        time per op kind and pass, per convolution layer with its implementation, the optimizer \
        and SAM phases, and the machine's ceiling (a 2048^3 SGEMM) measured in the same run.
        """) var profile = false

    func validate() throws {
        guard batch >= 1 else { throw ValidationError("--batch must be >= 1") }
        guard batch <= TrainConfig.bounds.batchSize else { throw ValidationError("--batch must be <= \(TrainConfig.bounds.batchSize)") }
        guard steps >= 1 else { throw ValidationError("--steps must be >= 1") }
        guard warmup >= 0 else { throw ValidationError("--warmup must be >= 0") }
        _ = try modeList()
        _ = try Architectures.make(model)
        do { _ = try Methods.resolve(method) } catch { throw ValidationError("\(error)") }
    }

    func modeList() throws -> [Benchmark.Mode] {
        try modes.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.map { m in
            guard let mode = Benchmark.Mode(rawValue: m) else {
                throw ValidationError("unknown mode '\(m)'; modes: \(Benchmark.Mode.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return mode
        }
    }

    func run() throws {
        enableConvolutionTuning()
        var results: [Benchmark.Result] = []
        for mode in try modeList() {
            let r = try Benchmark.run(model: model, mode: mode, batch: batch, threads: threads, warmup: warmup, steps: steps,
                                      method: try Methods.resolve(method), profile: profile) { line in
                if format == .text { FileHandle.standardError.write(Data("  \(line)\n".utf8)) }
            }
            results.append(r)
        }
        switch format {
        case .json:
            struct Output: Encodable {
                let tool: String, version: String, method: [String: String], results: [Benchmark.Result]
            }
            let out = Output(tool: "sambench", version: SambenchVersion.string, method: [
                "timing": "monotonic clock around each full step; median of timed steps after warm-up",
                "sgd": "lr 0.1, momentum 0.9, nesterov, weight_decay 5e-4",
                "flops": "fwd FLOPs = 2 * conv+linear MACs per image; sgd counted as 3x fwd, sam/asam/msam 6x, looksam (k=5) 3.6x; times the method's passes per step",
                "sam": "rho 0.05, raw loss gradient, BN statistics in the first pass only (davda54/sam)",
                "data": "random N(0,1) input, random labels",
            ], results: results)
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try enc.encode(out), as: UTF8.self))
        case .text:
            if let m = results.lazy.compactMap(\.method).first { print("method: \(m) (eval: the forward alone)") }
            print("model      mode  batch thr  img/s min   median      max  ms/step  GFLOP/s  MFLOP/img  peak MiB")
            for r in results {
                print(String(format: "%-10@ %-5@ %5d %3d %10.1f %8.1f %8.1f %8.1f %8.1f %10.1f %9.0f",
                             r.model, r.mode.rawValue, r.batch, r.threads, r.images_per_s.min, r.images_per_s.median, r.images_per_s.max,
                             r.step_time_s.median * 1000, r.achieved_gflops_median, Double(r.fwd_flops_per_image) / 1e6,
                             Double(r.peak_rss_bytes) / 1_048_576))
            }
            for r in results { if let p = r.profile { printProfile(r, p) } }
        }
    }

    func printProfile(_ r: Benchmark.Result, _ p: Benchmark.Profile) {
        let ms = { (s: Double) in String(format: "%8.2f", s * 1000) }
        print("\n\(r.model) \(r.mode): profile of \(p.steps) steps, per step; ceiling (SGEMM 2048^3, \(r.threads) threads) "
              + String(format: "%.0f GFLOP/s; the timed median reached %.0f GFLOP/s = %.0f%%", p.sgemm_gflops, r.achieved_gflops_median,
                       100 * p.share_of_ceiling))
        print("phase                              ms")
        for ph in p.phases { print(ph.phase.padding(toLength: 30, withPad: " ", startingAt: 0) + " " + ms(ph.seconds)) }
        print("kind           pass              ms   share")
        for k in p.kinds {
            print(k.kind.padding(toLength: 14, withPad: " ", startingAt: 0) + " " + k.pass.padding(toLength: 10, withPad: " ", startingAt: 0)
                  + " " + ms(k.seconds) + String(format: " %6.1f%%", 100 * k.share))
        }
        print("convolution layer   pass               implementation             ms  GFLOP/s  of ceiling")
        for o in p.ops where o.gflops != nil {
            print(o.layer.padding(toLength: 19, withPad: " ", startingAt: 0) + " "
                  + o.operation.padding(toLength: 18, withPad: " ", startingAt: 0) + " "
                  + o.implementation.padding(toLength: 22, withPad: " ", startingAt: 0) + " " + ms(o.seconds)
                  + String(format: " %8.1f %10.0f%%", o.gflops!, 100 * o.gflops! / p.sgemm_gflops))
        }
        print("best rate per convolution shape and pass")
        for b in p.best_convolution_rates {
            print(b.shape.padding(toLength: 30, withPad: " ", startingAt: 0) + " " + b.operation.padding(toLength: 18, withPad: " ", startingAt: 0)
                  + String(format: " %8.1f GFLOP/s %5.0f%%", b.gflops, 100 * b.share_of_ceiling))
        }
        if !p.tuned.isEmpty { print("implementations timed when the executor was built (eligible: tolerance used <= 1)") }
        for t in p.tuned {
            let options = t.implementations.indices.map { k in
                "\(t.implementations[k]) " + String(format: "%.2f ms (tolerance used %.2g)", t.seconds[k] * 1000, t.toleranceUsed[k])
            }.joined(separator: ", ")
            print("\(t.layer) \(t.operation): \(options) -> \(t.chosen)")
        }
    }
}
