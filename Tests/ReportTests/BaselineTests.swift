import Charts
import Foundation
import Report
import Store
import Suites
import Training
import TestSupport
import XCTest

/// Comparisons against any baseline: a suite names the group every other group of a setting is
/// compared with; the report, its formats, the charts and `check` follow.
final class BaselineTests: XCTestCase {
    static func suite(baseline: String = "", expect: String = "") -> String {
        SuiteFixture.sgdVersusSAM(name: "b", top: [baseline], defaults: SuiteFixture.tinySynthetic + [("epochs", "2"), ("validation", "0.1")],
                                  seeds: "[0, 1, 2]", noise: "rates = [0.2, 0.6]", methods: [[#"name = "ce""#], [#"name = "mixup""#, "alpha = [1, 8]"]],
                                  rho: "0.1", extra: expect)
    }

    /// Made-up results: test accuracy 0.5 + a per-configuration offset + seed / 100; mixup at
    /// alpha 8 is best on validation, alpha 1 on test (so the choice is visibly not the test's).
    static func runs(_ text: String = suite()) throws -> [StoredRun] {
        let suite = try Suite.parse(text, file: "b.toml")
        return suite.runs.map { spec in
            let method = spec.config.method?.name ?? "ce", alpha = spec.config.method?.parameters["alpha"]
            var offset = spec.optimizer == .sam ? 0.05 : 0
            var val = 0.5
            if method == "mixup" { offset += alpha == 1 ? 0.03 : 0.02; val = alpha == 1 ? 0.6 : 0.7 }
            let acc = 0.5 + offset + Double(spec.config.seed) / 100
            return StoredRun(keys: RunKey.keys(spec, identity: "synthetic"), label: spec.label, status: .done, spec: spec, identity: "synthetic",
                             epochsDone: 2, error: nil,
                             metrics: .init(lastTestAccuracy: acc, bestTestAccuracy: acc, valTestAccuracy: acc, valAccuracy: val, lastMemorised: 0.1,
                                            lastValidationAccuracy: val),
                             noiseLabels: "labels-\(spec.config.seed)-\(spec.data.noise.rate)", realisedRate: spec.data.noise.rate,
                             curve: [.init(epoch: 1, testAccuracy: acc, memorised: 0.1, validationAccuracy: val)])
        }
    }

    /// A chart names a method's parameter where it is away from the method's default or takes
    /// several values among the groups (mixup's alpha 1 and 8 here), and not otherwise: the
    /// legend of `suites/methods-cpu.toml` with every parameter did not fit.
    func testLegendsNameTheParametersThatTellGroupsApart() throws {
        let names = Charts.legendNames(ReportBuilder.build(try Self.runs(), suites: ["b"], metric: .last))
        XCTAssertEqual(Set(names.values), ["SGD", "SAM ρ=0.1", "mixup α=1 + SGD", "mixup α=8 + SGD", "mixup α=1 + SAM ρ=0.1", "mixup α=8 + SAM ρ=0.1"])
        let defaults = SuiteFixture.sgdVersusSAM(name: "b", defaults: SuiteFixture.tinySynthetic + [("epochs", "2")], seeds: "[0, 1]", noise: "rates = [0.6]",
                                                 methods: [[#"name = "ce""#], [#"name = "gce""#], [#"name = "coteaching""#], [#"name = "mixup""#, "alpha = 8"]],
                                                 rho: "0.1")
        let named = Charts.legendNames(ReportBuilder.build(try Self.runs(defaults), suites: ["b"], metric: .last))
        XCTAssertEqual(Set(named.values), ["SGD", "SAM ρ=0.1", "gce + SGD", "gce + SAM ρ=0.1", "coteaching + SGD", "coteaching + SAM ρ=0.1",
                                           "mixup α=8 + SGD", "mixup α=8 + SAM ρ=0.1"])
    }

    func testTheDefaultBaselineIsSGDWithCrossEntropy() throws {
        let report = ReportBuilder.build(try Self.runs(), suites: ["b"], metric: .last)
        XCTAssertEqual(report.groups.count, 12, "2 rates x 3 methods x 2 optimizers")
        // Every other group of a setting against ce sgd: 5 per setting.
        XCTAssertEqual(report.comparisons.count, 10)
        let byKey = Dictionary(uniqueKeysWithValues: report.groups.map { ($0.group, $0) })
        for c in report.comparisons {
            let g = byKey[c.group]!, base = byKey[c.baselineGroup]!
            XCTAssertEqual(base.axes?["method"], "ce")
            XCTAssertEqual(base.optimizer, .sgd)
            XCTAssertEqual(c.baselineLabel, "sgd")
            XCTAssertEqual(g.settingKey, base.settingKey)
            var expected = g.optimizer == .sam ? 0.05 : 0
            if g.axes?["method"] == "mixup" { expected += g.axes?["alpha"] == "1.0" ? 0.03 : 0.02 }
            XCTAssertEqual(c.difference!.meanDifference, expected, accuracy: 1e-12, c.optimizerLabel)
            XCTAssertEqual(c.difference!.pairs, 3)
            // Alpha is chosen on validation among mixup's groups of one optimizer; ce sam stands alone.
            XCTAssertEqual(c.selected, g.axes?["alpha"] == "8.0", c.optimizerLabel)
        }
        XCTAssertFalse(report.samAgainstSGD(), "methods are compared too")
        let text = try ReportFormat.text.render(report)
        XCTAssertTrue(text.contains("  minus SGD, paired by seed and noise realisation:"), text)
        XCTAssertTrue(text.contains("mixup(alpha=8) sgd *"), text)
    }

    func testANamedBaselineIsComparedWithEveryOtherGroup() throws {
        let text = Self.suite(baseline: #"baseline = { method = "mixup", optimizer = "sgd", alpha = 1 }"#)
        let suite = try Suite.parse(text, file: "b.toml")
        XCTAssertEqual(suite.baseline.description, "method=mixup, alpha=1.0, optimizer=sgd")
        let report = ReportBuilder.build(try Self.runs(text), suites: ["b"], metric: .last, baseline: suite.baseline)
        XCTAssertEqual(report.comparisons.count, 10)
        let byKey = Dictionary(uniqueKeysWithValues: report.groups.map { ($0.group, $0) })
        for c in report.comparisons {
            XCTAssertEqual(c.baselineLabel, "mixup(alpha=1) sgd")
            let g = byKey[c.group]!
            var expected = (g.optimizer == .sam ? 0.05 : 0) - 0.03
            if g.axes?["method"] == "mixup" { expected += g.axes?["alpha"] == "1.0" ? 0.03 : 0.02 }
            XCTAssertEqual(c.difference!.meanDifference, expected, accuracy: 1e-12, c.optimizerLabel)
        }
        // ce sgd is now a compared group, 3 points below the baseline.
        XCTAssertTrue(report.comparisons.contains { $0.optimizerLabel == "sgd" && abs($0.difference!.meanDifference + 0.03) < 1e-12 })
        let out = try ReportFormat.text.render(report)
        XCTAssertTrue(out.contains("baseline: method=mixup, alpha=1.0, optimizer=sgd"), out)
        XCTAssertTrue(out.contains("  minus mixup(alpha=1) sgd, paired by seed and noise realisation:"), out)
        let md = try ReportFormat.markdown.render(report)
        XCTAssertTrue(md.contains("| setting | versus method=mixup, alpha=1.0, optimizer=sgd | pairs |"), md)
        // CSV: one minus_baseline row per comparison, naming its baseline group in the last column.
        let csv = try ReportFormat.csv.render(report).split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        let header = csv[0]
        XCTAssertEqual(header.last, "baseline_group")
        XCTAssertTrue(header.contains("method") && header.contains("alpha"), "\(header)")
        let rows = csv.dropFirst().filter { $0[0] == "minus_baseline" }
        XCTAssertEqual(rows.count, 10)
        for row in rows { XCTAssertEqual(row.last, report.comparisons.first { $0.group == row[1] }!.baselineGroup) }
        // JSON round-trips, baseline included.
        let json = try ReportFormat.json.render(report)
        let back = try JSONDecoder().decode(Report.self, from: Data(json.utf8))
        XCTAssertEqual(back, report)
        XCTAssertEqual(back.baseline, suite.baseline)
    }

    func testAnAmbiguousBaselineIsSaidNotGuessed() throws {
        let text = Self.suite(baseline: #"baseline = { method = "mixup" }"#)
        let suite = try Suite.parse(text, file: "b.toml")
        let report = ReportBuilder.build(try Self.runs(text), suites: ["b"], metric: .last, baseline: suite.baseline)
        XCTAssertTrue(report.comparisons.isEmpty)
        XCTAssertEqual(report.notes?.count, 2, "one note per setting")
        XCTAssertTrue(report.notes![0].contains("2 groups match the baseline"), report.notes![0])
        XCTAssertTrue(try ReportFormat.text.render(report).contains("note: "))
    }

    /// Reports written before baselines (`samGroup`, `sgdGroup`; no `baseline`) still read: the
    /// committed baselines of CI are such files.
    func testReportsMadeBeforeBaselinesStillDecode() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let data = try Data(contentsOf: root.appendingPathComponent("baselines/ci.json"))
        let old = try JSONDecoder().decode(Report.self, from: data)
        XCTAssertNil(old.baseline)
        XCTAssertEqual(old.baselineName, "SGD")
        XCTAssertFalse(old.comparisons.isEmpty)
        let raw = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        let first = try XCTUnwrap((raw["comparisons"] as? [[String: Any]])?.first)
        XCTAssertEqual(old.comparisons[0].group, first["samGroup"] as? String ?? first["group"] as? String)
        XCTAssertEqual(old.comparisons[0].baselineGroup, first["sgdGroup"] as? String ?? first["baselineGroup"] as? String)
    }

    func testGainExpectations() throws {
        let expect = """
            [[expect]]
            what = "gain"
            min = 2.5
            where = "method=mixup,optimizer=sgd"
            [[expect]]
            what = "gain"
            min = 2.5
            where = "method=mixup,optimizer=sgd,alpha=8"
            [[expect]]
            what = "sam-gain"
            min = 4
            """
        let suite = try Suite.parse(Self.suite(expect: expect), file: "b.toml")
        XCTAssertEqual(suite.expectations.map(\.kind), [.gain, .gain, .samGain])
        let report = ReportBuilder.build(try Self.runs(), suites: ["b"], metric: .last)
        let verdicts = Checker.evaluate(suite.expectations) { _ in report }
        // Mixup with SGD, alpha chosen on validation (8): +2 points, below 2.5 in both settings.
        XCTAssertFalse(verdicts[0].passed, "\(verdicts[0].details)")
        XCTAssertEqual(verdicts[0].details.count, 2, "\(verdicts[0].details)")
        XCTAssertTrue(verdicts[0].details.allSatisfy { $0.contains("mixup(alpha=8) sgd minus sgd: +2.00 points over 3 seeds (below)") }, "\(verdicts[0].details)")
        XCTAssertFalse(verdicts[1].passed)
        // sam-gain: every SAM group of any method (each at its chosen alpha): +5 (ce), +7 (mixup alpha 8).
        XCTAssertTrue(verdicts[2].passed, "\(verdicts[2].details)")
        XCTAssertEqual(verdicts[2].details.count, 4, "\(verdicts[2].details)")
        // Against another baseline the same assertion reads other numbers.
        let named = ReportBuilder.build(try Self.runs(), suites: ["b"], metric: .last, baseline: try Baseline(parsing: "method=mixup,optimizer=sgd,alpha=1"))
        let again = Checker.evaluate([suite.expectations[2]]) { _ in named }
        XCTAssertFalse(again[0].passed, "ce sam is only 2 points above mixup(alpha=1) sgd: \(again[0].details)")
    }

    func testBaselineErrorsNameTheKey() throws {
        let cases: [(String, String, String)] = [
            (#"baseline = { method = "mixup", optimiser = "sgd" }"#, "baseline.optimiser", "did you mean `optimizer`"),
            (#"baseline = { method = "mixpu" }"#, "baseline.method", "unknown method \"mixpu\""),
            (#"baseline = { optimizer = "sgd", rho = 0.1 }"#, "baseline.rho", "not used by sgd"),
            (#"baseline = { method = "ce", alpha = 1 }"#, "baseline.alpha", "not a parameter of ce"),
            (#"baseline = { method = "gce" }"#, "baseline", "no run of this suite is the baseline"),
            (#"baseline = "sgd""#, "baseline", "expected a table"),
        ]
        for (line, key, message) in cases {
            XCTAssertThrowsError(try Suite.parse(Self.suite(baseline: line), file: "b.toml"), line) { error in
                guard let e = error as? SuiteError else { return XCTFail("\(error)") }
                XCTAssertEqual(e.key, key, "\(e)")
                XCTAssertEqual(e.line, 2, "\(e)")
                XCTAssertTrue(e.message.contains(message), "\(e)")
            }
        }
        XCTAssertThrowsError(try Baseline(parsing: "method=ce,optimizer")) { XCTAssertTrue("\($0)".contains("NAME=VALUE")) }
        XCTAssertEqual(try Baseline(parsing: "optimizer=sgd"), .standard)
    }

    func testChartsCompareEveryConfigurationWithTheBaseline() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("baseline-charts-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let report = ReportBuilder.build(try Self.runs(), suites: ["b"], metric: .last)
        let files = try Charts.render(report, options: ChartOptions(directory: dir))
        let headline = try XCTUnwrap(files.first { ($0.png as NSString).lastPathComponent.hasPrefix("minus-baseline_") }, "\(files.map(\.png))")
        XCTAssertEqual(headline.title, "Minus SGD: synthetic tiny symmetric")
        let accuracy = try XCTUnwrap(files.first { $0.png.contains("accuracy-vs-noise") })
        XCTAssertTrue(accuracy.title.hasPrefix("Test accuracy against label noise"))
        let heatmap = try PNGFile.read(try XCTUnwrap(files.first { $0.png.contains("rho-heatmap") }).png)
        XCTAssertEqual(heatmap.text["Title"], "Test accuracy (%) by noise rate and configuration: synthetic tiny symmetric")
    }
}

/// The whole path as a user takes it: a suite with every method under SGD and SAM and a named
/// baseline, run, then report (text, CSV, JSON, HTML) and check.
final class BaselineEndToEndTests: XCTestCase {
    func testEveryMethodAgainstANamedBaseline() throws {
        let binary = try sambenchExecutable()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("baseline-e2e-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let methods = Methods.all.map { "[[method]]\nname = \"\($0.name)\"" }.joined(separator: "\n")
        let suite = """
            name = "every-method"
            baseline = { method = "mixup", optimizer = "sgd" }
            [defaults]
            dataset = "synthetic"
            synthetic_classes = 4
            synthetic_train = 256
            synthetic_test = 128
            model = "tiny"
            epochs = 2
            batch_size = 64
            lr = 0.05
            sharpness = false
            [grid]
            seed = [0, 1]
            [[noise]]
            kind = "symmetric"
            rate = 0.4
            \(methods)
            [[optimizer]]
            name = "sgd"
            [[optimizer]]
            name = "sam"
            rho = 0.05
            [[expect]]
            what = "all-done"
            [[expect]]
            what = "gain"
            min = -100
            where = "optimizer=sam"
            """
        try suite.write(toFile: path("s.toml"), atomically: true, encoding: .utf8)
        let run = try runSeparated(binary, ["run", path("s.toml"), "--db", path("db.sqlite"), "--checkpoints", path("ck"), "--threads", "1", "--quiet"])
        XCTAssertEqual(run.status, 0, run.out + run.err)
        let groups = Methods.all.count * 2
        let text = try runSeparated(binary, ["report", "--db", path("db.sqlite"), "--no-charts"])
        XCTAssertEqual(text.status, 0, text.err)
        XCTAssertTrue(text.out.contains("baseline: method=mixup, optimizer=sgd"), text.out)
        XCTAssertTrue(text.out.contains("  minus mixup(alpha=1) sgd, paired by seed and noise realisation:"), text.out)
        let json = try runSeparated(binary, ["report", "--db", path("db.sqlite"), "--format", "json", "--no-charts"])
        let report = try JSONDecoder().decode(Report.self, from: Data(json.out.utf8))
        XCTAssertEqual(report.groups.count, groups)
        XCTAssertEqual(report.comparisons.count, groups - 1, "every group but the baseline")
        XCTAssertTrue(report.comparisons.allSatisfy { $0.difference?.pairs == 2 && $0.baselineLabel == "mixup(alpha=1) sgd" })
        let csv = try runSeparated(binary, ["report", "--db", path("db.sqlite"), "--format", "csv", "--no-charts"])
        XCTAssertEqual(csv.out.split(separator: "\n").filter { $0.hasPrefix("minus_baseline,") }.count, groups - 1)
        let html = try runSeparated(binary, ["report", "--db", path("db.sqlite"), "--format", "html", "--out", path("r.html"), "--charts", path("charts")])
        XCTAssertEqual(html.status, 0, html.err)
        let page = try String(contentsOfFile: path("r.html"), encoding: .utf8)
        XCTAssertTrue(page.contains("Each group minus method=mixup, optimizer=sgd"), String(page.prefix(3000)))
        XCTAssertTrue(FileManager.default.fileExists(atPath: path("charts/minus-baseline_synthetic-tiny-symmetric.png")))
        // --baseline overrides the suite's, for a report only.
        let other = try runSeparated(binary, ["report", "--db", path("db.sqlite"), "--no-charts", "--baseline", "method=gce,optimizer=sam"])
        XCTAssertTrue(other.out.contains("  minus gce(q=0.7) sam(rho=0.05), paired by seed"), other.out)
        let bad = try runSeparated(binary, ["report", "--db", path("db.sqlite"), "--no-charts", "--baseline", "method=gce,optimizer=sgd,rho=1"])
        XCTAssertEqual(bad.status, 2)
        XCTAssertTrue(bad.err.contains("`rho` is not used by sgd"), bad.err)
        let check = try runSeparated(binary, ["check", "--db", path("db.sqlite"), "--suite", path("s.toml")])
        XCTAssertEqual(check.status, 0, check.out + check.err)
        XCTAssertTrue(check.out.contains("gain over the baseline >= -100.0 points where optimizer=sam: ok"), check.out)
        XCTAssertEqual(check.out.components(separatedBy: " minus mixup(alpha=1) sgd: ").count - 1, Methods.all.count, check.out)
    }
}
