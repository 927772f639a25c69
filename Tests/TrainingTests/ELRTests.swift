import Engine
import Foundation
import TestSupport
import Training
import XCTest

/// ELR (Liu et al. 2020): its loss, gradient and running targets over three steps against the
/// reference code's (scripts/torch-methods.py elr, float64 autograd), the twin against finite
/// differences, and the targets updated once per step whatever the passes (SAM, micro-batches).
final class ELRTests: XCTestCase {
    let c = 10

    /// The fast path on one batch of `method`: (batch loss, gradient).
    func fast(_ method: ELR, logits: [Double], labels: [Int32], indices: [Int32], passes: Int = 1) -> (loss: Double, grad: [Float]) {
        let n = labels.count
        var grad = [Float](repeating: .nan, count: n * c), loss = 0.0
        let input = [Float](repeating: 0, count: n)
        input.withUnsafeBufferPointer { ip in labels.withUnsafeBufferPointer { yp in indices.withUnsafeBufferPointer { xp in
            let batch = method.prepare(input: ip.baseAddress!, labels: yp.baseAddress!, indices: xp.baseAddress!, iteration: 0)
            for _ in 0..<passes {
                loss = method.loss.compute(logits: logits.map(Float.init), targets: batch.targets, count: n, classes: c, weights: nil, losses: nil, grad: &grad)
            }
        } } }
        return (loss, grad)
    }

    func testThreeStepsAgainstPyTorch() throws {
        let f = try torchMethods("elr")
        let labels = f["labels"]!.int64s.map { Int($0) }
        let samples = labels.count, n = 8
        let method = ELR(beta: 0.7, lambda: 3, context: MethodContext(batchSize: n, classes: c, imageSize: 1, samples: samples))
        let loss = try XCTUnwrap(method.loss as? ELRLoss)
        var twinTable = [Double](repeating: 0, count: samples * c)
        for step in 0..<3 {
            let logits = f["step\(step).logits"]!.doubles, indices = f["step\(step).indices"]!.int64s.map { Int($0) }
            let expectedLoss = f["step\(step).loss"]!.doubles[0], expectedGrad = f["step\(step).grad"]!.doubles
            let expectedTargets = f["step\(step).targets"]!.doubles
            let batchLabels = indices.map { labels[$0] }
            // The fast path (float32): the second pass of a step (SAM's) leaves the targets as the first did.
            let (got, grad) = fast(method, logits: logits, labels: batchLabels.map(Int32.init), indices: indices.map(Int32.init), passes: 2)
            XCTAssertEqual(got, expectedLoss, accuracy: 1e-5 * abs(expectedLoss), "step \(step) loss")
            assertClose(grad, expectedGrad.map(Float.init), "step \(step) gradient")
            assertClose(method.targets, expectedTargets.map(Float.init), atol: 1e-6, rtol: 1e-5, "step \(step) targets")
            // The twin (float64): the update, then the loss with the updated rows.
            var rows = indices.flatMap { Array(twinTable[($0 * c)..<(($0 + 1) * c)]) }
            rows = loss.updated(targets: rows, logits: logits, count: n, classes: c)
            for (b, i) in indices.enumerated() { twinTable.replaceSubrange((i * c)..<((i + 1) * c), with: rows[(b * c)..<((b + 1) * c)]) }
            for (a, b) in zip(twinTable, expectedTargets) { XCTAssertEqual(a, b, accuracy: 1e-12, "step \(step) twin targets") }
            let twin = loss.reference(logits: logits, targets: .tracked(batchLabels, rows), count: n, classes: c, weights: nil)
            XCTAssertEqual(twin.losses.reduce(0, +) / Double(n), expectedLoss, accuracy: 1e-10 * abs(expectedLoss), "step \(step) twin loss")
            for (a, b) in zip(twin.grad, expectedGrad) { XCTAssertEqual(a, b, accuracy: 1e-10, "step \(step) twin gradient") }
        }
        XCTAssertEqual(f["step1.logits"]!.doubles.max(), 50, "a row with classes clamped at both ends is there")
    }

    /// Random batches: the fast path against the twin over shapes; micro-batches (m-sharpness)
    /// update each sample's target once, as the whole batch does.
    func testFastPathMatchesTwinAndMicroBatchesUpdateOnce() {
        var rng = Xoshiro256(seed: 5)
        let samples = 40
        for n in [1, 8, 16] {
            let logits = (0..<(n * c)).map { _ in Double(Float(rng.nextNormal() * 3)) }
            let labels = (0..<n).map { _ in Int32(rng.nextInt(below: c)) }
            var order = Array(0..<Int32(samples))
            for i in stride(from: samples - 1, to: 0, by: -1) { order.swapAt(i, rng.nextInt(below: i + 1)) }
            let indices = Array(order.prefix(n))
            let context = MethodContext(batchSize: n, classes: c, imageSize: 1, samples: samples)
            let whole = ELR(beta: 0.7, lambda: 3, context: context), split = ELR(beta: 0.7, lambda: 3, context: context)
            // Two steps, so the second starts from non-zero targets.
            for step in 0..<2 {
                let before = whole.targets.map(Double.init)
                let (_, grad) = fast(whole, logits: logits, labels: labels, indices: indices)
                var rows = indices.flatMap { before[(Int($0) * c)..<((Int($0) + 1) * c)] }
                let loss = whole.loss as! ELRLoss
                rows = loss.updated(targets: rows, logits: logits, count: n, classes: c)
                let twin = loss.reference(logits: logits, targets: .tracked(labels.map(Int.init), rows), count: n, classes: c, weights: nil)
                assertClose(grad, twin.grad.map(Float.init), "n \(n) step \(step) gradient")
                // The same batch as two halves, the second half first.
                guard n > 1 else { continue }
                let h = n / 2
                let input = [Float](repeating: 0, count: n)
                var g = [Float](repeating: 0, count: n * c)
                input.withUnsafeBufferPointer { ip in labels.withUnsafeBufferPointer { yp in indices.withUnsafeBufferPointer { xp in
                    let batch = split.prepare(input: ip.baseAddress!, labels: yp.baseAddress!, indices: xp.baseAddress!, iteration: step)
                    logits.map(Float.init).withUnsafeBufferPointer { z in
                        for (offset, count) in [(h, n - h), (0, h), (h, n - h)] {
                            _ = split.loss.compute(logits: z.baseAddress! + offset * c, targets: batch.targets.advanced(by: offset, classes: c),
                                                   count: count, classes: c, weights: nil, losses: nil, grad: &g)
                        }
                    }
                } } }
                assertClose(split.targets, whole.targets, atol: 1e-7, rtol: 1e-6, "n \(n) step \(step): micro-batches update each target once")
            }
        }
    }

    /// The twin's gradient is the derivative of its batch loss with the targets held fixed
    /// (central differences), including classes beyond the clamp.
    func testTwinGradientByFiniteDifferences() {
        var rng = Xoshiro256(seed: 8)
        let n = 4, h = 1e-6
        var logits = (0..<(n * c)).map { _ in rng.nextNormal() * 2 }
        logits[0] = 14   // p of the other classes of row 0 below 1e-4: clamped, no gradient through them
        let labels = (0..<n).map { _ in rng.nextInt(below: c) }
        var rows: [Double] = []
        for _ in 0..<n {
            let r = (0..<c).map { _ in rng.nextUniform() }
            let s = r.reduce(0, +)
            rows += r.map { 0.9 * $0 / s }
        }
        let loss = ELRLoss(beta: 0.7, lambda: 3)
        func batchLoss(_ z: [Double]) -> Double {
            loss.reference(logits: z, targets: .tracked(labels, rows), count: n, classes: c, weights: nil).losses.reduce(0, +) / Double(n)
        }
        let grad = loss.reference(logits: logits, targets: .tracked(labels, rows), count: n, classes: c, weights: nil).grad
        for i in 0..<(n * c) {
            var plus = logits, minus = logits
            plus[i] += h
            minus[i] -= h
            let numeric = (batchLoss(plus) - batchLoss(minus)) / (2 * h)
            XCTAssertEqual(grad[i], numeric, accuracy: 1e-7 + 1e-5 * abs(numeric), "d/dz[\(i)]")
        }
    }
}
