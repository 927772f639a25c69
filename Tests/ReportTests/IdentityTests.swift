import Charts
import Foundation
import GRDB
import Report
@testable import Store
import Suites
import TestSupport
import Training
import XCTest

/// Groups, pairings, charts and the gate take their identity from keys and typed fields: two
/// suites that differ in one setting and share a database stay apart everywhere.
final class IdentityTests: XCTestCase {
    var binary: URL!
    var dir: URL!

    override func setUpWithError() throws {
        binary = try sambenchExecutable()
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("identity-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    /// A small suite; `defaults` replaces or adds settings of its [defaults], `grid` adds axes
    /// (a setting in `grid` leaves [defaults]).
    static func suite(_ name: String, defaults: [String: String] = [:], grid: [String: String] = [:]) -> String {
        var settings = ["dataset": "\"synthetic\"", "synthetic_classes": "4", "synthetic_train": "512", "synthetic_test": "256",
                        "model": "\"tiny\"", "epochs": "2", "batch_size": "64", "lr": "0.05", "validation": "0.125", "sharpness": "false"]
        settings.merge(defaults) { $1 }
        for k in grid.keys { settings[k] = nil }
        return SuiteFixture.sgdVersusSAM(name: name, defaults: settings.sorted { $0.key < $1.key }.map { ($0.key, $0.value) },
                                         grid: grid.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, noise: "rates = [0.2, 0.5]", rho: "0.05")
    }

    func run(_ text: String, name: String, db: String) throws {
        let file = path(name + ".toml")
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        let r = try runSeparated(binary, ["run", file, "--db", path(db), "--checkpoints", path("ck"), "--threads", "1", "--quiet"])
        XCTAssertEqual(r.status, 0, r.out + r.err)
    }

    func report(_ db: String, _ extra: [String] = ["--no-charts"]) throws -> (report: Report, text: String) {
        let json = try runSeparated(binary, ["report", "--db", path(db), "--format", "json"] + extra)
        XCTAssertEqual(json.status, 0, json.err)
        let text = try runSeparated(binary, ["report", "--db", path(db), "--no-charts"])
        XCTAssertEqual(text.status, 0, text.err)
        return (try JSONDecoder().decode(Report.self, from: Data(json.out.utf8)), text.out)
    }

    /// Two suites that differ only in `setting` (a and b), run into one database.
    func assertKeptApart(_ setting: String, _ a: String, _ b: String) throws {
        let db = "\(setting).sqlite"
        try run(Self.suite("\(setting)-a", defaults: [setting: a]), name: "\(setting)-a", db: db)
        try run(Self.suite("\(setting)-b", defaults: [setting: b]), name: "\(setting)-b", db: db)
        let charts = path("charts-\(setting)")
        let (report, text) = try report(db, ["--charts", charts])

        // 2 values x 2 rates x (SGD, SAM): eight groups of two seeds, eight distinct labels.
        XCTAssertEqual(report.runs, 16)
        XCTAssertEqual(report.groups.count, 8)
        XCTAssertTrue(report.groups.allSatisfy { $0.runs == 2 && $0.done == 2 }, "\(report.groups.map { ($0.label, $0.runs) })")
        XCTAssertEqual(Set(report.groups.map(\.label)).count, 8, "\(report.groups.map(\.label))")
        for g in report.groups {
            let value = g.axes![setting]!
            XCTAssertTrue(g.label.contains("\(setting)=\(value)"), "the label names the setting that tells it apart: \(g.label)")
        }
        XCTAssertEqual(Set(report.groups.map(\.setting)).count, 4)
        for value in [a, b] {
            XCTAssertTrue(text.contains("synthetic tiny symmetric-0.2 \(setting)=\(value)\n"), text)
        }

        // Each SAM group is paired with the SGD group of its own setting, on both seeds.
        XCTAssertEqual(report.comparisons.count, 4)
        for c in report.comparisons {
            let sam = report.groups.first { $0.group == c.group }!, sgd = report.groups.first { $0.group == c.baselineGroup }!
            XCTAssertEqual(sam.optimizer, .sam)
            XCTAssertEqual(sgd.optimizer, .sgd)
            XCTAssertEqual(sam.settingKey, sgd.settingKey)
            XCTAssertEqual(sam.axes![setting], sgd.axes![setting])
            XCTAssertEqual(sam.noiseRate, sgd.noiseRate)
            XCTAssertEqual(c.difference?.pairs, 2)
            XCTAssertEqual(c.unpaired, 0)
        }

        // The charts are separate files: one accuracy chart, one heatmap per value, one set of
        // curves per setting.
        let files = try FileManager.default.contentsOfDirectory(atPath: charts).filter { $0.hasSuffix(".png") }.sorted()
        XCTAssertEqual(files.filter { $0.hasPrefix("accuracy-vs-noise_") }.count, 2, "\(files)")
        XCTAssertEqual(files.filter { $0.hasPrefix("rho-heatmap_") }.count, 2, "\(files)")
        XCTAssertEqual(files.filter { $0.hasPrefix("curves_") }.count, 4, "\(files)")
        for value in [a, b] {
            XCTAssertTrue(files.contains { $0.hasPrefix("accuracy-vs-noise_") && $0.contains("\(setting.replacingOccurrences(of: "_", with: "-"))-\(value)") },
                          "\(files)")
        }

        // The gate with a baseline of both compares both, each group with its own.
        let baseline = try runSeparated(binary, ["report", "--db", path(db), "--format", "json", "--no-charts"])
        try baseline.out.write(toFile: path("baseline-\(setting).json"), atomically: true, encoding: .utf8)
        let check = try runSeparated(binary, ["check", "--db", path(db), "--baseline", path("baseline-\(setting).json"), "--format", "json"])
        XCTAssertEqual(check.status, 0, check.out + check.err)
        let outcome = try JSONDecoder().decode(CheckOutcome.self, from: Data(check.out.utf8))
        XCTAssertEqual(outcome.groups.count, 8)
        XCTAssertTrue(outcome.groups.allSatisfy { $0.verdict == .ok && !$0.keyChanged && $0.change == 0 }, "\(outcome.groups)")
        // A baseline in which one of the two settings did better: only that setting's groups regress.
        var better = report
        for i in better.groups.indices where better.groups[i].axes![setting] == b {
            better.groups[i].accuracy!.mean += 0.5
        }
        try JSONEncoder().encode(better).write(to: dir.appendingPathComponent("better-\(setting).json"))
        let worse = try runSeparated(binary, ["check", "--db", path(db), "--baseline", path("better-\(setting).json"), "--format", "json"])
        XCTAssertEqual(worse.status, 1, worse.out + worse.err)
        let verdicts = try JSONDecoder().decode(CheckOutcome.self, from: Data(worse.out.utf8)).groups
        XCTAssertEqual(verdicts.filter { $0.verdict == .regression }.map(\.label).sorted(),
                       report.groups.filter { $0.axes![setting] == b }.map(\.label).sorted())
        XCTAssertEqual(verdicts.filter { $0.verdict == .ok }.count, 4)
    }

    func testSuitesThatDifferInEpochsStayApart() throws { try assertKeptApart("epochs", "1", "2") }

    /// `cutout` is not one of the runs table's columns: the identity still comes from the keys.
    func testSuitesThatDifferInCutoutStayApart() throws { try assertKeptApart("cutout", "0", "8") }

    /// docs/STORE.md's paired SAM-SGD query (pairing on the setting key) and the report give the
    /// same differences on a suite that sweeps a setting the report's label shows.
    func testStorePairedQueryAgreesWithTheReport() throws {
        try run(Self.suite("sweep", grid: ["lr": "[0.02, 0.05]"]), name: "sweep", db: "sweep.sqlite")
        let (report, _) = try report("sweep.sqlite")
        XCTAssertEqual(report.comparisons.count, 4)
        let doc = try String(contentsOf: repoRoot.appendingPathComponent("docs/STORE.md"), encoding: .utf8)
        let marker = try XCTUnwrap(doc.range(of: "<!-- paired-query -->"))
        let block = doc[marker.upperBound...]
        let open = try XCTUnwrap(block.firstIndex(of: "\""))
        let close = try XCTUnwrap(block[block.index(after: open)...].firstIndex(of: "\""))
        let sql = String(block[block.index(after: open)..<close])
        XCTAssertTrue(sql.contains("setting_key"), sql)
        let queue = try DatabaseQueue(path: path("sweep.sqlite"))
        let rows = try queue.read { try Row.fetchAll($0, sql: sql) }
        XCTAssertEqual(rows.count, 8, "4 comparisons x 2 seeds")
        var gains: [String: [Double]] = [:]
        for r in rows { gains[r["sam_group"], default: []].append(r["gain"]) }
        for c in report.comparisons {
            let g = try XCTUnwrap(gains[c.group], "no rows for \(c.group)")
            XCTAssertEqual(g.count, c.difference!.pairs)
            XCTAssertEqual(g.reduce(0, +) / Double(g.count), 100 * c.difference!.meanDifference, accuracy: 1e-9, c.setting)
        }
        // The CSV has a column for the swept setting, beside the fixed axes.
        let csv = try runSeparated(binary, ["report", "--db", path("sweep.sqlite"), "--format", "csv", "--no-charts"])
        let header = csv.out.split(separator: "\n")[0].split(separator: ",").map(String.init)
        XCTAssertEqual(Array(header[3..<10]), ["dataset", "model", "noise", "noise_rate", "optimizer", "rho", "lr"], "\(header)")
        let lrs = csv.out.split(separator: "\n").dropFirst().map { $0.split(separator: ",", omittingEmptySubsequences: false)[9] }
        XCTAssertEqual(Set(lrs), ["0.02", "0.05"])

        // The settings view names every axis, and its values are the axes the report shows.
        let view = try queue.read { try Row.fetchAll($0, sql: "SELECT * FROM settings") }
        XCTAssertEqual(view.count, 16)
        let columns = Set(view[0].columnNames)
        for name in Axes.names { XCTAssertTrue(columns.contains(name), "settings view has no column \(name)") }
        for row in view {
            let group = report.groups.first { $0.group == row["group_key"] as String }!
            for name in Axes.names {
                let stored = row[name] as DatabaseValue
                let expected = group.axes![name]
                switch stored.storage {
                case .null: XCTAssertNil(expected, name)
                case let .int64(i):
                    // Integers, booleans (1/0) and whole floats (JSON writes 10 for 10.0).
                    let same = expected == String(i) || expected == (i == 1 ? "true" : "false") || expected.flatMap(Double.init) == Double(i)
                    XCTAssertTrue(same, "\(name): \(i) vs \(expected ?? "nil")")
                case let .double(d): XCTAssertEqual(Float(d), Float(expected ?? "nan"), name)
                case let .string(s): XCTAssertEqual(s, expected, name)
                case .blob: XCTFail(name)
                }
            }
        }
    }

    /// A database written before setting keys gets them from its runs' configurations.
    func testOlderDatabasesGetSettingKeys() throws {
        let suite = try Suite.parse(Self.suite("old", grid: ["lr": "[0.02, 0.05]"]), file: "old.toml")
        let keyed = suite.runs.map { KeyedRun(spec: $0, identity: "synthetic") }
        let db = path("old.sqlite")
        try Store(path: db).register(suite: suite, runs: keyed)
        // Take the database back to the first schema.
        try DatabaseQueue(path: db).write { db in
            try db.execute(sql: """
                DROP VIEW settings; DROP INDEX runs_setting; ALTER TABLE runs DROP COLUMN setting_key; ALTER TABLE runs DROP COLUMN key_version; ALTER TABLE metrics DROP COLUMN test_confusion;
                ALTER TABLE metrics DROP COLUMN detection_samples; ALTER TABLE metrics DROP COLUMN detection_corrupted;
                ALTER TABLE metrics DROP COLUMN detection_auroc; ALTER TABLE metrics DROP COLUMN detection_precision; DROP TABLE sample_losses;
                ALTER TABLE epochs DROP COLUMN forget_rate; ALTER TABLE epochs DROP COLUMN selection_precision;
                ALTER TABLE epochs DROP COLUMN peer_selection_precision; ALTER TABLE epochs DROP COLUMN peer_test_accuracy;
                DELETE FROM grdb_migrations WHERE identifier NOT LIKE 'v1%'
                """)
        }
        // Read-only, it is read as it is (nothing migrates), the setting keys computed.
        let readOnly = try Store(path: db, readOnly: true)
        XCTAssertEqual(try readOnly.storedRuns().map(\.setting), keyed.map(\.setting))
        XCTAssertEqual(try readOnly.runs().map(\.setting).sorted(), keyed.map(\.setting).sorted())
        XCTAssertEqual(try DatabaseQueue(path: db).read { try Int.fetchOne($0, sql: "SELECT count(*) FROM grdb_migrations") }, 1)
        // Opened for writing, it migrates and stores them.
        _ = try Store(path: db)
        let stored = try DatabaseQueue(path: db).read { try Row.fetchAll($0, sql: "SELECT key, setting_key FROM runs") }
        XCTAssertEqual(stored.count, keyed.count)
        for r in stored { XCTAssertEqual(r["setting_key"] as String, keyed.first { $0.key == r["key"] as String }!.setting) }
        XCTAssertEqual(Set(stored.map { $0["setting_key"] as String }).count, 4, "2 rates x 2 learning rates")
    }

    /// A database whose settings view lacks a method parameter of `Methods.all` (one registered
    /// after it was written) gets the column when opened for writing, with no migration of its own.
    func testTheSettingsViewFollowsTheMethodList() throws {
        let suite = try Suite.parse(Self.suite("view", grid: ["lr": "[0.02]"]), file: "view.toml")
        let db = path("view.sqlite")
        try Store(path: db).register(suite: suite, runs: suite.runs.map { KeyedRun(spec: $0, identity: "synthetic") })
        let last = Methods.parameterNames.last!
        func columns() throws -> [String] {
            try DatabaseQueue(path: db).read { try Row.fetchAll($0, sql: "SELECT name FROM pragma_table_info('settings')").map { $0["name"] as String } }
        }
        XCTAssertTrue(try columns().contains(last))
        // The view as a build that knew one parameter fewer wrote it.
        let older = Store.settingsViewV6.replacingOccurrences(of: ",\n    json_extract(config, '$.config.method.parameters.\(last)') AS \(last)", with: "")
        XCTAssertNotEqual(older, Store.settingsViewV6)
        try DatabaseQueue(path: db).write { try $0.execute(sql: "DROP VIEW settings; " + older) }
        XCTAssertFalse(try columns().contains(last))
        _ = try Store(path: db, readOnly: true)
        XCTAssertFalse(try columns().contains(last), "read-only opens change nothing")
        _ = try Store(path: db)
        XCTAssertTrue(try columns().contains(last))
        XCTAssertEqual(try columns().filter { Methods.parameterNames.contains($0) }, Methods.parameterNames)
    }

    /// Labels come from fields: a setting that varies shows as name=value, an optimizer setting
    /// that varies within a setting shows in the optimizer's label, and two keys that would
    /// still print the same get their key's first characters.
    func testLabelsNameWhatTellsGroupsApart() throws {
        var suite = try Suite.parse(Self.suite("labels"), file: "l.toml")
        let both = try Suite.parse(Self.suite("labels").replacingOccurrences(of: "rho = 0.05", with: "rho = 0.05\nbn_policy = \"both-passes\""),
                                   file: "m.toml")
        suite.runs += both.runs.filter { $0.optimizer == .sam }
        func items(_ specs: [RunSpec], identity: String = "synthetic") -> [GroupLabels.Item] {
            specs.map { s in
                let k = RunKey.keys(s, identity: identity)
                return GroupLabels.Item(spec: s, group: k.group, setting: k.setting, family: k.family)
            }
        }
        let labels = GroupLabels.make(items(suite.runs))
        XCTAssertEqual(labels.count, 6)
        XCTAssertEqual(Set(labels.values.map(\.group)).count, 6)
        XCTAssertTrue(labels.values.contains { $0.group == "synthetic tiny symmetric-0.2 sam(rho=0.05,bn_policy=both-passes)" }, "\(labels.values.map(\.group))")
        XCTAssertTrue(labels.values.contains { $0.group == "synthetic tiny symmetric-0.2 sam(rho=0.05,bn_policy=first-pass)" })
        XCTAssertTrue(labels.values.contains { $0.group == "synthetic tiny symmetric-0.2 sgd" })
        XCTAssertEqual(Set(labels.values.map(\.family)), ["synthetic tiny symmetric"])
        // The same configuration on other data files: no setting differs, the keys do.
        let twice = GroupLabels.make(items(suite.runs, identity: "cifar10:sha256:aa") + items(suite.runs, identity: "cifar10:sha256:bb"))
        XCTAssertEqual(twice.count, 12)
        XCTAssertEqual(Set(twice.values.map(\.group)).count, 12)
        XCTAssertTrue(twice.values.allSatisfy { $0.setting.contains(" [") }, "\(twice.values.map(\.setting))")
    }

    /// Nothing recovers a field by splitting a label: the report, charts and gate read fields.
    func testNoLabelIsSplitForAField() throws {
        let sources = repoRoot.appendingPathComponent("Sources")
        let files = FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil)!.compactMap { $0 as? URL }.filter { $0.pathExtension == "swift" }
        XCTAssertGreaterThan(files.count, 20)
        for f in files {
            let text = try String(contentsOf: f, encoding: .utf8)
            for pattern in ["label.split", "setting.split", "family.split", "Label.split", "label.components", "setting.components"] {
                XCTAssertFalse(text.contains(pattern), "\(f.lastPathComponent) splits a label (\(pattern))")
            }
        }
    }
}
