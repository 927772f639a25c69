import Engine
import Foundation
import TestSupport
import Datasets
import Optim
@testable import Training
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
        let f = try torchMethods("coteaching")
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

    /// A small noisy run: a tiny model on 256 synthetic images with 40% symmetric noise.
    func run(_ optimizer: OptimizerConfig, forgetRate: Double = 0.5, numGradual: Double = 1, epochs: Int = 2) throws -> (TrainConfig, PreparedData) {
        var c = TrainConfig()
        (c.model, c.epochs, c.batchSize, c.lr, c.seed, c.sharpness, c.optimizer) = ("tiny", epochs, 32, 0.05, 5, nil, optimizer)
        c.method = try Methods.resolve("coteaching", ["forget_rate": forgetRate, "num_gradual": numGradual])
        var spec = DataSpec()
        (spec.syntheticTrain, spec.syntheticTest) = (256, 64)
        spec.noise = NoiseSpec(kind: .symmetric, rate: 0.4, seed: 2)
        return (c, try DataPreparation.prepare(spec, dataDir: nil))
    }

    /// One Co-teaching step equals, network by network, a plain step of that network on the
    /// batch weighted by the other's small-loss selection, the selection taken from each
    /// network's first-pass logits (a forward of a copy, so that nothing is shared): weights and
    /// BN statistics bit for bit, with SGD and with SAM.
    func testAStepIsEachNetworkTrainedOnTheOthersSelection() throws {
        for optimizer: OptimizerConfig in [.sgd, .sam(SAMConfig(rho: 0.1))] {
            let (c, data) = try run(optimizer)
            let trainer = try Trainer(config: c, data: data)
            let peer = try CoTeachingPeer(trainer: trainer, data: data)
            let b = c.batchSize, classes = data.classes
            let make = { (state: ModelState) in try TrainStep(state: state, batchSize: b, sgd: c.sgd, optimizer: c.optimizer, method: c.method, seed: c.seed) }
            // The copies the plain steps train, and the copies whose forward ranks the batch.
            let copies = (0..<4).map { _ in ModelState(model: trainer.model, seed: 0) }
            copies[0].copy(from: trainer.state); copies[1].copy(from: peer.state); copies[2].copy(from: trainer.state); copies[3].copy(from: peer.state)
            let one = try make(trainer.state)
            var input = [Float](repeating: 0, count: b * RawImages.imageBytes)
            let indices = (0..<Int32(b)).map { $0 * 3 }
            let labels = indices.map { data.trainLabels[Int($0)] }
            input.withUnsafeMutableBufferPointer { BatchEvaluator.normalise(data.trainImages, indices.map(Int.init)[...], normalization: data.normalization, into: $0.baseAddress!) }
            peer.startEpoch(1)
            XCTAssertEqual(peer.tau, 0.5)
            let k = CoTeaching.kept(b, forgetRate: 0.5)
            let seed: UInt64 = 77, peerSeed = splitMix64(seed ^ 0x7065_6572)
            _ = input.withUnsafeBufferPointer { x in labels.withUnsafeBufferPointer { y in indices.withUnsafeBufferPointer { i in
                peer.step(one, input: x.baseAddress!, labels: y.baseAddress!, indices: i.baseAddress!, lr: 0.05, dropoutSeed: seed, iteration: 0)
            } } }
            // By hand: each copy's first-pass logits, per-sample losses, the selections, then plain weighted steps.
            var weights: [[Float]] = []
            for (state, dropout) in [(copies[3], peerSeed), (copies[2], seed)] {
                let ex = try DNNLExecutor(state: state, batchSize: b)
                let z = input.withUnsafeBufferPointer { ex.forward(input: $0.baseAddress!, mode: .train(bnMomentum: 0.1, dropoutSeed: dropout)) }
                var losses = [Float](repeating: 0, count: b)
                _ = labels.withUnsafeBufferPointer { SoftCrossEntropy().compute(logits: z, targets: .hard($0.baseAddress!), count: b, classes: classes, weights: nil, losses: &losses, grad: nil) }
                weights.append(select(losses, kept: k).weights)
            }
            XCTAssertEqual(weights[0].reduce(0, +), Float(k))
            XCTAssertNotEqual(weights[0], weights[1], "the two networks rank the batch differently")
            for (state, w, dropout, name) in [(copies[0], weights[0], seed, "network 1"), (copies[1], weights[1], peerSeed, "network 2")] {
                let s = try make(state)
                input.withUnsafeBufferPointer { x in labels.withUnsafeBufferPointer { y in w.withUnsafeBufferPointer { wp in
                    _ = s.step(PreparedBatch(input: x.baseAddress!, targets: .hard(y.baseAddress!), labels: y.baseAddress!, weights: wp.baseAddress!), lr: 0.05, dropoutSeed: dropout)
                } } }
                let trained = name == "network 1" ? trainer.state : peer.state
                XCTAssertEqual(trained.params.array, state.params.array, "\(optimizer.family) \(name): weights")
                XCTAssertEqual(trained.stats.array, state.stats.array, "\(optimizer.family) \(name): BN statistics")
            }
        }
    }

    /// A Co-teaching run stopped after its first epoch and resumed ends as the uninterrupted run:
    /// both networks' weights, every epoch's numbers (the second network's too); tau ramps over
    /// num_gradual epochs; the selections keep more clean labels than the noise leaves (60%).
    func testARunResumesExactlyAndRecordsBothNetworks() throws {
        for optimizer: OptimizerConfig in [.sgd, .sam(SAMConfig(rho: 0.1))] {
            let (c, data) = try run(optimizer, forgetRate: 0.4, numGradual: 3, epochs: 4)
            let straight = try Trainer(config: c, data: data)
            let expected = try straight.run()
            XCTAssertEqual(expected.epochs.map(\.forgetRate), [0, 0.2, 0.4, 0.4])
            XCTAssertTrue(expected.epochs.allSatisfy { $0.peerTestAccuracy != nil && $0.selectionPrecision != nil && $0.peerSelectionPrecision != nil })
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("coteaching-\(UUID().uuidString).safetensors").path
            defer { try? FileManager.default.removeItem(atPath: path) }
            struct Stop: Error {}
            XCTAssertThrowsError(try Trainer(config: c, data: data).run(checkpoint: path) { _, m in if m.epoch == 2 { throw Stop() } })
            XCTAssertNotNil(try SafetensorsFile.read(path)["peer.optimizer.step_count"], "the second network is in the checkpoint")
            let t = try Trainer(config: c, data: data)
            let got = try t.run(checkpoint: path)
            var a = got.epochs, e = expected.epochs
            for i in a.indices { (a[i].seconds, a[i].imagesPerSecond, e[i].seconds, e[i].imagesPerSecond) = (0, 0, 0, 0) }
            XCTAssertEqual(a, e, "\(optimizer.family): every epoch's numbers")
            XCTAssertEqual(t.state.params.array, straight.state.params.array, "\(optimizer.family): network 1's weights")
            XCTAssertEqual(got.stages[0].detection, expected.stages[0].detection)
        }
    }
}
