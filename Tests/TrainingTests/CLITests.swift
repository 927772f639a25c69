import Engine
import Foundation
import TestSupport
import XCTest

/// Runs the built `sambench` executable as a user would.
final class CLITests: XCTestCase {
    var binary: URL!

    override func setUpWithError() throws {
        binary = try sambenchExecutable()
    }

    func run(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
        try runSeparated(binary, args)
    }

    func testHelpAndVersion() throws {
        let help = try run(["--help"])
        XCTAssertEqual(help.status, 0)
        XCTAssertTrue(help.out.contains("train") && help.out.contains("bench"), help.out)
        let version = try run(["--version"])
        XCTAssertEqual(version.status, 0)
        XCTAssertFalse(version.out.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty)
        let benchHelp = try run(["bench", "--help"])
        XCTAssertTrue(benchHelp.out.contains("--format"), benchHelp.out)
    }

    func testBenchJSONMirrorsTorchBench() throws {
        let r = try run(["bench", "--model", "tiny", "--batch", "8", "--steps", "3", "--warmup", "1", "--threads", "1", "--format", "json"])
        XCTAssertEqual(r.status, 0, r.err)
        let json = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        let results = json["results"] as! [[String: Any]]
        XCTAssertEqual(results.map { $0["mode"] as! String }, ["eval", "sgd", "sam"])
        for res in results {
            XCTAssertEqual(res["model"] as? String, "tiny")
            XCTAssertEqual(res["batch"] as? Int, 8)
            let ips = res["images_per_s"] as! [String: Double]
            XCTAssertGreaterThan(ips["median"]!, 0)
            XCTAssertLessThanOrEqual(ips["min"]!, ips["median"]!)
            XCTAssertLessThanOrEqual(ips["median"]!, ips["max"]!)
            XCTAssertGreaterThan(res["fwd_flops_per_image"] as! Int, 0)
            XCTAssertEqual(res["finite"] as? Bool, true)
        }
    }

    func testBenchProfileSaysWhereTheTimeGoesAndRecordsKernelChoices() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cli-profile-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let tuning = dir.appendingPathComponent("onednn.json")
        let args = ["bench", "--model", "resnet8", "--batch", "8", "--steps", "2", "--warmup", "0", "--threads", "1",
                    "--modes", "sgd,sam", "--profile", "--format", "json"]
        var timedPasses: [Int] = []
        for _ in 0..<2 {
            let r = try runSeparated(binary, args, environment: ["SAMBENCH_TUNING_FILE": tuning.path])
            XCTAssertEqual(r.status, 0, r.err)
            let results = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])?["results"] as? [[String: Any]])
            XCTAssertEqual(results.count, 2)
            for res in results {
                let mode = res["mode"] as! String
                let profile = try XCTUnwrap(res["profile"] as? [String: Any], "\(mode): no profile")
                XCTAssertGreaterThan(profile["sgemm_gflops"] as! Double, 0)
                let phases = (profile["phases"] as! [[String: Any]]).map { $0["phase"] as! String }
                for phase in ["step", "forward", "loss", "backward"] { XCTAssertTrue(phases.contains(phase), "\(mode): \(phases)") }
                XCTAssertTrue(phases.contains(mode == "sam" ? "SAM restore and update" : "optimizer update"), "\(mode): \(phases)")
                if mode == "sam" { XCTAssertTrue(phases.contains("SAM perturbation"), "\(phases)") }
                let shares = (profile["kinds"] as! [[String: Any]]).map { $0["share"] as! Double }
                XCTAssertTrue(shares.allSatisfy { $0 >= 0 } && shares.reduce(0, +) <= 1.01, "\(shares)")
                let ops = profile["ops"] as! [[String: Any]]
                let convolutions = ops.filter { ($0["operation"] as! String).hasPrefix("conv") }
                // resnet8: 9 convolutions, each forward and backward-weights, all but the stem backward-data.
                XCTAssertEqual(convolutions.filter { $0["operation"] as! String == "conv fwd" && $0["pass"] as! String == "forward" }.count, 9)
                XCTAssertEqual(convolutions.filter { $0["operation"] as! String == "conv bwd data" }.count, 8)
                XCTAssertTrue(convolutions.allSatisfy { ($0["gflops"] as? Double ?? 0) > 0 && !($0["implementation"] as! String).isEmpty })
                XCTAssertFalse((profile["best_convolution_rates"] as! [Any]).isEmpty)
            }
            timedPasses.append((results[0]["profile"] as! [String: Any])["tuned"].map { ($0 as! [Any]).count } ?? -1)
        }
        // The first run timed the passes that have a choice and recorded them; the second read them.
        XCTAssertGreaterThan(timedPasses[0], 0)
        XCTAssertEqual(timedPasses[1], 0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: tuning.path))
        let text = try runSeparated(binary, ["bench", "--model", "tiny", "--batch", "8", "--steps", "1", "--warmup", "0", "--threads", "1",
                                             "--modes", "sgd", "--profile"], environment: ["SAMBENCH_TUNING_FILE": "off"])
        XCTAssertEqual(text.status, 0, text.err)
        for part in ["ceiling", "phase", "convolution layer", "best rate per convolution shape"] { XCTAssertTrue(text.out.contains(part), text.out) }
    }

    func testTrainPrintsEpochsAndSavesCheckpoint() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cli-\(UUID().uuidString).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let r = try run(["train", "--epochs", "2", "--train-size", "256", "--test-size", "64", "--batch", "64", "--threads", "1", "--save", path])
        XCTAssertEqual(r.status, 0, r.err)
        let lines = r.out.split(separator: "\n")
        let epochLines = lines.filter { $0.hasPrefix("train ") }.map { $0.split(separator: " ")[1] }
        XCTAssertEqual(epochLines, ["1", "2"], r.out)
        XCTAssertTrue(lines.contains { $0.hasPrefix("train: sharpness over") }, r.out)
        XCTAssertTrue(lines.contains("status: done"), r.out)
        let state = ModelState(model: try Architectures.make("tiny"), seed: 0)
        XCTAssertNoThrow(try Checkpoint.load(into: state, from: path))
    }

    func testBadArgumentsAreExplained() throws {
        let r1 = try run(["train", "--model", "resnet21", "--epochs", "1", "--train-size", "128", "--test-size", "8"])
        XCTAssertNotEqual(r1.status, 0)
        XCTAssertTrue(r1.err.contains("6n+2"), r1.err)
        let r2 = try run(["train", "--dataset", "cifar10", "--data-dir", "/nonexistent"])
        XCTAssertNotEqual(r2.status, 0)
        XCTAssertTrue(r2.err.contains("/nonexistent/cifar-10-batches-bin/data_batch_1.bin") && r2.err.contains("sambench data download"), r2.err)
        let r4 = try run(["train", "--noise", "symmetric", "--noise-rate", "1.5"])
        XCTAssertNotEqual(r4.status, 0)
        XCTAssertTrue(r4.err.contains("noise rate"), r4.err)
        let r3 = try run(["bench", "--modes", "adam"])
        XCTAssertNotEqual(r3.status, 0)
        XCTAssertTrue(r3.err.contains("unknown mode"), r3.err)
    }

    /// Numbers that pass a lower bound but no upper one (a count near Int.max, a batch of 10^8,
    /// a non-finite normalisation) are refused with the option named, never a trap (exit 132/134)
    /// or an allocation abort, and before anything is trained or read.
    func testHugeValuesAreRefusedNotTrapped() throws {
        let quick = ["train", "--model", "tiny", "--train-size", "128", "--test-size", "32", "--batch-size", "32", "--threads", "1"]
        let cases: [([String], String)] = [
            (quick + ["--epochs", "\(Int.max)"], "epochs must be <="),
            (quick + ["--epochs", "2", "--warmup-epochs", "\(Int.max)"], "warmup must be in"),
            (quick + ["--epochs", "2", "--schedule", "multistep", "--milestones", "\(Int.max)"], "milestones must be epochs in"),
            (quick + ["--epochs", "1", "--crop-padding", "\(Int.max)"], "crop padding must be <="),
            (quick + ["--epochs", "1", "--weight-decay", "1e308"], "weight decay"),
            (["train", "--model", "tiny", "--train-size", "100000000", "--epochs", "1"], "at most 1000000"),
            (["bench", "--model", "tiny", "--batch", "100000000"], "--batch must be <="),
            (["eval", "--checkpoint", "/nonexistent.safetensors", "--batch", "100000000"], "--batch must be <="),
            (["eval", "--checkpoint", "/nonexistent.safetensors", "--mean", "0.5,0.5,nan", "--std", "0.2,0.2,0.2"], "finite numbers"),
            (["eval", "--checkpoint", "/nonexistent.safetensors", "--mean", "0.5,0.5,0.5", "--std", "0.2,0.2,inf"], "finite numbers"),
        ]
        for (args, expected) in cases {
            let r = try run(args)
            XCTAssertTrue([1, 2, 64].contains(r.status), "\(args): exit \(r.status)\n\(r.err)")
            XCTAssertTrue(r.err.contains(expected), "\(args): \(r.err)")
            XCTAssertFalse(r.out.contains("epoch "), "\(args): trained: \(r.out)")
        }
    }

    /// A negative number given to a numeric option is read as its value and judged by the
    /// option's own check (it was taken for an option: "Missing value for '--seed'").
    func testNegativeNumbersAreValuesNotOptions() throws {
        let quick = ["train", "--model", "tiny", "--train-size", "128", "--test-size", "32", "--batch-size", "32", "--threads", "1"]
        let cases: [([String], String)] = [
            (quick + ["--seed", "-1"], "The value '-1' is invalid for '--seed <seed>'"),
            (quick + ["--epochs", "-3"], "epochs must be >= 1, got -3"),
            (quick + ["--epochs", "1", "--noise", "symmetric", "--noise-rate", "-0.5"], "noise rate"),
            (quick + ["--epochs", "1", "--momentum", "-0.9"], "momentum"),
            (["bench", "--model", "tiny", "--steps", "-1"], "--steps must be >= 1"),
            (["eval", "--checkpoint", "/nonexistent.safetensors", "--batch", "-5"], "--batch must be >= 1"),
            (["run", "suites/quick.toml", "--jobs", "-2"], "--jobs"),
        ]
        for (args, expected) in cases {
            let r = try run(args)
            XCTAssertTrue([1, 2, 64].contains(r.status), "\(args): exit \(r.status)\n\(r.err)")
            XCTAssertTrue(r.err.contains(expected), "\(args): \(r.err)")
            XCTAssertFalse(r.err.contains("Missing value"), "\(args): \(r.err)")
            XCTAssertFalse(r.out.contains("epoch "), "\(args): trained: \(r.out)")
        }
    }

    /// --save and --checkpoint into a folder that is missing (or is a file) are refused before
    /// training, not after it: no epoch line is printed.
    func testOutputFoldersAreCheckedBeforeTraining() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cli-out-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("plain-file").path
        XCTAssertTrue(FileManager.default.createFile(atPath: file, contents: Data("x".utf8)))
        let quick = ["train", "--model", "tiny", "--epochs", "1", "--train-size", "128", "--test-size", "32", "--batch-size", "32"]
        for (flag, path) in [("--save", dir.path + "/missing/w.safetensors"), ("--checkpoint", dir.path + "/missing/deeper/c.ckpt"),
                             ("--save", file + "/w.safetensors")] {
            let r = try run(quick + [flag, path])
            XCTAssertEqual(r.status, 64, "\(flag) \(path): " + r.out + r.err)
            XCTAssertTrue(r.err.contains(flag) && r.err.contains("does not exist") && r.err.contains(path), r.err)
            XCTAssertFalse(r.out.contains("test acc") || r.out.contains("saved"), r.out)
        }
    }
}
