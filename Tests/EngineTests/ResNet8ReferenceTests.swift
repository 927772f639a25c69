import Engine
import Optim
import TestSupport
import XCTest

/// Reproduces ../shared/reference/pytorch-resnet8 (PyTorch 2.13, float32): forward, every
/// gradient, BN statistics, and SGD / nesterov steps, within |a-b| <= 1e-5 + 1e-4|b|.
final class ResNet8ReferenceTests: XCTestCase {
    var input: [Float] = []
    var labels: [Int32] = []

    override func setUpWithError() throws {
        guard FileManager.default.fileExists(atPath: referenceDir.path) else {
            throw XCTSkip("PyTorch reference not found at \(referenceDir.path)")
        }
        let batch = try ref("batch")
        input = batch["input"]!.floats
        labels = batch["labels"]!.int64s.map { Int32($0) }
    }

    func ref(_ name: String) throws -> SafetensorsFile {
        try SafetensorsFile.read(referenceDir.appendingPathComponent(name + ".safetensors").path)
    }

    func freshState() throws -> ModelState {
        let model = try Architectures.make("resnet8")
        let state = ModelState(model: model, seed: 0)
        try Checkpoint.load(into: state, from: referenceDir.appendingPathComponent("init.safetensors").path)
        return state
    }

    /// The executors compared with the reference: sambench's own Winograd kernels everywhere,
    /// oneDNN's only where it has one (AVX-512).
    var kinds: [String] {
        ["oneDNN", "reference", "sambench Winograd 2x3", "sambench Winograd 4x3"] + (EngineCPU.avx512 ? ["oneDNN Winograd"] : [])
    }

    func executor(_ kind: String, _ state: ModelState) throws -> Executor {
        switch kind {
        case "oneDNN": return try DNNLExecutor(state: state, batchSize: 8)
        case "reference": return ReferenceExecutor(state: state, batchSize: 8)
        case "sambench Winograd 2x3", "sambench Winograd 4x3":
            let name = WinogradConvolution.name(tile: kind.hasSuffix("2x3") ? 2 : 4)
            return try winogradExecutor(state) { $0 == name }
        default: return try winogradExecutor(state) { $0.contains("wino") && !$0.hasPrefix("sambench") }
        }
    }

    /// The fast path as a tuned build may choose it: every 3x3 stride-1 pass on the Winograd
    /// kernel `preferred` names wherever that passes the trial against the direct one.
    func winogradExecutor(_ state: ModelState, preferred: @escaping @Sendable (String) -> Bool) throws -> Executor {
        let tuning = ConvolutionTuning.shared
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("winograd-\(UUID().uuidString).json")
        tuning.enable(file: file)
        tuning.preferred = preferred
        defer { tuning.preferred = nil; tuning.disable(); try? FileManager.default.removeItem(at: file) }
        let ex = try DNNLExecutor(state: state, batchSize: 8)
        XCTAssertTrue(ex.tuned.contains { preferred($0.chosen) }, "no pass took the Winograd kernel: \(ex.tuned.map(\.chosen))")
        return ex
    }

    /// One forward+backward in train mode; returns (loss, logits).
    func lossAndGrad(_ ex: Executor) -> (Double, [Float]) {
        let n = ex.batchSize, c = ex.model.numClasses
        let logits = ex.forward(input: input, mode: .train(bnMomentum: 0.1))
        let logitsCopy = Array(UnsafeBufferPointer(start: logits, count: n * c))
        var dl = [Float](repeating: 0, count: n * c)
        let loss = CrossEntropy.compute(logits: logits, labels: labels, count: n, classes: c, grad: &dl)
        ex.backward(logitsGrad: dl)
        return (loss, logitsCopy)
    }

    func assertState(_ state: ModelState, equals file: SafetensorsFile, _ what: String) {
        let mine = Checkpoint.tensors(of: state)
        XCTAssertEqual(Set(mine.keys), Set(file.tensors.keys), "\(what): tensor names")
        for (name, t) in file.tensors.sorted(by: { $0.key < $1.key }) {
            guard let m = mine[name] else { continue }
            XCTAssertEqual(m.shape, t.shape, "\(what): \(name) shape")
            if t.dtype == .I64 {
                XCTAssertEqual(m.int64s, t.int64s, "\(what): \(name)")
            } else {
                assertClose(m.floats, t.floats, "\(what): \(name)")
            }
        }
    }

    func testForwardGradientsAndBNStatistics() throws {
        let forward = try ref("forward"), grads = try ref("grads"), bnstats = try ref("forward_bnstats")
        for kind in kinds {
            let state = try freshState()
            let ex = try executor(kind, state)
            let n = 8, c = 10
            // Eval first: the reference's eval logits use the initial running statistics (0 / 1).
            let le = ex.forward(input: input, mode: .eval)
            let evalLogits = Array(UnsafeBufferPointer(start: le, count: n * c))
            assertClose(evalLogits, forward["logits_eval"]!.floats, "\(kind) logits_eval")
            let lossEval = CrossEntropy.compute(logits: evalLogits, labels: labels, count: n, classes: c)
            assertClose([Float(lossEval)], forward["loss_eval"]!.floats, "\(kind) loss_eval")

            let (loss, logits) = lossAndGrad(ex)
            assertClose(logits, forward["logits_train"]!.floats, "\(kind) logits_train")
            assertClose([Float(loss)], forward["loss"]!.floats, "\(kind) loss")
            for p in state.model.params {
                assertClose(Array(state.gradView(p)), grads[p.name]!.floats, "\(kind) grad \(p.name)")
            }
            XCTAssertEqual(Set(grads.tensors.keys), Set(state.model.params.map(\.name)), "\(kind): gradient names")
            for (i, bn) in state.model.batchNorms.enumerated() {
                assertClose(Array(state.runningMean(i)), bnstats[bn.prefix + ".running_mean"]!.floats, "\(kind) \(bn.prefix).running_mean")
                assertClose(Array(state.runningVar(i)), bnstats[bn.prefix + ".running_var"]!.floats, "\(kind) \(bn.prefix).running_var")
                XCTAssertEqual(state.batchesTracked[i], bnstats[bn.prefix + ".num_batches_tracked"]!.int64s[0], "\(kind) \(bn.prefix)")
            }
        }
    }

    func checkSGD(nesterov: Bool, prefix: String) throws {
        for kind in kinds {
            let state = try freshState()
            let ex = try executor(kind, state)
            let sgd = try SGD(parameterCount: state.model.parameterCount,
                              config: SGDConfig(momentum: 0.9, weightDecay: 5e-4, nesterov: nesterov))
            for step in 1...2 {
                let aux = try ref("\(prefix)_step\(step)_aux")
                let (loss, logits) = lossAndGrad(ex)
                assertClose([Float(loss)], aux["loss"]!.floats, "\(kind) \(prefix) step \(step) loss")
                assertClose(logits, aux["logits_train"]!.floats, "\(kind) \(prefix) step \(step) logits")
                sgd.step(params: state.params, grads: state.grads, lr: 0.1)
                for p in state.model.params {
                    assertClose(Array(state.gradView(p)), aux["grad." + p.name]!.floats, "\(kind) step \(step) grad \(p.name)")
                    assertClose(Array(UnsafeBufferPointer(start: sgd.momentumBuffer.pointer + p.offset, count: p.count)),
                                aux["momentum_buffer." + p.name]!.floats, "\(kind) step \(step) momentum \(p.name)")
                }
                assertState(state, equals: try ref("\(prefix)_step\(step)"), "\(kind) \(prefix) step \(step)")
                let le = ex.forward(input: input, mode: .eval)
                assertClose(Array(UnsafeBufferPointer(start: le, count: 80)), aux["logits_eval_after"]!.floats, "\(kind) \(prefix) step \(step) eval logits after")
            }
        }
    }

    func testSGDSteps() throws { try checkSGD(nesterov: false, prefix: "sgd") }
    func testNesterovSteps() throws { try checkSGD(nesterov: true, prefix: "sgd_nesterov") }
}
