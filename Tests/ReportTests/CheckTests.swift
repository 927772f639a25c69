import Foundation
import Report
import Suites
import TestSupport
import XCTest

/// The regression gate, end to end: a baseline from one run of a small suite, then the same
/// code again (other --jobs, other seeds), planted regressions and the suite's assertions.
final class CheckTests: XCTestCase {
    var binary: URL!
    var dir: URL!

    static func suite(seeds: String = "[0, 1, 2]", lr: String = "0.05", expect: String = "") -> String {
        SuiteFixture.sgdVersusSAM(name: "gate", top: [#"description = "a small suite for the gate's tests""#],
                                  defaults: [("dataset", "\"synthetic\""), ("synthetic_classes", "4"), ("synthetic_train", "1024"), ("synthetic_test", "512"),
                                             ("model", "\"tiny\""), ("epochs", "6"), ("batch_size", "64"), ("lr", lr), ("sharpness", "false")],
                                  seeds: seeds, noise: "rate = 0.4", rho: "0.05", extra: expect)
    }

    override func setUpWithError() throws {
        binary = try sambenchExecutable()
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("check-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    /// Runs `text` as a suite into `db`; returns the suite file.
    @discardableResult
    func run(_ text: String, _ db: String, jobs: Int = 1, environment: [String: String] = [:]) throws -> String {
        let file = path(db + ".toml")
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        let r = try runSeparated(binary, ["run", file, "--db", path(db), "--checkpoints", path("ck"), "--threads", "1", "--jobs", "\(jobs)", "--quiet"],
                                 environment: environment)
        XCTAssertEqual(r.status, 0, r.out + r.err)
        return file
    }

    func check(_ db: String, _ extra: [String] = []) throws -> (status: Int32, out: String, err: String) {
        try runSeparated(binary, ["check", "--db", path(db), "--baseline", path("baseline.json")] + extra)
    }

    func makeBaseline() throws {
        try run(Self.suite(), "base.sqlite")
        let r = try runSeparated(binary, ["report", "--db", path("base.sqlite"), "--format", "json", "--no-charts"])
        XCTAssertEqual(r.status, 0, r.err)
        try r.out.write(toFile: path("baseline.json"), atomically: true, encoding: .utf8)
    }

    func testSameCodePassesAndPlantedRegressionsFail() throws {
        try makeBaseline()
        // The same code with another --jobs: the same numbers, a pass.
        try run(Self.suite(), "jobs.sqlite", jobs: 2)
        let same = try check("jobs.sqlite")
        XCTAssertEqual(same.status, 0, same.out + same.err)
        XCTAssertTrue(same.out.contains("+0.00") && same.out.hasSuffix("PASS\n\n"), same.out)

        // A learning rate ten times lower: the configuration (keys) changed, and accuracy fell.
        try run(Self.suite(lr: "0.005"), "lr.sqlite")
        let lr = try check("lr.sqlite")
        XCTAssertEqual(lr.status, 1, lr.out + lr.err)
        XCTAssertTrue(lr.out.contains("REGRESSION") && lr.out.contains("configuration changed") && lr.out.contains("FAIL: 2 regressions"), lr.out)

        // A broken noise model (every corrupted label turned to class 0): same keys, lower accuracy.
        try run(Self.suite(), "fault.sqlite", environment: ["SAMBENCH_FAULT": "noise-to-one-class"])
        let fault = try check("fault.sqlite")
        XCTAssertEqual(fault.status, 1, fault.out + fault.err)
        XCTAssertTrue(fault.out.contains("REGRESSION") && !fault.out.contains("configuration changed"), fault.out)

        // Results missing from the database fail too; a bad baseline is a usage error.
        let file = path("sgd-only.toml")
        try Self.suite().write(toFile: file, atomically: true, encoding: .utf8)
        let sgdOnly = try runSeparated(binary, ["run", file, "--db", path("other.sqlite"), "--checkpoints", path("ck"), "--threads", "1",
                                                "--quiet", "--filter", "optimizer=sgd"])
        XCTAssertEqual(sgdOnly.status, 0, sgdOnly.err)
        let missing = try check("other.sqlite")
        XCTAssertEqual(missing.status, 1)
        XCTAssertTrue(missing.out.contains("MISSING"), missing.out)
        try "{}".write(toFile: path("bad.json"), atomically: true, encoding: .utf8)
        let bad = try runSeparated(binary, ["check", "--db", path("jobs.sqlite"), "--baseline", path("bad.json")])
        XCTAssertEqual(bad.status, 2)
        XCTAssertTrue(bad.err.contains("bad.json") && bad.err.contains("sambench report --format json"), bad.err)
    }

    /// Fresh seeds are the same code: the gate must not cry wolf. Over these trials (disjoint
    /// seed triples against one baseline) it passes every time.
    func testFreshSeedsPass() throws {
        try makeBaseline()
        for (i, seeds) in ["[3, 4, 5]", "[6, 7, 8]"].enumerated() {
            try run(Self.suite(seeds: seeds), "fresh\(i).sqlite")
            let r = try check("fresh\(i).sqlite")
            XCTAssertEqual(r.status, 0, "seeds \(seeds):\n" + r.out)
        }
    }

    func testExpectations() throws {
        let passing = """
            [[expect]]
            what = "no-divergence"
            [[expect]]
            what = "all-done"
            [[expect]]
            what = "accuracy"
            min = 30
            where = "optimizer=sgd"
            [[expect]]
            what = "sam-gain"
            min = -50
            where = "noise_rate>=0.4"
            [[expect]]
            what = "memorised"
            max = 99
            """
        let file = try run(Self.suite(expect: passing), "expect.sqlite")
        let ok = try runSeparated(binary, ["check", "--db", path("expect.sqlite"), "--suite", file])
        XCTAssertEqual(ok.status, 0, ok.out + ok.err)
        XCTAssertTrue(ok.out.contains("sam - baseline >= -50.0 points") && ok.out.contains("sam(rho=0.05) minus sgd"), ok.out)
        // The same results against stricter assertions: each failure named with its line.
        let strict = Self.suite(expect: passing.replacingOccurrences(of: "min = 30", with: "min = 99")
            .replacingOccurrences(of: "min = -50", with: "min = 50").replacingOccurrences(of: "max = 99", with: "min = 99"))
        try strict.write(toFile: file, atomically: true, encoding: .utf8)
        let fail = try runSeparated(binary, ["check", "--db", path("expect.sqlite"), "--suite", file])
        XCTAssertEqual(fail.status, 1, fail.out)
        XCTAssertTrue(fail.out.contains("FAIL: 3 expectations failed") && fail.out.contains("(below)") && fail.out.contains("(outside)"), fail.out)
        let parsed = try Suite.load(file)
        XCTAssertEqual(parsed.expectations.map(\.kind), [.noDivergence, .allDone, .accuracy, .samGain, .memorised])
        XCTAssertTrue(fail.out.contains("line \(parsed.expectations[4].line): memorised >= 99.0: FAILED"), fail.out)
        XCTAssertTrue(fail.out.contains("line \(parsed.expectations[2].line): accuracy >= 99.0 where optimizer=sgd: FAILED"), fail.out)
    }

    /// A baseline that cannot mean anything is refused with exit 2 and the problem named, never
    /// passed: a gate against it would compare nothing (or nonsense) and say PASS.
    func testMeaninglessBaselinesAreRefused() throws {
        try makeBaseline()
        let data = try Data(contentsOf: URL(fileURLWithPath: path("baseline.json")))
        func firstGroup(_ json: inout [String: Any], _ change: (inout [String: Any]) -> Void) {
            var groups = json["groups"] as! [[String: Any]]
            change(&groups[0])
            json["groups"] = groups
        }
        func accuracy(_ key: String, _ value: Any) -> (inout [String: Any]) -> Void {
            { json in firstGroup(&json) { g in var a = g["accuracy"] as! [String: Any]; a[key] = value; g["accuracy"] = a } }
        }
        let cases: [(name: String, expected: String, change: (inout [String: Any]) -> Void)] = [
            ("no-groups", "no groups", { $0["groups"] = [Any](); $0["comparisons"] = [Any]() }),
            ("no-accuracy", "no finished run", { json in firstGroup(&json) { $0.removeValue(forKey: "accuracy") } }),
            ("n-zero", "n = 0 finished runs", accuracy("n", 0)),
            ("n-beyond-runs", "n = 40 finished runs", accuracy("n", 40)),
            ("negative-std", "standard deviation -0.02 is not possible", accuracy("std", -0.02)),
            ("absurd-std", "standard deviation 3.0 is not possible", accuracy("std", 3)),
            ("no-std", "but no standard deviation", { json in firstGroup(&json) { g in var a = g["accuracy"] as! [String: Any]; a.removeValue(forKey: "std"); g["accuracy"] = a } }),
            ("mean", "mean accuracy 1.7 is not in [0, 1]", accuracy("mean", 1.7)),
            ("interval", "half-width -0.1", accuracy("ci95", -0.1)),
            ("counts", "run counts that do not add up", { json in firstGroup(&json) { $0["failed"] = -1 } }),
        ]
        for c in cases {
            var json = try JSONSerialization.jsonObject(with: data) as! [String: Any]
            c.change(&json)
            let file = path(c.name + ".json")
            try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: file))
            let r = try runSeparated(binary, ["check", "--db", path("base.sqlite"), "--baseline", file])
            XCTAssertEqual(r.status, 2, c.name + ": " + r.out + r.err)
            XCTAssertTrue(r.err.contains(c.expected) && r.err.contains(file), c.name + ": " + r.err)
            XCTAssertFalse(r.out.contains("PASS"), c.name + ": " + r.out)
        }
        // The unchanged baseline against its own results passes: what failed above is the baseline.
        let same = try check("base.sqlite")
        XCTAssertEqual(same.status, 0, same.out + same.err)
    }

    /// No baseline and no [[expect]]: nothing would be compared, so no PASS (exit 2, said why),
    /// whether the suite is given as a file without assertions or by name.
    func testNothingToCheckIsRefused() throws {
        let file = try run(Self.suite(), "plain.sqlite")
        for (args, expected) in [(["--suite", file], "has no [[expect]] entries"), (["--suite", "gate"], "names results, not assertions")] {
            let r = try runSeparated(binary, ["check", "--db", path("plain.sqlite")] + args)
            XCTAssertEqual(r.status, 2, r.out + r.err)
            XCTAssertTrue(r.err.contains("nothing to check") && r.err.contains(expected), r.err)
            XCTAssertFalse(r.out.contains("PASS"), r.out)
        }
    }

    func testToleranceSpec() throws {
        let t = try Tolerance("floor=0.5,k=2")
        XCTAssertEqual(t.floor, 0.005, accuracy: 1e-12)
        XCTAssertEqual(t.k, 2)
        XCTAssertThrowsError(try Tolerance("k=-1"))
        XCTAssertThrowsError(try Tolerance("sigma=2"))
    }
}
