import Datasets
import Foundation
import GRDB
import Store
import Suites
import TestSupport
import Training
import XCTest

/// Finetune suites: `[[pretrain]]` runs trained once and recorded as runs, finetune runs that
/// start from their weights or from a checkpoint file (its content in the key), a from-scratch
/// row beside them, class selections, and the runner's ordering.
final class FinetuneSuiteTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("ftsuite-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    static let suite = """
        name = "ft"
        task = "finetune"

        [[pretrain]]
        name = "first-half"
        dataset = "synthetic"
        synthetic_train = 1200
        synthetic_test = 400
        classes = [0, 1, 2, 3, 4]
        model = "tiny"
        epochs = 3
        batch_size = 64
        sharpness = false

        [defaults]
        dataset = "synthetic"
        synthetic_train = 1200
        synthetic_test = 400
        classes = [4, 3, 2, 1, 0]
        subset = 192
        model = "tiny"
        epochs = 1
        batch_size = 64
        lr = 0.02
        sharpness = false

        reinit_head = true

        [grid]
        pretrain = ["first-half", "none"]

        [[noise]]
        kind = "symmetric"
        rate = 0.2

        [[optimizer]]
        name = "sgd"

        [[optimizer]]
        name = "sam"
        rho = 0.05
        """

    func testParsingExpandsPretrainsFirstAndKeysFollowTheirStart() throws {
        let suite = try Suite.parse(Self.suite, file: path("ft.toml"))
        XCTAssertEqual(suite.runs.count, 5)
        let pre = suite.runs[0]
        XCTAssertEqual(pre.task, .train)
        XCTAssertTrue(pre.label.hasPrefix("pretrain first-half"), pre.label)
        XCTAssertEqual(pre.data.classes, [0, 1, 2, 3, 4])
        XCTAssertEqual(pre.config.epochs, 3)
        XCTAssertNil(pre.pretrain)
        let finetunes = suite.runs.dropFirst()
        XCTAssertEqual(finetunes.filter { $0.pretrain?.name == "first-half" }.count, 2)
        XCTAssertEqual(finetunes.filter { $0.pretrain == nil }.count, 2)
        for f in finetunes {
            XCTAssertEqual(f.task, .finetune)
            XCTAssertEqual(f.data.classes, [4, 3, 2, 1, 0])
            XCTAssertEqual(f.reinitHead, true)
            XCTAssertEqual(Axes.values(f)["pretrain"], f.pretrain == nil ? "none" : "first-half")
        }
        // The finetune key contains the pretrain's: another pretrain (one more epoch) changes it.
        let ft = finetunes.first { $0.pretrain != nil }!
        let key = RunKey.keys(ft, identity: "i").key
        var other = ft
        other.pretrain!.config.epochs = 4
        XCTAssertNotEqual(RunKey.keys(other, identity: "i").key, key)
        XCTAssertEqual(RunKey.pretrainKey(ft, identity: "i"), RunKey.keys(pre, identity: "i").key)
        // Renaming the pretrain changes nothing that matters.
        other = ft
        other.pretrain!.name = "renamed"
        XCTAssertEqual(RunKey.keys(other, identity: "i").key, key)
    }

    func testCheckpointFilesCountByContent() throws {
        let weights = path("w.safetensors")
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: weights))
        let text = """
            name = "c"
            task = "finetune"
            [defaults]
            dataset = "synthetic"
            model = "tiny"
            checkpoint = "w.safetensors"
            """
        let a = try Suite.parse(text, file: path("c.toml")).runs[0]
        XCTAssertEqual(a.config.initialWeights?.path, weights)
        XCTAssertEqual(a.config.initialWeights?.sha256, SHA256Hex.digest([1, 2, 3]))
        // The same bytes elsewhere: the same key; other bytes: another.
        try FileManager.default.createDirectory(atPath: path("sub"), withIntermediateDirectories: true)
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: path("sub/w.safetensors")))
        let b = try Suite.parse(text, file: path("sub/c.toml")).runs[0]
        XCTAssertEqual(RunKey.keys(a, identity: "i").key, RunKey.keys(b, identity: "i").key)
        try Data([1, 2, 4]).write(to: URL(fileURLWithPath: path("sub/w.safetensors")))
        let c = try Suite.parse(text, file: path("sub/c.toml")).runs[0]
        XCTAssertNotEqual(RunKey.keys(a, identity: "i").key, RunKey.keys(c, identity: "i").key)
    }

    func testBadFinetuneSuitesAreLocated() throws {
        func expect(_ text: String, line: Int, _ fragment: String, file: StaticString = #filePath, l: UInt = #line) {
            XCTAssertThrowsError(try Suite.parse(text, file: "f.toml"), file: file, line: l) { e in
                let s = "\(e)"
                XCTAssertTrue(s.hasPrefix("f.toml:\(line): ") && s.contains(fragment), s, file: file, line: l)
            }
        }
        let head = "name = \"x\"\ntask = \"finetune\"\n"
        expect("name = \"x\"\n[defaults]\ndataset = \"synthetic\"\npretrain = \"p\"\n", line: 4, "task = \"finetune\"")
        expect(head + "[defaults]\ndataset = \"synthetic\"\npretrain = \"p\"\n", line: 5, "no [[pretrain]] named \"p\"")
        expect(head + "[defaults]\ndataset = \"synthetic\"\ncheckpoint = \"missing.safetensors\"\n", line: 5, "cannot read the checkpoint")
        expect(head + "[[pretrain]]\ndataset = \"synthetic\"\n[defaults]\ndataset = \"synthetic\"\n", line: 3, "needs a `name`")
        expect(head + "[[pretrain]]\nname = \"p\"\ndataset = \"synthetic\"\nreinit_head = true\n[defaults]\ndataset = \"synthetic\"\npretrain = \"p\"\n",
               line: 6, "a pretrain starts from scratch")
        expect(head + "[[pretrain]]\nname = \"p\"\ndataset = \"synthetic\"\n[defaults]\ndataset = \"synthetic\"\n", line: 3, "named by no run")
        expect(head + "[[pretrain]]\nname = \"p\"\ndataset = \"synthetic\"\nmodel = \"resnet8\"\n[defaults]\ndataset = \"synthetic\"\nmodel = \"tiny\"\npretrain = \"p\"\n",
               line: 10, "a finetune starts from the same model")
        expect(head + "[defaults]\ndataset = \"cifar10\"\nclasses = [3, 3]\n", line: 5, "each once")
        expect(head + "[defaults]\ndataset = \"synthetic\"\nmodel = \"tiny\"\nfreeze = [\"conv1\", \"layer9\"]\n", line: 6, "'layer9' names no parameter of tiny")
        expect(head + "[defaults]\ndataset = \"synthetic\"\nfreeze = \"conv1\"\n", line: 5, "a list of strings")
        expect(head + "[defaults]\ndataset = \"synthetic\"\nclasses = [0, 12]\n", line: 5, "classes 0...9")
    }

    /// End to end with the binary: the pretrain trains first and alone is saved beside the
    /// database, the finetune runs start from it, and from-scratch runs beside them. The finetune
    /// sees the pretrain's classes in reverse order, relabelled 0..4, with its head reinitialised,
    /// so only a pretrain whose features reached the run beats scratch after three steps.
    func testRunTrainsThePretrainOnceAndFinetunesFromIt() throws {
        let binary = try sambenchExecutable()
        try Self.suite.write(to: URL(fileURLWithPath: path("ft.toml")), atomically: true, encoding: .utf8)
        let db = path("results/r.sqlite")
        let args = ["run", path("ft.toml"), "--db", db, "--checkpoints", path("ck"), "--jobs", "2", "--threads", "1", "--quiet"]
        let r = try runSeparated(binary, args)
        XCTAssertEqual(r.status, 0, r.out + r.err)
        let pretrained = try FileManager.default.contentsOfDirectory(atPath: path("results/pretrained"))
        XCTAssertEqual(pretrained.count, 1, "\(pretrained)")
        let q = try DatabaseQueue(path: db)
        let rows = try q.read { db in
            try Row.fetchAll(db, sql: """
                SELECT r.key, r.status, r.config, (SELECT test_accuracy FROM epochs e WHERE e.run_key = r.key ORDER BY epoch DESC LIMIT 1) AS acc
                FROM runs r
                """)
        }
        XCTAssertEqual(rows.count, 5)
        XCTAssertTrue(rows.allSatisfy { ($0["status"] as String) == "done" })
        XCTAssertEqual(pretrained.first, (rows.first { !($0["config"] as String).contains("\"task\":\"finetune\"") }?["key"] as String?).map { "\($0).safetensors" })
        var fromPretrain: [Double] = [], fromScratch: [Double] = []
        for row in rows where (row["config"] as String).contains("\"task\":\"finetune\"") {
            let acc: Double = row["acc"]
            if (row["config"] as String).contains("\"pretrain\"") { fromPretrain.append(acc) } else { fromScratch.append(acc) }
        }
        XCTAssertEqual(fromPretrain.count, 2)
        XCTAssertEqual(fromScratch.count, 2)
        XCTAssertGreaterThan(fromPretrain.min()!, fromScratch.max()! + 0.1, "pretrained \(fromPretrain) vs scratch \(fromScratch)")
        let again = try runSeparated(binary, args)
        XCTAssertEqual(again.status, 0, again.err)
        let report = try runSeparated(binary, ["report", "--db", db])
        XCTAssertEqual(report.status, 0, report.err)
        XCTAssertTrue(report.out.contains("pretrain=first-half") && report.out.contains("pretrain=none"), report.out)

        // Weights gone under a done pretrain: the finetune runs fail saying so; nothing else is lost.
        try FileManager.default.removeItem(atPath: path("results/pretrained"))
        try q.write { db in try db.execute(sql: "UPDATE runs SET status = 'failed' WHERE config LIKE '%\"task\":\"finetune\"%'") }
        let missing = try runSeparated(binary, args)
        XCTAssertEqual(missing.status, 1, missing.out + missing.err)
        XCTAssertTrue((missing.out + missing.err).contains("are gone"), missing.out + missing.err)
    }
}
