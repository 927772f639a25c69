import Charts
import Foundation
import Report
import Store
import Suites
import Training
import TestSupport
import XCTest

final class StatisticsTests: XCTestCase {
    /// Quantiles against the tables (and closed forms: df 1 is Cauchy, tan(0.475 pi)).
    func testStudentTQuantiles() {
        XCTAssertEqual(StudentT.quantile(0.975, degreesOfFreedom: 1), tan(0.475 * Double.pi), accuracy: 1e-8)
        XCTAssertEqual(StudentT.quantile(0.975, degreesOfFreedom: 2), 4.302652730, accuracy: 1e-8)
        XCTAssertEqual(StudentT.quantile(0.975, degreesOfFreedom: 4), 2.776445105, accuracy: 1e-8)
        XCTAssertEqual(StudentT.quantile(0.975, degreesOfFreedom: 10), 2.228138852, accuracy: 1e-8)
        XCTAssertEqual(StudentT.quantile(0.975, degreesOfFreedom: 30), 2.042272456, accuracy: 1e-8)
        XCTAssertEqual(StudentT.quantile(0.025, degreesOfFreedom: 4), -2.776445105, accuracy: 1e-8)
    }

    /// The CDF against closed forms: df 2, F(t) = 1/2 + t / (2 sqrt(2 + t^2)); df 3,
    /// F(t) = 1/2 + (theta + sin theta cos theta) / pi with theta = atan(t / sqrt 3).
    func testStudentTCDF() {
        for t in [-3.0, -0.5, 0, 0.7, 2, 10] {
            XCTAssertEqual(StudentT.cdf(t, degreesOfFreedom: 2), 0.5 + t / (2 * (2 + t * t).squareRoot()), accuracy: 1e-12)
            let th = atan(t / 3.0.squareRoot())
            XCTAssertEqual(StudentT.cdf(t, degreesOfFreedom: 3), 0.5 + (th + sin(th) * cos(th)) / Double.pi, accuracy: 1e-12)
        }
    }

    /// By hand: 0.70, 0.72, 0.74: mean 0.72, std 0.02, 95% half-width 4.302653 * 0.02 / sqrt 3.
    func testSummary() {
        let s = Summary([0.70, 0.72, 0.74])!
        XCTAssertEqual(s.n, 3)
        XCTAssertEqual(s.mean, 0.72, accuracy: 1e-12)
        XCTAssertEqual(s.std!, 0.02, accuracy: 1e-12)
        XCTAssertEqual(s.ci95!, 4.302652730 * 0.02 / 3.0.squareRoot(), accuracy: 1e-9)
        let one = Summary([0.5])!
        XCTAssertNil(one.std)
        XCTAssertNil(one.ci95)
        XCTAssertNil(Summary([]))
    }

    /// By hand: differences 0.02, 0.03, 0.01, 0.04: mean 0.025, sd sqrt(0.0005 / 3),
    /// t = 3.8729833, df 3, two-sided p = 0.0304663 (the df-3 closed form).
    func testPairedTTest() {
        let c = PairedComparison(differences: [0.02, 0.03, 0.01, 0.04])!
        XCTAssertEqual(c.pairs, 4)
        XCTAssertEqual(c.meanDifference, 0.025, accuracy: 1e-12)
        XCTAssertEqual(c.ci95!, 3.182446305 * (0.0005 / 3).squareRoot() / 2, accuracy: 1e-8)
        XCTAssertEqual(c.pValue!, 0.030466291662170963, accuracy: 1e-9)
        // Two seeds whose differences meet exactly (methods-cpu: 26.30 - 32.20 and 24.10 - 30.00,
        // equal but for rounding) say nothing of the spread: no interval, no p-value, and why.
        for same in [[0.01, 0.01], [0.263 - 0.322, 0.241 - 0.300]] {
            let c = PairedComparison(differences: same)!
            XCTAssertNil(c.pValue, "\(same)")
            XCTAssertNil(c.ci95, "\(same)")
            XCTAssertTrue(c.noSpread)
            XCTAssertEqual(c.noIntervalReason, "every pair the same: no interval")
        }
        XCTAssertFalse(PairedComparison(differences: [0.01])!.noSpread)
        XCTAssertFalse(c.noSpread)
        XCTAssertNil(PairedComparison(differences: [0.01])!.pValue)
    }
}

final class ReportBuilderTests: XCTestCase {
    static let suite = SuiteFixture.sgdVersusSAM(name: "r", defaults: SuiteFixture.tinySynthetic + [("epochs", "2"), ("validation", "0.1")],
                                                 seeds: "[0, 1, 2]", noise: "rates = [0.2, 0.6]", rho: "[0.05, 0.1]")

    func runs(_ adjust: (inout StoredRun) -> Void = { _ in }) throws -> [StoredRun] { try sampleRuns(adjust) }
}

/// Stored runs of `ReportBuilderTests.suite` with made-up results: accuracy = base + seed / 100,
/// SAM rho 0.1 best on validation, SAM rho 0.05 best on test.
func sampleRuns(_ adjust: (inout StoredRun) -> Void = { _ in }) throws -> [StoredRun] {
        let suite = try Suite.parse(ReportBuilderTests.suite, file: "r.toml")
        return suite.runs.map { spec in
            let seed = Double(spec.config.seed)
            let rate = spec.data.noise.rate
            let base: Double, val: Double
            switch spec.config.optimizer.sam?.rho {
            case nil: (base, val) = (0.8 - 0.4 * rate, 0.5)
            case 0.05?: (base, val) = (0.84 - 0.4 * rate, 0.6)
            default: (base, val) = (0.82 - 0.4 * rate, 0.7)
            }
            let acc = base + seed / 100
            var r = StoredRun(keys: RunKey.keys(spec, identity: "synthetic"), label: spec.label, status: .done, spec: spec, identity: "synthetic", epochsDone: 2,
                              error: nil, metrics: .init(lastTestAccuracy: acc, bestTestAccuracy: acc + 0.01, valTestAccuracy: acc - 0.01,
                                                         valAccuracy: val, lastMemorised: 0.1, lastValidationAccuracy: val),
                              noiseLabels: "labels-\(spec.config.seed)-\(rate)", realisedRate: rate,
                              curve: [.init(epoch: 1, testAccuracy: acc - 0.1, memorised: 0.2, validationAccuracy: val),
                                      .init(epoch: 2, testAccuracy: acc, memorised: 0.1, validationAccuracy: val)])
            adjust(&r)
            return r
        }
}

extension ReportBuilderTests {

    func testGroupsComparisonsAndSelection() throws {
        let report = ReportBuilder.build(try runs(), suites: ["r"], metric: .last)
        XCTAssertEqual(report.runs, 18)
        XCTAssertEqual(report.groups.count, 6)
        XCTAssertTrue(report.complete)
        let sgd = report.groups.first { $0.optimizer == .sgd && $0.noiseRate == 0.2 }!
        XCTAssertEqual(sgd.setting, "synthetic tiny symmetric-0.2")
        XCTAssertEqual(sgd.accuracy!.n, 3)
        XCTAssertEqual(sgd.accuracy!.mean, 0.72 + 0.01, accuracy: 1e-12)   // 0.8 - 0.08 + mean(0, 1, 2) / 100
        XCTAssertEqual(sgd.accuracy!.std!, 0.01, accuracy: 1e-12)
        XCTAssertEqual(sgd.seeds, [0, 1, 2])
        // Curves carry the spread over seeds (accuracies base + seed / 100: std 0.01 at every epoch).
        XCTAssertEqual(sgd.curve.count, 2)
        XCTAssertEqual(sgd.curve[1].testAccuracy, 0.73, accuracy: 1e-12)
        XCTAssertEqual(sgd.curve[1].testStd!, 0.01, accuracy: 1e-12)
        XCTAssertEqual(sgd.curve[1].memorisedStd!, 0, accuracy: 1e-12)
        XCTAssertNil(sgd.perClass, "no confusion matrices stored")
        XCTAssertEqual(report.comparisons.count, 4)
        for c in report.comparisons {
            let d = c.difference!
            XCTAssertEqual(d.pairs, 3)
            XCTAssertEqual(d.meanDifference, c.rho == 0.05 ? 0.04 : 0.02, accuracy: 1e-12)
            XCTAssertNil(d.ci95, "the same offset on every seed: no spread to draw an interval from")
            XCTAssertNil(d.pValue)
            XCTAssertTrue(d.noSpread)
            XCTAssertEqual(c.selected, c.rho == 0.1, "rho is chosen on validation (0.1), not on the test set (0.05)")
            XCTAssertEqual(c.unpaired, 0)
        }
        // The best-epoch metric reads the other column.
        let best = ReportBuilder.build(try runs(), suites: ["r"], metric: .best)
        XCTAssertEqual(best.groups[0].accuracy!.mean, report.groups[0].accuracy!.mean + 0.01, accuracy: 1e-12)
    }

    func testPerClassAccuracyFromConfusionMatrices() throws {
        // Seed s: class 0 all right, class 1 with s of 4 wrong; class 2 has no test images.
        let report = ReportBuilder.build(try runs { r in
            let s = Int(r.spec.config.seed)
            r.confusion = [[4, 0, 0], [s, 4 - s, 0], [0, 0, 0]]
        }, suites: ["r"], metric: .last)
        let pc = try XCTUnwrap(report.groups[0].perClass)
        XCTAssertEqual(pc.count, 3)
        XCTAssertEqual(pc[0]!.mean, 1, accuracy: 1e-12)
        XCTAssertEqual(pc[1]!.mean, 0.75, accuracy: 1e-12)   // (4 + 3 + 2) / 12
        XCTAssertEqual(pc[1]!.n, 3)
        XCTAssertNil(pc[2], "a class without test images has no accuracy, not 0")
    }

    func testFlagsAndPairing() throws {
        var count = 0
        let report = ReportBuilder.build(try runs { r in
            count += 1
            if r.label == "synthetic tiny symmetric-0.2 sam(rho=0.05) seed 1" { r.status = .diverged; r.metrics = nil }
            // Pending as a run not started is: no metrics, no noise realisation stored yet.
            if r.label == "synthetic tiny symmetric-0.6 sgd seed 2" { r.status = .pending; r.metrics = nil; r.noiseLabels = nil }
            // Another realisation of the noise for one SAM run: it cannot be paired.
            if r.label == "synthetic tiny symmetric-0.6 sam(rho=0.1) seed 0" { r.noiseLabels = "other" }
            // One group whose seeds disagree wildly.
            if r.label.hasPrefix("synthetic tiny symmetric-0.6 sam(rho=0.05)") { r.metrics!.lastTestAccuracy += Double(r.spec.config.seed) * 0.2 }
        }, suites: ["r"], metric: .last)
        XCTAssertFalse(report.complete)
        XCTAssertEqual(report.statuses, [.done: 16, .diverged: 1, .pending: 1])
        let diverged = report.groups.first { $0.label == "synthetic tiny symmetric-0.2 sam(rho=0.05)" }!
        XCTAssertEqual(diverged.accuracy!.n, 2)
        XCTAssertTrue(diverged.flags.contains("1 diverged"), "\(diverged.flags)")
        let pending = report.groups.first { $0.label == "synthetic tiny symmetric-0.6 sgd" }!
        XCTAssertTrue(pending.flags.contains("1 unfinished"))
        let wild = report.groups.first { $0.label == "synthetic tiny symmetric-0.6 sam(rho=0.05)" }!
        XCTAssertTrue(wild.flags.contains { $0.hasPrefix("seeds disagree") }, "\(wild.flags)")
        XCTAssertEqual(report.groups.filter { $0.flags.contains { $0.hasPrefix("seeds disagree") } }.count, 1)
        let c = report.comparisons.first { $0.setting == "synthetic tiny symmetric-0.6" && $0.rho == 0.1 }!
        XCTAssertEqual(c.unpaired, 1, "seed 0 has other noisy labels; seed 2's SGD run is unfinished, not unpaired")
        XCTAssertEqual(c.difference!.pairs, 1, "seed 0 has other noisy labels, seed 2's SGD run is unfinished")
    }

    func testFormats() throws {
        let report = ReportBuilder.build(try runs(), suites: ["r"], metric: .last)
        let text = try ReportFormat.text.render(report)
        for line in text.split(separator: "\n") { XCTAssertLessThanOrEqual(line.count, 100, String(line)) }
        XCTAssertTrue(text.contains("sam(rho=0.1) *"), text)
        XCTAssertTrue(text.contains("73.00"), text)
        let md = try ReportFormat.markdown.render(report)
        XCTAssertTrue(md.contains("| synthetic tiny symmetric-0.2 | sgd | 3 | 73.00 ± 2.48 |"), md)
        let csv = try ReportFormat.csv.render(report).split(separator: "\n")
        XCTAssertEqual(csv.count, 1 + 6 + 4)
        // One column per axis; nothing but the noise rate and rho varies here, so no other axis.
        let header = csv[0].split(separator: ",").map(String.init)
        XCTAssertEqual(Array(header.prefix(9)), ["kind", "group", "setting", "dataset", "model", "noise", "noise_rate", "optimizer", "rho"])
        XCTAssertEqual(header[9], "label")
        XCTAssertTrue(csv.allSatisfy { $0.split(separator: ",", omittingEmptySubsequences: false).count == header.count })
        let g = report.groups[0], a = g.accuracy!
        XCTAssertEqual(g.label, "synthetic tiny symmetric-0.2 sgd")
        let row = ["group", g.group, g.settingKey!, "synthetic", "tiny", "symmetric", "0.2", "sgd", "", g.label, "", "3", String(a.mean), String(a.std!),
                   String(a.mean - a.ci95!), String(a.mean + a.ci95!), "", String(g.validation!.mean), String(g.memorised!.mean), "", "", ""]
        XCTAssertTrue(csv.contains { $0 == row.joined(separator: ",") }, "\(csv)")
        let json = try ReportFormat.json.render(report)
        XCTAssertEqual(try JSONDecoder().decode(Report.self, from: Data(json.utf8)), report)
        XCTAssertEqual(ReportBuilder.build([], suites: [], metric: .last).groups.count, 0)
        XCTAssertTrue(try ReportFormat.text.render(ReportBuilder.build([], suites: [], metric: .last)).contains("no runs yet"))
    }
}

/// The share of pixels (RGBA) darker than `below` in some channel, and the count of distinct colours.
func inkAndColours(_ rgba: [UInt8], below: UInt8) -> (ink: Double, colours: Int) {
    var ink = 0
    var colours = Set<UInt32>()
    for i in stride(from: 0, to: rgba.count, by: 4) {
        let (r, g, b) = (rgba[i], rgba[i + 1], rgba[i + 2])
        if r < below || g < below || b < below { ink += 1 }
        colours.insert(UInt32(r) << 16 | UInt32(g) << 8 | UInt32(b))
    }
    return (Double(ink) / Double(max(rgba.count / 4, 1)), colours.count)
}

final class ChartTests: XCTestCase {
    func testChartsAreValidPNGsWithTextAndContent() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("charts-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let report = ReportBuilder.build(try sampleRuns(), suites: ["r"], metric: .last)
        var options = ChartOptions(directory: dir)
        options.svg = true
        options.reference = [ReferencePoint(label: "paper", noiseRate: 0.2, accuracy: 75)]
        let files = try Charts.render(report, options: options)
        let pngs = files.map(\.png)
        XCTAssertEqual(Set(pngs.map { ($0 as NSString).lastPathComponent }),
                       ["sam-minus-sgd_synthetic-tiny-symmetric.png", "accuracy-vs-noise_synthetic-tiny-symmetric.png",
                        "rho-heatmap_synthetic-tiny-symmetric.png", "curves_synthetic-tiny-symmetric-0.2.png", "curves_synthetic-tiny-symmetric-0.6.png"])
        XCTAssertEqual(files.compactMap(\.svg).count, 5)
        XCTAssertTrue(files.allSatisfy { !$0.title.isEmpty && !$0.subtitle.isEmpty })
        // The headline comes first; a title with a non-ASCII letter (ρ) reads back intact (iTXt, UTF-8).
        XCTAssertTrue(pngs[0].hasSuffix("sam-minus-sgd_synthetic-tiny-symmetric.png"))
        XCTAssertEqual(try PNGFile.read(files.first { $0.png.contains("rho-heatmap") }!.png).text["Title"],
                       "Test accuracy (%) by noise rate and ρ: synthetic tiny symmetric")
        for f in pngs {
            let png = try PNGFile.read(f)
            XCTAssertEqual(png.width, 1600)
            XCTAssertEqual(png.height, 1000)
            XCTAssertEqual(png.text["Suite"], "r")
            XCTAssertEqual(png.text["Runs"], "18")
            XCTAssertNotNil(png.text["Software"])
            XCTAssertNotNil(png.text["Creation Time"])
            XCTAssertFalse(png.text["Title"]?.isEmpty ?? true)
            // Not blank: a fair share of non-white pixels, in several colours.
            let (ink, colours) = inkAndColours(png.rgba, below: 250)
            XCTAssertGreaterThan(ink, 0.01, f)
            XCTAssertGreaterThan(colours, 20, f)
        }
        let svg = try String(contentsOfFile: files[0].svg!, encoding: .utf8)
        XCTAssertTrue(svg.contains("<svg"), String(svg.prefix(200)))
        // A scale option sizes the image.
        options.scale = 0.5
        options.svg = false
        let half = try Charts.render(report, options: options)
        XCTAssertEqual(try PNGFile.read(half[0].png).width, 800)
    }

    func testBadReferenceFileIsLocated() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ref-\(UUID().uuidString).csv").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try "label,noise_rate,accuracy\npaper,0.2,91.5\npaper,0.4,eighty\n".write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ReferencePoint.read(path)) { XCTAssertTrue("\($0)".contains("\(path):3:"), "\($0)") }
        try "label,noise_rate,accuracy\npaper,0.2,91.5\n".write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertEqual(try ReferencePoint.read(path), [ReferencePoint(label: "paper", noiseRate: 0.2, accuracy: 91.5)])
    }

    func testCorruptPNGIsRefused() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("bad-\(UUID().uuidString).png").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try PNGFile.write(rgb: [UInt8](repeating: 200, count: 4 * 3 * 3), width: 4, height: 3, text: [("Suite", "x")], to: path)
        XCTAssertEqual(try PNGFile.read(path).text, ["Suite": "x"])
        // tEXt is Latin-1: a UTF-8 value goes to an iTXt chunk (uncompressed, no language tag).
        try PNGFile.write(rgb: [UInt8](repeating: 200, count: 4 * 3 * 3), width: 4, height: 3,
                          text: [("Suite", "x"), ("Title", "ρ − 日本")], to: path)
        let written = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        func has(_ bytes: [UInt8]) -> Bool { written.count >= bytes.count && (0...(written.count - bytes.count)).contains { Array(written[$0..<$0 + bytes.count]) == bytes } }
        XCTAssertTrue(has(Array("tEXtSuite".utf8) + [0] + Array("x".utf8)))
        XCTAssertTrue(has(Array("iTXtTitle".utf8) + [0, 0, 0, 0, 0] + Array("ρ − 日本".utf8)))
        XCTAssertFalse(has(Array("tEXtTitle".utf8)))
        XCTAssertEqual(try PNGFile.read(path).text, ["Suite": "x", "Title": "ρ − 日本"])
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[bytes.count - 20] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try PNGFile.read(path)) { XCTAssertTrue("\($0)".contains("CRC"), "\($0)") }
    }
}

/// `sambench report` as a user runs it, on databases with nothing or half of a suite.
final class ReportCommandTests: XCTestCase {
    func testEmptyAndHalfFinishedDatabases() throws {
        let binary = try sambenchExecutable()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("report-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("r.sqlite").path
        _ = try Store(path: db)
        let empty = try runSeparated(binary, ["report", "--db", db, "--charts", dir.appendingPathComponent("c").path])
        XCTAssertEqual(empty.status, 0, empty.err)
        XCTAssertTrue(empty.out.contains("0 runs") && empty.out.contains("no runs yet"), empty.out)
        XCTAssertTrue(empty.out.contains("no charts"), empty.out)

        // A suite registered, nothing finished but for the runs of seed 0.
        let suite = try Suite.parse(ReportBuilderTests.suite, file: "r.toml")
        let keyed = suite.runs.map { KeyedRun(spec: $0, identity: "synthetic") }
        let store = try Store(path: db)
        try store.register(suite: suite, runs: keyed)
        for r in keyed where r.spec.config.seed == 0 {
            try store.markRunning(r.key, provenance: Provenance(host: "h", version: "v", gitRevision: nil, threads: 1))
            let result = """
                {"stages": [{"stage": "train", "status": {"done": {}}, "epochs": [{"epoch": 1, "lr": 0.1, "trainLoss": 2,
                 "trainAccuracy": 0.3, "testLoss": 1.5, "testAccuracy": 0.4, "seconds": 1, "imagesPerSecond": 100}]}]}
                """
            try store.finish(r.key, result: try JSONDecoder().decode(RunResult.self, from: Data(result.utf8)))
        }
        let half = try runSeparated(binary, ["report", "--db", db, "--no-charts"])
        XCTAssertEqual(half.status, 0, half.err)
        XCTAssertTrue(half.out.contains("18 runs (6 done, 12 pending)"), half.out)
        XCTAssertTrue(half.out.contains("Partial results: 12 runs are not finished"), half.out)
        XCTAssertTrue(half.out.contains("2 unfinished"), half.out)
        XCTAssertTrue(half.out.contains("40.00"), half.out)
        let json = try runSeparated(binary, ["report", "--db", db, "--no-charts", "--format", "json"])
        let decoded = try JSONDecoder().decode(Report.self, from: Data(json.out.utf8))
        XCTAssertEqual(decoded.statuses[.pending], 12)
        XCTAssertFalse(decoded.complete)

        let unknown = try runSeparated(binary, ["report", "--db", db, "--suite", "nope"])
        XCTAssertEqual(unknown.status, 2)
        XCTAssertTrue(unknown.err.contains("no suite named 'nope'") && unknown.err.contains("it has: r"), unknown.err)
        let missing = try runSeparated(binary, ["report", "--db", dir.appendingPathComponent("none.sqlite").path])
        XCTAssertEqual(missing.status, 2)
    }
}
