import Engine
import TestSupport
import XCTest

/// Every op's oneDNN path against its plain-Swift twin over a sweep of shapes: the op's output,
/// every parameter gradient and the gradient reaching the op's input, to float32 rounding.
/// Each graph ends in global pooling, a linear layer and cross-entropy so every op gets a
/// non-trivial upstream gradient.
final class OpTwinTests: XCTestCase {
    struct Case: CustomStringConvertible {
        var batch: Int, channels: Int, size: Int
        var description: String { "N\(batch) C\(channels) S\(size)" }
    }

    /// Elementwise closeness to float32 rounding with the absolute part taken relative to the
    /// tensor's scale: |a - b| <= 1e-5 * max(1, rms(b)) + 1e-4 |b|. For the O(1) tensors of the op
    /// sweep this is the plain 1e-5 + 1e-4 |b|; deep in a whole model (resnet20 in eval mode with
    /// these random running statistics) activations reach rms 6 and max 40, where an element
    /// near zero carries the rounding of its large neighbours. On CPUs without AVX-512 oneDNN
    /// runs its AVX2 kernels, which sum in another order: resnet20's eval tensor 48 then differs
    /// by 1.9e-5 at an element of 0.03 (relative L2 error of the tensor 5.9e-7).
    func assertScaledClose(_ a: [Float], _ b: [Float], _ what: String, file: StaticString, line: UInt) {
        let rms = b.isEmpty ? 0 : Float((b.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(b.count)).squareRoot())
        assertClose(a, b, atol: 1e-5 * max(1, rms), rtol: 1e-4, what, file: file, line: line)
    }

    /// Per tensor of `model`, how far two float32 executions that sum in different orders (oneDNN's
    /// AVX-512 or AVX2 kernels, the plain-Swift twin) may drift apart, as a relative L2 error of the
    /// whole tensor: u C sum_ops sqrt(K) over the ops on the deepest path from the input, K an op's
    /// reduction length (Cin k^2 for a convolution, the features of a linear layer, H W for global
    /// pooling, 1 for an elementwise op). Why: K float32 products summed in another order differ by
    /// a random walk of roundings, about u sqrt(K) relative (u = 2^-24); a tensor carries its
    /// inputs' drift on (convolutions and eval-mode BN are linear, ReLU and adds do not grow it in
    /// L2), and C = 64 covers cancellation (an eval-mode BN subtracting a mean close to the values)
    /// and the distribution's tail. A real bug is far above it: the bound after a 3x3 stem is
    /// 64 u sqrt(27) = 2e-5 and grows by 64 u sqrt(K) per convolution on the path, while one wrong
    /// channel of a 512-channel tensor is a relative error near 1/sqrt(512) = 4%, and a skipped BN
    /// epsilon where the variance is 1e-4 one near 4% (testPlantedErrorsAreCaught).
    static func roundingBounds(_ model: Model) -> [Double] {
        let u = 1.0 / 16_777_216, safety = 64.0  // u = 2^-24
        var path = [Double](repeating: 0, count: model.tensors.count)
        for node in model.nodes {
            let input = model.tensors[node.inputs[0]]
            let k: Int
            switch node.op {
            case let .conv(_, kernel, _, _): k = input.channels * kernel * kernel
            case .linear: k = input.perImage
            case .globalAvgPool: k = input.height * input.width
            default: k = 1
            }
            path[node.output] = node.inputs.map { path[$0] }.max()! + Double(k).squareRoot()
        }
        return path.map { u * safety * $0 }
    }

    /// Running means in [-0.5, 0.5] and variances in [0.5, 1.5], so that mix-ups show.
    static func randomRunningStatistics(_ s: ModelState, _ rng: inout Xoshiro256) {
        for i in s.model.batchNorms.indices {
            let m = s.runningMean(i), v = s.runningVar(i)
            for j in 0..<m.count { m[j] = Float(rng.nextUniform() - 0.5); v[j] = Float(0.5 + rng.nextUniform()) }
        }
    }

    /// Relative L2 error of `a` against `b`.
    static func relativeL2(_ a: [Float], _ b: [Float]) -> Double {
        var d = 0.0, n = 0.0
        for i in b.indices { d += Double(a[i] - b[i]) * Double(a[i] - b[i]); n += Double(b[i]) * Double(b[i]) }
        return d.squareRoot() / max(n.squareRoot(), 1e-30)
    }

    /// Runs both executors on `model` from the same state and compares everything observable.
    func compare(_ model: Model, batch: Int, inputGradient: Bool = true, seed: UInt64 = 7, dropoutSeed: UInt64 = 3,
                 deep: (values: Double, gradients: Double?)? = nil, frozenBatchNorm: Bool = false,
                 plant: ((ModelState) -> Void)? = nil,
                 _ what: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let s1 = ModelState(model: model, seed: seed)
        // Non-trivial BN affine parameters and running statistics, so mix-ups show.
        var rng = Xoshiro256(seed: seed ^ 99)
        for p in model.params where p.role == .bnWeight || p.role == .bnBias {
            let v = s1.view(p)
            for i in 0..<p.count { v[i] = Float(p.role == .bnWeight ? 0.5 + rng.nextUniform() : rng.nextUniform() - 0.5) }
        }
        Self.randomRunningStatistics(s1, &rng)
        let s2 = ModelState(model: model, seed: seed)
        s2.copy(from: s1)
        plant?(s2)
        let fast = try DNNLExecutor(state: s1, batchSize: batch, inputGradient: inputGradient, frozenBatchNorm: frozenBatchNorm, keepGradients: true)
        // The production configuration (gradient buffers shared): the same numbers, bit for bit.
        let s3 = ModelState(model: model, seed: seed)
        s3.copy(from: s1)
        let shared = try DNNLExecutor(state: s3, batchSize: batch, inputGradient: inputGradient, frozenBatchNorm: frozenBatchNorm)
        let ref = ReferenceExecutor(state: s2, batchSize: batch, inputGradient: inputGradient, frozenBatchNorm: frozenBatchNorm)
        let statsBefore = s1.stats.array
        let input = randomArray(batch * model.tensors[0].perImage, seed: seed + 1)
        var labelRNG = Xoshiro256(seed: seed + 2)
        let labels = (0..<batch).map { _ in Int32(labelRNG.nextInt(below: model.numClasses)) }
        let c = model.numClasses

        // Eval mode first (running statistics), then train mode with backward.
        let le = Array(UnsafeBufferPointer(start: fast.forward(input: input, mode: .eval), count: batch * c))
        let re = Array(UnsafeBufferPointer(start: ref.forward(input: input, mode: .eval), count: batch * c))
        // Single ops and shallow models element by element; deep ones tensor by tensor, each within its rounding bound.
        let bounds = Self.roundingBounds(model)
        for t in 1..<model.tensors.count {
            let (fv, rv) = (fast.value(of: t), ref.value(of: t))
            if deep == nil {
                assertScaledClose(fv, rv, "\(what): eval tensor \(t)", file: file, line: line)
            } else if !(Self.relativeL2(fv, rv) <= bounds[t]) {
                XCTFail("\(what): eval tensor \(t): relative L2 error \(Self.relativeL2(fv, rv)) > its rounding bound \(bounds[t])", file: file, line: line)
            }
        }
        if deep == nil { assertClose(le, re, "\(what): eval logits", file: file, line: line) }

        var grads: [[Float]] = []
        for ex in [fast, ref, shared] as [InspectableExecutor] {
            let logits = ex.forward(input: input, mode: .train(bnMomentum: 0.1, dropoutSeed: dropoutSeed))
            var dl = [Float](repeating: 0, count: batch * c)
            _ = CrossEntropy.compute(logits: logits, labels: labels, count: batch, classes: c, grad: &dl)
            ex.backward(logitsGrad: dl)
            grads.append(Array(ex.state.grads.buffer))
        }
        // Deep models in training mode: each tensor as a whole (relative L2), gradients where asked.
        func same(_ a: [Float], _ b: [Float], _ tolerance: Double?, _ label: String, elementwise: () -> Void) {
            if deep == nil { elementwise() } else if let tolerance { assertNormClose(a, b, tolerance, "\(what): \(label)", file: file, line: line) }
        }
        for t in 1..<model.tensors.count {
            let (fv, rv, fg, rg) = (fast.value(of: t), ref.value(of: t), fast.gradient(of: t), ref.gradient(of: t))
            same(fv, rv, deep?.values, "train tensor \(t)") { assertScaledClose(fv, rv, "\(what): train tensor \(t)", file: file, line: line) }
            same(fg, rg, deep?.gradients, "gradient of tensor \(t)") { assertScaledClose(fg, rg, "\(what): gradient of tensor \(t)", file: file, line: line) }
        }
        if inputGradient { assertClose(fast.gradient(of: 0), ref.gradient(of: 0), "\(what): input gradient", file: file, line: line) }
        for p in model.params {
            let a = Array(grads[0][p.offset..<(p.offset + p.count)]), b = Array(grads[1][p.offset..<(p.offset + p.count)])
            same(a, b, deep?.gradients, "gradient \(p.name)") { assertClose(a, b, "\(what): gradient \(p.name)", file: file, line: line) }
        }
        assertClose(Array(s1.stats.buffer), Array(s2.stats.buffer), "\(what): running statistics", file: file, line: line)
        XCTAssertTrue(grads[2] == grads[0] && s3.stats.array == s1.stats.array && shared.gradient(of: 0) == fast.gradient(of: 0),
                      "\(what): sharing gradient buffers changed a gradient or a running statistic", file: file, line: line)
        XCTAssertEqual(s1.batchesTracked, s2.batchesTracked, "\(what): num_batches_tracked", file: file, line: line)
        if frozenBatchNorm {
            XCTAssertEqual(s1.stats.array, statsBefore, "\(what): frozen BN changed the running statistics", file: file, line: line)
            XCTAssertTrue(s1.batchesTracked.allSatisfy { $0 == 0 }, "\(what): frozen BN counted batches", file: file, line: line)
        }
    }

    /// The input is a conv of the image so that the op under test reads the blocked layout.
    func graph(_ c: Case, stemChannels: Int? = nil, _ body: (inout ModelBuilder, Int) -> Int) -> Model {
        var b = ModelBuilder(input: TensorShape(channels: 3, height: c.size, width: c.size))
        let stem = b.conv(0, "stem", out: stemChannels ?? c.channels, kernel: 3, stride: 1)
        let y = body(&b, stem)
        let pooled = b.globalAvgPool(y)
        _ = b.linear(pooled, "fc", out: 5)
        return b.build(name: "test", numClasses: 5)
    }

    let cases = [Case(batch: 1, channels: 3, size: 1), Case(batch: 2, channels: 5, size: 7), Case(batch: 4, channels: 16, size: 8),
                 Case(batch: 3, channels: 24, size: 5), Case(batch: 16, channels: 64, size: 4), Case(batch: 8, channels: 16, size: 32),
                 Case(batch: 2, channels: 32, size: 12)]

    func testConvolution() throws {
        // (batch, in channels, out channels, spatial, kernel, stride)
        let convs = [(1, 3, 16, 32, 3, 1), (2, 3, 8, 9, 3, 2), (4, 16, 16, 8, 3, 1), (3, 16, 32, 16, 3, 2), (2, 32, 64, 8, 1, 2),
                     (16, 64, 64, 4, 3, 1), (5, 7, 5, 6, 3, 2), (2, 24, 40, 1, 3, 1), (1, 64, 10, 2, 1, 1), (8, 16, 16, 32, 3, 1),
                     (3, 5, 64, 11, 3, 2), (2, 48, 24, 7, 1, 1)]
        for (n, cin, cout, s, k, stride) in convs {
            var b = ModelBuilder(input: TensorShape(channels: cin, height: s, width: s))
            var y = b.conv(0, "conv", out: cout, kernel: k, stride: stride)
            y = b.conv(y, "conv2", out: cout, kernel: k, stride: 1)  // a conv reading the blocked layout too
            y = b.globalAvgPool(y)
            _ = b.linear(y, "fc", out: 3)
            try compare(b.build(name: "conv", numClasses: 3), batch: n, "conv N\(n) \(cin)->\(cout) S\(s) k\(k) s\(stride)")
        }
    }

    func testBatchNormAndReLU() throws {
        for c in cases {
            for relu in [false, true] {
                try compare(graph(c) { b, x in b.batchNorm(x, "bn", relu: relu) }, batch: c.batch, "bn relu=\(relu) \(c)")
            }
            try compare(graph(c) { b, x in b.relu(x) }, batch: c.batch, "relu \(c)")
        }
    }

    /// Frozen BN (eval-mode BN inside training): the running statistics normalise, stay as they
    /// are, and are constants for backward.
    func testFrozenBatchNorm() throws {
        for c in cases {
            for relu in [false, true] {
                try compare(graph(c) { b, x in b.batchNorm(x, "bn", relu: relu) }, batch: c.batch, frozenBatchNorm: true, "frozen bn relu=\(relu) \(c)")
            }
        }
        try compare(try Architectures.make("resnet8", inputSize: 8), batch: 4, inputGradient: false, frozenBatchNorm: true, "resnet8 frozen bn")
    }

    func testResidualAdd() throws {
        for c in cases {
            for relu in [false, true] {
                // x is read twice (conv and add): its gradient is accumulated.
                try compare(graph(c) { b, x in
                    let o = b.conv(x, "branch", out: c.channels, kernel: 3, stride: 1)
                    return b.add(o, x, relu: relu)
                }, batch: c.batch, "add relu=\(relu) \(c)")
            }
        }
    }

    func testPoolingAndLinear() throws {
        for c in cases { try compare(graph(c) { _, x in x }, batch: c.batch, "pool+linear \(c)") }
    }

    func testMaxPool() throws {
        // (kernel, stride, padding): the ImageNet stem's 3x3/2/1, a 2x2/2 and an overlapping 3x3/1/1.
        for c in cases where c.size >= 2 {
            for (k, s, p) in [(3, 2, 1), (2, 2, 0), (3, 1, 1)] {
                try compare(graph(c) { b, x in b.maxPool(x, kernel: k, stride: s, padding: p) }, batch: c.batch, "max pool \(k)/\(s)/\(p) \(c)")
            }
        }
    }

    func testDropout() throws {
        for c in cases.prefix(4) {
            try compare(graph(c) { b, x in b.dropout(x, p: 0.3) }, batch: c.batch, "dropout \(c)")
        }
    }

    func testModelsAgree() throws {
        for name in ["tiny", "resnet8", "resnet20"] {
            try compare(try Architectures.make(name, inputSize: 8), batch: 4, inputGradient: false, name)
        }
        try compare(try Architectures.make("wrn10_2", dropout: 0.2, inputSize: 8), batch: 3, inputGradient: false, "wrn10_2 dropout")
        // torchvision ResNets: the ImageNet stem (7x7/2 conv, 3x3/2 max-pool) at 64x64, Bottlenecks with the
        // CIFAR stem at 16x16. Eval mode element by element as above. In training mode the last stage's BN
        // normalises 4 x 2 x 2 values per channel, where float32 rounding of the batch statistics is
        // amplified: tensors are compared as wholes (tv_resnet18: relative L2 <= 5.2e-6 measured, values
        // and gradients). In the 50-layer net the forward drift reaches relative L2 4.7e-5 at the logits
        // and the parameter gradients differ by up to 3% relative L2 (an amplification not traced further:
        // a ReLU mask flipped by rounding near zero would do it), so only its training-mode values are
        // compared here; every op's gradient is compared element by element in the sweeps above.
        try compare(try Architectures.make("tv_resnet18", inputSize: 64), batch: 4, inputGradient: false, deep: (1e-4, 1e-4), "tv_resnet18")
        try compare(try Architectures.make("tv_resnet50_cifar", inputSize: 16), batch: 4, inputGradient: false, deep: (2e-4, nil), "tv_resnet50_cifar")
    }

    /// The first eval-mode tensor of tv_resnet50_cifar whose fast and twin values differ by more than
    /// its rounding bound, with the twin's state changed by `plant` (nil: none may).
    func firstBeyondBound(_ plant: (ModelState) -> Void) throws -> Int? {
        let model = try Architectures.make("tv_resnet50_cifar", inputSize: 16)
        let s1 = ModelState(model: model, seed: 7)
        var rng = Xoshiro256(seed: 99)
        Self.randomRunningStatistics(s1, &rng)
        // One BN deep in the net with variances of 1e-4, where BN's epsilon (1e-5) is 10% of them.
        let deepBN = model.batchNorms.count - 4
        let v = s1.runningVar(deepBN)
        for j in 0..<v.count { v[j] = 1e-4 }
        let s2 = ModelState(model: model, seed: 7)
        s2.copy(from: s1)
        plant(s2)
        let fast = try DNNLExecutor(state: s1, batchSize: 4, keepGradients: true)
        let ref = ReferenceExecutor(state: s2, batchSize: 4)
        let input = randomArray(4 * model.tensors[0].perImage, seed: 8)
        _ = fast.forward(input: input, mode: .eval)
        _ = ref.forward(input: input, mode: .eval)
        let bounds = Self.roundingBounds(model)
        return (1..<model.tensors.count).first { Self.relativeL2(fast.value(of: $0), ref.value(of: $0)) > bounds[$0] }
    }

    /// The rounding bounds of the whole-model comparison still catch errors of a real bug's size,
    /// at the first tensor they touch: one channel with a wrong BN weight, and a BN whose epsilon
    /// is skipped (planted as the twin's variance raised by epsilon, which is the same arithmetic).
    func testPlantedErrorsAreCaught() throws {
        let model = try Architectures.make("tv_resnet50_cifar", inputSize: 16)
        XCTAssertNil(try firstBeyondBound { _ in }, "nothing planted: every tensor within its bound")
        // The output tensor of a BN node.
        func output(of bn: Int) -> Int {
            model.nodes.first { if case let .batchNorm(b, _, _, _) = $0.op { return b == bn } else { return false } }!.output
        }
        let late = model.batchNorms.count - 4
        XCTAssertEqual(try firstBeyondBound { s in
            let p = model.params.first { $0.name == model.batchNorms[late].prefix + ".weight" }!
            s.view(p)[5] *= 3
        }, output(of: late), "one wrong channel")
        XCTAssertEqual(try firstBeyondBound { s in
            let v = s.runningVar(late)
            for j in 0..<v.count { v[j] += 1e-5 }
        }, output(of: late), "a skipped BN epsilon")
        // Early in the net, a wrong bias (a weight's error can vanish there: a channel whose values the ReLU after it zeroes).
        let early = 1
        XCTAssertEqual(try firstBeyondBound { s in
            let p = model.params.first { $0.name == model.batchNorms[early].prefix + ".bias" }!
            s.view(p)[0] += 1
        }, output(of: early), "one channel's wrong bias early in the net")
    }
}
