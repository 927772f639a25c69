import Foundation
@testable import Runner
import Store
import Suites
import Training
import XCTest

/// The live view's arithmetic and layout, with times given (never measured).
final class DisplayTests: XCTestCase {
    let t0 = Date(timeIntervalSince1970: 1_000_000)

    func testThroughputAndTimeLeftFromBatchReports() {
        var a = ActiveRun(label: "cifar10 resnet20 symmetric-0.6 sam(rho=0.05) seed 2", epochs: 10, batchSize: 128, started: t0)
        XCTAssertNil(a.eta)
        a.observe(stage: .train, epoch: 0, batch: 10, batches: 100, at: t0.addingTimeInterval(10))
        XCTAssertNil(a.imagesPerSecond, "one report: no rate yet")
        XCTAssertNil(a.eta)
        a.observe(stage: .train, epoch: 0, batch: 30, batches: 100, at: t0.addingTimeInterval(20))
        XCTAssertEqual(a.imagesPerSecond!, 20.0 * 128 / 10, accuracy: 1e-9)
        XCTAssertEqual(a.elapsed, 20, accuracy: 1e-9)
        // 2% of the run in 10 s, 97% left: 485 s, before any epoch has ended.
        XCTAssertEqual(a.fraction, 0.03, accuracy: 1e-12)
        XCTAssertEqual(a.eta!, 0.97 * 10 / 0.02, accuracy: 1e-6)
        // The epoch's evaluation is part of the rate once it ends.
        a.endEpoch(stage: .train, epoch: 1, at: t0.addingTimeInterval(50))
        XCTAssertEqual(a.fraction, 0.1, accuracy: 1e-12)
        XCTAssertEqual(a.eta!, 0.9 * 40 / 0.09, accuracy: 1e-6)
        // A new epoch's first report does not count the pause as training time.
        a.observe(stage: .train, epoch: 1, batch: 5, batches: 100, at: t0.addingTimeInterval(60))
        XCTAssertEqual(a.imagesPerSecond!, 20.0 * 128 / 10, accuracy: 1e-9)
        // Bootstrap: two stages, the second starts at half.
        var b = ActiveRun(label: "x", epochs: 4, batchSize: 8, stages: 2, started: t0)
        b.endEpoch(stage: .bootstrap, epoch: 2, at: t0.addingTimeInterval(1))
        XCTAssertEqual(b.fraction, 6.0 / 8, accuracy: 1e-12)
    }

    func testSuiteTimeLeft() {
        var a = ActiveRun(label: "a", epochs: 10, batchSize: 1, started: t0)
        a.endEpoch(stage: .train, epoch: 0, at: t0)
        a.endEpoch(stage: .train, epoch: 5, at: t0.addingTimeInterval(50))   // 10 s per epoch
        XCTAssertEqual(a.eta!, 50, accuracy: 1e-9)
        // Measured per unit by finished epochs: 10 s; a queued SAM run of 10 epochs costs 20 units.
        XCTAssertEqual(Progress.suiteETA(active: [(a, 1)], queued: [20], secondsPerUnit: 10, jobs: 1)!, 50 + 200, accuracy: 1e-9)
        XCTAssertEqual(Progress.suiteETA(active: [(a, 1)], queued: [20], secondsPerUnit: 10, jobs: 2)!, 125, accuracy: 1e-9)
        // Before any epoch is stored, from the active run's own rate (50 s for 5 units left).
        XCTAssertEqual(Progress.suiteETA(active: [(a, 1)], queued: [10], secondsPerUnit: nil, jobs: 1)!, 50 + 100, accuracy: 1e-9)
        XCTAssertNil(Progress.suiteETA(active: [(ActiveRun(label: "b", epochs: 3), 1)], queued: [3], secondsPerUnit: nil, jobs: 1))
    }

    func testLiveViewFitsTheTerminalWithTheProgressFirst() {
        var runs: [ActiveRun] = []
        for (i, label) in ["cifar10 resnet20 symmetric-0.6 sgd seed 0", "cifar10 wrn16_4 asymmetric-0.4 sam(rho=0.05) seed 12"].enumerated() {
            var a = ActiveRun(label: label, epochs: 200, batchSize: 128, started: t0)
            a.observe(stage: .train, epoch: 40 + i, batch: 100, batches: 390, at: t0.addingTimeInterval(1))
            a.observe(stage: .train, epoch: 40 + i, batch: 200, batches: 390, at: t0.addingTimeInterval(31))
            a.testAccuracy = 0.5
            runs.append(a)
        }
        let p = Progress(total: 24, finished: 6, failed: 1, active: runs, eta: 7325)
        for width in [40, 70, 120, 200] {
            let lines = ConsoleDisplay.lines(p, width: width)
            XCTAssertEqual(lines.count, 3)
            for line in lines { XCTAssertLessThanOrEqual(line.count, width, "\(width): \(line)") }
            XCTAssertTrue(lines[0].hasPrefix("["), lines[0])
            if width >= 70 { XCTAssertTrue(lines[0].contains("6/24 runs (1 failed), 2 active, ETA 2h 2m"), lines[0]) }
            XCTAssertTrue(lines[1].hasPrefix("  ["), lines[1])
        }
        let narrow = ConsoleDisplay.lines(p, width: 70)
        XCTAssertTrue(narrow[2].contains("e42/200 b200/390 427im/s 31s ETA "), narrow[2])
        XCTAssertTrue(narrow[2].hasSuffix("  …seed 12"), "whole words dropped from the front: \(narrow[2])")
        XCTAssertTrue(ConsoleDisplay.lines(p, width: 80)[2].hasSuffix("  …sam(rho=0.05) seed 12"), ConsoleDisplay.lines(p, width: 80)[2])
        let wide = ConsoleDisplay.lines(p, width: 200)
        XCTAssertTrue(wide[1].contains("ep 41/200 b 200/390 427 img/s 31s ETA ") && wide[1].contains("test 50.0%"), wide[1])
        XCTAssertTrue(wide[1].hasSuffix("  cifar10 resnet20 symmetric-0.6 sgd seed 0"), "the whole label where it fits: \(wide[1])")
        XCTAssertEqual(ConsoleDisplay.bar(0.25, 8, percent: false), "[##------]")
    }

    func testWallTimeEstimateFromMeasuredSteps() throws {
        let suite = try Suite.parse("""
            name = "e"
            [defaults]
            dataset = "synthetic"
            synthetic_train = 1100
            synthetic_test = 300
            model = "tiny"
            epochs = 3
            batch_size = 100
            validation = 0.1
            [[noise]]
            kind = "symmetric"
            rates = [0.5]
            [[optimizer]]
            name = "sgd"
            [[optimizer]]
            name = "sam"
            rho = [0.05]
            look_interval = [1, 4]
            """, file: "e.toml")
        let runs = suite.runs.map { KeyedRun(spec: $0, identity: "synthetic") }
        var asked: [String] = []
        let e = try WallTimeEstimate.make(runs, jobs: 2, threads: 1) { model, mode, batch, threads in
            asked.append("\(model) \(mode) \(batch) \(threads)")
            return ([.sgd: 0.2, .sam: 0.5, .eval: 0.1] as [Benchmark.Mode: Double])[mode]!
        }
        XCTAssertEqual(asked, ["tiny sgd 100 1", "tiny sam 100 1", "tiny eval 100 1"], "one measurement per model and batch")
        // 110 validation images, 990 trained: 9 steps; evaluated 300 test + 110 validation + 495 corrupted at 1 ms.
        let eval = Double(300 + 110 + 495) * 0.001
        XCTAssertEqual(e.perRun[0], 3 * (9 * 0.2 + eval), accuracy: 1e-9)
        XCTAssertEqual(e.perRun[1], 3 * (9 * 0.5 + eval), accuracy: 1e-9)
        XCTAssertEqual(e.perRun[2], 3 * (9 * (0.2 + 0.3 / 4) + eval), accuracy: 1e-9, "LookSAM: the extra pass one step in four")
        // Two lanes, runs taken in order by the first free one: SGD and SAM start, LookSAM follows SGD.
        XCTAssertEqual(e.wall, max(e.perRun[0] + e.perRun[2], e.perRun[1]), accuracy: 1e-9)
    }

    /// A method's passes per step (MethodDescriptor.passesPerStep) scale the estimate's steps and
    /// the runner's cost, for every registered method, beside SAM's extra pass.
    func testEveryMethodsPassesScaleTheEstimate() throws {
        let methods = Methods.all.map { "[[method]]\nname = \"\($0.name)\"" }.joined(separator: "\n")
        let suite = try Suite.parse("""
            name = "m"
            [defaults]
            dataset = "synthetic"
            synthetic_train = 1000
            synthetic_test = 300
            model = "tiny"
            epochs = 2
            batch_size = 100
            \(methods)
            [[optimizer]]
            name = "sgd"
            [[optimizer]]
            name = "sam"
            """, file: "m.toml")
        let runs = suite.runs.map { KeyedRun(spec: $0, identity: "synthetic") }
        XCTAssertEqual(runs.count, 2 * Methods.all.count)
        let e = try WallTimeEstimate.make(runs, jobs: 1, threads: 1) { _, mode, _, _ in ([.sgd: 0.2, .sam: 0.5, .eval: 0.1] as [Benchmark.Mode: Double])[mode]! }
        for (r, seconds) in zip(runs, e.perRun) {
            let passes = Methods.passesPerStep(r.spec.config.method)
            XCTAssertEqual(passes, Methods.named(r.spec.config.method?.name ?? "ce")!.passesPerStep)
            let sam = r.spec.config.optimizer.sam != nil
            XCTAssertEqual(seconds, 2 * (10 * (sam ? 0.5 : 0.2) * passes + 300 * 0.001), accuracy: 1e-9, r.spec.label)
            XCTAssertEqual(Runner.cost(r), (sam ? 2 : 1) * passes, r.spec.label)
        }
    }
}
