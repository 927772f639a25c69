import Engine
import TestSupport
import XCTest

/// The plain-Swift twins against central finite differences of the mean cross-entropy.
/// Float32 storage limits the accuracy of a difference quotient to about 1e-3 relative, so
/// the check compares the sampled gradient vector as a whole: ||fd - g|| / ||g|| < 2e-2.
final class GradientCheckTests: XCTestCase {
    func check(_ model: Model, batch: Int, samples: Int = 40, eps: Float = 4e-3, frozenBatchNorm: Bool = false, _ what: String) {
        let state = ModelState(model: model, seed: 11)
        var rng = Xoshiro256(seed: 5)
        for p in model.params where p.role == .bnWeight || p.role == .bnBias {
            let v = state.view(p)
            for i in 0..<p.count { v[i] = Float(p.role == .bnWeight ? 0.5 + rng.nextUniform() : rng.nextUniform() - 0.5) }
        }
        let ex = ReferenceExecutor(state: state, batchSize: batch, inputGradient: true, frozenBatchNorm: frozenBatchNorm)
        for i in model.batchNorms.indices where frozenBatchNorm {
            let m = state.runningMean(i), v = state.runningVar(i)
            for j in 0..<m.count { m[j] = Float(rng.nextUniform() - 0.5); v[j] = Float(0.5 + rng.nextUniform()) }
        }
        var input = randomArray(batch * model.tensors[0].perImage, seed: 21)
        let labels = (0..<batch).map { _ in Int32(rng.nextInt(below: model.numClasses)) }
        let c = model.numClasses
        let mode = ForwardMode.train(bnMomentum: 0, dropoutSeed: 9)
        func loss() -> Double {
            CrossEntropy.compute(logits: ex.forward(input: input, mode: mode), labels: labels, count: batch, classes: c)
        }
        _ = loss()
        var dl = [Float](repeating: 0, count: batch * c)
        _ = CrossEntropy.compute(logits: ex.forward(input: input, mode: mode), labels: labels, count: batch, classes: c, grad: &dl)
        ex.backward(logitsGrad: dl)
        let analytic = Array(state.grads.buffer)
        let inputGrad = ex.gradient(of: 0)

        // Every parameter tensor gets sampled coordinates; the input too.
        var fd: [Double] = [], an: [Double] = []
        for p in model.params {
            for _ in 0..<max(1, samples / model.params.count) {
                let i = p.offset + rng.nextInt(below: p.count)
                let w = state.params.pointer[i]
                state.params.pointer[i] = w + eps; let lp = loss()
                state.params.pointer[i] = w - eps; let lm = loss()
                state.params.pointer[i] = w
                fd.append((lp - lm) / Double(2 * eps)); an.append(Double(analytic[i]))
            }
        }
        for _ in 0..<8 {
            let i = rng.nextInt(below: input.count)
            let v = input[i]
            input[i] = v + eps; let lp = loss()
            input[i] = v - eps; let lm = loss()
            input[i] = v
            fd.append((lp - lm) / Double(2 * eps)); an.append(Double(inputGrad[i]))
        }
        let diff = zip(fd, an).map { ($0 - $1) * ($0 - $1) }.reduce(0, +).squareRoot()
        let norm = an.map { $0 * $0 }.reduce(0, +).squareRoot()
        XCTAssertGreaterThan(norm, 1e-6, "\(what): gradient is zero, the check would be vacuous")
        XCTAssertLessThan(diff / norm, 2e-2, "\(what): finite differences disagree (relative error \(diff / norm))")
    }

    func graph(channels: Int, size: Int, _ body: (inout ModelBuilder, Int) -> Int) -> Model {
        var b = ModelBuilder(input: TensorShape(channels: 3, height: size, width: size))
        let x = b.conv(0, "stem", out: channels, kernel: 3, stride: 1)
        let pooled = b.globalAvgPool(body(&b, x))
        _ = b.linear(pooled, "fc", out: 4)
        return b.build(name: "fd", numClasses: 4)
    }

    func testConvolutionStride2AndOneByOne() {
        check(graph(channels: 6, size: 7) { b, x in b.conv(x, "c", out: 5, kernel: 3, stride: 2) }, batch: 3, "conv 3x3 s2")
        check(graph(channels: 6, size: 6) { b, x in b.conv(x, "c", out: 4, kernel: 1, stride: 2) }, batch: 2, "conv 1x1 s2")
    }

    func testBatchNorm() {
        check(graph(channels: 5, size: 4) { b, x in b.batchNorm(x, "bn", relu: false) }, batch: 4, "bn")
        check(graph(channels: 5, size: 4) { b, x in b.batchNorm(x, "bn", relu: true) }, batch: 4, "bn+relu")
    }

    func testResidualAndDropout() {
        check(graph(channels: 4, size: 5) { b, x in b.add(b.conv(x, "c", out: 4, kernel: 3, stride: 1), x, relu: true) }, batch: 3, "add+relu")
        check(graph(channels: 4, size: 5) { b, x in b.dropout(b.relu(x), p: 0.25) }, batch: 3, "relu+dropout")
    }

    /// Frozen BN: the running statistics are constants, so the difference quotients see y = a x + b.
    func testFrozenBatchNorm() throws {
        check(graph(channels: 5, size: 4) { b, x in b.batchNorm(x, "bn", relu: true) }, batch: 4, frozenBatchNorm: true, "frozen bn+relu")
        check(try Architectures.make("resnet8", inputSize: 8), batch: 4, samples: 60, eps: 1e-3, frozenBatchNorm: true, "resnet8 frozen bn")
    }

    func testMaxPool() {
        check(graph(channels: 4, size: 7) { b, x in b.maxPool(x, kernel: 3, stride: 2, padding: 1) }, batch: 3, "max pool 3/2/1")
        check(graph(channels: 3, size: 6) { b, x in b.maxPool(x, kernel: 2, stride: 2, padding: 0) }, batch: 2, "max pool 2/2/0")
    }

    func testWholeResNet8() throws {
        check(try Architectures.make("resnet8", inputSize: 8), batch: 4, samples: 60, eps: 1e-3, "resnet8")
    }
}

final class CrossEntropyTests: XCTestCase {
    /// Label smoothing eps: loss = (1-eps) * nll + eps * mean_k (lse - z_k), as PyTorch; the
    /// gradient against central differences.
    func testLabelSmoothingValueAndGradient() {
        let n = 3, c = 5
        var logits = randomArray(n * c, seed: 4, scale: 2)
        let labels: [Int32] = [4, 0, 2]
        for eps: Float in [0, 0.1, 0.3] {
            var grad = [Float](repeating: 0, count: n * c)
            let loss = CrossEntropy.compute(logits: logits, labels: labels, count: n, classes: c, smoothing: eps, grad: &grad)
            var expected = 0.0
            for b in 0..<n {
                let z = (0..<c).map { Double(logits[b * c + $0]) }
                let lse = log(z.map { exp($0) }.reduce(0, +))
                let nll = lse - z[Int(labels[b])]
                let smooth = z.map { lse - $0 }.reduce(0, +) / Double(c)
                expected += (1 - Double(eps)) * nll + Double(eps) * smooth
            }
            XCTAssertEqual(loss, expected / Double(n), accuracy: 1e-6, "eps \(eps)")
            for i in 0..<(n * c) {
                let v = logits[i]
                logits[i] = v + 1e-2
                let lp = CrossEntropy.compute(logits: logits, labels: labels, count: n, classes: c, smoothing: eps)
                logits[i] = v - 1e-2
                let lm = CrossEntropy.compute(logits: logits, labels: labels, count: n, classes: c, smoothing: eps)
                logits[i] = v
                XCTAssertEqual(Double(grad[i]), (lp - lm) / 2e-2, accuracy: 1e-4, "eps \(eps) gradient \(i)")
            }
        }
    }
}
