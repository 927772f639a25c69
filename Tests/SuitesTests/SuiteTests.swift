import Datasets
import Foundation
import Suites
import TestSupport
import Training
import XCTest

final class SuiteTests: XCTestCase {
    static let base = """
        name = "t"
        description = "a test suite"

        [defaults]
        dataset = "synthetic"
        model = "tiny"
        epochs = 3
        lr = 0.05

        [grid]
        seed = [0, 1]

        [[noise]]
        kind = "symmetric"
        rates = [0.2, 0.6]

        [[optimizer]]
        name = "sgd"

        [[optimizer]]
        name = "sam"
        rho = [0.05, 0.1]
        """

    func keys(_ text: String) throws -> [String: String] {
        let suite = try Suite.parse(text, file: "t.toml")
        var out: [String: String] = [:]
        for r in suite.runs { out[r.label] = RunKey.compute(r, identity: "synthetic").key }
        return out
    }

    func testExpansionOrderAndLabels() throws {
        let s = try Suite.parse(Self.base, file: "t.toml")
        XCTAssertEqual(s.name, "t")
        XCTAssertEqual(s.runs.count, 2 * 2 * 3)
        // Seed outermost, then noise, then optimizer.
        XCTAssertEqual(s.runs.prefix(3).map(\.label), ["synthetic tiny symmetric-0.2 sgd seed 0", "synthetic tiny symmetric-0.2 sam(rho=0.05) seed 0",
                                                      "synthetic tiny symmetric-0.2 sam(rho=0.1) seed 0"])
        XCTAssertEqual(s.runs[6].config.seed, 1)
        let r = s.runs[4]
        XCTAssertEqual(r.data.noise.kind, .symmetric)
        XCTAssertEqual(r.data.noise.rate, 0.6)
        XCTAssertEqual(r.data.noise.seed, 0, "the noise seed follows the run's seed")
        XCTAssertEqual(r.config.optimizer.sam?.rho, 0.05)
        XCTAssertEqual(r.config.epochs, 3)
        XCTAssertEqual(r.config.lr, 0.05)
        XCTAssertEqual(s.runs[10].data.noise.seed, 1)
        XCTAssertEqual(s.runs[10].data.splitSeed, 1)
    }

    /// `[[method]]` entries cross the noise and optimizer entries; a list sweeps a parameter;
    /// cross-entropy, named or not, is the run of a suite without methods (same key, same label);
    /// a method's parameters are axes; every group of a setting shares the baseline's setting key.
    func testMethodEntries() throws {
        let methods = Self.base + """

            [[method]]
            name = "ce"

            [[method]]
            name = "gce"
            q = [0.5, 0.7]

            [[method]]
            name = "mixup"
            """
        let s = try Suite.parse(methods, file: "t.toml")
        XCTAssertEqual(s.runs.count, 2 * 2 * 4 * 3, "seeds x rates x (ce, gce 0.5, gce 0.7, mixup) x optimizers")
        XCTAssertEqual(s.runs.prefix(6).map(\.label), [
            "synthetic tiny symmetric-0.2 sgd seed 0", "synthetic tiny symmetric-0.2 sam(rho=0.05) seed 0", "synthetic tiny symmetric-0.2 sam(rho=0.1) seed 0",
            "synthetic tiny symmetric-0.2 gce(q=0.5) sgd seed 0", "synthetic tiny symmetric-0.2 gce(q=0.5) sam(rho=0.05) seed 0",
            "synthetic tiny symmetric-0.2 gce(q=0.5) sam(rho=0.1) seed 0",
        ])
        XCTAssertNil(s.runs[0].config.method, "cross-entropy is the default, not stored")
        XCTAssertEqual(s.runs[3].config.method, MethodConfig(name: "gce", parameters: ["q": 0.5]))
        XCTAssertEqual(s.runs[9].config.method, MethodConfig(name: "mixup", parameters: ["alpha": 1]), "defaults filled in")
        let without = try keys(Self.base), with = try keys(methods)
        for (label, key) in without { XCTAssertEqual(with[label], key, "\(label): a suite's ce runs keep their keys") }
        XCTAssertEqual(Set(with.values).count, s.runs.count)
        XCTAssertEqual(Axes.values(s.runs[3])["method"], "gce")
        XCTAssertEqual(Axes.values(s.runs[3])["q"], "0.5")
        XCTAssertEqual(Axes.values(s.runs[0])["method"], "ce")
        XCTAssertNil(Axes.values(s.runs[0])["q"])
        let setting = RunKey.keys(s.runs[0], identity: "synthetic").setting
        for r in s.runs.prefix(12) { XCTAssertEqual(RunKey.keys(r, identity: "synthetic").setting, setting, r.label) }
        XCTAssertNotEqual(RunKey.keys(s.runs[3], identity: "synthetic").group, RunKey.keys(s.runs[6], identity: "synthetic").group)
    }

    /// A method entry's `seeds` and `optimizers` keep it to those runs (the costly methods with
    /// fewer seeds, or SGD only); the runs it keeps have the keys they have in a full cross, and
    /// `ls` is a method of its own, compared with ce.
    func testMethodEntriesWithSeedsAndOptimizers() throws {
        let full = Self.base + "\n[[method]]\nname = \"ce\"\n\n[[method]]\nname = \"ls\"\n"
        let scoped = Self.base + """

            [[method]]
            name = "ce"

            [[method]]
            name = "ls"
            epsilon = 0.1
            seeds = [1]
            optimizers = ["sgd"]
            """
        let s = try Suite.parse(scoped, file: "t.toml")
        // ce: 2 seeds x 2 rates x 3 optimizers; ls: seed 1 x 2 rates x sgd.
        XCTAssertEqual(s.runs.count, 12 + 2)
        let ls = s.runs.filter { $0.config.method?.name == "ls" }
        XCTAssertEqual(ls.map(\.label), ["synthetic tiny symmetric-0.2 ls(epsilon=0.1) sgd seed 1", "synthetic tiny symmetric-0.6 ls(epsilon=0.1) sgd seed 1"])
        let all = try keys(full), some = try keys(scoped)
        XCTAssertEqual(all.count, 24)
        for (label, key) in some { XCTAssertEqual(all[label], key, "\(label): the same run, the same key") }
        // Smoothing by the method and by the run setting at once is refused.
        XCTAssertThrowsError(try Suite.parse(scoped.replacingOccurrences(of: "lr = 0.05", with: "lr = 0.05\nlabel_smoothing = 0.1"), file: "t.toml")) { e in
            XCTAssertTrue("\(e)".contains("leave the run's label_smoothing at 0"), "\(e)")
        }
    }

    func testIntegersAreAcceptedAsFloats() throws {
        let s = try Suite.parse(Self.base.replacingOccurrences(of: "lr = 0.05", with: "lr = 1"), file: "t.toml")
        XCTAssertEqual(s.runs[0].config.lr, 1)
    }

    func testKeysIgnoreOrderAndSpelledOutDefaults() throws {
        let reference = try keys(Self.base)
        XCTAssertEqual(Set(reference.values).count, 12, "every run has its own key")
        // Reordered: tables, entries, list elements and keys.
        let reordered = """
            [[optimizer]]
            rho = [0.1, 0.05]
            name = "sam"

            [[optimizer]]
            name = "sgd"

            [grid]
            seed = [1, 0]

            [[noise]]
            rates = [0.6, 0.2]
            kind = "symmetric"

            [defaults]
            lr = 0.05
            epochs = 3
            model = "tiny"
            dataset = "synthetic"

            name = "renamed"
            """
        // (`name` after a table header belongs to that table in TOML; put it first.)
        let fixed = "name = \"renamed\"\n" + reordered.replacingOccurrences(of: "\nname = \"renamed\"", with: "")
        XCTAssertEqual(try keys(fixed), reference)
        // Every default spelled out.
        let spelled = Self.base.replacingOccurrences(of: "lr = 0.05", with: """
            lr = 0.05
            batch_size = 128
            schedule = "cosine"
            momentum = 0.9
            weight_decay = 5e-4
            nesterov = false
            crop_padding = 4
            flip = true
            cutout = 0
            validation = 0
            validation_labels = "noisy"
            label_smoothing = 0
            warmup_epochs = 0
            synthetic_classes = 10
            synthetic_train = 5000
            synthetic_test = 1000
            synthetic_seed = 1
            sharpness = true
            divergence_factor = 10
            """).replacingOccurrences(of: "rates = [0.2, 0.6]", with: "rates = [0.2, 0.6]\nselection = \"exact\"")
            .replacingOccurrences(of: "rho = [0.05, 0.1]", with: "rho = [0.05, 0.1]\neta = 0.01\ngradient = \"loss\"\nbn_policy = \"first-pass\"\nlook_interval = 1")
        XCTAssertEqual(try keys(spelled), reference)
        // An explicit noise seed equal to the run's seed is the same run.
        let one = Self.base.replacingOccurrences(of: "seed = [0, 1]", with: "seed = [0]")
        XCTAssertEqual(try keys(one.replacingOccurrences(of: "rates = [0.2, 0.6]", with: "rates = [0.2, 0.6]\nseed = 0")), try keys(one))
    }

    func testChangingAnyValueChangesTheKey() throws {
        let reference = try keys(Self.base)
        let changes: [(String, String)] = [
            ("lr = 0.05", "lr = 0.051"), ("epochs = 3", "epochs = 4"), ("model = \"tiny\"", "model = \"resnet8\""),
            ("lr = 0.05", "lr = 0.05\nweight_decay = 1e-4"), ("lr = 0.05", "lr = 0.05\nmomentum = 0.8"),
            ("lr = 0.05", "lr = 0.05\nbatch_size = 64"), ("lr = 0.05", "lr = 0.05\nschedule = \"constant\""),
            ("lr = 0.05", "lr = 0.05\nflip = false"), ("lr = 0.05", "lr = 0.05\nvalidation = 0.1"),
            ("lr = 0.05", "lr = 0.05\nsubset = 1000"), ("lr = 0.05", "lr = 0.05\nsynthetic_seed = 2"),
            ("lr = 0.05", "lr = 0.05\nsplit_seed = 7"), ("lr = 0.05", "lr = 0.05\nlabel_smoothing = 0.1"),
            ("rates = [0.2, 0.6]", "rates = [0.2, 0.6]\nselection = \"bernoulli\""),
            ("rates = [0.2, 0.6]", "rates = [0.2, 0.6]\nseed = 5"),
            ("rho = [0.05, 0.1]", "rho = [0.05, 0.1]\nbn_policy = \"both-passes\""),
            ("rho = [0.05, 0.1]", "rho = [0.05, 0.1]\ngradient = \"loss+wd\""),
        ]
        for (old, new) in changes {
            let changed = try keys(Self.base.replacingOccurrences(of: old, with: new))
            if old.hasPrefix("rho") {
                XCTAssertEqual(changed.filter { $0.key.contains("sgd") }, reference.filter { $0.key.contains("sgd") }, new)
            }
            // An option of the SAM entry changes the SAM runs only.
            for (label, key) in changed where !old.hasPrefix("rho") || label.contains("sam") {
                XCTAssertNotEqual(key, reference[label], "\(new): \(label) kept its key")
            }
        }
        // The data's identity is part of the key.
        let spec = try Suite.parse(Self.base, file: "t.toml").runs[0]
        XCTAssertNotEqual(RunKey.compute(spec, identity: "cifar10:sha256:aa").key, RunKey.compute(spec, identity: "cifar10:sha256:ab").key)
    }

    func testGroupsDifferOnlyInSeed() throws {
        let s = try Suite.parse(Self.base, file: "t.toml")
        let k = s.runs.map { RunKey.compute($0, identity: "synthetic") }
        XCTAssertEqual(k[0].group, k[6].group, "seed 0 and seed 1 of one setting share a group")
        XCTAssertNotEqual(k[0].key, k[6].key)
        XCTAssertEqual(Set(k.map(\.group)).count, 6)
    }

    /// Every file of the corpus says on its first line where its error is and what it says:
    /// `# expect: LINE KEY | FRAGMENT` (KEY `-` when no key is named).
    func testMalformedSuitesGiveLocatedErrors() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Malformed")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".toml") }.sorted()
        XCTAssertGreaterThanOrEqual(files.count, 20)
        for name in files {
            let path = dir.appendingPathComponent(name).path
            let text = try String(contentsOfFile: path, encoding: .utf8)
            let header = text.split(separator: "\n")[0].dropFirst("# expect: ".count)
            let parts = header.split(separator: "|", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            let location = parts[0].split(separator: " ")
            let line = Int(location[0])!, key = String(location[1]), fragment = parts[1]
            do {
                _ = try Suite.load(path)
                XCTFail("\(name): accepted")
            } catch let e as SuiteError {
                XCTAssertEqual(e.file, path, name)
                XCTAssertEqual(e.line, line, "\(name): \(e)")
                if key != "-" { XCTAssertEqual(e.key, key, "\(name): \(e)") }
                XCTAssertTrue(e.description.contains(fragment), "\(name): '\(e)' lacks '\(fragment)'")
                XCTAssertTrue(e.description.hasPrefix("\(path):\(line): "), "\(name): \(e)")
            }
        }
    }

    /// docs/SUITES.md documents every setting the parser accepts.
    func testEverySettingIsDocumented() throws {
        let doc = try String(contentsOf: repoRoot.appendingPathComponent("docs/SUITES.md"), encoding: .utf8)
        for name in Suite.settingNames { XCTAssertTrue(doc.contains("| `\(name)` |"), "\(name) is not in docs/SUITES.md") }
    }

    func testMissingFileIsNamed() {
        XCTAssertThrowsError(try Suite.load("/nonexistent/s.toml")) { e in
            XCTAssertTrue("\(e)".contains("/nonexistent/s.toml") && "\(e)".contains("no such file"), "\(e)")
        }
    }

    /// The shipped suites parse, and say what they measure.
    func testShippedSuitesParse() throws {
        let dir = repoRoot.appendingPathComponent("suites")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".toml") }
        XCTAssertTrue(Set(files).isSuperset(of: ["quick.toml", "noise.toml", "noise-small.toml", "asymmetric.toml", "cifar-n.toml"]), "\(files)")
        for f in files {
            let s = try Suite.load(dir.appendingPathComponent(f).path)
            XCTAssertFalse(s.runs.isEmpty, f)
            XCTAssertFalse(s.description.isEmpty, "\(f) has no description")
        }
        let noise = try Suite.load(dir.appendingPathComponent("noise.toml").path)
        XCTAssertEqual(noise.runs.count, 4 * 3 * 3, "4 rates x (SGD, SAM 0.05, SAM 0.1) x 3 seeds")
        XCTAssertTrue(noise.runs.allSatisfy { $0.config.model == "resnet32" && $0.config.epochs == 200 && $0.data.dataset == .cifar10 })
        // The SAM paper's own Table 4 block: bootstrap x (ce, mixup at 4 alphas) x (sgd, sam at 2 rhos) x 4 rates x 3 seeds.
        let table4 = try Suite.load(dir.appendingPathComponent("table4.toml").path)
        XCTAssertEqual(table4.runs.count, 2 * 5 * 3 * 4 * 3)
        XCTAssertTrue(table4.runs.allSatisfy { $0.config.model == "resnet32" && $0.config.epochs == 200 && $0.data.dataset == .cifar10 && $0.data.trainSubset == nil })
        let rows = Set(table4.runs.map { "\($0.config.bootstrap ? "bootstrap+" : "")\($0.config.method?.name ?? "ce")+\($0.config.optimizer.sam == nil ? "sgd" : "sam")" })
        XCTAssertTrue(rows.isSuperset(of: ["ce+sgd", "mixup+sgd", "bootstrap+mixup+sgd", "ce+sam", "bootstrap+ce+sam"]), "the paper's five rows: \(rows)")
        XCTAssertEqual(Set(table4.runs.compactMap { $0.config.method?["alpha"] }), [1, 8, 16, 32])
        XCTAssertEqual(Set(table4.runs.map(\.data.noise.rate)), [0.2, 0.4, 0.6, 0.8])
    }
}
