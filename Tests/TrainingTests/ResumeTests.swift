import Datasets
import Engine
import Optim
@testable import Training
import XCTest

/// A run stopped after any epoch and started again from its checkpoint ends exactly as the
/// uninterrupted run: same weights bit for bit, same metrics.
final class ResumeTests: XCTestCase {
    struct Stop: Error {}

    /// A tiny model on 128 synthetic images, 4 steps an epoch.
    static func small(epochs: Int, seed: UInt64) throws -> (TrainConfig, PreparedData) {
        var c = TrainConfig()
        c.model = "tiny"
        c.epochs = epochs
        c.batchSize = 32
        c.seed = seed
        c.sharpness = nil
        var spec = DataSpec()
        spec.syntheticTrain = 128
        spec.syntheticTest = 32
        return (c, try DataPreparation.prepare(spec, dataDir: nil))
    }

    /// Every method with SGD and SAM, stopped after its first epoch and resumed, ends as the
    /// uninterrupted run: the same epochs (loss, training accuracy, test accuracy) and weights.
    func testEveryMethodResumesExactly() throws {
        let (base, data) = try Self.small(epochs: 2, seed: 3)
        for method in Methods.all {
            for optimizer: OptimizerConfig in [.sgd, .sam(SAMConfig())] {
                var c = base
                c.lr = 0.05
                c.optimizer = optimizer
                c.method = try Methods.resolve(method.name)
                let what = "\(method.name) \(optimizer.family)"
                let straight = try Trainer(config: c, data: data)
                let expected = try straight.run()
                let path = FileManager.default.temporaryDirectory.appendingPathComponent("resume-\(UUID().uuidString).safetensors").path
                defer { try? FileManager.default.removeItem(atPath: path) }
                XCTAssertThrowsError(try Trainer(config: c, data: data).run(checkpoint: path) { _, _ in throw Stop() }, what)
                var trained: [Int] = []
                let t = try Trainer(config: c, data: data)
                let got = try t.run(checkpoint: path) { _, m in trained.append(m.epoch) }
                XCTAssertEqual(trained, [2], "\(what): resumed after epoch 1")
                XCTAssertEqual(got.epochs.map(\.trainLoss), expected.epochs.map(\.trainLoss), what)
                XCTAssertEqual(got.epochs.map(\.trainAccuracy), expected.epochs.map(\.trainAccuracy), what)
                XCTAssertEqual(got.epochs.map(\.testAccuracy), expected.epochs.map(\.testAccuracy), what)
                XCTAssertEqual(t.state.params.array, straight.state.params.array, "\(what): weights")
            }
        }
    }

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
        XCTAssertEqual(got.stages.map(\.stage), [.train, .bootstrap])
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
        let (c, data) = try Self.small(epochs: 3, seed: 1)
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
            let crafted = String(decoding: try JSONSerialization.data(withJSONObject: progress), as: UTF8.self)
            metadata["sambench.progress"] = crafted
            // Crafted with a matching checksum: the record itself is what is refused.
            metadata[Trainer.checksumKey] = Trainer.checksum(tensors: good.tensors, progress: crafted)
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

    /// A checkpoint whose checksum holds but whose contents no run of this configuration writes
    /// (crafted, or written by a broken build) is a `CorruptCheckpoint` before anything of it is
    /// used: never a crash (a step count near Int64.max, bootstrap labels beyond Int32 trapped),
    /// never a silent resume with other numbers (a missing momentum buffer).
    func testCheckpointsWithAValidChecksumAreCheckedInFull() throws {
        var (c, data) = try Self.small(epochs: 2, seed: 4)
        c.bootstrap = true
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("checked-\(UUID().uuidString).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        // Stopped after the bootstrap stage's first epoch: both networks' stages are in the file.
        XCTAssertThrowsError(try Trainer(config: c, data: data).run(checkpoint: path) { stage, m in
            if stage == .bootstrap && m.epoch == 1 { throw Stop() }
        })
        let good = try SafetensorsFile.read(path)
        XCTAssertEqual(try Trainer(config: c, data: data).checkedHistory(inCheckpoint: path).map(\.stage), [.train, .train, .bootstrap])
        let json = try XCTUnwrap(good.metadata[Trainer.progressKey])
        let iteration = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])?["iteration"] as? Int)
        let weight = try XCTUnwrap(good.tensors.keys.sorted().first { $0.hasSuffix("conv1.weight") || $0.hasSuffix(".weight") })
        let variance = try XCTUnwrap(good.tensors.keys.sorted().first { $0.hasSuffix(".running_var") })
        let batches = try XCTUnwrap(good.tensors.keys.sorted().first { $0.hasSuffix(".num_batches_tracked") })
        let labels = try XCTUnwrap(good[Trainer.bootstrapLabelsKey]).int64s
        func floats(_ name: String, _ change: (inout [Float]) -> Void) -> (String, SafetensorsTensor?) {
            let t = good[name]!
            var v = t.floats
            change(&v)
            return (name, SafetensorsTensor(floats: v, shape: t.shape))
        }
        let tensorCases: [(String, (String, SafetensorsTensor?))] = [
            ("a step count near Int64.max", ("optimizer.step_count", SafetensorsTensor(int64: .max - 1))),
            ("a step count one short", ("optimizer.step_count", SafetensorsTensor(int64: Int64(iteration - 1)))),
            ("no momentum buffer", ("optimizer.momentum_buffer", nil)),
            ("a NaN in the momentum buffer", floats("optimizer.momentum_buffer") { $0[3] = .nan }),
            ("a LookSAM state in a run without LookSAM", ("optimizer.looksam_orthogonal", good["optimizer.momentum_buffer"])),
            ("a negative running variance", floats(variance) { $0[0] = -1 }),
            ("a weight near Float.max", floats(weight) { $0[0] = 3e38 }),
            ("a negative batch count", (batches, SafetensorsTensor(int64: -5))),
            ("a bootstrap label outside the classes", (Trainer.bootstrapLabelsKey, SafetensorsTensor(int64s: [99] + labels.dropFirst()))),
            ("a negative bootstrap label", (Trainer.bootstrapLabelsKey, SafetensorsTensor(int64s: [-1] + labels.dropFirst()))),
            ("a bootstrap label beyond Int32", (Trainer.bootstrapLabelsKey, SafetensorsTensor(int64s: [Int64(Int32.max) + 1] + labels.dropFirst()))),
            ("fewer bootstrap labels than training images", (Trainer.bootstrapLabelsKey, SafetensorsTensor(int64s: Array(labels.dropLast())))),
            ("no bootstrap labels", (Trainer.bootstrapLabelsKey, nil)),
        ]
        let progressCases: [(String, (inout [String: Any]) -> Void)] = [
            ("an accuracy of 150%", { p in
                var h = p["history"] as! [[String: Any]]
                h[0]["testAccuracy"] = 1.5
                p["history"] = h
            }),
            ("a negative first loss", { $0["firstLoss"] = -1.0 }),
            ("an unknown stage", { $0["stage"] = "finetune" }),
            ("a bootstrap stage with no finished train stage", { $0["finished"] = [Any]() }),
        ]
        var cases: [(String, SafetensorsFile)] = tensorCases.map { name, change in
            var tensors = good.tensors
            tensors[change.0] = change.1
            return (name, SafetensorsFile(tensors: tensors, metadata: good.metadata))
        }
        for (name, change) in progressCases {
            var progress = try JSONSerialization.jsonObject(with: Data(json.utf8)) as! [String: Any]
            change(&progress)
            var file = good
            file.metadata[Trainer.progressKey] = String(decoding: try JSONSerialization.data(withJSONObject: progress), as: UTF8.self)
            cases.append((name, file))
        }
        for (name, var file) in cases {
            // Signed with a matching checksum: the contents are what is refused.
            file.metadata[Trainer.checksumKey] = Trainer.checksum(tensors: file.tensors, progress: file.metadata[Trainer.progressKey]!)
            try file.write(to: path)
            XCTAssertThrowsError(try Trainer(config: c, data: data).checkedHistory(inCheckpoint: path), name) {
                XCTAssertTrue($0 is Trainer.CorruptCheckpoint && "\($0)".contains(path), "\(name): \($0)")
            }
            XCTAssertThrowsError(try Trainer(config: c, data: data).run(checkpoint: path), name) {
                XCTAssertTrue($0 is Trainer.CorruptCheckpoint, "\(name): \($0)")
            }
        }
        // The untouched file resumes and ends as the uninterrupted run.
        try good.write(to: path)
        let resumed = try Trainer(config: c, data: data).run(checkpoint: path)
        let straight = try Trainer(config: c, data: data).run()
        XCTAssertEqual(resumed.stages.map { $0.epochs.map(\.trainLoss) }, straight.stages.map { $0.epochs.map(\.trainLoss) })
        XCTAssertEqual(resumed.stages.map { $0.epochs.map(\.testAccuracy) }, straight.stages.map { $0.epochs.map(\.testAccuracy) })
    }

    /// A checkpoint whose bytes are not the ones written (a flipped bit in a weight or in the
    /// progress record, cut short, empty, its checksum gone) is refused as corrupt, never resumed.
    func testCorruptCheckpointsAreRefused() throws {
        let (c, data) = try Self.small(epochs: 2, seed: 3)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("corrupt-\(UUID().uuidString).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        XCTAssertThrowsError(try Trainer(config: c, data: data).run(checkpoint: path) { _, _ in throw Stop() })
        let good = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(try Trainer.history(inCheckpoint: path).count, 1)
        let headerEnd = 8 + Int(good[0]) + Int(good[1]) << 8 + Int(good[2]) << 16
        let key = Array("firstLoss".utf8)
        let progressAt = try XCTUnwrap((0..<(headerEnd - key.count)).first { Array(good[$0..<($0 + key.count)]) == key }) + key.count
        var cases: [(String, [UInt8])] = [
            ("a bit of the last weight", { var b = good; b[b.count - 3] ^= 0x10; return b }()),
            ("a bit of the first weight", { var b = good; b[headerEnd + 1] ^= 0x01; return b }()),
            ("cut short", Array(good.prefix(good.count - 100))),
            ("empty", []),
        ]
        // A digit of the progress record's first loss changed: still valid JSON, other numbers.
        var digit = good
        if let k = (progressAt..<(progressAt + 30)).first(where: { (UInt8(ascii: "1")...UInt8(ascii: "8")).contains(good[$0]) }) { digit[k] += 1 }
        XCTAssertNotEqual(digit, good)
        cases.append(("a digit of the progress record", digit))
        var file = try SafetensorsFile.read(path)
        file.metadata[Trainer.checksumKey] = nil
        cases.append(("no checksum", file.serialized()))
        for (name, bytes) in cases {
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            XCTAssertThrowsError(try Trainer.history(inCheckpoint: path), name) { XCTAssertTrue($0 is Trainer.CorruptCheckpoint, "\(name): \($0)") }
            XCTAssertThrowsError(try Trainer(config: c, data: data).run(checkpoint: path), name) {
                XCTAssertTrue($0 is Trainer.CorruptCheckpoint && "\($0)".contains(path), "\(name): \($0)")
            }
        }
        try Data(good).write(to: URL(fileURLWithPath: path))
        var epochs: [Int] = []
        _ = try Trainer(config: c, data: data).run(checkpoint: path) { _, m in epochs.append(m.epoch) }
        XCTAssertEqual(epochs, [2])
    }

    /// Weights made non-finite by an epoch's last update (its loss was finite) end the run
    /// diverged, not done, and are never saved.
    func testNonFiniteWeightsAtTheEndOfAnEpochAreDiverged() throws {
        let (c, data) = try Self.small(epochs: 1, seed: 5)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("nan-\(UUID().uuidString).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        for (what, poison) in [("a weight NaN", Float.nan), ("a weight infinite", -Float.infinity)] {
            let t = try Trainer(config: c, data: data)
            let result = try t.run(checkpoint: path, onBatch: { _, _, done, total in
                if done == total { t.state.params.pointer[7] = poison }
            })
            guard case let .diverged(_, epoch, loss) = result.status else { return XCTFail("\(what): \(result.status)") }
            XCTAssertEqual(epoch, 1, what)
            XCTAssertNil(loss, what)
            XCTAssertTrue(result.epochs.isEmpty, what)
            XCTAssertFalse(FileManager.default.fileExists(atPath: path), what)
        }
    }
}
