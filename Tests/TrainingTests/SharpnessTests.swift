import Datasets
import Engine
import Optim
import TestSupport
import Training
import XCTest

final class SharpnessTests: XCTestCase {
    /// A quadratic with a known spectrum: A = Q diag(lambda) Q^T, Q a random rotation
    /// (Householder reflection), so the power iteration sees a non-diagonal operator.
    func testPowerIterationRecoversAKnownSpectrum() {
        let n = 50
        let lambdas = (0..<n).map { Double($0) / Double(n) * 3 }  // 0 ..< 3
        var spectrum = lambdas
        spectrum[17] = 7.5                                     // the top eigenvalue, well separated
        var rng = Xoshiro256(seed: 3)
        var u = (0..<n).map { _ in rng.nextNormal() }
        let un = u.map { $0 * $0 }.reduce(0, +).squareRoot()
        u = u.map { $0 / un }
        // A v = Q D Q^T v with Q = I - 2 u u^T (symmetric, orthogonal).
        let r = PowerIteration.topEigenvalue(dimension: n, maxIterations: 200, tolerance: 1e-9, seed: 1) { v, out in
            var x = (0..<n).map { Double(v[$0]) }
            var d = zip(u, x).map(*).reduce(0, +)
            x = (0..<n).map { x[$0] - 2 * d * u[$0] }
            x = (0..<n).map { x[$0] * spectrum[$0] }
            d = zip(u, x).map(*).reduce(0, +)
            for i in 0..<n { out[i] = Float(x[i] - 2 * d * u[i]) }
        }
        XCTAssertEqual(r.eigenvalue, 7.5, accuracy: 1e-4)
        XCTAssertLessThan(r.relativeResidual, 1e-3)
    }

    /// Symmetric eigenvalues by cyclic Jacobi rotations (test-only, small matrices).
    func jacobiEigenvalues(_ a0: [[Double]]) -> [Double] {
        var a = a0
        let n = a.count
        for _ in 0..<100 {
            var off = 0.0
            for i in 0..<n { for j in 0..<n where i != j { off += a[i][j] * a[i][j] } }
            if off < 1e-22 { break }
            for p in 0..<n { for q in (p + 1)..<n where abs(a[p][q]) > 1e-300 {
                let theta = (a[q][q] - a[p][p]) / (2 * a[p][q])
                let t = (theta >= 0 ? 1.0 : -1.0) / (abs(theta) + (theta * theta + 1).squareRoot())
                let c = 1 / (t * t + 1).squareRoot(), s = t * c
                for k in 0..<n {
                    let akp = a[k][p], akq = a[k][q]
                    a[k][p] = c * akp - s * akq; a[k][q] = s * akp + c * akq
                }
                for k in 0..<n {
                    let apk = a[p][k], aqk = a[q][k]
                    a[p][k] = c * apk - s * aqk; a[q][k] = s * apk + c * aqk
                }
            } }
        }
        return (0..<n).map { a[$0][$0] }
    }

    /// On a tiny net the power-iteration estimate agrees with the eigenvalues of the dense
    /// Hessian, built column by column from central differences of the gradient.
    func testTopHessianEigenvalueOfATinyNetMatchesTheDenseHessian() throws {
        var b = ModelBuilder(input: TensorShape(channels: 3, height: 4, width: 4))
        var x = b.conv(0, "conv", out: 3, kernel: 3, stride: 2)
        x = b.batchNorm(x, "bn", relu: true)
        x = b.globalAvgPool(x)
        _ = b.linear(x, "fc", out: 3)
        let model = b.build(name: "hess", numClasses: 3)
        let state = ModelState(model: model, seed: 2)
        let n = 12
        let ex = try DNNLExecutor(state: state, batchSize: n)
        let images = randomArray(n * 48, seed: 5)
        let labels: [Int32] = (0..<n).map { Int32($0 % 3) }
        var config = SharpnessConfig()
        config.batches = 1
        config.hessianIterations = 300
        let before = state.params.array, stats = state.stats.array, tracked = state.batchesTracked
        let metrics = Sharpness.measure(executor: ex, images: images, labels: labels, batches: 1, config: config)
        XCTAssertEqual(state.params.array, before, "measuring changed the parameters")
        XCTAssertEqual(state.stats.array, stats, "measuring changed the running statistics")
        XCTAssertEqual(state.batchesTracked, tracked)

        // Dense Hessian (P x P) by central differences of gradients, in the same train mode.
        let p = model.parameterCount, h: Float = 1e-3
        var dl = [Float](repeating: 0, count: n * 3)
        func gradient() -> [Float] {
            let logits = ex.forward(input: images, mode: .train(bnMomentum: 0, dropoutSeed: 12345))
            _ = CrossEntropy.compute(logits: logits, labels: labels, count: n, classes: 3, grad: &dl)
            ex.backward(logitsGrad: dl)
            return state.grads.array
        }
        var hess = [[Double]](repeating: [Double](repeating: 0, count: p), count: p)
        for j in 0..<p {
            let w = state.params.pointer[j]
            state.params.pointer[j] = w + h; let gp = gradient()
            state.params.pointer[j] = w - h; let gm = gradient()
            state.params.pointer[j] = w
            for i in 0..<p { hess[i][j] = Double(gp[i] - gm[i]) / Double(2 * h) }
        }
        for i in 0..<p { for j in (i + 1)..<p { let m = (hess[i][j] + hess[j][i]) / 2; hess[i][j] = m; hess[j][i] = m } }
        let eig = jacobiEigenvalues(hess)
        let top = eig.max { abs($0) < abs($1) }!
        let estimate = try XCTUnwrap(metrics.topHessianEigenvalue)
        print("top Hessian eigenvalue: power iteration \(estimate) (residual \(metrics.hessianRelativeResidual ?? -1), \(metrics.hessianIterations ?? 0) iterations), dense \(top)")
        XCTAssertEqual(estimate, top, accuracy: 0.02 * abs(top), "power iteration \(estimate), dense \(top)")
        XCTAssertGreaterThan(metrics.mSharpness, 0, "a SAM step of radius rho should raise the loss")
    }

    func testAHugeLearningRateEndsAsDiverged() throws {
        var c = TrainConfig()
        c.model = "tiny"
        c.epochs = 3
        c.batchSize = 32
        c.lr = 1e4
        c.schedule = .constant
        c.sharpness = nil
        var spec = DataSpec()
        spec.syntheticTrain = 320
        spec.syntheticTest = 64
        let result = try Trainer(config: c, data: try DataPreparation.prepare(spec, dataDir: nil)).run()
        guard case let .diverged(step, epoch, _) = result.status else { return XCTFail("status \(result.status), expected diverged") }
        XCTAssertGreaterThan(step, 0)
        XCTAssertLessThan(step, 30)
        XCTAssertEqual(epoch, 1)
        XCTAssertTrue(result.epochs.allSatisfy { $0.trainLoss.isFinite && $0.testLoss.isFinite }, "a non-finite value was kept")
    }

    func testBootstrapTrainsASecondStageOnPredictedLabels() throws {
        var c = TrainConfig()
        c.model = "tiny"
        c.epochs = 2
        c.batchSize = 64
        c.lr = 0.05
        c.bootstrap = true
        c.optimizer = .sam(SAMConfig())
        c.sharpness = nil
        var spec = DataSpec()
        spec.syntheticTrain = 640
        spec.syntheticTest = 128
        var stagesSeen: [Stage] = []
        let result = try Trainer(config: c, data: try DataPreparation.prepare(spec, dataDir: nil)).run { stage, _ in stagesSeen.append(stage) }
        XCTAssertEqual(stagesSeen, [.train, .train, .bootstrap, .bootstrap])
        XCTAssertEqual(result.stages.map(\.stage), [.train, .bootstrap])
        XCTAssertNil(result.stages[0].relabelled)
        let changed = try XCTUnwrap(result.stages[1].relabelled)
        XCTAssertGreaterThan(changed, 0)
        XCTAssertLessThan(changed, 640)
        XCTAssertNotEqual(result.stages[0].epochs, result.stages[1].epochs)
    }
}
