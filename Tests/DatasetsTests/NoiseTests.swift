import Datasets
import Engine
import TestSupport
import XCTest

final class NoiseTests: XCTestCase {
    /// Balanced clean labels, 10 classes x 1000.
    let clean: [Int32] = (0..<10_000).map { Int32($0 % 10) }

    func apply(_ kind: NoiseKind, _ rate: Double, _ selection: NoiseSelection = .exact, seed: UInt64 = 1, classes: Int = 10,
               labels: [Int32]? = nil, coarse: [Int32]? = nil) throws -> NoiseRealisation {
        try LabelNoise.apply(NoiseSpec(kind: kind, rate: rate, selection: selection, seed: seed), clean: labels ?? clean,
                             classes: classes, coarse: coarse)
    }

    func testExactSelectionFlipsExactlyRoundedRateTimesN() throws {
        for rate in [0.0, 0.2, 0.4, 0.6, 0.8, 0.333] {
            let r = try apply(.symmetric, rate)
            let changed = zip(clean, r.labels).filter { $0 != $1 }.count
            XCTAssertEqual(changed, Int((rate * 10_000).rounded()), "rate \(rate)")
            XCTAssertEqual(r.realisedRate, Double(changed) / 10_000)
        }
        let perClass = try apply(.symmetric, 0.4, .exactPerClass)
        for c in 0..<10 { XCTAssertEqual(perClass.transition[c].reduce(0, +) - perClass.transition[c][c], 400) }
    }

    func testSymmetricNeverKeepsTheClassAndIsUniformOffDiagonal() throws {
        let r = try apply(.symmetric, 0.6)
        // No flipped sample keeps its class: changed == selected, i.e. exactly 6000 off-diagonal.
        var off = 0
        for i in 0..<10 { for j in 0..<10 where j != i { off += r.transition[i][j] } }
        XCTAssertEqual(off, 6000)
        // Chi-square of the 90 off-diagonal cells against uniform (expected 6000/90 each);
        // 89 degrees of freedom: the 99.9% quantile is 135.9.
        let expected = 6000.0 / 90
        var chi2 = 0.0
        for i in 0..<10 { for j in 0..<10 where i != j { let d = Double(r.transition[i][j]) - expected; chi2 += d * d / expected } }
        XCTAssertLessThan(chi2, 135.9, "off-diagonal not uniform (chi-square \(chi2))")
    }

    func testUniformRealisesAboutRateTimesCMinusOneOverC() throws {
        let r = try apply(.uniform, 0.8)
        // 8000 relabelled, each keeps its class with probability 1/10: changed ~ Binomial(8000, 0.9).
        XCTAssertEqual(r.realisedRate, 0.72, accuracy: 4 * (8000 * 0.9 * 0.1).squareRoot() / 10_000)
        XCTAssertGreaterThan(r.transition.indices.map { r.transition[$0][$0] }.reduce(0, +), 2000) // kept ones included
    }

    func testBernoulliRateIsCloseToTarget() throws {
        let r = try apply(.symmetric, 0.3, .bernoulli)
        XCTAssertEqual(r.realisedRate, 0.3, accuracy: 4 * (0.3 * 0.7 / 10_000).squareRoot())
    }

    func testAsymmetricCIFAR10MapIsExactlyTheStatedOne() throws {
        let r = try apply(.asymmetric, 0.4)
        let map: [Int: Int] = [9: 1, 2: 0, 4: 7, 3: 5, 5: 3]
        for i in 0..<10 {
            for j in 0..<10 where i != j {
                if map[i] == j { XCTAssertEqual(r.transition[i][j], 400, "\(i)->\(j)") } else { XCTAssertEqual(r.transition[i][j], 0, "\(i)->\(j)") }
            }
        }
        XCTAssertEqual(r.realisedRate, 0.2)   // 5 of 10 classes, 40% each
    }

    func testAsymmetricCIFAR100StaysInTheTrueSuperclass() throws {
        // A made-up superclass assignment (not blocks of 5) to tell the two variants apart.
        var rng = Xoshiro256(seed: 4)
        let superOf = (0..<100).map { $0 % 20 }.shuffled(using: &rng)
        let labels: [Int32] = (0..<20_000).map { Int32($0 % 100) }
        let coarse = labels.map { Int32(superOf[Int($0)]) }
        let r = try apply(.asymmetric, 0.5, classes: 100, labels: labels, coarse: coarse)
        for (i, (c, y)) in zip(labels, r.labels).enumerated() where c != y {
            XCTAssertEqual(superOf[Int(c)], superOf[Int(y)], "sample \(i): \(c) -> \(y) leaves superclass")
        }
        // Within a superclass the map is "next fine label, circularly".
        let members = (0..<100).filter { superOf[$0] == superOf[7] }.sorted()
        let next = members[(members.firstIndex(of: 7)! + 1) % members.count]
        XCTAssertEqual(r.transition[7][next], 100)
        let blocks = try apply(.asymmetricBlocks, 0.5, classes: 100, labels: labels)
        XCTAssertEqual(blocks.transition[4][0], 100)
        XCTAssertEqual(blocks.transition[7][8], 100)
        XCTAssertThrowsError(try apply(.asymmetric, 0.5, classes: 100, labels: labels)) // needs coarse labels
    }

    func testPairflip() throws {
        let r = try apply(.pairflip, 0.45)
        for i in 0..<10 { XCTAssertEqual(r.transition[i][(i + 1) % 10], r.transition[i].reduce(0, +) - r.transition[i][i]) }
        XCTAssertEqual(r.realisedRate, 0.45)
    }

    func testSeedsDetermineTheRealisation() throws {
        for kind in [NoiseKind.symmetric, .uniform, .pairflip, .asymmetric] {
            let a = try apply(kind, 0.4, seed: 7), b = try apply(kind, 0.4, seed: 7), c = try apply(kind, 0.4, seed: 8)
            XCTAssertEqual(a.labels, b.labels, "\(kind)")
            XCTAssertEqual(a.labelsSHA256, b.labelsSHA256)
            XCTAssertNotEqual(a.labels, c.labels, "\(kind)")
            XCTAssertNotEqual(a.labelsSHA256, c.labelsSHA256)
        }
    }

    func testInstanceDependentNoise() throws {
        let n = 3000, d = 64
        var rng = Xoshiro256(seed: 2)
        let labels: [Int32] = (0..<n).map { Int32($0 % 10) }
        // Random features: the mean flip rate is the target (a truncated N(0.4, 0.1^2) has mean 0.4).
        let features = (0..<(n * d)).map { _ in Float(rng.nextNormal()) }
        let spec = NoiseSpec(kind: .instance, rate: 0.4, seed: 3)
        let r = try LabelNoise.apply(spec, clean: labels, classes: 10, features: (features, d))
        XCTAssertEqual(r.realisedRate, 0.4, accuracy: 0.04)
        XCTAssertEqual(r.labels, try LabelNoise.apply(spec, clean: labels, classes: 10, features: (features, d)).labels)
        // Instance dependence: when all images of a class share one feature vector, its scores
        // x W_y are shared too, and its flips concentrate on that vector's top classes (uniform
        // flips would spread over all nine).
        let prototypes = (0..<(10 * d)).map { _ in Float(3 * rng.nextNormal()) }
        let shared = (0..<n).flatMap { i in Array(prototypes[(i % 10 * d)..<(i % 10 * d + d)]) }
        let s = try LabelNoise.apply(spec, clean: labels, classes: 10, features: (shared, d))
        for c in 0..<10 {
            let flips = s.transition[c].enumerated().filter { $0.offset != c }.map(\.element).sorted(by: >)
            XCTAssertGreaterThan(Double(flips[0] + flips[1]), 0.9 * Double(flips.reduce(0, +)), "class \(c): flips \(flips)")
        }
    }

    func testHashIsOfTheInt64Vector() throws {
        let r = LabelNoise.realisation(NoiseSpec(kind: .none), clean: [0, 1, 2], noisy: [0, 1, 2], classes: 3)
        // sha256 of int64 [0, 1, 2] little-endian, as hashlib.sha256(np.array([0,1,2],'<i8').tobytes()).
        XCTAssertEqual(r.labelsSHA256, "ab25350e3e65efebe24584461683ecda68725576e825e550038b90e7b1479946")
    }

    func testBadSpecsAreRefused() {
        XCTAssertThrowsError(try apply(.symmetric, 1.2))
        XCTAssertThrowsError(try apply(.symmetric, -0.1))
        XCTAssertThrowsError(try LabelNoise.apply(NoiseSpec(kind: .human), clean: clean, classes: 10))
        XCTAssertThrowsError(try LabelNoise.apply(NoiseSpec(kind: .instance, rate: 0.2), clean: clean, classes: 10))
    }
}
