import Engine
import Foundation
import Optim
import TestSupport
import Training
import XCTest

/// Whole training steps with a method against PyTorch, in the conventions of
/// ../shared/reference/pytorch-resnet8 (its ResNet-8, initial weights and batch): a Mixup SGD
/// step with a fixed lambda and permutation, and a SAM step with GCE (davda54/sam's sequence),
/// every gradient and the state after the step, within the reference tests' tolerance
/// |a - b| <= 1e-5 + 1e-4 |b|, on the oneDNN executor and the plain reference one. PyTorch's
/// side is scripts/torch-methods.py, run by the test. Also Mixup's own draws.
final class MethodStepTests: XCTestCase {
    var input: [Float] = []
    var labels: [Int32] = []
    var torch: SafetensorsFile!

    func prepareReference() throws {
        guard FileManager.default.fileExists(atPath: referenceDir.path) else { throw XCTSkip("PyTorch reference not found at \(referenceDir.path)") }
        torch = try torchMethods("steps", ["--anchors", sharedDir.appendingPathComponent("anchors").path, "--reference", referenceDir.path])
        let batch = try SafetensorsFile.read(referenceDir.appendingPathComponent("batch.safetensors").path)
        input = batch["input"]!.floats
        labels = batch["labels"]!.int64s.map { Int32($0) }
    }

    static let executors: [(String, TrainStep.ExecutorFactory)] = [
        ("oneDNN", TrainStep.fastPath),
        ("reference", { state, batch, frozen in ReferenceExecutor(state: state, batchSize: batch, frozenBatchNorm: frozen) }),
    ]

    func step(_ kind: TrainStep.ExecutorFactory, optimizer: OptimizerConfig, method: String) throws -> TrainStep {
        let state = ModelState(model: try Architectures.make("resnet8"), seed: 0)
        try Checkpoint.load(into: state, from: referenceDir.appendingPathComponent("init.safetensors").path)
        return try TrainStep(state: state, batchSize: 8, sgd: SGDConfig(momentum: 0.9, weightDecay: 5e-4, nesterov: false),
                             optimizer: optimizer, method: try Methods.resolve(method), executor: kind)
    }

    func assertGradients(_ state: ModelState, _ prefix: String, _ what: String) {
        for p in state.model.params { assertClose(Array(state.gradView(p)), torch[prefix + p.name]!.floats, "\(what) \(prefix)\(p.name)") }
    }

    func assertState(_ state: ModelState, _ prefix: String, _ what: String) {
        for (name, t) in Checkpoint.tensors(of: state).sorted(by: { $0.key < $1.key }) {
            guard let expected = torch[prefix + name] else { XCTFail("\(what): PyTorch has no \(prefix)\(name)"); continue }
            if t.dtype == .I64 { XCTAssertEqual(t.int64s, expected.int64s, "\(what) \(name)") } else { assertClose(t.floats, expected.floats, "\(what) \(name)") }
        }
    }

    func testMixupStepAgainstPyTorch() throws {
        try prepareReference()
        let permutation: [Int32] = [5, 2, 7, 0, 1, 3, 6, 4]
        for (kind, factory) in Self.executors {
            let s = try step(factory, optimizer: .sgd, method: "mixup")
            let mixup = try XCTUnwrap(s.method as? Mixup)
            let r = input.withUnsafeBufferPointer { x in
                labels.withUnsafeBufferPointer { y in
                    permutation.withUnsafeBufferPointer { pi in
                        s.step(mixup.mix(input: x.baseAddress!, labels: y.baseAddress!, lambda: 0.3, permutation: pi.baseAddress!), lr: 0.1)
                    }
                }
            }
            assertClose([Float(r.loss)], torch["mixup.loss"]!.floats, "\(kind) mixup loss")
            assertGradients(s.state, "mixup.grad.", kind)
            assertState(s.state, "mixup.state.", "\(kind) mixup")
        }
    }

    func testGCESAMStepAgainstPyTorch() throws {
        try prepareReference()
        for (kind, factory) in Self.executors {
            let s = try step(factory, optimizer: .sam(SAMConfig(rho: 0.05)), method: "gce")
            let r = s.step(input: input, labels: labels, lr: 0.1)
            assertClose([Float(r.loss)], torch["gce_sam.loss"]!.floats, "\(kind) GCE loss at w")
            assertClose([Float(r.perturbedLoss ?? .nan)], torch["gce_sam.loss_perturbed"]!.floats, "\(kind) GCE loss at w + e")
            // After the step the gradient buffer holds the gradient at w + e.
            assertGradients(s.state, "gce_sam.grad_perturbed.", kind)
            assertState(s.state, "gce_sam.state.", "\(kind) GCE SAM")
        }
    }

    /// Mixup's draws depend on (seed, iteration) only; lambda ~ Beta(alpha, alpha) has the
    /// right mean and variance; every permutation is one; the soft targets sum to 1.
    func testMixupDraws() throws {
        let n = 16, size = 3 * 32 * 32, c = 10
        let context = MethodContext(batchSize: n, classes: c, imageSize: size, seed: 9)
        let a = Mixup(alpha: 1, context: context), b = Mixup(alpha: 1, context: context)
        let x = randomArray(n * size, seed: 1)
        let y = (0..<n).map { Int32($0 % c) }
        func draw(_ m: Mixup, _ i: Int) -> (Double, [Int32], [Float], [Float]) {
            x.withUnsafeBufferPointer { xp in
                y.withUnsafeBufferPointer { yp in
                    let p = m.prepare(input: xp.baseAddress!, labels: yp.baseAddress!, iteration: i)
                    guard case let .soft(t) = p.targets else { XCTFail("Mixup gives soft targets"); return (0, [], [], []) }
                    return (p.lambda, Array(UnsafeBufferPointer(start: p.mixed!, count: n)), Array(UnsafeBufferPointer(start: t, count: n * c)),
                            Array(UnsafeBufferPointer(start: p.input, count: n * size)))
                }
            }
        }
        let first = draw(a, 17), again = draw(b, 17), other = draw(a, 18)
        XCTAssertEqual(first.0, again.0)
        XCTAssertEqual(first.1, again.1)
        XCTAssertEqual(first.3, again.3, "the same iteration mixes the same inputs")
        XCTAssertNotEqual(first.0, other.0)
        XCTAssertEqual(first.1.sorted(), y.sorted(), "the mixed labels are a permutation of the batch's")
        for i in 0..<n { XCTAssertEqual(first.2[(i * c)..<((i + 1) * c)].reduce(0, +), 1, accuracy: 1e-6) }
        for alpha in [0.2, 1.0, 8.0] {
            let m = Mixup(alpha: alpha, context: context)
            let lambdas = (0..<4000).map { i in x.withUnsafeBufferPointer { xp in y.withUnsafeBufferPointer { m.prepare(input: xp.baseAddress!, labels: $0.baseAddress!, iteration: i).lambda } } }
            let mean = lambdas.reduce(0, +) / Double(lambdas.count)
            let variance = lambdas.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(lambdas.count - 1)
            XCTAssertEqual(mean, 0.5, accuracy: 0.02, "Beta(\(alpha), \(alpha)) mean")
            XCTAssertEqual(variance, 1 / (4 * (2 * alpha + 1)), accuracy: 0.1 / (4 * (2 * alpha + 1)), "Beta(\(alpha), \(alpha)) variance")
            XCTAssertTrue(lambdas.allSatisfy { (0...1).contains($0) })
        }
    }
}
