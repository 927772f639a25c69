// The per-pass choice of a convolution's kernel among oneDNN's and sambench's own, by trial, and the own kernels' scratch.
import CDNNL
import Foundation

extension DNNLExecutor {
    /// A kernel of sambench's own offered to a pass beside oneDNN's (Winograd.swift): its name and
    /// its trial on the inputs oneDNN's candidates get (`DNNLResources.trialInputs`).
    struct OwnKernel {
        let name: String
        let trial: ([[Float]]) -> (seconds: Double, output: [Float])
    }

    /// What runs a pass: one of oneDNN's implementations, or one of the own kernels offered (its index).
    enum PassKernel {
        case dnnl(dnnl_primitive_desc_t)
        case own(Int)
    }

    /// One convolution pass's implementation: oneDNN's first choice, or with `ConvolutionTuning`
    /// on, the recorded choice or else the fastest of those (oneDNN's and `own`'s) whose result on a
    /// seeded trial input is within the op-twin tolerance of the first choice's (a Winograd kernel
    /// rounds otherwise than a direct one). `arguments`: the pass's memories, its output last.
    func chooseImplementation(_ candidates: [dnnl_primitive_desc_t], _ what: String,
                              arguments: [(Int32, dnnl_query_t)], own: [OwnKernel] = []) throws -> PassKernel {
        let tuning = ConvolutionTuning.shared
        guard candidates.count + own.count > 1, tuning.enabled else { return .dnnl(candidates[0]) }
        let names = candidates.map { r.implementation($0) } + own.map(\.name)
        func kernel(_ k: Int) -> PassKernel { k < candidates.count ? .dnnl(candidates[k]) : .own(k - candidates.count) }
        let key = "\(what) | \(currentShape) | \(EngineThreads.current) threads | \(names.joined(separator: ", "))"
        if let chosen = tuning.choice(for: key), let k = names.firstIndex(of: chosen) { return kernel(k) }
        let (seconds, errors) = try trials(candidates, own: own, arguments: arguments)
        // The trials' buffers are freed, but glibc keeps freed blocks under its self-raising mmap
        // threshold resident in the heap, between the model's own allocations: hand them back, or
        // the first process on a machine (the one that runs the trials) keeps them all its life
        // (wrn16_4 SGD peaked at 1248-1381 MiB that way, 974 once its choices were cached).
        _ = sambench_release_free_memory()
        var eligible = names.indices.filter { errors[$0] <= 1 }
        if let preferred = tuning.preferred, eligible.contains(where: { preferred(names[$0]) }) { eligible = eligible.filter { preferred(names[$0]) } }
        let fastest = eligible.min { seconds[$0] < seconds[$1] } ?? 0
        let recorded = names.firstIndex(of: tuning.record(names[fastest], for: key)) ?? fastest
        tuned.append(TunedPass(layer: currentLayer, operation: what, shape: currentShape, macs: currentMACs,
                               implementations: names, seconds: seconds, toleranceUsed: errors, chosen: names[recorded]))
        return kernel(recorded)
    }

    /// Each candidate's time on the pass's trial input (oneDNN's first, then the own kernels) and
    /// its worst error against the first candidate's output, in units of the op-twin tolerance.
    private func trials(_ candidates: [dnnl_primitive_desc_t], own: [OwnKernel],
                        arguments: [(Int32, dnnl_query_t)]) throws -> (seconds: [Double], errors: [Double]) {
        var seconds: [Double] = [], errors: [Double] = [], reference: [Float] = []
        // The own kernels' inputs, drawn once for all of them after oneDNN's trials (one pass's
        // trial buffers at a time: the first process on a machine builds with them beside its model).
        var ownInputs: [[Float]]?
        for k in 0..<(candidates.count + own.count) {
            if k == candidates.count { ownInputs = try r.trialInputs(candidates[0], arguments: arguments) }
            let (time, output) = k < candidates.count
                ? try r.trial(candidates[k], arguments: arguments)
                : own[k - candidates.count].trial(ownInputs!)
            if k == 0 { reference = output }
            seconds.append(time)
            errors.append(TwinTolerance.worstRatio(output, reference))
        }
        return (seconds, errors)
    }
}

/// Scratch for the passes that run sambench's own kernels: each asks for what it needs while the
/// executor is built (`need`), one buffer of the largest is made once the graph is built, and the
/// passes' host steps read `pointer` when they run (they run one at a time).
final class OwnScratch: @unchecked Sendable {
    private(set) var floats = 0
    private var buffer: FloatBuffer?
    func need(_ count: Int) { floats = max(floats, count) }
    func make() { if floats > 0 { buffer = FloatBuffer(count: floats) } }
    var pointer: UnsafeMutablePointer<Float> { buffer!.pointer }
}
