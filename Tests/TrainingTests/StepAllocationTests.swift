import AllocCounter
import Engine
import Optim
import TestSupport
import Training
import XCTest

/// Every optimizer's training step allocates nothing of its own after the first steps (see
/// EngineTests/AllocationTests for how oneDNN's own per-call allocations are told apart).
final class StepAllocationTests: XCTestCase {
    func testEveryOptimizerStepAllocatesNothing() throws {
        let batch = 16
        let input = FloatBuffer(randomArray(batch * 3 * 32 * 32, seed: 3))
        let labels = UnsafeMutablePointer<Int32>.allocate(capacity: batch)
        defer { labels.deallocate() }
        for i in 0..<batch { labels[i] = Int32(i % 10) }
        let optimizers: [(String, OptimizerConfig)] = [
            ("sgd", .sgd), ("sam", .sam(SAMConfig())), ("asam", .sam(SAMConfig(variant: .asam))),
            ("msam", .sam(SAMConfig(microBatch: 4))), ("looksam", .sam(SAMConfig(lookInterval: 2))),
        ]
        for (name, optimizer) in optimizers {
            let state = ModelState(model: try Architectures.make("resnet8"), seed: 1)
            let step = try TrainStep(state: state, batchSize: batch, sgd: SGDConfig(), optimizer: optimizer)
            for _ in 0..<3 { step.step(input: input.pointer, labels: labels, lr: 0.05) }
            alloc_counter_start()
            for _ in 0..<4 { step.step(input: input.pointer, labels: labels, lr: 0.05) }
            let count = alloc_counter_stop()
            XCTAssertEqual(count, 0, "\(name): a step allocated \(count) times outside oneDNN (largest \(alloc_counter_largest()) bytes)")
            XCTAssertGreaterThan(alloc_counter_dnnl(), 0, "\(name): the oneDNN interposer is not in effect")
        }
    }
}
