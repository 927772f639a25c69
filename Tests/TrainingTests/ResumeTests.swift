import Datasets
import Engine
import Optim
import Training
import XCTest

/// A run stopped after any epoch and started again from its checkpoint ends exactly as the
/// uninterrupted run: same weights bit for bit, same metrics.
final class ResumeTests: XCTestCase {
    struct Stop: Error {}

    func testInterruptedRunsResumeExactly() throws {
        var c = TrainConfig()
        c.model = "tiny"
        c.epochs = 2
        c.batchSize = 32
        c.lr = 0.05
        c.seed = 4
        c.bootstrap = true
        c.optimizer = .sam(SAMConfig(lookInterval: 3))
        c.sharpness = nil
        var spec = DataSpec()
        spec.syntheticTrain = 320
        spec.syntheticTest = 64
        spec.noise = NoiseSpec(kind: .symmetric, rate: 0.3, seed: 2)
        let data = try DataPreparation.prepare(spec, dataDir: nil)

        let straight = try Trainer(config: c, data: data)
        let expected = try straight.run()

        let path = FileManager.default.temporaryDirectory.appendingPathComponent("resume-\(UUID().uuidString).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        // Stop after each epoch in turn (train 1, train 2, bootstrap 1), resuming every time.
        var result: RunResult?
        var epochsSeen = 0
        var epochsPerRun: [[String]] = []
        for stopAt in 1...4 {
            let t = try Trainer(config: c, data: data)
            epochsPerRun.append([])
            do {
                result = try t.run(checkpoint: path) { stage, m in
                    epochsSeen += 1
                    epochsPerRun[epochsPerRun.count - 1].append("\(stage) \(m.epoch)")
                    if epochsSeen == stopAt && stopAt < 4 { throw Stop() }
                }
                XCTAssertEqual(t.state.params.array, straight.state.params.array, "resumed weights differ")
                XCTAssertEqual(t.state.stats.array, straight.state.stats.array, "resumed BN statistics differ")
            } catch is Stop {
                continue
            }
        }
        // Each start trained only the epochs left: the runs resumed rather than restarted.
        XCTAssertEqual(epochsPerRun, [["train 1"], ["train 2"], ["bootstrap 1"], ["bootstrap 2"]])
        let got = try XCTUnwrap(result)
        XCTAssertEqual(got.stages.map(\.stage), ["train", "bootstrap"])
        XCTAssertEqual(got.stages.map(\.relabelled), expected.stages.map(\.relabelled))
        for (a, b) in zip(got.stages, expected.stages) {
            XCTAssertEqual(a.epochs.map(\.trainLoss), b.epochs.map(\.trainLoss))
            XCTAssertEqual(a.epochs.map(\.testAccuracy), b.epochs.map(\.testAccuracy))
            XCTAssertEqual(a.epochs.map(\.corruptedNoisyAccuracy), b.epochs.map(\.corruptedNoisyAccuracy))
        }

        // Another configuration must not pick the checkpoint up.
        var other = c
        other.lr = 0.1
        XCTAssertThrowsError(try Trainer(config: other, data: data).run(checkpoint: path)) {
            XCTAssertTrue("\($0)".contains("another configuration"), "\($0)")
        }
    }
}
