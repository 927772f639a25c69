import Foundation
import Suites
import TestSupport
import XCTest

/// Run keys are where a result lives: a change to the configuration types (a new setting, a
/// method axis) must not move the results of suites that do not use it. `Frozen/` holds copies
/// of shipped suites as they were when the method axis was added (test fixtures, so later
/// recalibrations of the shipped files do not matter) and `Frozen/keys.txt` every key computed
/// for them by the code of that day (commit dba8bd6), with the data identity each would have
/// with this workplace's CIFAR-10 build. `SAMBENCH_WRITE_FROZEN_KEYS=1` rewrites the file; do
/// that only for a deliberate `RunKey.version` bump.
final class FrozenKeysTests: XCTestCase {
    static let dir = repoRoot.appendingPathComponent("Tests/SuitesTests/Frozen")
    static let cifar10 = "cifar10:sha256:243b5a7b31eaea84ec6ceba0efc72d1ab41c97723caba80ded875bb8626e2fd1"

    /// One line per run: suite, position, then the run's key, group, setting, family and base keys.
    static func lines() throws -> [String] {
        var out: [String] = []
        for name in ["quick", "ci", "paper-cpu-4k", "paper-cpu"] {
            let suite = try Suite.load(dir.appendingPathComponent(name + ".toml").path)
            for (i, spec) in suite.runs.enumerated() {
                let identity = spec.data.dataset == .synthetic ? "synthetic" : cifar10
                let k = RunKey.keys(spec, identity: identity)
                out.append([name, String(i), k.key, k.group, k.setting, k.family, k.base].joined(separator: " "))
            }
        }
        return out
    }

    func testKeysOfSuitesWithoutMethodsDoNotMove() throws {
        let file = Self.dir.appendingPathComponent("keys.txt")
        let now = try Self.lines()
        XCTAssertGreaterThan(now.count, 20, "the fixtures expand to runs")
        if ProcessInfo.processInfo.environment["SAMBENCH_WRITE_FROZEN_KEYS"] == "1" {
            try (now.joined(separator: "\n") + "\n").write(to: file, atomically: true, encoding: .utf8)
        }
        let frozen = try String(contentsOf: file, encoding: .utf8).split(separator: "\n").map(String.init)
        XCTAssertEqual(now.count, frozen.count, "runs per fixture changed")
        for (a, b) in zip(now, frozen) { XCTAssertEqual(a, b, "a key moved") }
    }
}
