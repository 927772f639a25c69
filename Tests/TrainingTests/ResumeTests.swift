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

    /// A checkpoint whose progress record is out of range (crafted or damaged) is refused with
    /// the file named, never resumed: a negative or too large epoch count crashed, a huge
    /// iteration resumed with learning rate 0, a history that does not match trained on.
    func testProgressOutOfRangeIsRefused() throws {
        var c = TrainConfig()
        c.model = "tiny"
        c.epochs = 3
        c.batchSize = 32
        c.seed = 1
        c.sharpness = nil
        var spec = DataSpec()
        spec.syntheticTrain = 128
        spec.syntheticTest = 32
        let data = try DataPreparation.prepare(spec, dataDir: nil)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("progress-\(UUID().uuidString).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        XCTAssertThrowsError(try Trainer(config: c, data: data).run(checkpoint: path) { _, m in if m.epoch == 1 { throw Stop() } })
        let good = try SafetensorsFile.read(path)
        let json = try XCTUnwrap(good.metadata["sambench.progress"])
        let cases: [(String, (inout [String: Any]) -> Void)] = [
            ("negative epochs", { $0["completedEpochs"] = -5 }),
            ("epochs past the end", { $0["completedEpochs"] = 99 }),
            ("huge iteration", { $0["iteration"] = 1 << 60 }),
            ("negative iteration", { $0["iteration"] = -1 }),
            ("history short", { $0["history"] = [Any]() }),
        ]
        for (name, change) in cases {
            var progress = try JSONSerialization.jsonObject(with: Data(json.utf8)) as! [String: Any]
            change(&progress)
            var metadata = good.metadata
            metadata["sambench.progress"] = String(decoding: try JSONSerialization.data(withJSONObject: progress), as: UTF8.self)
            try SafetensorsFile(tensors: good.tensors, metadata: metadata).write(to: path)
            XCTAssertThrowsError(try Trainer(config: c, data: data).run(checkpoint: path), name) {
                XCTAssertTrue("\($0)".contains(path) && "\($0)".contains("progress record"), "\(name): \($0)")
            }
        }
        // The untouched record resumes after epoch 1 and finishes.
        try good.write(to: path)
        var epochs: [Int] = []
        _ = try Trainer(config: c, data: data).run(checkpoint: path) { _, m in epochs.append(m.epoch) }
        XCTAssertEqual(epochs, [2, 3])
    }
}
