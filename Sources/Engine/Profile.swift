/// What one step of an executor's plan is: the layer, the operation and the implementation that
/// runs it ("jit:avx512_core", "brg:avx512_core", "host" for Swift code between primitives).
public struct StepLabel: Sendable, Codable, Equatable {
    /// "layer1.0.conv1", "layer1.0.add", "fc"...
    public var layer: String
    /// "conv fwd", "conv bwd data", "conv bwd weights", "weights reorder", "bn fwd", "add"...
    public var operation: String
    public var implementation: String
    /// Multiply-accumulates of one execution when the step is a convolution pass (0 otherwise);
    /// the forward and both backward passes of a convolution cost the same.
    public var macs: Int
    /// A convolution's shape, "N x C x H x W -> O, k K, s S" (empty for other steps).
    public var shape: String

    /// The op family a step belongs to, for the per-kind totals of a profile.
    public var kind: String {
        if operation.contains("reorder") { return "reorder" }
        if operation == "accumulate" || operation.hasPrefix("add") { return "add" }
        for (prefix, kind) in [("conv", "convolution"), ("bn", "batch norm"), ("relu", "eltwise"), ("pool", "pooling"),
                               ("max pool", "pooling"), ("dropout", "dropout"), ("linear", "linear")]
        where operation.hasPrefix(prefix) { return kind }
        return operation
    }
}

/// The time profiling measured for one step of one plan.
public struct StepProfile: Sendable, Codable, Equatable {
    public var label: StepLabel
    /// "forward" (training), "eval" or "backward".
    public var pass: String
    public var calls: Int
    public var seconds: Double

    /// GFLOP/s of a convolution pass (2 FLOPs per multiply-accumulate); nil for other steps.
    public var gflops: Double? {
        label.macs > 0 && seconds > 0 ? 2 * Double(label.macs) * Double(calls) / seconds / 1e9 : nil
    }
}

/// The implementations a convolution pass was timed with when its executor was built.
public struct TunedPass: Sendable, Codable, Equatable {
    public var layer: String, operation: String, shape: String
    public var macs: Int
    /// oneDNN's candidates in its order of preference ("jit:avx512_core", "jit_wino_4x3:avx512_core").
    public var implementations: [String]
    /// Seconds of one execution of each implementation (best of three).
    public var seconds: [Double]
    /// How much of the op-twin tolerance each implementation's result used against the first
    /// one's on the trial input (`TwinTolerance.worstRatio`); above 1 it is not eligible.
    public var toleranceUsed: [Double]
    /// The implementation the pass runs (the fastest, unless another process recorded a choice first).
    public var chosen: String
}

/// The tolerance the fast ops are held to against their plain-Swift twins (OpTwinTests): element
/// by element |a - b| <= 1e-5 max(1, rms(b)) + 1e-4 |b|, float32 rounding with the absolute part
/// taken relative to the tensor's scale.
public enum TwinTolerance {
    /// The largest |a - b| / (1e-5 max(1, rms(b)) + 1e-4 |b|) over the elements: at most 1 passes.
    public static func worstRatio(_ a: [Float], _ b: [Float]) -> Double {
        guard a.count == b.count else { return .infinity }
        guard !b.isEmpty else { return 0 }
        let rms = (b.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(b.count)).squareRoot()
        let atol = 1e-5 * max(1, rms)
        var worst = 0.0
        for i in a.indices {
            let d = abs(Double(a[i]) - Double(b[i]))
            guard d.isFinite else { return .infinity }
            worst = max(worst, d / (atol + 1e-4 * abs(Double(b[i]))))
        }
        return worst
    }
}
