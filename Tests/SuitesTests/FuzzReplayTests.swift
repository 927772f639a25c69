import Foundation
import Fuzzing
import Suites
import TestSupport
import XCTest

/// Every committed seed of the fuzz corpora (Tests/Fuzz/corpus/) and every input a fuzzer once crashed
/// on (Tests/Fuzz/regressions/) replayed through the same entry points the libFuzzer targets call: an
/// input that traps would end this test process.
final class FuzzReplayTests: XCTestCase {
    func inputs(_ folder: String, _ entry: FuzzEntry) throws -> [(String, [UInt8])] {
        let dir = repoRoot.appendingPathComponent("Tests/Fuzz/\(folder)/\(entry.rawValue)")
        guard FileManager.default.fileExists(atPath: dir.path) else { return [] }
        return try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted().map {
            ($0, [UInt8](try Data(contentsOf: dir.appendingPathComponent($0))))
        }
    }

    func testSeedsReachTheReaders() throws {
        for entry in FuzzEntry.allCases {
            let seeds = try inputs("corpus", entry)
            XCTAssertFalse(seeds.isEmpty, "no seeds for \(entry)")
            let accepted = seeds.filter { entry.run($0.1) }.map(\.0)
            // A corpus of inputs that are all refused would fuzz only the first checks.
            if entry != .safetensors { XCTAssertFalse(accepted.isEmpty, "\(entry): no seed is accepted") }
        }
    }

    func testInputsThatOnceCrashedAreRefused() throws {
        var count = 0
        for entry in FuzzEntry.allCases {
            for (name, bytes) in try inputs("regressions", entry) {
                XCTAssertFalse(entry.run(bytes), "\(entry) \(name): accepted")
                count += 1
            }
        }
        XCTAssertGreaterThanOrEqual(count, 3)
    }

    /// What the TOML guard lets through still parses: non-ASCII text in strings and comments,
    /// quoted table names, arrays whose lines start with `[` or `[{`, brackets inside strings.
    func testTheTOMLGuardPassesValidSuites() throws {
        let text = """
            # café, naïve: comments may say anything
            name = "suite «é»"
            description = \"\"\"
            [=this is text, not a header]
            \\
            \"\"\"
            [defaults]
            model = 'resnet8'   # 'é'
            dataset = "synthetic"
            epochs = 1
            [grid]
            seed = [
              0, # a comment may hold } and ]
              1,
            ]
            [[noise]]
            kind = "symmetric"
            rates = [
            0.2]
            [[ optimizer ]]
            name = "sgd"
            """
        let suite = try Suite.parse(text, file: "valid.toml")
        XCTAssertEqual(suite.name, "suite «é»")
        XCTAssertEqual(suite.runs.count, 2)
    }
}
