import Datasets
import Engine
import Optim
import Training
import XCTest

final class TrainingTests: XCTestCase {
    func config(epochs: Int = 4) -> TrainConfig {
        var c = TrainConfig()
        c.model = "tiny"
        c.epochs = epochs
        c.batchSize = 64
        c.lr = 0.05
        c.seed = 3
        c.sharpness = nil
        return c
    }

    func data(train: Int, test: Int, seed: UInt64 = 1, classes: Int = 10) throws -> PreparedData {
        var spec = DataSpec()
        spec.syntheticTrain = train
        spec.syntheticTest = test
        spec.syntheticSeed = seed
        spec.syntheticClasses = classes
        return try DataPreparation.prepare(spec, dataDir: nil)
    }

    func testShortRunLearnsFarAboveChance() throws {
        EngineThreads.set(2)
        let trainer = try Trainer(config: config(), data: try data(train: 3000, test: 500))
        var seen: [Int] = []
        let result = try trainer.run { stage, m in XCTAssertEqual(stage, .train); seen.append(m.epoch) }
        let history = result.epochs
        XCTAssertEqual(result.status, .done)
        XCTAssertEqual(seen, [1, 2, 3, 4])
        XCTAssertEqual(history.count, 4)
        // Chance is 10%.
        XCTAssertGreaterThan(history.last!.testAccuracy, 0.7, "test accuracy \(history.map(\.testAccuracy))")
        XCTAssertLessThan(history.last!.trainLoss, history.first!.trainLoss)
        XCTAssertEqual(history.last!.lr, Float(0.05) * Float(0.5 * (1 + cos(Double.pi * Double(4 * 46 - 1) / Double(4 * 46)))), accuracy: 1e-6)
    }

    func testSameSeedSameRun() throws {
        let d = try data(train: 640, test: 100, seed: 2)
        let a = try Trainer(config: config(epochs: 2), data: d).run().epochs
        let b = try Trainer(config: config(epochs: 2), data: d).run().epochs
        XCTAssertEqual(a.map(\.trainLoss), b.map(\.trainLoss))
        XCTAssertEqual(a.map(\.testAccuracy), b.map(\.testAccuracy))
        var other = config(epochs: 2)
        other.seed = 4
        let c = try Trainer(config: other, data: d).run().epochs
        XCTAssertNotEqual(a.map(\.trainLoss), c.map(\.trainLoss))
    }

    func testSyntheticDataIsSeeded() {
        let a = SyntheticData.make(count: 50, classes: 100, seed: 9)
        let b = SyntheticData.make(count: 50, classes: 100, seed: 9)
        let c = SyntheticData.make(count: 50, classes: 100, seed: 10)
        XCTAssertEqual(a.pixels, b.pixels)
        XCTAssertEqual(a.labels, b.labels)
        XCTAssertNotEqual(a.pixels, c.pixels)
        XCTAssertTrue(a.labels.allSatisfy { $0 >= 0 && $0 < 100 })
    }

    func testBadConfigurationsAreRefused() throws {
        let data = try self.data(train: 100, test: 10)
        var c = config()
        c.batchSize = 128
        XCTAssertThrowsError(try Trainer(config: c, data: data)) { XCTAssertTrue("\($0)".contains("fewer than one batch")) }
        c = config(); c.model = "resnet21"
        XCTAssertThrowsError(try Trainer(config: c, data: data)) { XCTAssertTrue("\($0)".contains("6n+2")) }
        c = config(); c.model = "vgg"
        XCTAssertThrowsError(try Trainer(config: c, data: data)) { XCTAssertTrue("\($0)".contains("unknown model")) }
        // A schedule is a closed set: a stored configuration naming another one does not decode.
        let json = String(decoding: try JSONEncoder().encode(config()), as: UTF8.self).replacingOccurrences(of: "\"cosine\"", with: "\"linear\"")
        XCTAssertTrue(json.contains("\"linear\""))
        XCTAssertThrowsError(try JSONDecoder().decode(TrainConfig.self, from: Data(json.utf8)))
        c = config(); c.sgd.nesterov = true; c.sgd.momentum = 0
        XCTAssertThrowsError(try Trainer(config: c, data: data)) { XCTAssertTrue("\($0)".contains("nesterov")) }
    }

    func testScheduleShapes() throws {
        let cos = LRSchedule(base: 0.1, kind: .cosine(floor: 0.001), warmupIterations: 10, totalIterations: 110)
        XCTAssertEqual(cos.lr(at: 0), 0.01, accuracy: 1e-7)       // warmup: base * 1/10
        XCTAssertEqual(cos.lr(at: 9), 0.1, accuracy: 1e-7)
        XCTAssertEqual(cos.lr(at: 10), 0.1, accuracy: 1e-7)       // cosine starts at base
        XCTAssertEqual(cos.lr(at: 60), 0.0505, accuracy: 1e-6)    // halfway: (base + floor) / 2
        XCTAssertEqual(cos.lr(at: 110), 0.001, accuracy: 1e-7)    // ends at the floor
        let ms = LRSchedule(base: 0.1, kind: .multiStep(milestones: [5, 8], gamma: 0.1), totalIterations: 10)
        for (i, expected) in zip([0, 4, 5, 7, 8, 9], [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]) {
            XCTAssertEqual(ms.lr(at: i), Float(expected), accuracy: 1e-8, "multistep at \(i)")
        }
        XCTAssertEqual(LRSchedule(base: 0.3, totalIterations: 5).lr(at: 4), 0.3)
        XCTAssertThrowsError(try LRSchedule(base: -1, totalIterations: 5).validate())
        XCTAssertThrowsError(try LRSchedule(base: 0.1, kind: .cosine(floor: 0.2), totalIterations: 5).validate())
    }

    func testSGDMatchesItsFormulas() throws {
        // Without momentum: w -= lr (g + wd w). With momentum, dampening: buf = mu buf + (1 - damp) d.
        let w = FloatBuffer([1, -2]), g = FloatBuffer([0.5, 0.25])
        let plain = try SGD(parameterCount: 2, config: SGDConfig(momentum: 0, weightDecay: 0.1))
        plain.step(params: w, grads: g, lr: 0.1)
        XCTAssertEqual(w.array[0], 1 - 0.1 * (0.5 + 0.1), accuracy: 1e-7)
        XCTAssertEqual(w.array[1], -2 - 0.1 * (0.25 - 0.2), accuracy: 1e-7)
        let v = FloatBuffer([1]), gv = FloatBuffer([1])
        let damp = try SGD(parameterCount: 1, config: SGDConfig(momentum: 0.5, dampening: 0.5, weightDecay: 0))
        damp.step(params: v, grads: gv, lr: 1)     // buf = 1 (first step: no dampening)
        damp.step(params: v, grads: gv, lr: 1)     // buf = 0.5 + 0.5 = 1
        XCTAssertEqual(v.array[0], -1, accuracy: 1e-7)
    }
}
