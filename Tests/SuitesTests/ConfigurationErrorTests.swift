import Datasets
import Engine
import Foundation
import Optim
@testable import Suites
import Training
import XCTest

/// Every configuration a run cannot use is refused with the setting it concerns, named as a suite
/// names it, so that a suite blames that key without reading the message.
final class ConfigurationErrorTests: XCTestCase {
    static var suiteKeys: Set<String> {
        Set(Settings.all.map(\.name) + Settings.optimizerKeys + Settings.noiseKeys + Methods.parameterNames + ["method"])
    }

    func setting(of body: () throws -> Void) -> String? {
        do { try body() } catch { return (error as? ConfigurationError)?.setting ?? "not a ConfigurationError: \(error)" }
        return nil
    }

    func testEveryRefusedConfigurationNamesItsSuiteKey() {
        var configs: [(String, (inout TrainConfig) -> Void)] = [
            ("epochs", { $0.epochs = 0 }), ("batch_size", { $0.batchSize = 0 }), ("image_size", { $0.imageSize = 4 }),
            ("divergence_factor", { $0.divergenceFactor = 1 }), ("crop_padding", { $0.augmentation.cropPadding = -1 }),
            ("cutout", { $0.augmentation.cutout = -1 }), ("momentum", { $0.sgd.momentum = -1 }), ("weight_decay", { $0.sgd.weightDecay = -1 }),
            ("nesterov", { $0.sgd = SGDConfig(momentum: 0, weightDecay: 0, nesterov: true) }),
            ("rho", { $0.optimizer = .sam(SAMConfig(variant: .sam, rho: -1)) }), ("eta", { $0.optimizer = .sam(SAMConfig(variant: .asam, eta: -1)) }),
            ("micro_batch", { $0.optimizer = .sam(SAMConfig(variant: .sam, microBatch: 48)) }),
            ("look_interval", { $0.optimizer = .sam(SAMConfig(variant: .sam, lookInterval: 0)) }),
            ("look_alpha", { $0.optimizer = .sam(SAMConfig(variant: .sam, lookAlpha: -1)) }),
            ("label_smoothing", { $0.method = try! Methods.resolve("ls"); $0.labelSmoothing = 0.1 }),
            ("micro_batch", { $0.method = try! Methods.resolve("coteaching"); $0.optimizer = .sam(SAMConfig(variant: .sam, microBatch: 32)) }),
            ("method", { $0.method = MethodConfig(name: "nonesuch", parameters: [:]) }),
            ("q", { $0.method = MethodConfig(name: "gce", parameters: ["q": 7]) }),
        ]
        configs.append(("sharpness", { c in var s = SharpnessConfig(); s.batches = 0; c.sharpness = s }))
        for (expected, change) in configs {
            var c = TrainConfig()
            change(&c)
            XCTAssertEqual(setting { try c.validate() }, expected)
            XCTAssertTrue(Self.suiteKeys.contains(expected), expected)
        }
        let schedules: [(String, (inout TrainConfig) -> Void)] = [
            ("lr", { $0.lr = 0 }), ("milestones", { $0.schedule = .multistep; $0.milestones = [-1] }),
        ]
        for (expected, change) in schedules {
            var c = TrainConfig()
            change(&c)
            XCTAssertEqual(setting { _ = try c.lrSchedule(iterationsPerEpoch: 10) }, expected)
        }
        let data: [(String, (inout DataSpec) -> Void)] = [
            ("validation", { $0.validationFraction = 1 }), ("subset", { $0.trainSubset = 0 }), ("test_subset", { $0.testSubset = 0 }),
            ("classes", { $0.classes = [1] }), ("classes", { $0.classes = [1, 1] }), ("classes", { $0.dataset = .cifar10; $0.classes = [0, 10] }),
            ("rate", { $0.noise = NoiseSpec(kind: .symmetric, rate: 2) }), ("std", { $0.noise = NoiseSpec(kind: .instance, rate: 0.2, instanceStd: 0) }),
        ]
        for (expected, change) in data {
            var d = DataSpec()
            change(&d)
            XCTAssertEqual(setting { try d.validate() }, expected)
            XCTAssertTrue(Self.suiteKeys.contains(expected), expected)
        }
    }
}
