import Engine
import Foundation
import XCTest

/// The repository root (this file is Tests/TestSupport/Support.swift).
public let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
public let sharedDir = repoRoot.deletingLastPathComponent().appendingPathComponent("shared")
public let referenceDir = sharedDir.appendingPathComponent("reference/pytorch-resnet8")

/// Elementwise |a - b| <= atol + rtol*|b| after checking the counts; reports the worst element.
public func assertClose(_ a: [Float], _ b: [Float], atol: Float = 1e-5, rtol: Float = 1e-4, _ what: String,
                 file: StaticString = #filePath, line: UInt = #line) {
    guard a.count == b.count else {
        XCTFail("\(what): \(a.count) values, expected \(b.count)", file: file, line: line)
        return
    }
    var worst = -1, worstExcess: Float = 0
    for i in a.indices {
        let excess = abs(a[i] - b[i]) - (atol + rtol * abs(b[i]))
        if !(excess <= 0) && (worst < 0 || !(excess <= worstExcess)) { worst = i; worstExcess = excess }
    }
    if worst >= 0 {
        XCTFail("\(what): element \(worst) is \(a[worst]), expected \(b[worst]) (|diff| \(abs(a[worst] - b[worst])))", file: file, line: line)
    }
}

public func randomArray(_ n: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    var rng = Xoshiro256(seed: seed)
    return (0..<n).map { _ in Float(rng.nextNormal()) * scale }
}

/// ||a - b|| / ||b|| <= tolerance: for comparisons where single elements may move (a ReLU mask
/// flip changes a whole BN channel's gradient) but the tensor as a whole must agree.
public func assertNormClose(_ a: [Float], _ b: [Float], _ tolerance: Double, _ what: String,
                            file: StaticString = #filePath, line: UInt = #line) {
    guard a.count == b.count else {
        XCTFail("\(what): \(a.count) values, expected \(b.count)", file: file, line: line)
        return
    }
    var d = 0.0, n = 0.0
    for i in a.indices { d += Double(a[i] - b[i]) * Double(a[i] - b[i]); n += Double(b[i]) * Double(b[i]) }
    let rel = d.squareRoot() / max(n.squareRoot(), 1e-30)
    if !(rel <= tolerance) { XCTFail("\(what): relative L2 error \(rel) > \(tolerance)", file: file, line: line) }
}

/// Runs `scripts/torch-methods.py COMMAND ARGUMENTS... --out FILE` (PyTorch's side of the method
/// tests) and reads what it wrote; a skip when there is no Python with torch, numpy and
/// safetensors (SAMBENCH_PYTHON names it).
public func torchMethods(_ command: String, _ arguments: [String] = []) throws -> SafetensorsFile {
    let python = ProcessInfo.processInfo.environment["SAMBENCH_PYTHON"] ?? "/usr/bin/python3"
    guard try runCommand(python, ["-c", "import torch, numpy, safetensors"]).status == 0 else {
        throw XCTSkip("no Python with torch, numpy and safetensors (set SAMBENCH_PYTHON): \(python)")
    }
    let out = FileManager.default.temporaryDirectory.appendingPathComponent("\(command)-\(UUID().uuidString).safetensors").path
    defer { try? FileManager.default.removeItem(atPath: out) }
    let r = try runCommand(python, [repoRoot.appendingPathComponent("scripts/torch-methods.py").path, command] + arguments + ["--out", out])
    guard r.status == 0 else { throw TorchMethodsError(output: r.output) }
    return try SafetensorsFile.read(out)
}

public struct TorchMethodsError: Error, CustomStringConvertible {
    public let output: String
    public var description: String { "scripts/torch-methods.py failed: \(output)" }
}

/// Runs a command to completion; returns its exit status and its stdout and stderr together.
public func runCommand(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    try p.run()
    let out = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: out, as: UTF8.self))
}

/// The `sambench` executable built next to the test bundle, or a skip when it is absent.
public func sambenchExecutable() throws -> URL {
    let here = Bundle.main.bundleURL.deletingLastPathComponent()
    let candidates = [here.appendingPathComponent("sambench"),
                      URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("sambench")]
    guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0.path) }) else {
        throw XCTSkip("sambench executable not built next to the tests (run `swift build` first)")
    }
    return found
}

/// Runs a command to completion with separate stdout and stderr.
public func runSeparated(_ executable: URL, _ arguments: [String], currentDirectory: URL? = nil,
                         environment: [String: String] = [:]) throws -> (status: Int32, out: String, err: String) {
    let p = Process()
    p.executableURL = executable
    p.arguments = arguments
    if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
    if let currentDirectory { p.currentDirectoryURL = currentDirectory }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    // Read both pipes concurrently so that neither fills up and blocks the child.
    nonisolated(unsafe) var e = Data()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async { e = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    let o = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}
