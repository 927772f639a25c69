import Engine
import TestSupport
import XCTest

/// Buffers shared by liveness (gradients in training, activations in an evaluation-only
/// executor) and the residual adds' shared gradient storage change no number: a training step
/// gives bit-identical logits, parameter gradients, running statistics and input gradient to an
/// executor that keeps every buffer apart, and an evaluation-only executor the same logits as a
/// training one, with less memory.
final class BufferSharingTests: XCTestCase {
    func testAssignmentNeverSharesABufferBetweenOverlappingIntervalsAndUsesTheFewestBuffers() {
        var rng = Xoshiro256(seed: 11)
        for trial in 0..<200 {
            let n = 1 + rng.nextInt(below: 40)
            let intervals: [ClosedRange<Int>] = (0..<n).map { _ in
                let lo = rng.nextInt(below: 60) - 1
                return lo...(lo + rng.nextInt(below: 12))
            }
            let bytes = (0..<n).map { _ in 64 * (1 + rng.nextInt(below: 100)) }
            let (buffer, bufferBytes) = BufferSharing.assign(intervals: intervals, bytes: bytes)
            for u in 0..<n {
                XCTAssertGreaterThanOrEqual(bufferBytes[buffer[u]], bytes[u], "trial \(trial): unit \(u) does not fit its buffer")
                for v in 0..<u where buffer[u] == buffer[v] {
                    XCTAssertFalse(intervals[u].overlaps(intervals[v]), "trial \(trial): \(intervals[u]) and \(intervals[v]) share buffer \(buffer[u])")
                }
            }
            let points = Set(intervals.flatMap { [$0.lowerBound, $0.upperBound] })
            let mostLive = points.map { p in intervals.filter { $0.contains(p) }.count }.max()!
            XCTAssertEqual(bufferBytes.count, mostLive, "trial \(trial): \(bufferBytes.count) buffers where \(mostLive) are live at once")
        }
    }

    struct Step {
        var logits: [Float], grads: [Float], stats: [Float], inputGradient: [Float]
    }

    /// Two training steps (the second after an SGD-like update), each with its eval forward.
    func run(_ ex: DNNLExecutor, seed: UInt64) -> [Step] {
        let model = ex.model, n = ex.batchSize, c = model.numClasses
        var steps: [Step] = []
        for k in 0..<2 {
            let input = randomArray(n * model.tensors[0].perImage, seed: seed + UInt64(k))
            let labels = (0..<n).map { Int32(($0 + k) % c) }
            let logits = Array(UnsafeBufferPointer(start: ex.forward(input: input, mode: .train(bnMomentum: 0.1, dropoutSeed: UInt64(k))), count: n * c))
            var dl = [Float](repeating: 0, count: n * c)
            _ = CrossEntropy.compute(logits: logits, labels: labels, count: n, classes: c, grad: &dl)
            ex.backward(logitsGrad: dl)
            let grads = ex.state.grads.array
            for j in 0..<grads.count { ex.state.params.pointer[j] -= 0.1 * grads[j] }
            let eval = Array(UnsafeBufferPointer(start: ex.forward(input: input, mode: .eval), count: n * c))
            steps.append(Step(logits: logits + eval, grads: grads, stats: ex.state.stats.array, inputGradient: ex.gradient(of: 0)))
        }
        return steps
    }

    /// Chained plain adds, y = (a + b) + c, where c is also read between a's producer and the
    /// first add: the gradient of a + b must not be one storage with c's (c's other reader would
    /// accumulate into it before a's producer reads it).
    func chainedAdds() -> Model {
        var b = ModelBuilder(input: TensorShape(channels: 3, height: 6, width: 6))
        let stem = b.conv(0, "stem", out: 16, kernel: 3, stride: 1)
        let c = b.conv(stem, "c", out: 16, kernel: 3, stride: 1)
        let a = b.conv(stem, "a", out: 16, kernel: 3, stride: 1)
        let d = b.conv(c, "d", out: 16, kernel: 3, stride: 1)
        let bb = b.conv(stem, "b", out: 16, kernel: 3, stride: 1)
        let y = b.add(b.add(a, bb, relu: false), c, relu: false)
        let z = b.add(y, d, relu: true)
        _ = b.linear(b.globalAvgPool(z), "fc", out: 3)
        return b.build(name: "chained", numClasses: 3)
    }

    func testSharedGradientsChangeNoNumber() throws {
        // Plain and ReLU residual adds, identity and projection shortcuts, dropout, max pooling.
        let models = [try Architectures.make("resnet8", inputSize: 16), try Architectures.make("wrn10_2", dropout: 0.3, inputSize: 12),
                      try Architectures.make("tv_resnet18"), chainedAdds()]
        for model in models {
            let kept = try DNNLExecutor(state: ModelState(model: model, seed: 5), batchSize: 4, inputGradient: true, keepGradients: true)
            let shared = try DNNLExecutor(state: ModelState(model: model, seed: 5), batchSize: 4, inputGradient: true)
            let (a, b) = (run(shared, seed: 9), run(kept, seed: 9))
            for k in a.indices {
                for (what, x, y) in [("logits", a[k].logits, b[k].logits), ("parameter gradients", a[k].grads, b[k].grads),
                                     ("running statistics", a[k].stats, b[k].stats), ("input gradient", a[k].inputGradient, b[k].inputGradient)] {
                    let worst = zip(x, y).map { abs($0 - $1) }.max() ?? 0
                    XCTAssertTrue(x == y, "\(model.name) step \(k): sharing gradient buffers changed the \(what) (largest difference \(worst))")
                }
            }
            XCTAssertFalse(shared.gradient(of: 0).isEmpty, "\(model.name): the input gradient is kept")
            XCTAssertTrue(shared.gradient(of: model.tensors.count - 2).isEmpty, "\(model.name): a shared gradient is not offered for inspection")
            XCTAssertLessThan(shared.bufferBytes, kept.bufferBytes, "\(model.name): sharing saved no memory")
        }
    }

    /// A residual add whose inputs' gradients are one storage with its (masked) output gradient
    /// copies nothing in backward; kept apart, each add copies.
    func testResidualAddsCopyNoGradient() throws {
        for name in ["resnet8", "wrn10_2"] {
            let model = try Architectures.make(name, inputSize: 8)
            var copies: [Int] = []
            for keep in [false, true] {
                let ex = try DNNLExecutor(state: ModelState(model: model, seed: 1), batchSize: 2, keepGradients: keep)
                ex.profiling = true
                _ = run(ex, seed: 3)
                copies.append(ex.profile().filter { $0.pass == "backward" && $0.label.operation == "add bwd copy" }.count)
            }
            XCTAssertEqual(copies[0], 0, "\(name): residual adds still copy their gradient")
            XCTAssertGreaterThan(copies[1], 0, "\(name): kept apart, the adds' copies are not seen (the test would not notice them)")
        }
    }

    func testAnEvaluationOnlyExecutorGivesTheSameLogitsWithLessMemory() throws {
        for (name, size) in [("resnet20", 32), ("wrn10_2", 16), ("tv_resnet18", 32)] {
            let model = try Architectures.make(name, dropout: name.hasPrefix("wrn") ? 0.3 : 0, inputSize: size)
            let state = ModelState(model: model, seed: 2)
            let train = try DNNLExecutor(state: state, batchSize: 8)
            let eval = try DNNLExecutor(state: state, batchSize: 8, training: false)
            let input = randomArray(8 * model.tensors[0].perImage, seed: 4)
            let a = Array(UnsafeBufferPointer(start: train.forward(input: input, mode: .eval), count: 8 * model.numClasses))
            let b = Array(UnsafeBufferPointer(start: eval.forward(input: input, mode: .eval), count: 8 * model.numClasses))
            XCTAssertEqual(a, b, "\(name): the evaluation-only executor's logits differ")
            XCTAssertTrue(eval.value(of: 1).isEmpty, "\(name): a shared activation is not offered for inspection")
            XCTAssertLessThan(eval.bufferBytes, train.bufferBytes / 2, "\(name): \(eval.bufferBytes) bytes for eval against \(train.bufferBytes)")
        }
    }
}
