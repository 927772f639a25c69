import AllocCounter
import Engine
import Foundation
import TestSupport
import XCTest

final class CheckpointTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("sambench-ckpt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func trainedState(_ name: String = "resnet8") throws -> ModelState {
        let state = ModelState(model: try Architectures.make(name), seed: 42)
        var rng = Xoshiro256(seed: 8)
        for i in 0..<state.stats.count { state.stats.pointer[i] = Float(rng.nextUniform()) + 0.1 }
        for i in state.batchesTracked.indices { state.batchesTracked[i] = Int64(7 + i) }
        return state
    }

    func testRoundTripIsBitIdentical() throws {
        let a = try trainedState()
        let p1 = dir.appendingPathComponent("a.safetensors").path
        try Checkpoint.save(a, to: p1)
        let b = ModelState(model: a.model, seed: 1)
        try Checkpoint.load(into: b, from: p1)
        XCTAssertEqual(a.params.array.map(\.bitPattern), b.params.array.map(\.bitPattern))
        XCTAssertEqual(a.stats.array.map(\.bitPattern), b.stats.array.map(\.bitPattern))
        XCTAssertEqual(a.batchesTracked, b.batchesTracked)
        let p2 = dir.appendingPathComponent("b.safetensors").path
        try Checkpoint.save(b, to: p2)
        XCTAssertEqual(FileManager.default.contents(atPath: p1), FileManager.default.contents(atPath: p2))
        // Header: 8-byte length, JSON padded to a multiple of 8.
        let bytes = [UInt8](FileManager.default.contents(atPath: p1)!)
        let n = bytes[0..<8].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        XCTAssertEqual(n % 8, 0)
    }

    func expectError(_ bytes: [UInt8], mentions words: [String], file: StaticString = #filePath, line: UInt = #line) {
        let path = dir.appendingPathComponent("bad-\(UUID().uuidString).safetensors").path
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        let state = ModelState(model: try! Architectures.make("resnet8"), seed: 1)
        let before = state.params.array
        do {
            try Checkpoint.load(into: state, from: path)
            XCTFail("loading a bad file succeeded", file: file, line: line)
        } catch {
            let text = "\(error)"
            XCTAssertTrue(text.contains(path), "error does not name the file: \(text)", file: file, line: line)
            for w in words { XCTAssertTrue(text.contains(w), "error does not mention \(w): \(text)", file: file, line: line) }
        }
        XCTAssertEqual(state.params.array, before, "a failed load changed the state", file: file, line: line)
    }

    func header(_ json: String) -> [UInt8] {
        var h = Array(json.utf8)
        while h.count % 8 != 0 { h.append(0x20) }
        return withUnsafeBytes(of: UInt64(h.count).littleEndian) { Array($0) } + h
    }

    func testBadFilesGiveErrorsNamingFileAndTensor() throws {
        let good = try trainedState()
        let path = dir.appendingPathComponent("good.safetensors").path
        try Checkpoint.save(good, to: path)
        let bytes = [UInt8](FileManager.default.contents(atPath: path)!)

        expectError([], mentions: ["truncated"])
        expectError(Array(bytes.prefix(5)), mentions: ["truncated"])
        expectError(Array(bytes.prefix(100)), mentions: ["header length"])
        expectError(Array(bytes.dropLast(10)), mentions: ["outside"])          // data area cut short
        expectError(header("not json") , mentions: ["JSON"])
        expectError(header(#"{"fc.bias":{"dtype":"F32","shape":[10],"data_offsets":[0,400]}}"#) + [UInt8](repeating: 0, count: 40), mentions: ["fc.bias", "outside"])
        expectError(header(#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#)
                    + [UInt8](repeating: 0, count: 24), mentions: ["overlap"])
        expectError(header(#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#) + [UInt8](repeating: 0, count: 16), mentions: ["a", "expected 12"])
        expectError(header(#"{"a":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]}}"#) + [UInt8](repeating: 0, count: 8), mentions: ["a", "BF16"])

        // Well-formed files that do not fit the model.
        var tensors = Checkpoint.tensors(of: good)
        tensors["fc.weight"] = SafetensorsTensor(floats: [Float](repeating: 0, count: 64 * 11), shape: [11, 64])
        expectError(SafetensorsFile(tensors: tensors).serialized(), mentions: ["fc.weight", "[11, 64]", "[10, 64]"])
        tensors = Checkpoint.tensors(of: good)
        tensors.removeValue(forKey: "layer2.0.shortcut.1.running_var")
        expectError(SafetensorsFile(tensors: tensors).serialized(), mentions: ["layer2.0.shortcut.1.running_var", "missing"])
        tensors = Checkpoint.tensors(of: good)
        tensors["bn1.weight"] = SafetensorsTensor(dtype: .F64, shape: [16], bytes: [UInt8](repeating: 0, count: 128))
        expectError(SafetensorsFile(tensors: tensors).serialized(), mentions: ["bn1.weight", "F64"])
        tensors = Checkpoint.tensors(of: good)
        tensors["extra.weight"] = SafetensorsTensor(floats: [1], shape: [1])
        expectError(SafetensorsFile(tensors: tensors).serialized(), mentions: ["extra.weight"])
    }

    /// A shape whose element count overflows is an error naming the tensor (it trapped), and
    /// non-finite weights or BN statistics are refused by name (they trained to chance, `done`).
    func testOverflowingShapesAndNonFiniteValuesAreErrors() throws {
        for shape in ["[4294967296,4294967296]", "[4611686018427387904,2]", "[3037000500,3037000500]", "[2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2]"] {
            expectError(header("{\"fc.bias\":{\"dtype\":\"F32\",\"shape\":\(shape),\"data_offsets\":[0,8]}}") + [UInt8](repeating: 0, count: 8),
                        mentions: ["fc.bias", "more elements"])
        }
        let good = try trainedState()
        for (name, value) in [("conv1.weight", Float.nan), ("fc.bias", -Float.infinity), ("bn1.running_var", Float.infinity),
                              ("layer1.0.bn2.weight", Float.nan)] {
            var tensors = Checkpoint.tensors(of: good)
            var v = tensors[name]!.floats
            v[v.count - 1] = value
            v[0] = value
            tensors[name] = SafetensorsTensor(floats: v, shape: tensors[name]!.shape)
            expectError(SafetensorsFile(tensors: tensors).serialized(), mentions: [name, "2 non-finite values", "at index 0"])
        }
    }

    /// Strict loading reports every mismatch at once (missing, mis-shaped, unexpected), changes
    /// nothing when it refuses, and loads around skipped prefixes, which keep the state's values.
    func testStrictLoadListsEveryMismatchAndSkipsPrefixes() throws {
        let good = try trainedState()
        var tensors = Checkpoint.tensors(of: good)
        tensors.removeValue(forKey: "layer1.0.conv1.weight")
        tensors.removeValue(forKey: "layer3.0.bn2.running_mean")
        tensors["fc.weight"] = SafetensorsTensor(floats: [Float](repeating: 0, count: 64 * 7), shape: [7, 64])
        tensors["head.extra"] = SafetensorsTensor(floats: [1, 2], shape: [2])
        let file = SafetensorsFile(tensors: tensors)
        let target = ModelState(model: good.model, seed: 5)
        let before = target.params.array
        XCTAssertThrowsError(try Checkpoint.load(into: target, file: file, source: "x.safetensors")) { error in
            let text = "\(error)"
            for w in ["x.safetensors", "2 missing", "layer1.0.conv1.weight [16, 16, 3, 3]", "layer3.0.bn2.running_mean [64]",
                      "1 mis-shaped", "fc.weight: shape [7, 64] in the file, [10, 64] in the model", "1 in the file but not in the model", "head.extra"] {
                XCTAssertTrue(text.contains(w), "error does not mention '\(w)': \(text)")
            }
        }
        XCTAssertEqual(target.params.array, before, "a refused file changed the state")

        // Only the classifier differs: the error says so; skipping "fc" loads the rest and keeps fc.
        tensors = Checkpoint.tensors(of: good)
        tensors["fc.weight"] = SafetensorsTensor(floats: [Float](repeating: 0, count: 64 * 7), shape: [7, 64])
        tensors["fc.bias"] = SafetensorsTensor(floats: [Float](repeating: 0, count: 7), shape: [7])
        let headless = SafetensorsFile(tensors: tensors)
        XCTAssertThrowsError(try Checkpoint.load(into: target, file: headless, source: "h")) { XCTAssertTrue("\($0)".contains("only the classifier differs"), "\($0)") }
        XCTAssertEqual(Checkpoint.classifierPrefix(of: good.model), "fc")
        let report = try Checkpoint.load(into: target, file: headless, source: "h", skip: ["fc"])
        XCTAssertEqual(report.keptFromState, ["fc.weight", "fc.bias"])
        XCTAssertEqual(report.ignoredInFile, ["fc.bias", "fc.weight"])
        for p in good.model.params {
            let expected = p.name.hasPrefix("fc.") ? Array(before[p.offset..<(p.offset + p.count)]) : Array(good.view(p))
            XCTAssertEqual(Array(target.view(p)), expected, p.name)
        }
        XCTAssertEqual(target.batchesTracked, good.batchesTracked)
        XCTAssertTrue(Checkpoint.name("fc.weight", isUnder: "fc"))
        XCTAssertFalse(Checkpoint.name("fc2.weight", isUnder: "fc"))
        XCTAssertTrue(Checkpoint.name("layer4.1.bn2.bias", isUnder: "layer4."))

        // Files from before PyTorch 0.4.1 have no num_batches_tracked: loaded, counted as 0, reported.
        tensors = Checkpoint.tensors(of: good)
        for bn in good.model.batchNorms { tensors.removeValue(forKey: bn.prefix + ".num_batches_tracked") }
        let old = try Checkpoint.load(into: target, file: SafetensorsFile(tensors: tensors), source: "old")
        XCTAssertEqual(old.missingBatchCounts.count, good.model.batchNorms.count)
        XCTAssertEqual(target.batchesTracked, Array(repeating: 0, count: good.model.batchNorms.count))
    }

    /// A file sambench wrote loads with the Python `safetensors` package into the same tensors;
    /// where PyTorch is importable too, `load_state_dict` into the torch_bench.py ResNet works
    /// (strict) and gives the same eval logits as sambench. Python is $SAMBENCH_PYTHON or python3.
    func testPythonReadsSambenchCheckpoints() throws {
        let python = ProcessInfo.processInfo.environment["SAMBENCH_PYTHON"] ?? "/usr/bin/env"
        let pyArgs = ProcessInfo.processInfo.environment["SAMBENCH_PYTHON"] == nil ? ["python3"] : []
        func runPython(_ script: String, _ args: [String]) throws -> (Int32, String) {
            let r = try runCommand(python, pyArgs + ["-c", script] + args)
            return (r.status, r.output)
        }
        let (probe, _) = try runPython("import safetensors.numpy, numpy", [])
        if probe != 0 { throw XCTSkip("Python with safetensors and numpy not found (set SAMBENCH_PYTHON); skipped") }

        let state = try trainedState()
        let path = dir.appendingPathComponent("model.safetensors").path
        try Checkpoint.save(state, to: path, metadata: ["note": "test"])
        // Python reads every tensor and writes them back with its own writer; the copy must
        // hold the same names, dtypes, shapes and bytes.
        let copy = dir.appendingPathComponent("copy.safetensors").path
        let script = """
        import sys, safetensors.numpy as st
        d = st.load_file(sys.argv[1])
        st.save_file(d, sys.argv[2])
        print(len(d))
        """
        let (status, out) = try runPython(script, [path, copy])
        XCTAssertEqual(status, 0, out)
        let back = try SafetensorsFile.read(copy)
        let mine = Checkpoint.tensors(of: state)
        XCTAssertEqual(Set(back.tensors.keys), Set(mine.keys))
        for (name, t) in mine { XCTAssertEqual(back[name], t, "\(name) differs after the Python round trip") }

        // PyTorch round trip, where torch is available: strict load_state_dict into the
        // torch_bench.py modules (ResNet and Wide-ResNet names) and the same eval logits.
        let (hasTorch, _) = try runPython("import torch", [])
        guard hasTorch == 0 else { print("PyTorch not importable: load_state_dict check skipped"); return }
        let input = randomArray(4 * 3 * 32 * 32, seed: 77)
        let inPath = dir.appendingPathComponent("input.safetensors").path
        try SafetensorsFile(tensors: ["input": SafetensorsTensor(floats: input, shape: [4, 3, 32, 32])]).write(to: inPath)
        for name in ["resnet8", "wrn16_4"] {
            let s = name == "resnet8" ? state : ModelState(model: try Architectures.make(name), seed: 3)
            let path = dir.appendingPathComponent("\(name).safetensors").path
            try Checkpoint.save(s, to: path)
            let ex = try DNNLExecutor(state: s, batchSize: 4)
            let logits = Array(UnsafeBufferPointer(start: ex.forward(input: input, mode: .eval), count: 40))
            let torchScript = """
            import sys, json, torch
            sys.path.insert(0, sys.argv[3])
            import torch_bench
            from safetensors.torch import load_file
            m = torch_bench.build_model(sys.argv[4])
            m.load_state_dict(load_file(sys.argv[1]), strict=True)
            m.eval()
            with torch.no_grad():
                print(json.dumps(m(load_file(sys.argv[2])["input"]).flatten().tolist()))
            """
            let (ts, tout) = try runPython(torchScript, [path, inPath, sharedDir.appendingPathComponent("anchors").path, name])
            XCTAssertEqual(ts, 0, tout)
            let torchLogits = (try JSONSerialization.jsonObject(with: Data(tout.split(separator: "\n").last!.utf8)) as! [Double]).map { Float($0) }
            assertClose(logits, torchLogits, "\(name): PyTorch eval logits of a sambench checkpoint")
        }
    }

    /// A file is written through a temporary renamed over its path, which would replace a device
    /// node, a FIFO or a folder's entry: such a path is refused, saying what it is, and stays as it was.
    func testOutputPathsMustBeRegularFilesOrAbsent() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("out-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fifo = dir + "/fifo", file = dir + "/file.safetensors", absent = dir + "/absent.safetensors"
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        XCTAssertTrue(FileManager.default.createFile(atPath: file, contents: Data("old".utf8)))
        let link = dir + "/link"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: fifo)
        for (path, what) in [(dir, "a directory"), (fifo, "a FIFO"), ("/dev/null", "a character device"), (link, "a FIFO"), ("", "an empty output path")] {
            XCTAssertThrowsError(try OutputFile.check(path), path) { XCTAssertTrue("\($0)".contains(what), "\(path): \($0)") }
        }
        XCTAssertNoThrow(try OutputFile.check(file))
        XCTAssertNoThrow(try OutputFile.check(absent))
        let tiny = SafetensorsFile(tensors: ["x": SafetensorsTensor(floats: [1, 2], shape: [2])])
        XCTAssertThrowsError(try tiny.write(to: fifo)) { XCTAssertTrue("\($0)".contains("FIFO"), "\($0)") }
        var st = stat()
        XCTAssertEqual(stat(fifo, &st), 0)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFIFO, "the FIFO was replaced")
        XCTAssertNoThrow(try tiny.write(to: file))
        XCTAssertNoThrow(try tiny.write(to: absent))
        XCTAssertEqual(try SafetensorsFile.read(absent)["x"]?.floats, [1, 2])
    }

    /// A file to read that is not a readable regular file is refused saying what it is (it used
    /// to say "cannot read file", or to wait on a FIFO for a writer forever), and one larger than
    /// its reader's limit is refused unread.
    func testInputPathsSayWhatTheyAre() throws {
        let d = dir.path
        let fifo = d + "/fifo", loop = d + "/loop", file = d + "/file.safetensors", unreadable = d + "/secret"
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        try FileManager.default.createSymbolicLink(atPath: loop, withDestinationPath: d + "/loop2")
        try FileManager.default.createSymbolicLink(atPath: d + "/loop2", withDestinationPath: loop)
        try FileManager.default.createSymbolicLink(atPath: d + "/to-fifo", withDestinationPath: fifo)
        try SafetensorsFile(tensors: ["x": SafetensorsTensor(floats: [1, 2], shape: [2])]).write(to: file)
        let cases = [(d, "it is a directory"), (fifo, "it is a FIFO (named pipe)"), (d + "/to-fifo", "it is a FIFO"),
                     ("/dev/null", "it is a character device"), (loop, "a loop of symbolic links"), (d + "/absent", "no such file"),
                     (file + "/x", "a component of the path is not a directory"), ("", "an empty path")]
        for (path, what) in cases {
            XCTAssertThrowsError(try SafetensorsFile.read(path), path) {
                XCTAssertTrue("\($0)".contains(what) && "\($0)".contains("the safetensors file"), "\(path): \($0)")
            }
            XCTAssertThrowsError(try InputFile.contents(path, what: "the suite", limit: 1 << 20), path) {
                XCTAssertTrue("\($0)".contains(what) && "\($0)".contains("the suite"), "\(path): \($0)")
            }
        }
        if getuid() != 0 {   // root reads anything
            XCTAssertTrue(FileManager.default.createFile(atPath: unreadable, contents: Data("x".utf8), attributes: [.posixPermissions: 0]))
            XCTAssertThrowsError(try InputFile.contents(unreadable, what: "the suite", limit: 10)) { XCTAssertTrue("\($0)".contains("permission denied"), "\($0)") }
        }
        let size = try InputFile.open(file, what: "x").size
        XCTAssertEqual(try InputFile.contents(file, what: "x", limit: size).count, size)
        XCTAssertThrowsError(try InputFile.contents(file, what: "the baseline", limit: size - 1)) {
            XCTAssertTrue("\($0)".contains("\(size) bytes, more than the \(size - 1) bytes any such file has"), "\($0)")
        }
        XCTAssertEqual(try SafetensorsFile.read(file)["x"]?.floats, [1, 2])
    }

    /// The header is read and checked before the body, and only the tensors' bytes are read: a
    /// large file with a damaged or oversized header, or a small tensor in a large file, takes no
    /// buffer the size of the file (it used to be read whole, twice: 3.2 GB for a 1.5 GB file).
    func testSafetensorsAreReadHeaderFirstAndTensorByTensor() throws {
        let body = 256 << 20
        func sparse(_ name: String, header: [UInt8]) throws -> String {
            let path = dir.appendingPathComponent(name).path
            var bytes: [UInt8] = []
            withUnsafeBytes(of: UInt64(header.count).littleEndian) { bytes += $0 }
            XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(bytes + header)))
            XCTAssertEqual(truncate(path, off_t(8 + header.count + body)), 0)   // a hole: no disk taken
            return path
        }
        let garbage = try sparse("garbage.safetensors", header: Array("{not json at all}".utf8))
        let tooLong = try sparse("huge-header.safetensors", header: [UInt8](repeating: 0x20, count: SafetensorsFile.maxHeaderBytes + 8))
        let small = try sparse("small.safetensors", header: Array(#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#.utf8))
        for (path, expected) in [(garbage, "header is not a JSON object"), (tooLong, "more than the 4 MiB sambench reads")] {
            alloc_counter_start()
            XCTAssertThrowsError(try SafetensorsFile.read(path)) { XCTAssertTrue("\($0)".contains(expected), "\(path): \($0)") }
            _ = alloc_counter_stop()
            XCTAssertLessThan(alloc_counter_largest(), 1 << 20, "\(path): a buffer of \(alloc_counter_largest()) bytes was taken")
        }
        alloc_counter_start()
        let file = try SafetensorsFile.read(small)
        _ = alloc_counter_stop()
        XCTAssertEqual(file["x"]?.floats, [0, 0])
        XCTAssertLessThan(alloc_counter_largest(), 1 << 20, "a buffer of \(alloc_counter_largest()) bytes was taken for 8 bytes")
    }

    /// A small file whose metadata names a model of gigabytes is refused on the model's
    /// description, before its weights are allocated (`eval` built it first: 21 s and 3.1 GB).
    func testAFileIsCheckedAgainstAModelBeforeItsWeightsAreAllocated() throws {
        let big = try Architectures.make("wrn100_16", inputSize: 512)
        XCTAssertGreaterThan(big.parameterCount, 300_000_000)
        let file = SafetensorsFile(tensors: ["x": SafetensorsTensor(floats: [1], shape: [1])], metadata: ["model": "wrn100_16"])
        alloc_counter_start()
        XCTAssertThrowsError(try Checkpoint.check(file, fits: big, source: "small.safetensors")) {
            XCTAssertTrue("\($0)".contains("small.safetensors does not fit model wrn100_16") && "\($0)".contains("missing from the file"), "\($0)")
        }
        _ = alloc_counter_stop()
        XCTAssertLessThan(alloc_counter_largest(), 16 << 20, "checking took a buffer of \(alloc_counter_largest()) bytes")
        // check and load agree: what check passes, load takes.
        let state = try trainedState()
        let saved = SafetensorsFile(tensors: Checkpoint.tensors(of: state))
        XCTAssertNoThrow(try Checkpoint.check(saved, fits: state.model, source: "saved"))
        let other = ModelState(model: state.model, seed: 1)
        try Checkpoint.load(into: other, file: saved, source: "saved")
        for (a, b) in [(other.params, state.params), (other.stats, state.stats)] {
            XCTAssertEqual(Array(UnsafeBufferPointer(start: a.pointer, count: a.count)), Array(UnsafeBufferPointer(start: b.pointer, count: b.count)))
        }
        XCTAssertEqual(other.batchesTracked, state.batchesTracked)
    }
}
