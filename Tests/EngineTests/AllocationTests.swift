import AllocCounter
import Foundation
import Engine
import Optim
import TestSupport
import XCTest

/// After the first step, a training step (forward, loss, backward, SGD update) and an eval
/// forward (on the training executor and on an evaluation-only one) allocate nothing. The
/// malloc family is interposed in the test binary and counted.
///
/// One exception, outside the project's control: oneDNN 2.6's `dnnl_primitive_execute` builds
/// a std::unordered_map of its arguments on every call. Those allocations are attributed to
/// it (the test binary interposes that function too) and checked to be small (no tensor
/// buffers), freed before the call returns, and the same number every step.
final class AllocationTests: XCTestCase {
    func testTrainingStepAllocatesNothing() throws {
        try assertStepsAllocateNothing()
    }

    /// The same with every 3x3 pass that its trial lets take one on sambench's own Winograd
    /// kernels (Winograd.swift: host steps on oneDNN's OpenMP threads and OpenBLAS products).
    func testOwnWinogradKernelsAllocateNothing() throws {
        let tuning = ConvolutionTuning.shared
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("allocation-\(UUID().uuidString).json")
        tuning.enable(file: file)
        tuning.preferred = { $0.hasPrefix("sambench:winograd") }
        defer { tuning.preferred = nil; tuning.disable(); try? FileManager.default.removeItem(at: file) }
        try assertStepsAllocateNothing { ex in
            XCTAssertTrue(ex.implementations.contains { $0.contains("sambench:winograd") }, "no pass took an own kernel: \(ex.implementations)")
            XCTAssertTrue(ex.tuned.contains { $0.operation == "conv bwd weights" && $0.chosen.hasPrefix("sambench:winograd") },
                          "no backward pass took an own kernel: \(ex.tuned.map(\.chosen))")
        }
    }

    func assertStepsAllocateNothing(_ check: (DNNLExecutor) -> Void = { _ in }) throws {
        let model = try Architectures.make("resnet8")
        let state = ModelState(model: model, seed: 1)
        let batch = 16
        let ex = try DNNLExecutor(state: state, batchSize: batch)
        let evaluator = try DNNLExecutor(state: state, batchSize: batch, training: false)
        check(ex)
        let sgd = try SGD(parameterCount: model.parameterCount, config: SGDConfig(momentum: 0.9, weightDecay: 5e-4, nesterov: true))
        let input = FloatBuffer(randomArray(batch * 3 * 32 * 32, seed: 3))
        let labels = UnsafeMutablePointer<Int32>.allocate(capacity: batch)
        defer { labels.deallocate() }
        for i in 0..<batch { labels[i] = Int32(i % 10) }
        let dl = FloatBuffer(count: batch * 10)
        func step() {
            let logits = ex.forward(input: input.pointer, mode: .train(bnMomentum: 0.1))
            _ = CrossEntropy.compute(logits: logits, labels: labels, count: batch, classes: 10, grad: dl.pointer)
            ex.backward(logitsGrad: dl.pointer)
            sgd.step(params: state.params, grads: state.grads, lr: 0.05)
            _ = ex.forward(input: input.pointer, mode: .eval)
            _ = evaluator.forward(input: input.pointer, mode: .eval)
        }
        step()
        step()
        var dnnlCounts: [UInt64] = []
        for _ in 0..<3 {
            alloc_counter_start()
            step()
            let ours = alloc_counter_stop()
            XCTAssertEqual(ours, 0, "a training step allocated \(ours) times outside oneDNN (largest \(alloc_counter_largest()) bytes)")
            XCTAssertEqual(alloc_counter_frees(), 0, "a training step freed memory outside oneDNN")
            XCTAssertEqual(alloc_counter_dnnl(), alloc_counter_dnnl_frees(), "oneDNN kept memory across a step")
            XCTAssertLessThanOrEqual(alloc_counter_dnnl_largest(), 1024, "oneDNN allocated a buffer-sized block during a step")
            dnnlCounts.append(alloc_counter_dnnl())
        }
        XCTAssertGreaterThan(dnnlCounts[0], 0, "the interposer of dnnl_primitive_execute is not in effect")
        XCTAssertEqual(Set(dnnlCounts).count, 1, "oneDNN's per-call allocations vary between steps: \(dnnlCounts)")

        // The counter itself works: an allocation outside oneDNN is seen.
        alloc_counter_start()
        let probe = [Int](repeating: 1, count: Int(state.batchesTracked[0]) + 100)
        let seen = alloc_counter_stop()
        XCTAssertGreaterThan(seen, 0, "the allocation counter missed an allocation (\(probe.count))")
    }
}
