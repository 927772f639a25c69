import Engine
import Foundation
import TestSupport
import XCTest

/// The per-machine choice of convolution implementations (ConvolutionTuning) and the step
/// profile: a timed choice, a recorded choice and a profiled run all compute what the twin does.
final class TuningTests: XCTestCase {
    var file: URL!

    override func setUp() {
        file = FileManager.default.temporaryDirectory.appendingPathComponent("tuning-\(UUID().uuidString)/onednn.json")
    }

    override func tearDown() {
        ConvolutionTuning.shared.disable()
        try? FileManager.default.removeItem(at: file.deletingLastPathComponent())
    }

    /// Strided 1x1 convolutions (the option-B shortcut) get both oneDNN's 1x1 kernel and its
    /// direct one: there is a choice to make.
    func shortcutModel() -> Model {
        var b = ModelBuilder(input: TensorShape(channels: 3, height: 8, width: 8))
        let stem = b.conv(0, "stem", out: 16, kernel: 3, stride: 1)
        let y = b.conv(stem, "shortcut", out: 32, kernel: 1, stride: 2)
        _ = b.linear(b.globalAvgPool(y), "fc", out: 3)
        return b.build(name: "shortcut", numClasses: 3)
    }

    func logitsAndGradients(_ ex: Executor, seed: UInt64) -> (logits: [Float], grads: [Float]) {
        let model = ex.model, n = ex.batchSize, c = model.numClasses
        let input = randomArray(n * model.tensors[0].perImage, seed: seed)
        let labels = (0..<n).map { Int32($0 % c) }
        let logits = Array(UnsafeBufferPointer(start: ex.forward(input: input, mode: .train(bnMomentum: 0.1, dropoutSeed: 0)), count: n * c))
        var dl = [Float](repeating: 0, count: n * c)
        _ = CrossEntropy.compute(logits: logits, labels: labels, count: n, classes: c, grad: &dl)
        ex.backward(logitsGrad: dl)
        return (logits, ex.state.grads.array)
    }

    func testTimedChoicesAreRecordedReusedAndAgreeWithTheTwin() throws {
        let tuning = ConvolutionTuning.shared
        tuning.enable(file: file)
        let model = shortcutModel()
        let timedBefore = tuning.timedPasses
        let first = try DNNLExecutor(state: ModelState(model: model, seed: 1), batchSize: 4)
        let choices = first.tuned.filter { $0.implementations.count > 1 }
        XCTAssertFalse(choices.isEmpty, "the strided 1x1 convolution offers no choice of kernel: \(first.tuned)")
        for pass in first.tuned {
            XCTAssertEqual(pass.seconds.count, pass.implementations.count)
            XCTAssertTrue(pass.seconds.allSatisfy { $0 > 0 && $0.isFinite }, "\(pass)")
            XCTAssertTrue(pass.implementations.contains(pass.chosen), "\(pass)")
        }
        XCTAssertEqual(tuning.timedPasses - timedBefore, first.tuned.count)
        let stored = String(decoding: try Data(contentsOf: file), as: UTF8.self)
        for pass in first.tuned { XCTAssertTrue(stored.contains(pass.chosen), "\(pass.chosen) not recorded in \(stored)") }

        // Another process's view: the file alone, read afresh, with the forward pass of the 1x1
        // convolution forced to the candidate that was not chosen. It is taken, not re-timed.
        let forward = try XCTUnwrap(first.tuned.first { $0.operation == "conv fwd" && $0.layer == "shortcut" && $0.implementations.count > 1 })
        let other = try XCTUnwrap(forward.implementations.first { $0 != forward.chosen })
        var json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(stored.utf8)) as? [String: Any])
        var recorded = try XCTUnwrap(json["choices"] as? [String: String])
        let keys = recorded.keys.filter { $0.hasPrefix("conv fwd | \(forward.shape) |") }
        XCTAssertEqual(keys.count, 1, "\(recorded.keys)")
        for k in keys { recorded[k] = other }
        json["choices"] = recorded
        try JSONSerialization.data(withJSONObject: json).write(to: file)
        tuning.enable(file: file)
        let timed = tuning.timedPasses
        let second = try DNNLExecutor(state: ModelState(model: model, seed: 1), batchSize: 4)
        XCTAssertEqual(tuning.timedPasses, timed, "a recorded choice was timed again")
        XCTAssertTrue(second.tuned.isEmpty)
        XCTAssertTrue(second.implementations.contains("shortcut.weight: \(other)"), "\(second.implementations) lacks \(other)")

        // Whatever runs, the arithmetic is the twin's.
        for ex in [first, second] {
            let ref = ReferenceExecutor(state: ModelState(model: model, seed: 1), batchSize: 4)
            let (fl, fg) = logitsAndGradients(ex, seed: 5), (rl, rg) = logitsAndGradients(ref, seed: 5)
            assertClose(fl, rl, "logits (\(ex.implementations))")
            assertClose(fg, rg, "gradients (\(ex.implementations))")
        }
    }

    /// oneDNN's Winograd, where the trial lets a pass take it, against the twin at the op sweep's
    /// tolerance: logits and every parameter gradient of stem -> conv -> conv graphs.
    func testWinogradPassesAgreeWithTheTwin() throws {
        guard EngineCPU.avx512 else { throw XCTSkip("no AVX-512 here: oneDNN 2.6 has no f32 Winograd kernel on this CPU") }
        try assertPassesAgreeWithTheTwin(preferring: { $0.contains("wino") && !$0.hasPrefix("sambench") })
    }

    /// sambench's own Winograd kernels (Winograd.swift), on every machine: each forced wherever
    /// its trial lets a pass take it, against the twin as above.
    func testOwnWinogradPassesAgreeWithTheTwin() throws {
        for m in [2, 4] {
            let name = WinogradConvolution.name(tile: m)
            try assertPassesAgreeWithTheTwin(preferring: { $0 == name })
        }
    }

    func assertPassesAgreeWithTheTwin(preferring preferred: @escaping @Sendable (String) -> Bool,
                                      file: StaticString = #filePath, line: UInt = #line) throws {
        let tuning = ConvolutionTuning.shared
        tuning.enable(file: self.file)
        tuning.preferred = preferred
        defer { tuning.preferred = nil; tuning.disable(); try? FileManager.default.removeItem(at: self.file) }
        var took = 0
        // (batch, in channels, out channels, spatial). The graph starts, as every model does, with a
        // stem convolution from 3 channels: its output is in oneDNN's blocked layout, which the own
        // kernels need. (Given a plain input of 16 or more channels, oneDNN 2.6's AVX-512 direct
        // kernels decline it and its gemm convolution runs the whole graph in plain layouts, where
        // no own kernel is offered: on an AVX-512 EPYC this test then found nothing to force.)
        for (n, cin, cout, size) in [(4, 16, 16, 8), (8, 16, 16, 32), (16, 64, 64, 4), (2, 32, 64, 12), (3, 5, 24, 7), (2, 16, 32, 6)] {
            var b = ModelBuilder(input: TensorShape(channels: 3, height: size, width: size))
            let stem = b.conv(0, "stem", out: cin, kernel: 3, stride: 1)
            var y = b.conv(stem, "conv", out: cout, kernel: 3, stride: 1)
            y = b.conv(y, "conv2", out: cout, kernel: 3, stride: 1)
            _ = b.linear(b.globalAvgPool(y), "fc", out: 3)
            let model = b.build(name: "winograd", numClasses: 3)
            let fast = try DNNLExecutor(state: ModelState(model: model, seed: 2), batchSize: n)
            took += fast.tuned.filter { preferred($0.chosen) }.count
            let ref = ReferenceExecutor(state: ModelState(model: model, seed: 2), batchSize: n)
            let (fl, fg) = logitsAndGradients(fast, seed: 6), (rl, rg) = logitsAndGradients(ref, seed: 6)
            let what = "N\(n) \(cin)->\(cout) S\(size) (\(fast.tuned.map(\.chosen)))"
            assertClose(fl, rl, "\(what): logits", file: file, line: line)
            for p in model.params {
                assertClose(Array(fg[p.offset..<(p.offset + p.count)]), Array(rg[p.offset..<(p.offset + p.count)]), "\(what): gradient \(p.name)",
                            file: file, line: line)
            }
        }
        XCTAssertGreaterThan(took, 0, "no pass took the preferred kernel", file: file, line: line)
    }

    func testFirstRecordedChoiceWins() throws {
        let a = ConvolutionTuning(), b = ConvolutionTuning()
        a.enable(file: file)
        b.enable(file: file)
        // b has not read a's choice (it read the file before a wrote it), yet it takes it.
        XCTAssertEqual(a.record("kernel-a", for: "k"), "kernel-a")
        XCTAssertEqual(b.record("kernel-b", for: "k"), "kernel-a")
        XCTAssertEqual(b.record("kernel-b", for: "other"), "kernel-b")
        let c = ConvolutionTuning()
        c.enable(file: file)
        XCTAssertEqual(c.choice(for: "k"), "kernel-a")
        XCTAssertEqual(c.choice(for: "other"), "kernel-b")
        // A damaged file is started afresh, not trusted and not fatal.
        try Data("{not json".utf8).write(to: file)
        let d = ConvolutionTuning()
        d.enable(file: file)
        XCTAssertNil(d.choice(for: "k"))
        XCTAssertEqual(d.record("kernel-d", for: "k"), "kernel-d")
    }

    func testTuningOffTakesOneDNNsFirstChoiceWithoutTiming() throws {
        ConvolutionTuning.shared.disable()
        let timed = ConvolutionTuning.shared.timedPasses
        let ex = try DNNLExecutor(state: ModelState(model: shortcutModel(), seed: 1), batchSize: 4)
        XCTAssertTrue(ex.tuned.isEmpty)
        XCTAssertEqual(ConvolutionTuning.shared.timedPasses, timed)
    }

    func testProfilingTimesEveryStepAndChangesNothing() throws {
        let model = try Architectures.make("resnet8", inputSize: 8)
        let plain = try DNNLExecutor(state: ModelState(model: model, seed: 3), batchSize: 4)
        let profiled = try DNNLExecutor(state: ModelState(model: model, seed: 3), batchSize: 4)
        profiled.profiling = true
        for _ in 0..<2 {
            let (pl, pg) = logitsAndGradients(plain, seed: 9), (ql, qg) = logitsAndGradients(profiled, seed: 9)
            XCTAssertEqual(pl, ql, "profiling changed the logits")
            XCTAssertEqual(pg, qg, "profiling changed the gradients")
        }
        let entries = profiled.profile()
        XCTAssertTrue(entries.allSatisfy { $0.calls == 2 && $0.seconds >= 0 }, "\(entries.filter { $0.calls != 2 })")
        XCTAssertEqual(Set(entries.map(\.pass)), ["forward", "backward"])
        // Every convolution appears in each of its passes, with the MACs the model counts.
        let convMACs = model.nodes.reduce(0) { total, node in
            guard case let .conv(w, _, _, _) = node.op else { return total }
            let s = model.params[w].shape, out = model.tensors[node.output]
            return total + 4 * out.height * out.width * s[0] * s[1] * s[2] * s[3]
        }
        let forward = entries.filter { $0.pass == "forward" && $0.label.operation == "conv fwd" }
        XCTAssertEqual(forward.reduce(0) { $0 + $1.label.macs }, convMACs)
        XCTAssertEqual(Set(forward.map(\.label.layer)), Set(model.params.filter { $0.role == .convWeight }.map { String($0.name.dropLast(7)) }))
        XCTAssertEqual(entries.filter { $0.label.operation == "conv bwd weights" }.count, forward.count)
        XCTAssertTrue(entries.contains { $0.label.layer == "layer1.0.add" && $0.label.kind == "add" }, "\(entries.map(\.label.layer))")
        XCTAssertTrue(entries.contains { $0.label.implementation == "host" && $0.label.operation == "bn running stats" })
        profiled.resetProfile()
        XCTAssertTrue(profiled.profile().isEmpty)
        // Off again: nothing more is counted.
        profiled.profiling = false
        _ = logitsAndGradients(profiled, seed: 9)
        XCTAssertTrue(profiled.profile().isEmpty)
    }
}
