import Engine
import Foundation
import TestSupport
import Training
import XCTest

/// Co-teaching's selection and forget-rate schedule: a hand-computed case, and the reference
/// code's (`loss_coteaching`, `rate_schedule`; scripts/torch-methods.py coteaching).
final class CoTeachingTests: XCTestCase {
    func select(_ losses: [Float], kept: Int) -> (order: [Int32], weights: [Float]) {
        var order = [Int32](repeating: -1, count: losses.count), weights = [Float](repeating: -1, count: losses.count)
        losses.withUnsafeBufferPointer { CoTeaching.select(losses: $0.baseAddress!, count: losses.count, kept: kept, order: &order, weights: &weights) }
        return (order, weights)
    }

    func testByHand() {
        // Ascending, the tie at 0.1 to the lower position.
        let s = select([0.5, 0.1, 0.9, 0.1, 0.3], kept: 3)
        XCTAssertEqual(s.order, [1, 3, 4, 0, 2])
        XCTAssertEqual(s.weights, [0, 1, 0, 1, 1])
        XCTAssertEqual(select([0.5, 0.1], kept: 0).weights, [0, 0])
        // tau rises linearly over the first num_gradual epochs, from 0 at epoch 1 to forget_rate at epoch num_gradual.
        let taus = (1...12).map { CoTeaching.forgetRate(epoch: $0, forgetRate: 0.6, numGradual: 10, exponent: 1) }
        XCTAssertEqual(taus[0], 0)
        XCTAssertEqual(taus[3], 0.2, accuracy: 1e-15)
        XCTAssertEqual(Array(taus[9...]), [0.6, 0.6, 0.6])
        XCTAssertEqual(CoTeaching.forgetRate(epoch: 10, forgetRate: 0.5, numGradual: 10, exponent: 2), 0.25, "forget_rate ** exponent at the end of the ramp")
        XCTAssertEqual(CoTeaching.forgetRate(epoch: 11, forgetRate: 0.5, numGradual: 10, exponent: 2), 0.5, "then forget_rate itself")
        // int((1 - 0.6) * 128) = int(51.19999...) = 51.
        XCTAssertEqual(CoTeaching.kept(128, forgetRate: 0.6), 51)
        XCTAssertEqual(CoTeaching.kept(128, forgetRate: 0), 128)
    }

    func testAgainstTheReferenceCode() throws {
        let python = ProcessInfo.processInfo.environment["SAMBENCH_PYTHON"] ?? "/usr/bin/python3"
        guard try runCommand(python, ["-c", "import torch, safetensors, numpy"]).status == 0 else {
            throw XCTSkip("no Python with torch, numpy and safetensors (set SAMBENCH_PYTHON): \(python)")
        }
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("coteaching-\(UUID().uuidString).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let r = try runCommand(python, [repoRoot.appendingPathComponent("scripts/torch-methods.py").path, "coteaching", "--out", out])
        XCTAssertEqual(r.status, 0, r.output)
        let f = try SafetensorsFile.read(out)
        let labels = f["labels"]!.int64s.map { Int32($0) }, clean = f["clean"]!.int64s
        let n = labels.count, c = 10
        // Each network's per-sample cross-entropy, as the step computes it.
        func perSample(_ logits: [Float]) -> [Float] {
            var losses = [Float](repeating: 0, count: n)
            _ = labels.withUnsafeBufferPointer { SoftCrossEntropy().compute(logits: logits, targets: .hard($0.baseAddress!), count: n, classes: c, weights: nil, losses: &losses, grad: nil) }
            return losses
        }
        let z1 = f["logits1"]!.floats, z2 = f["logits2"]!.floats
        let l1 = perSample(z1), l2 = perSample(z2)
        for (rate, key) in [(0.2, "rate2"), (0.6, "rate6")] {
            let k = CoTeaching.kept(n, forgetRate: rate)
            XCTAssertEqual(k, Int(f[key + ".num_remember"]!.int64s[0]), key)
            let by1 = select(l1, kept: k), by2 = select(l2, kept: k)
            // Network 1 trains on network 2's small-loss samples, and the other way round.
            XCTAssertEqual(Set(by2.weights.indices.filter { by2.weights[$0] == 1 }), Set(f[key + ".kept2"]!.int64s.map(Int.init)), "\(key): kept for network 1")
            XCTAssertEqual(Set(by1.weights.indices.filter { by1.weights[$0] == 1 }), Set(f[key + ".kept1"]!.int64s.map(Int.init)), "\(key): kept for network 2")
            // Each network's loss: the mean over its kept samples, the reference's times the number kept.
            for (logits, weights, name) in [(z1, by2.weights, "loss1"), (z2, by1.weights, "loss2")] {
                let mean = labels.withUnsafeBufferPointer { y in weights.withUnsafeBufferPointer { w in
                    SoftCrossEntropy().compute(logits: logits, targets: .hard(y.baseAddress!), count: n, classes: c, weights: w.baseAddress!, losses: nil, grad: nil)
                } }
                let reference = f["\(key).\(name)"]!.doubles[0] * Double(k)
                XCTAssertEqual(mean, reference, accuracy: 1e-5 * reference, "\(key) \(name)")
            }
            // Label precision: the share of clean labels among each network's own small-loss samples.
            let precision = f[key + ".precision"]!.doubles
            for (i, s) in [by1, by2].enumerated() {
                let keptClean = s.weights.indices.filter { s.weights[$0] == 1 && clean[$0] == 1 }.count
                XCTAssertEqual(Double(keptClean) / Double(k), precision[i], accuracy: 1e-15, "\(key) precision \(i + 1)")
            }
        }
        for (key, rate, gradual, exponent) in [("schedule.0.6.10.1", 0.6, 10, 1.0), ("schedule.0.45.15.0.5", 0.45, 15, 0.5)] {
            let expected = f[key]!.doubles
            let got = (1...expected.count).map { CoTeaching.forgetRate(epoch: $0, forgetRate: rate, numGradual: gradual, exponent: exponent) }
            XCTAssertEqual(got, expected, "\(key): bit for bit")
        }
    }
}
