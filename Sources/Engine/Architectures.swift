import Foundation

/// The model zoo: CIFAR ResNet-(6n+2), Wide-ResNet-d-k, and a small fast net for smoke runs.
public enum Architectures {
    public static let names = "resnet8|resnet20|resnet32|resnet44|resnet56|resnet110 (any 6n+2), " +
        "wrn16_4, wrn28_10 (any wrnD_K with (D-4)%6 == 0), tv_resnet18|tv_resnet34|tv_resnet50 " +
        "(torchvision's; add _cifar for the 3x3/1 stem without max-pool), tiny"

    /// The largest models a name may ask for, checked before anything is built (a name such as
    /// wrn9999994_1000 would otherwise build a graph of gigabytes while a suite is checked):
    /// He et al.'s deepest CIFAR ResNet, and Wide-ResNets to depth 100 and width factor 16
    /// (wrn28_10, the largest in Zagoruyko and Komodakis, has 36.5 M parameters; 28-16, 94 M).
    public static let maxResNetDepth = 1202
    public static let maxWideResNetDepth = 100
    public static let maxWideResNetWidth = 16

    /// Builds a model by name. `dropout` applies to Wide-ResNets only (between the two convs of a block).
    public static func make(_ name: String, numClasses: Int = 10, dropout: Float = 0,
                            inputSize: Int = 32) throws -> Model {
        guard numClasses >= 2 else { throw EngineError("model \(name): numClasses must be >= 2, got \(numClasses)") }
        guard (0..<1).contains(dropout) else { throw EngineError("model \(name): dropout must be in [0, 1), got \(dropout)") }
        if name.hasPrefix("resnet"), let depth = Int(name.dropFirst(6)) {
            guard depth >= 8, (depth - 2) % 6 == 0 else {
                throw EngineError("model \(name): CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 20, 32, 44, 56, 110)")
            }
            guard depth <= maxResNetDepth else { throw EngineError("model \(name): CIFAR ResNet depth is at most \(maxResNetDepth)") }
            guard dropout == 0 else { throw EngineError("model \(name): dropout is only offered for Wide-ResNets") }
            return cifarResNet(depth: depth, numClasses: numClasses, inputSize: inputSize)
        }
        if name.hasPrefix("wrn") {
            let parts = name.dropFirst(3).split(separator: "_")
            if parts.count == 2, let d = Int(parts[0]), let k = Int(parts[1]), d >= 10, (d - 4) % 6 == 0, k >= 1 {
                guard d <= maxWideResNetDepth, k <= maxWideResNetWidth else {
                    throw EngineError("model \(name): Wide-ResNets go to depth \(maxWideResNetDepth) and width factor \(maxWideResNetWidth)")
                }
                return wideResNet(depth: d, widen: k, numClasses: numClasses, dropout: dropout, inputSize: inputSize)
            }
            throw EngineError("model \(name): Wide-ResNet names are wrnD_K with (D-4) divisible by 6, e.g. wrn16_4, wrn28_10")
        }
        if name.hasPrefix("tv_resnet") {
            let cifarStem = name.hasSuffix("_cifar")
            let depth = name.dropFirst("tv_resnet".count).dropLast(cifarStem ? "_cifar".count : 0)
            guard let blocks = torchvisionBlocks[String(depth)] else {
                throw EngineError("model \(name): torchvision ResNets are tv_resnet18, tv_resnet34 and tv_resnet50 (suffix _cifar for the CIFAR stem)")
            }
            guard dropout == 0 else { throw EngineError("model \(name): dropout is only offered for Wide-ResNets") }
            let minimum = cifarStem ? 8 : 32
            guard inputSize >= minimum else {
                throw EngineError("model \(name): input size \(inputSize) is below \(minimum), where the last stage would have no pixels left")
            }
            return torchvisionResNet(name: name, blocks: blocks.counts, bottleneck: blocks.bottleneck, cifarStem: cifarStem,
                                     numClasses: numClasses, inputSize: inputSize)
        }
        if name == "tiny" {
            guard dropout == 0 else { throw EngineError("model tiny: dropout is only offered for Wide-ResNets") }
            return tiny(numClasses: numClasses, inputSize: inputSize)
        }
        throw EngineError("unknown model '\(name)'; known: \(names)")
    }

    /// He et al. 2016 CIFAR ResNet: post-activation basic blocks, 16/32/64 channels, option-B
    /// (1x1 conv + BN) projection shortcut where the shape changes.
    static func cifarResNet(depth: Int, numClasses: Int, inputSize: Int) -> Model {
        let n = (depth - 2) / 6
        var b = ModelBuilder(input: TensorShape(channels: 3, height: inputSize, width: inputSize))
        var x = b.conv(0, "conv1", out: 16, kernel: 3, stride: 1)
        x = b.batchNorm(x, "bn1", relu: true)
        var cin = 16
        for (stage, width) in [16, 32, 64].enumerated() {
            for j in 0..<n {
                let stride = (stage > 0 && j == 0) ? 2 : 1
                let p = "layer\(stage + 1).\(j)"
                var o = b.conv(x, p + ".conv1", out: width, kernel: 3, stride: stride)
                o = b.batchNorm(o, p + ".bn1", relu: true)
                o = b.conv(o, p + ".conv2", out: width, kernel: 3, stride: 1)
                o = b.batchNorm(o, p + ".bn2", relu: false)
                var sc = x
                if stride != 1 || cin != width {
                    sc = b.conv(x, p + ".shortcut.0", out: width, kernel: 1, stride: stride)
                    sc = b.batchNorm(sc, p + ".shortcut.1", relu: false)
                }
                x = b.add(o, sc, relu: true)
                cin = width
            }
        }
        x = b.globalAvgPool(x)
        _ = b.linear(x, "fc", out: numClasses)
        return b.build(name: "resnet\(depth)", numClasses: numClasses)
    }

    /// Zagoruyko & Komodakis 2016 Wide-ResNet: pre-activation blocks, (D-4)/6 per group,
    /// widths 16 -> 16k/32k/64k, 1x1 conv shortcut where channels or stride change, final BN-ReLU.
    static func wideResNet(depth: Int, widen k: Int, numClasses: Int, dropout: Float, inputSize: Int) -> Model {
        let n = (depth - 4) / 6
        var b = ModelBuilder(input: TensorShape(channels: 3, height: inputSize, width: inputSize))
        var x = b.conv(0, "conv1", out: 16, kernel: 3, stride: 1)
        var cin = 16
        for (g, width) in [16 * k, 32 * k, 64 * k].enumerated() {
            for j in 0..<n {
                let stride = (g > 0 && j == 0) ? 2 : 1
                let p = "block\(g + 1).\(j)"
                let o1 = b.batchNorm(x, p + ".bn1", relu: true)
                var o = b.conv(o1, p + ".conv1", out: width, kernel: 3, stride: stride)
                o = b.batchNorm(o, p + ".bn2", relu: true)
                if dropout > 0 { o = b.dropout(o, p: dropout) }
                o = b.conv(o, p + ".conv2", out: width, kernel: 3, stride: 1)
                let sc = (stride != 1 || cin != width) ? b.conv(o1, p + ".shortcut", out: width, kernel: 1, stride: stride) : x
                x = b.add(o, sc, relu: false)
                cin = width
            }
        }
        x = b.batchNorm(x, "bn", relu: true)
        x = b.globalAvgPool(x)
        _ = b.linear(x, "fc", out: numClasses)
        return b.build(name: "wrn\(depth)_\(k)", numClasses: numClasses)
    }

    static let torchvisionBlocks: [String: (counts: [Int], bottleneck: Bool)] = [
        "18": ([2, 2, 2, 2], false), "34": ([3, 4, 6, 3], false), "50": ([3, 4, 6, 3], true),
    ]

    /// torchvision.models.resnet (v1.5: the stride of a Bottleneck on its 3x3 conv) with its
    /// module names, so that its state_dict loads strictly: `conv1`, `bn1`, `layerS.B.conv1`,
    /// `layerS.B.downsample.0/1`, `fc`. The ImageNet stem is a 7x7/2 conv and a 3x3/2 max-pool;
    /// the CIFAR stem (`_cifar`, the usual way to train these at 32x32) is a 3x3/1 conv without
    /// max-pool, as `model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False); model.maxpool = nn.Identity()`.
    static func torchvisionResNet(name: String, blocks: [Int], bottleneck: Bool, cifarStem: Bool,
                                  numClasses: Int, inputSize: Int) -> Model {
        var b = ModelBuilder(input: TensorShape(channels: 3, height: inputSize, width: inputSize))
        var x = b.conv(0, "conv1", out: 64, kernel: cifarStem ? 3 : 7, stride: cifarStem ? 1 : 2)
        x = b.batchNorm(x, "bn1", relu: true)
        if !cifarStem { x = b.maxPool(x, kernel: 3, stride: 2, padding: 1) }
        let expansion = bottleneck ? 4 : 1
        var cin = 64
        for (stage, planes) in [64, 128, 256, 512].enumerated() {
            for j in 0..<blocks[stage] {
                let stride = (stage > 0 && j == 0) ? 2 : 1
                let p = "layer\(stage + 1).\(j)"
                var o: Int
                if bottleneck {
                    o = b.conv(x, p + ".conv1", out: planes, kernel: 1, stride: 1)
                    o = b.batchNorm(o, p + ".bn1", relu: true)
                    o = b.conv(o, p + ".conv2", out: planes, kernel: 3, stride: stride)
                    o = b.batchNorm(o, p + ".bn2", relu: true)
                    o = b.conv(o, p + ".conv3", out: planes * expansion, kernel: 1, stride: 1)
                    o = b.batchNorm(o, p + ".bn3", relu: false)
                } else {
                    o = b.conv(x, p + ".conv1", out: planes, kernel: 3, stride: stride)
                    o = b.batchNorm(o, p + ".bn1", relu: true)
                    o = b.conv(o, p + ".conv2", out: planes, kernel: 3, stride: 1)
                    o = b.batchNorm(o, p + ".bn2", relu: false)
                }
                var sc = x
                if stride != 1 || cin != planes * expansion {
                    sc = b.conv(x, p + ".downsample.0", out: planes * expansion, kernel: 1, stride: stride)
                    sc = b.batchNorm(sc, p + ".downsample.1", relu: false)
                }
                x = b.add(o, sc, relu: true)
                cin = planes * expansion
            }
        }
        x = b.globalAvgPool(x)
        _ = b.linear(x, "fc", out: numClasses)
        return b.build(name: name, numClasses: numClasses)
    }

    /// A small plain CNN for smoke runs: three conv-BN-ReLU stages (16, 32 s2, 64 s2), pool, fc.
    static func tiny(numClasses: Int, inputSize: Int) -> Model {
        var b = ModelBuilder(input: TensorShape(channels: 3, height: inputSize, width: inputSize))
        var x = b.conv(0, "conv1", out: 16, kernel: 3, stride: 1)
        x = b.batchNorm(x, "bn1", relu: true)
        x = b.conv(x, "conv2", out: 32, kernel: 3, stride: 2)
        x = b.batchNorm(x, "bn2", relu: true)
        x = b.conv(x, "conv3", out: 64, kernel: 3, stride: 2)
        x = b.batchNorm(x, "bn3", relu: true)
        x = b.globalAvgPool(x)
        _ = b.linear(x, "fc", out: numClasses)
        return b.build(name: "tiny", numClasses: numClasses)
    }
}

/// The values of a model: parameters and their gradients as two flat vectors of one layout,
/// BN running statistics (buffers, not parameters) and num_batches_tracked.
public final class ModelState: @unchecked Sendable {
    public let model: Model
    public let params: FloatBuffer
    public let grads: FloatBuffer
    public let stats: FloatBuffer
    public var batchesTracked: [Int64]

    /// A state with PyTorch's initialisation: kaiming normal (fan_out, ReLU) for convs,
    /// PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for linear weight and bias,
    /// BN weight 1 and bias 0, running mean 0 and variance 1.
    public init(model: Model, seed: UInt64) {
        self.model = model
        params = FloatBuffer(count: model.parameterCount)
        grads = FloatBuffer(count: model.parameterCount)
        stats = FloatBuffer(count: model.statCount)
        batchesTracked = Array(repeating: 0, count: model.batchNorms.count)
        var rng = Xoshiro256(seed: seed)
        for p in model.params {
            let v = params.pointer + p.offset
            switch p.role {
            case .convWeight:
                let fanOut = Double(p.shape[0] * p.shape[2] * p.shape[3])
                let std = (2.0 / fanOut).squareRoot()
                for i in 0..<p.count { v[i] = Float(rng.nextNormal() * std) }
            case .linearWeight, .linearBias:
                // The bias's fan-in is its layer's weight's: "fc.bias" -> "fc.weight".
                let weightName = p.role == .linearWeight ? p.name : String(p.name.dropLast(4)) + "weight"
                let fanIn = Double(model.param(named: weightName)!.shape[1])
                let bound = 1.0 / fanIn.squareRoot()
                for i in 0..<p.count { v[i] = Float((rng.nextUniform() * 2 - 1) * bound) }
            case .bnWeight:
                v.update(repeating: 1, count: p.count)
            case .bnBias:
                v.update(repeating: 0, count: p.count)
            }
        }
        resetRunningStats()
    }

    /// Running mean 0, running variance 1, num_batches_tracked 0 (PyTorch's reset_running_stats).
    public func resetRunningStats() {
        for bn in model.batchNorms {
            (stats.pointer + bn.statOffset).update(repeating: 0, count: bn.channels)
            (stats.pointer + bn.statOffset + bn.channels).update(repeating: 1, count: bn.channels)
        }
        for i in batchesTracked.indices { batchesTracked[i] = 0 }
    }

    public func copy(from other: ModelState) {
        precondition(other.model === model || other.model.parameterCount == model.parameterCount)
        params.copy(from: other.params)
        grads.copy(from: other.grads)
        stats.copy(from: other.stats)
        batchesTracked = other.batchesTracked
    }

    public func view(_ p: ParamEntry) -> UnsafeMutableBufferPointer<Float> { .init(start: params.pointer + p.offset, count: p.count) }
    public func gradView(_ p: ParamEntry) -> UnsafeMutableBufferPointer<Float> { .init(start: grads.pointer + p.offset, count: p.count) }
    /// The first parameter or BN statistic holding a NaN or an infinity, by name (nil when all
    /// are finite): a model in that state evaluates to chance, whatever its loss said.
    public func firstNonFinite() -> String? {
        if let p = model.params.first(where: { view($0).contains { !$0.isFinite } }) { return p.name }
        for (i, bn) in model.batchNorms.enumerated() {
            if runningMean(i).contains(where: { !$0.isFinite }) { return bn.prefix + ".running_mean" }
            if runningVar(i).contains(where: { !$0.isFinite }) { return bn.prefix + ".running_var" }
        }
        return nil
    }

    public func runningMean(_ i: Int) -> UnsafeMutableBufferPointer<Float> {
        let bn = model.batchNorms[i]
        return .init(start: stats.pointer + bn.statOffset, count: bn.channels)
    }
    public func runningVar(_ i: Int) -> UnsafeMutableBufferPointer<Float> {
        let bn = model.batchNorms[i]
        return .init(start: stats.pointer + bn.statOffset + bn.channels, count: bn.channels)
    }
}
