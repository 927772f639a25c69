import Engine
import Foundation
import TestSupport
import Training
import XCTest

/// Every loss of `Methods.all`: its float64 twin against PyTorch (scripts/torch-methods.py,
/// each loss as its reference code writes it, autograd in float64) within 1e-6 relative,
/// including logits of +-50 and a class with p -> 0; the float32 fast path against the twin
/// and against PyTorch within the op-twin tolerance, over shapes, hard and soft targets, with
/// and without per-sample weights; and the twins' gradients against finite differences.
final class LossTests: XCTestCase {
    /// The losses of the PyTorch script's cases, as sambench builds them.
    static let cases: [(name: String, loss: Loss, soft: Bool)] = [
        ("ce", SoftCrossEntropy(), false),
        ("ce_smooth", SoftCrossEntropy(smoothing: 0.1), false),
        ("ce_soft", SoftCrossEntropy(), true),
        ("ce_soft_smooth", SoftCrossEntropy(smoothing: 0.1), true),
        ("gce", GeneralizedCrossEntropy(q: 0.7), false),
        ("sce", SymmetricCrossEntropy(alpha: 0.1, beta: 1, logZero: Foundation.log(1e-4)), false),
        ("sce_paper", SymmetricCrossEntropy(alpha: 0.1, beta: 1, logZero: -4), false),
        ("bootstrap_soft", BootstrapLoss(.soft, beta: 0.95), false),
        ("bootstrap_hard", BootstrapLoss(.hard, beta: 0.8), false),
    ]

    /// Every registered method's loss is among the cases (a new loss needs its PyTorch case).
    func testEveryMethodsLossIsCovered() {
        let context = MethodContext(batchSize: 4, classes: 10, imageSize: 3 * 32 * 32, samples: 4)
        // ELR's loss reads tracked targets: ELRTests holds it against PyTorch over three steps.
        let covered = Set(Self.cases.map { String(describing: type(of: $0.loss)) } + ["ELRLoss"])
        for d in Methods.all {
            let loss = d.make(try! Methods.resolve(d.name) ?? MethodConfig(name: "ce"), context).loss
            XCTAssertTrue(covered.contains(String(describing: type(of: loss))), "\(d.name)'s loss has no PyTorch case")
        }
    }

    /// |a - b| <= tol * max(|b|, 1e-3 * max|b|): relative, measured against the tensor's scale
    /// for elements far below it.
    func assertRelative(_ a: [Double], _ b: [Double], _ tol: Double, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, what, file: file, line: line)
        let scale = b.map(abs).max() ?? 0
        for (i, (x, y)) in zip(a, b).enumerated() where !(abs(x - y) <= tol * max(abs(y), 1e-3 * scale)) {
            XCTFail("\(what): element \(i) is \(x), expected \(y)", file: file, line: line)
            return
        }
    }

    func testAgainstPyTorch() throws {
        let f = try torchMethods("losses")
        let logits = f["logits"]!.doubles, weights = f["weights"]!.doubles, soft = f["soft"]!.doubles
        let labels = f["labels"]!.int64s.map { Int($0) }
        let n = labels.count, c = logits.count / n
        XCTAssertEqual(logits.max(), 50, "the +-50 row is there")
        for (name, loss, isSoft) in Self.cases {
            for weighted in [false, true] {
                let key = name + (weighted ? "_weighted" : "")
                let twin = loss.reference(logits: logits, targets: isSoft ? .soft(soft) : .hard(labels), count: n, classes: c, weights: weighted ? weights : nil)
                let expectedLosses = f[key + ".losses"]!.doubles, expectedGrad = f[key + ".grad"]!.doubles
                assertRelative(twin.losses, expectedLosses, 1e-6, "\(key) twin losses")
                assertRelative(twin.grad, expectedGrad, 1e-6, "\(key) twin gradient")
                // The fast path, float32, against PyTorch.
                let fast = fastPath(loss, logits.map(Float.init), isSoft ? .soft(soft) : .hard(labels), n: n, c: c, weights: weighted ? weights : nil)
                assertClose(fast.losses, expectedLosses.map(Float.init), atol: 1e-5, rtol: 1e-4, "\(key) fast losses")
                assertClose(fast.grad, expectedGrad.map(Float.init), atol: 1e-5, rtol: 1e-4, "\(key) fast gradient")
                let mean = weighted ? zip(expectedLosses, weights).map(*).reduce(0, +) / weights.reduce(0, +) : expectedLosses.reduce(0, +) / Double(n)
                XCTAssertEqual(fast.mean, mean, accuracy: 1e-5 * max(1, abs(mean)), "\(key) batch loss")
            }
        }
    }

    /// The fast path on Float inputs: (batch loss, per-sample losses, gradient).
    func fastPath(_ loss: Loss, _ logits: [Float], _ targets: ReferenceTargets, n: Int, c: Int, weights: [Double]?) -> (mean: Double, losses: [Float], grad: [Float]) {
        var losses = [Float](repeating: .nan, count: n), grad = [Float](repeating: .nan, count: n * c)
        let w = weights?.map(Float.init)
        let mean: Double
        switch targets {
        case let .hard(y):
            let y32 = y.map(Int32.init)
            mean = y32.withUnsafeBufferPointer { yp in
                w.withOptionalPointer { wp in
                    loss.compute(logits: logits, targets: .hard(yp.baseAddress!), count: n, classes: c, weights: wp, losses: &losses, grad: &grad)
                }
            }
        case let .soft(t):
            let t32 = t.map(Float.init)
            mean = t32.withUnsafeBufferPointer { tp in
                w.withOptionalPointer { wp in
                    loss.compute(logits: logits, targets: .soft(tp.baseAddress!), count: n, classes: c, weights: wp, losses: &losses, grad: &grad)
                }
            }
        case .tracked:
            preconditionFailure("the cases here take hard or soft targets")
        }
        return (mean, losses, grad)
    }

    /// Random logits (scale 4), labels, a soft target and weights per shape.
    func sample(n: Int, c: Int, seed: UInt64) -> (logits: [Double], labels: [Int], soft: [Double], weights: [Double]) {
        var rng = Xoshiro256(seed: seed)
        let logits = (0..<(n * c)).map { _ in Double(Float(rng.nextNormal() * 4)) }
        let labels = (0..<n).map { _ in rng.nextInt(below: c) }
        var soft: [Double] = []
        for _ in 0..<n {
            let row = (0..<c).map { _ in rng.nextUniform() }
            let s = row.reduce(0, +)
            soft += row.map { Double(Float($0 / s)) }
        }
        return (logits, labels, soft, (0..<n).map { _ in Double(Float(rng.nextUniform())) })
    }

    func testFastPathMatchesTwinAcrossShapes() {
        for (n, c) in [(1, 2), (7, 10), (128, 10), (33, 100)] {
            let s = sample(n: n, c: c, seed: UInt64(n * 1000 + c))
            for (name, loss, isSoft) in Self.cases {
                for weights in [nil, s.weights] {
                    let targets: ReferenceTargets = isSoft ? .soft(s.soft) : .hard(s.labels)
                    let twin = loss.reference(logits: s.logits, targets: targets, count: n, classes: c, weights: weights)
                    let fast = fastPath(loss, s.logits.map(Float.init), targets, n: n, c: c, weights: weights)
                    let what = "\(name) n \(n) c \(c)\(weights == nil ? "" : " weighted")"
                    assertClose(fast.losses, twin.losses.map(Float.init), "\(what) losses")
                    assertClose(fast.grad, twin.grad.map(Float.init), "\(what) gradient")
                }
            }
        }
    }

    /// The twins' gradients are the derivatives of their batch loss (central differences in
    /// float64). The bootstrapping losses are left out: their gradient treats the model's own
    /// prediction in the target as a constant, which a difference quotient does not.
    func testTwinGradientsByFiniteDifferences() {
        let n = 5, c = 7, h = 1e-6
        var s = sample(n: n, c: c, seed: 42)
        s.logits = s.logits.map { $0 / 2 }  // every p well above SCE's 1e-7 floor
        for (name, loss, isSoft) in Self.cases where !name.hasPrefix("bootstrap") {
            for weights in [nil, s.weights] {
                let targets: ReferenceTargets = isSoft ? .soft(s.soft) : .hard(s.labels)
                func batchLoss(_ z: [Double]) -> Double {
                    let l = loss.reference(logits: z, targets: targets, count: n, classes: c, weights: weights).losses
                    guard let w = weights else { return l.reduce(0, +) / Double(n) }
                    return zip(l, w).map(*).reduce(0, +) / w.reduce(0, +)
                }
                let grad = loss.reference(logits: s.logits, targets: targets, count: n, classes: c, weights: weights).grad
                for i in 0..<(n * c) {
                    var plus = s.logits, minus = s.logits
                    plus[i] += h
                    minus[i] -= h
                    let numeric = (batchLoss(plus) - batchLoss(minus)) / (2 * h)
                    XCTAssertEqual(grad[i], numeric, accuracy: 1e-7 + 1e-5 * abs(numeric), "\(name)\(weights == nil ? "" : " weighted") d/dz[\(i)]")
                }
            }
        }
    }

    /// Plain cross-entropy over hard labels is the engine's CrossEntropy bit for bit, so runs made
    /// before methods were plug-ins compute the same numbers.
    func testCrossEntropyIsTheEnginesBitForBit() {
        let s = sample(n: 16, c: 10, seed: 3)
        let logits = s.logits.map(Float.init), labels = s.labels.map(Int32.init)
        for eps: Float in [0, 0.1] {
            var a = [Float](repeating: 0, count: 160), b = a
            let la = labels.withUnsafeBufferPointer { y in
                SoftCrossEntropy(smoothing: eps).compute(logits: logits, targets: .hard(y.baseAddress!), count: 16, classes: 10, grad: &a)
            }
            let lb = CrossEntropy.compute(logits: logits, labels: labels, count: 16, classes: 10, smoothing: eps, grad: &b)
            XCTAssertEqual(la, lb)
            XCTAssertEqual(a, b)
        }
    }
}

private extension Optional where Wrapped == [Float] {
    func withOptionalPointer<R>(_ body: (UnsafePointer<Float>?) -> R) -> R {
        guard let a = self else { return body(nil) }
        return a.withUnsafeBufferPointer { body($0.baseAddress) }
    }
}
