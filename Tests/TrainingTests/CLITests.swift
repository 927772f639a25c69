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
