import Datasets
import Engine
import TestSupport
import XCTest

final class PipelineTests: XCTestCase {
    func image(seed: UInt64) -> [UInt8] {
        var rng = Xoshiro256(seed: seed)
        return (0..<3072).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    }

    func testNormalisationWithoutAugmentation() {
        let img = image(seed: 1)
        var out = [Float](repeating: 0, count: 3072)
        var rng = Xoshiro256(seed: 0)
        Augment.apply(img, into: &out, normalization: .cifar10, augmentation: .none, rng: &rng)
        for (i, c) in [(0, 0), (1500, 1), (3000, 2)] {
            let expected = (Float(img[i]) / 255 - Normalization.cifar10.mean[c]) / Normalization.cifar10.std[c]
            XCTAssertEqual(out[i], expected, accuracy: 1e-5)
        }
    }

    func testCropFlipAndCutout() {
        let img = image(seed: 2)
        let n = Normalization(mean: [0, 0, 0], std: [1, 1, 1])  // out = pixel / 255
        var seenShift = false, seenFlip = false
        for s in 0..<40 {
            var rng = Xoshiro256(seed: UInt64(s))
            var out = [Float](repeating: 0, count: 3072)
            Augment.apply(img, into: &out, normalization: n, augmentation: Augmentation(cropPadding: 4, flip: true), rng: &rng)
            // Every output pixel is either zero padding or some input pixel of the same channel
            // at a shift of at most 4 (possibly mirrored).
            let centre = out[16 * 32 + 16] * 255
            var candidates: [Float] = []
            for dy in -4...4 {
                for dx in -4...4 {
                    candidates.append(Float(img[(16 + dy) * 32 + 16 + dx]))
                    candidates.append(Float(img[(16 + dy) * 32 + 15 + dx]))
                }
            }
            XCTAssertTrue(candidates.contains { abs($0 - centre) < 0.01 }, "centre pixel not from a 4-pixel shift")
            if out[16 * 32 + 16] * 255 != Float(img[16 * 32 + 16]) { seenShift = true }
            var flipped = [Float](repeating: 0, count: 3072)
            var rng2 = Xoshiro256(seed: UInt64(s))
            Augment.apply(img, into: &flipped, normalization: n, augmentation: Augmentation(cropPadding: 0, flip: true), rng: &rng2)
            if (0..<32).allSatisfy({ x in abs(flipped[5 * 32 + x] * 255 - Float(img[5 * 32 + 31 - x])) < 0.01 }) { seenFlip = true }
        }
        XCTAssertTrue(seenShift)
        XCTAssertTrue(seenFlip)

        // Cutout: a 16x16 square is zero in every channel (fully inside the image or clipped).
        let white = [UInt8](repeating: 255, count: 3072)
        var zeros: [Int] = []
        for s in 0..<20 {
            var rng = Xoshiro256(seed: UInt64(s))
            var out = [Float](repeating: 0, count: 3072)
            Augment.apply(white, into: &out, normalization: n, augmentation: Augmentation(cropPadding: 0, flip: false, cutout: 16), rng: &rng)
            let z = (0..<1024).filter { out[$0] == 0 }.count
            XCTAssertEqual(z, (0..<1024).filter { out[1024 + $0] == 0 }.count, "cutout differs between channels")
            zeros.append(z)
        }
        XCTAssertEqual(zeros.max(), 256)
        XCTAssertTrue(zeros.allSatisfy { $0 >= 64 && $0 <= 256 })
    }

    func prepared(train: Int = 1000, classes: Int = 10) throws -> PreparedData {
        var spec = DataSpec()
        spec.syntheticTrain = train
        spec.syntheticTest = 100
        spec.syntheticClasses = classes
        return try DataPreparation.prepare(spec, dataDir: nil)
    }

    func testStratifiedValidationSplitAndSubset() throws {
        let labels: [Int32] = (0..<5000).map { Int32($0 % 10) }
        let (kept, held) = Splits.stratified(labels: labels, among: Array(0..<5000), fraction: 0.1, classes: 10, seed: 3)
        XCTAssertEqual(held.count, 500)
        XCTAssertTrue(Set(kept).isDisjoint(with: held))
        XCTAssertEqual(kept.count + held.count, 5000)
        for c in 0..<10 { XCTAssertEqual(held.filter { labels[$0] == Int32(c) }.count, 50) }
        XCTAssertEqual(held, Splits.stratified(labels: labels, among: Array(0..<5000), fraction: 0.1, classes: 10, seed: 3).heldOut)
        XCTAssertNotEqual(held, Splits.stratified(labels: labels, among: Array(0..<5000), fraction: 0.1, classes: 10, seed: 4).heldOut)
        let sub = Splits.subset(labels: labels, among: kept, count: 1000, stratified: true, classes: 10, seed: 1)
        XCTAssertEqual(sub.count, 1000)
        for c in 0..<10 { XCTAssertEqual(sub.filter { labels[$0] == Int32(c) }.count, 100) }
        XCTAssertEqual(Splits.subset(labels: labels, among: kept, count: 7, stratified: false, classes: 10, seed: 1), Array(kept.prefix(7)))
    }

    func testPreparationAppliesNoiseToTheWholeSetThenSplits() throws {
        var spec = DataSpec()
        spec.syntheticTrain = 2000
        spec.noise = NoiseSpec(kind: .symmetric, rate: 0.4, seed: 5)
        spec.validationFraction = 0.1
        spec.trainSubset = 900
        let d = try DataPreparation.prepare(spec, dataDir: nil)
        XCTAssertEqual(d.noise?.labels, d.trainLabels)
        XCTAssertEqual(d.noise?.realisedRate, 0.4)
        XCTAssertEqual(d.validationIndices.count, 200, accuracy: 5)
        XCTAssertEqual(d.trainIndices.count, 900, accuracy: 10)
        XCTAssertTrue(Set(d.trainIndices).isDisjoint(with: d.validationIndices))
        XCTAssertNotEqual(d.trainLabels, d.cleanTrainLabels)
    }

    func testTestSubsetIsStratifiedAndTheSameForEverySeed() throws {
        var spec = DataSpec()
        spec.syntheticTest = 1000
        let whole = try DataPreparation.prepare(spec, dataDir: nil)
        spec.testSubset = 300
        spec.splitSeed = 1
        let a = try DataPreparation.prepare(spec, dataDir: nil)
        spec.splitSeed = 2
        let b = try DataPreparation.prepare(spec, dataDir: nil)
        XCTAssertEqual(a.testLabels.count, 300, accuracy: 5)
        XCTAssertEqual(a.testImages.count, a.testLabels.count * RawImages.imageBytes)
        XCTAssertEqual(a.testLabels, b.testLabels)
        XCTAssertEqual(a.testImages, b.testImages)
        for c in 0..<10 {
            let share = Double(a.testLabels.filter { $0 == c }.count) / Double(a.testLabels.count)
            let wholeShare = Double(whole.testLabels.filter { $0 == c }.count) / Double(whole.testLabels.count)
            XCTAssertEqual(share, wholeShare, accuracy: 0.01, "class \(c)")
        }
        // Each kept image is one of the whole set's, with its label.
        let first = Array(a.testImages[0..<RawImages.imageBytes])
        let j = (0..<whole.testLabels.count).first { Array(whole.testImages[($0 * RawImages.imageBytes)..<(($0 + 1) * RawImages.imageBytes)]) == first }
        XCTAssertNotNil(j)
        XCTAssertEqual(whole.testLabels[j!], a.testLabels[0])
    }

    func testBatchLoaderIsDeterministicAndCoversEachImageOnce() throws {
        let d = try prepared(train: 1000)
        let loader = BatchLoader(data: d, batchSize: 64, augmentation: Augmentation(), seed: 9)
        func epoch(_ e: Int, _ l: BatchLoader) -> (indices: [Int32], sum: Double) {
            var indices: [Int32] = [], sum = 0.0
            l.forEachBatch(epoch: e) { images, labels, idx in
                for j in 0..<64 {
                    indices.append(idx[j])
                    XCTAssertEqual(labels[j], d.trainLabels[Int(idx[j])])
                }
                for k in stride(from: 0, to: 64 * 3072, by: 97) { sum += Double(images[k]) }
                return true
            }
            return (indices, sum)
        }
        let a = epoch(1, loader)
        XCTAssertEqual(a.indices.count, 1000 / 64 * 64)
        XCTAssertEqual(Set(a.indices).count, a.indices.count, "an image came twice in one epoch")
        let again = epoch(1, BatchLoader(data: d, batchSize: 64, augmentation: Augmentation(), seed: 9))
        XCTAssertEqual(a.indices, again.indices)
        XCTAssertEqual(a.sum, again.sum, "augmentation is not deterministic per (seed, epoch)")
        XCTAssertNotEqual(a.indices, epoch(2, loader).indices)
        // Stopping early is clean.
        var seen = 0
        loader.forEachBatch(epoch: 3) { _, _, _ in seen += 1; return seen < 2 }
        XCTAssertEqual(seen, 2)
    }

    /// Bilinear resizing without PyTorch (TorchInteropTests compares it with F.interpolate): the
    /// same size is the identity, a constant stays constant, a horizontal ramp stays a ramp
    /// (sampled at the output pixel centres) away from the clamped borders.
    func testBilinearResizeBasics() {
        let x = randomArray(3 * 32 * 32, seed: 2)
        var same = [Float](repeating: 0, count: x.count)
        BilinearResize(from: 32, to: 32).apply(x, into: &same)
        XCTAssertEqual(same, x)
        for size in [8, 48, 100] {
            var out = [Float](repeating: 0, count: 3 * size * size)
            BilinearResize(from: 32, to: size).apply([Float](repeating: 0.75, count: 3 * 32 * 32), into: &out)
            XCTAssertTrue(out.allSatisfy { abs($0 - 0.75) < 1e-6 }, "constant at \(size)")
            let ramp = (0..<(3 * 32 * 32)).map { Float($0 % 32) }
            BilinearResize(from: 32, to: size).apply(ramp, into: &out)
            let scale = 32 / Float(size)
            for xo in 0..<size {
                let source = scale * (Float(xo) + 0.5) - 0.5
                guard source >= 0, source <= 31 else { continue }
                XCTAssertEqual(out[5 * size + xo], source, accuracy: 1e-4, "ramp at \(size), x \(xo)")
            }
        }
    }
}
