import AllocCounter
import Engine
import Optim
import TestSupport
import Training
import XCTest

/// Every optimizer's training step allocates nothing of its own after the first steps (see
/// EngineTests/AllocationTests for how oneDNN's own per-call allocations are told apart).
final class StepAllocationTests: XCTestCase {
    func testEveryOptimizerAndMethodStepAllocatesNothing() throws {
        let batch = 16
        let input = FloatBuffer(randomArray(batch * 3 * 32 * 32, seed: 3))
        let labels = UnsafeMutablePointer<Int32>.allocate(capacity: batch)
        defer { labels.deallocate() }
        for i in 0..<batch { labels[i] = Int32(i % 10) }
        let optimizers: [(String, OptimizerConfig)] = [
            ("sgd", .sgd), ("sam", .sam(SAMConfig())), ("asam", .sam(SAMConfig(variant: .asam))),
            ("msam", .sam(SAMConfig(microBatch: 4))), ("looksam", .sam(SAMConfig(lookInterval: 2))),
        ]
        // Every optimizer with cross-entropy, and the methods with a loss of their own or a
        // batch transform (GCE, Mixup) with SGD and SAM.
        let runs = optimizers.map { ($0.0, $0.1, MethodConfig?.none) } + [
            ("gce sgd", .sgd, try Methods.resolve("gce")), ("gce sam", .sam(SAMConfig()), try Methods.resolve("gce")),
            ("mixup sgd", .sgd, try Methods.resolve("mixup")), ("mixup msam", .sam(SAMConfig(microBatch: 4)), try Methods.resolve("mixup")),
        ]
        for (name, optimizer, method) in runs {
            let state = ModelState(model: try Architectures.make("resnet8"), seed: 1)
            let step = try TrainStep(state: state, batchSize: batch, sgd: SGDConfig(), optimizer: optimizer, method: method, seed: 5)
            for i in 0..<3 { step.step(input: input.pointer, labels: labels, lr: 0.05, iteration: i) }
            alloc_counter_start()
            for i in 3..<7 { step.step(input: input.pointer, labels: labels, lr: 0.05, iteration: i) }
            let count = alloc_counter_stop()
            XCTAssertEqual(count, 0, "\(name): a step allocated \(count) times outside oneDNN (largest \(alloc_counter_largest()) bytes)")
            XCTAssertGreaterThan(alloc_counter_dnnl(), 0, "\(name): the oneDNN interposer is not in effect")
        }
    }
}
