import Datasets
import Engine
import Foundation
import TestSupport
import XCTest

/// Checkpoints between sambench and PyTorch, through scripts/torch-interop.py: torchvision
/// ResNets (random init, seeded) give sambench the same eval logits, a sambench-trained
/// tv_resnet18 loads into the PyTorch module strictly, and a CIFAR ResNet-20 PyTorch trained
/// for an epoch scores the same on the real CIFAR-10 test set in `sambench eval`. Python is
/// $SAMBENCH_PYTHON (.ci/run installs the CPU torch wheel there), else python3; without torch
/// the tests skip.
final class TorchInteropTests: XCTestCase {
    var dir: URL!
    var python: String!

    override func setUpWithError() throws {
        let env = ProcessInfo.processInfo.environment
        python = env["SAMBENCH_PYTHON"] ?? "/usr/bin/python3"
        let probe = try runCommand(python, ["-c", "import torch, numpy, safetensors"])
        if probe.status != 0 { throw XCTSkip("no Python with torch, numpy and safetensors (set SAMBENCH_PYTHON): \(python!)") }
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("interop-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        if let dir { try? FileManager.default.removeItem(at: dir) }
    }

    var script: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("scripts/torch-interop.py").path
    }

    /// Runs the script; the JSON of its `RESULT` line.
    func interop(_ args: [String], file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        let r = try runCommand(python, [script, "--threads", "2"] + args)
        XCTAssertEqual(r.status, 0, r.output, file: file, line: line)
        guard let last = r.output.split(separator: "\n").last(where: { $0.hasPrefix("RESULT ") }),
              let json = try JSONSerialization.jsonObject(with: Data(last.dropFirst(7).utf8)) as? [String: Any] else {
            XCTFail("no RESULT line: \(r.output)", file: file, line: line)
            return [:]
        }
        return json
    }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    /// |a - b| <= 1e-4 * (|b| + rms(b)): 1e-4 relative, measured against the logits' own scale
    /// where a logit is near zero.
    func assertRelative(_ a: [Float], _ b: [Float], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        let rms = Float((b.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(max(b.count, 1))).squareRoot())
        assertClose(a, b, atol: 1e-4 * rms, rtol: 1e-4, what, file: file, line: line)
    }

    func testTorchvisionResNetsGiveTheSameLogits() throws {
        EngineThreads.set(2)
        for (arch, stem) in [("resnet18", "imagenet"), ("resnet18", "cifar"), ("resnet50", "imagenet"), ("resnet50", "cifar")] {
            let weights = path("\(arch)-\(stem).safetensors"), aux = path("\(arch)-\(stem)-aux.safetensors")
            _ = try interop(["torchvision", "--arch", arch, "--stem", stem, "--weights", weights, "--aux", aux, "--seed", "3"])
            let name = "tv_\(arch)" + (stem == "cifar" ? "_cifar" : "")
            let state = ModelState(model: try Architectures.make(name, numClasses: 10), seed: 0)
            try Checkpoint.load(into: state, from: weights)  // strict: every tensor, nothing else
            let io = try SafetensorsFile.read(aux)
            let input = io["input"]!, expected = io["logits"]!.floats
            let ex = try DNNLExecutor(state: state, batchSize: input.shape[0])
            let logits = Array(UnsafeBufferPointer(start: ex.forward(input: input.floats, mode: .eval), count: expected.count))
            XCTAssertGreaterThan(expected.map(abs).max()!, 1e-3, "\(name): logits too small for the comparison to mean anything")
            assertRelative(logits, expected, "\(name) (\(stem) stem): eval logits against PyTorch")
        }
    }

    /// `image_size`'s resize is PyTorch's F.interpolate(mode="bilinear", align_corners=False), up and down.
    func testBilinearResizeMatchesPyTorch() throws {
        let input = randomArray(2 * 3 * 32 * 32, seed: 31)
        let inPath = path("resize-in.safetensors")
        try SafetensorsFile(tensors: ["input": SafetensorsTensor(floats: input, shape: [2, 3, 32, 32])]).write(to: inPath)
        for size in [48, 224, 20] {
            let outPath = path("resize-\(size).safetensors")
            let script = """
                import sys, torch, torch.nn.functional as F
                from safetensors.torch import load_file, save_file
                x = load_file(sys.argv[1])["input"]
                save_file({"y": F.interpolate(x, size=(int(sys.argv[3]),) * 2, mode="bilinear", align_corners=False).contiguous()}, sys.argv[2])
                """
            let r = try runCommand(python, ["-c", script, inPath, outPath, String(size)])
            XCTAssertEqual(r.status, 0, r.output)
            let expected = try SafetensorsFile.read(outPath)["y"]!.floats
            let resize = BilinearResize(from: 32, to: size)
            var out = [Float](repeating: 0, count: 2 * 3 * size * size)
            input.withUnsafeBufferPointer { src in out.withUnsafeMutableBufferPointer { resize.apply(images: 2, src.baseAddress!, into: $0.baseAddress!) } }
            // The weights agree to a float32 ulp of the source position (31.x at 224: 1.9e-6, a fused
            // multiply-add or not), times a neighbour difference of at most a few units.
            assertClose(out, expected, atol: 2e-5, rtol: 1e-5, "bilinear 32 -> \(size)")
        }
    }

    func testSambenchTrainedTorchvisionResNetLoadsStrictlyInPyTorch() throws {
        let weights = path("tv18.safetensors")
        let r = try runSeparated(try sambenchExecutable(), ["train", "--model", "tv_resnet18", "--epochs", "1", "--train-size", "128",
                                                            "--test-size", "32", "--batch", "32", "--threads", "2", "--no-sharpness", "--save", weights])
        XCTAssertEqual(r.status, 0, r.err)
        let state = ModelState(model: try Architectures.make("tv_resnet18"), seed: 0)
        try Checkpoint.load(into: state, from: weights)
        let input = randomArray(3 * 3 * 32 * 32, seed: 12)
        let aux = path("tv18-aux.safetensors")
        try SafetensorsFile(tensors: ["input": SafetensorsTensor(floats: input, shape: [3, 3, 32, 32])]).write(to: aux)
        EngineThreads.set(2)
        let ex = try DNNLExecutor(state: state, batchSize: 3)
        let logits = Array(UnsafeBufferPointer(start: ex.forward(input: input, mode: .eval), count: 30))
        let json = try interop(["load", "--arch", "resnet18", "--weights", weights, "--aux", aux])
        let torchLogits = try XCTUnwrap(json["logits"] as? [Double]).map { Float($0) }
        assertRelative(logits, torchLogits, "sambench-trained tv_resnet18 in PyTorch")
    }

    /// The acceptance check of docs/FINETUNE.md: a ResNet-20 trained by PyTorch on the real
    /// CIFAR-10 (100 steps of 128 images: trained weights and BN statistics are what the check
    /// needs, and the whole epoch was the slowest test), evaluated by both on the 10,000 test images.
    func testPyTorchTrainedResNet20EvaluatesTheSame() throws {
        guard let data = ProcessInfo.processInfo.environment["SAMBENCH_TEST_CIFAR10"] else {
            throw XCTSkip("SAMBENCH_TEST_CIFAR10 not set (.ci/run builds it from ../shared/datasets)")
        }
        let weights = path("resnet20-torch.safetensors")
        let torch = try interop(["cifar-resnet20", "--data", data, "--out", weights, "--steps", "100"])
        let torchCorrect = try XCTUnwrap(torch["correct"] as? Int)
        let r = try runSeparated(try sambenchExecutable(), ["eval", "--checkpoint", weights, "--model", "resnet20", "--dataset", "cifar10",
                                                            "--data-dir", data, "--threads", "2", "--format", "json"])
        XCTAssertEqual(r.status, 0, r.err)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
        let correct = try XCTUnwrap(json["correct"] as? Int)
        XCTAssertEqual(json["total"] as? Int, 10_000)
        XCTAssertGreaterThan(torchCorrect, 2_000, "100 steps of PyTorch training should beat chance (1,000)")
        XCTAssertLessThanOrEqual(abs(correct - torchCorrect), 2, "sambench eval \(correct) vs PyTorch \(torchCorrect) correct of 10,000")
        print("resnet20 after 100 PyTorch steps: PyTorch \(torchCorrect), sambench eval \(correct) correct of 10,000")
    }
}
