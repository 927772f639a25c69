import Engine
import Foundation

/// Per-channel normalisation x -> (x/255 - mean) / std.
public struct Normalization: Sendable, Codable, Equatable {
    public var mean: [Float]
    public var std: [Float]
    public init(mean: [Float], std: [Float]) {
        self.mean = mean
        self.std = std
    }
    public static let cifar10 = Normalization(mean: [0.4914, 0.4822, 0.4465], std: [0.2470, 0.2435, 0.2616])
    public static let cifar100 = Normalization(mean: [0.5071, 0.4865, 0.4409], std: [0.2673, 0.2564, 0.2762])
    /// The synthetic data's pixels are centred on 128 with a spread of about 0.25 * 255.
    public static let synthetic = Normalization(mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25])

    /// Three finite means of pixels in [0, 1] (within +-1000) and three finite spreads in
    /// [1e-6, 1000]: what the input normalisation can divide by without making every input
    /// infinite or NaN. For values read from a file or the command line.
    public var isUsable: Bool {
        mean.count == 3 && std.count == 3 && mean.allSatisfy { $0.isFinite && abs($0) <= 1000 }
            && std.allSatisfy { $0.isFinite && $0 >= 1e-6 && $0 <= 1000 }
    }
}

/// Training-time augmentation, deterministic per (seed, epoch, sample).
public struct Augmentation: Sendable, Codable, Hashable {
    /// Random crop of the image zero-padded by this many pixels (0: none). Standard CIFAR: 4.
    public var cropPadding: Int = 4
    /// Random horizontal flip with probability 1/2.
    public var flip: Bool = true
    /// Cutout (DeVries & Taylor 2017): a size x size square, centred uniformly (it may be clipped
    /// at the border), set to zero after normalisation. 0: none.
    public var cutout: Int = 0

    public init(cropPadding: Int = 4, flip: Bool = true, cutout: Int = 0) {
        self.cropPadding = cropPadding
        self.flip = flip
        self.cutout = cutout
    }
    public static let none = Augmentation(cropPadding: 0, flip: false, cutout: 0)
}

/// A dataset ready for training: uint8 images (CIFAR's CHW layout), the labels to train on
/// (noisy or clean), the clean labels, and which training images are held out for validation.
public struct PreparedData: Sendable {
    public var name: String
    public var classes: Int
    public var normalization: Normalization
    public var trainImages: [UInt8]
    /// The labels training sees (after noise), for every image of `trainImages`.
    public var trainLabels: [Int32]
    public var cleanTrainLabels: [Int32]
    public var testImages: [UInt8]
    public var testLabels: [Int32]
    /// Indices into the training images: those trained on, and those held out for validation.
    public var trainIndices: [Int]
    public var validationIndices: [Int]
    /// Whether validation is scored against the noisy (training) labels or the clean ones.
    public var validationUsesNoisyLabels: Bool
    public var noise: NoiseRealisation?

    public var imageBytes: Int { RawImages.imageBytes }
}

/// Splits and subsets, deterministic from a seed.
public enum Splits {
    /// A stratified hold-out: round(fraction * N_c) images of each class c, chosen uniformly.
    /// Returns (kept, held out), each in ascending order.
    public static func stratified(labels: [Int32], among indices: [Int], fraction: Double, classes: Int, seed: UInt64) -> (kept: [Int], heldOut: [Int]) {
        var rng = Xoshiro256(seed: splitMix64(seed ^ 0x5A11_7000))
        var held: [Int] = []
        for c in 0..<classes {
            let members = indices.filter { labels[$0] == Int32(c) }
            held += LabelNoise.sample(members, count: Int((fraction * Double(members.count)).rounded()), rng: &rng)
        }
        let heldSet = Set(held)
        return (indices.filter { !heldSet.contains($0) }, held.sorted())
    }

    /// A training subset of n images: the first n, or a stratified n (proportional per class).
    public static func subset(labels: [Int32], among indices: [Int], count n: Int, stratified: Bool, classes: Int, seed: UInt64) -> [Int] {
        guard n < indices.count else { return indices }
        if !stratified { return Array(indices.prefix(n)) }
        let keepFraction = Double(n) / Double(indices.count)
        return Splits.stratified(labels: labels, among: indices, fraction: keepFraction, classes: classes, seed: seed ^ 0x5B5E7).heldOut
    }
}

/// Assembles normalised, augmented float batches on a background thread, one batch ahead.
/// Order and augmentation depend only on (seed, epoch), never on timing.
public final class BatchLoader: @unchecked Sendable {
    public let batchSize: Int
    private let data: PreparedData
    private let augmentation: Augmentation
    private let seed: UInt64
    private let buffers: [FloatBuffer]
    private let labelBuffers: [UnsafeMutablePointer<Int32>]
    private let indexBuffers: [UnsafeMutablePointer<Int32>]
    private let queue = DispatchQueue(label: "sambench.batches")

    public init(data: PreparedData, batchSize: Int, augmentation: Augmentation, seed: UInt64) {
        self.data = data
        self.batchSize = batchSize
        self.augmentation = augmentation
        self.seed = seed
        buffers = [FloatBuffer(count: batchSize * RawImages.imageBytes), FloatBuffer(count: batchSize * RawImages.imageBytes)]
        labelBuffers = [.allocate(capacity: batchSize), .allocate(capacity: batchSize)]
        indexBuffers = [.allocate(capacity: batchSize), .allocate(capacity: batchSize)]
    }

    deinit { for p in labelBuffers { p.deallocate() }; for p in indexBuffers { p.deallocate() } }

    /// Batches per epoch (the last partial batch is dropped).
    public var batchesPerEpoch: Int { data.trainIndices.count / batchSize }

    /// The training order of an epoch.
    public func order(epoch: Int) -> [Int] {
        var order = data.trainIndices
        var rng = Xoshiro256(seed: splitMix64(seed) ^ UInt64(epoch))
        order.shuffle(using: &rng)
        return order
    }

    /// Calls `body(images, labels, datasetIndices)` for each batch of the epoch, the next batch
    /// being prepared meanwhile. The pointers are valid during the call only.
    public func forEachBatch(epoch: Int, _ body: (UnsafePointer<Float>, UnsafePointer<Int32>, UnsafePointer<Int32>) throws -> Bool) rethrows {
        let order = self.order(epoch: epoch)
        let count = batchesPerEpoch
        guard count > 0 else { return }
        let ready = [DispatchSemaphore(value: 0), DispatchSemaphore(value: 0)]
        // Made at 0 and signalled once rather than made at 1: libdispatch traps when a semaphore
        // is released below its initial value, which an epoch that stops early (a diverged run)
        // can leave behind. RunnerTests.testFailuresDoNotStopTheSuite caught it (an ASAM run
        // diverging at its second step, one thread).
        let free = [DispatchSemaphore(value: 0), DispatchSemaphore(value: 0)]
        free[0].signal()
        free[1].signal()
        let cancelled = ManagedFlag()
        queue.async { [self] in
            for b in 0..<count {
                let slot = b % 2
                free[slot].wait()
                if cancelled.value { ready[slot].signal(); return }
                fill(slot: slot, order: order, batch: b, epoch: epoch)
                ready[slot].signal()
            }
        }
        defer {
            cancelled.value = true
            free[0].signal(); free[1].signal()
            queue.sync {}
        }
        for b in 0..<count {
            let slot = b % 2
            ready[slot].wait()
            let goOn = try body(buffers[slot].pointer, labelBuffers[slot], indexBuffers[slot])
            free[slot].signal()
            if !goOn { return }
        }
    }

    private func fill(slot: Int, order: [Int], batch: Int, epoch: Int) {
        let out = buffers[slot].pointer
        for j in 0..<batchSize {
            let idx = order[batch * batchSize + j]
            labelBuffers[slot][j] = data.trainLabels[idx]
            indexBuffers[slot][j] = Int32(idx)
            var rng = Xoshiro256(seed: splitMix64(seed &+ UInt64(epoch) &* 0x9E37_79B9) ^ UInt64(idx))
            data.trainImages.withUnsafeBufferPointer { img in
                Augment.apply(img.baseAddress! + idx * RawImages.imageBytes, into: out + j * RawImages.imageBytes,
                              normalization: data.normalization, augmentation: augmentation, rng: &rng)
            }
        }
    }
}

final class ManagedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var _value = false
    var value: Bool {
        get { lock.lock(); defer { lock.unlock() }; return _value }
        set { lock.lock(); _value = newValue; lock.unlock() }
    }
}

public enum Augment {
    /// One 3x32x32 uint8 image -> normalised floats, with crop, flip and cutout drawn from `rng`.
    public static func apply(_ src: UnsafePointer<UInt8>, into dst: UnsafeMutablePointer<Float>, normalization: Normalization,
                             augmentation a: Augmentation, rng: inout Xoshiro256, size: Int = 32) {
        let pad = a.cropPadding
        let dx = pad > 0 ? rng.nextInt(below: 2 * pad + 1) - pad : 0
        let dy = pad > 0 ? rng.nextInt(below: 2 * pad + 1) - pad : 0
        let flip = a.flip && rng.nextUniform() < 0.5
        // Cutout square: rows y0 ..< y0 + cutout, columns x0 ..< x0 + cutout, clipped at the border.
        var x0 = Int.min, y0 = Int.min
        if a.cutout > 0 { x0 = rng.nextInt(below: size) - a.cutout / 2; y0 = rng.nextInt(below: size) - a.cutout / 2 }
        for c in 0..<3 {
            let scale = 1 / (255 * normalization.std[c]), shift = normalization.mean[c] / normalization.std[c]
            let plane = src + c * size * size, out = dst + c * size * size
            for y in 0..<size {
                let sy = y + dy
                for x in 0..<size {
                    let xx = flip ? size - 1 - x : x
                    let sx = xx + dx
                    // Zero padding is zero *before* normalisation, as torchvision's RandomCrop(padding=4).
                    let v: Float = (sy < 0 || sy >= size || sx < 0 || sx >= size) ? 0 : Float(plane[sy * size + sx])
                    var value = v * scale - shift
                    if y >= y0, y < y0 + a.cutout, x >= x0, x < x0 + a.cutout { value = 0 }
                    out[y * size + x] = value
                }
            }
        }
    }
}
