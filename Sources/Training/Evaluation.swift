// Eval-mode passes over a set of images: loss, accuracy and predictions in batches.
import Datasets
import Engine
import Foundation

/// Eval-mode passes over a set of images: batches normalised without augmentation, the last
/// one zero-padded (eval-mode BN treats every image on its own, so padding changes nothing).
/// Shared by the trainer's per-epoch evaluation and `sambench eval`.
public final class BatchEvaluator {
    public let executor: Executor
    public let normalization: Normalization
    private let images: FloatBuffer
    private let labels: UnsafeMutablePointer<Int32>
    /// To the model's input size, where it is not CIFAR's 32x32.
    private let resizer: InputResizer

    public init(executor: Executor, normalization: Normalization) {
        self.executor = executor
        self.normalization = normalization
        images = FloatBuffer(count: executor.batchSize * RawImages.imageBytes)
        labels = .allocate(capacity: executor.batchSize)
        resizer = InputResizer(model: executor.model, batchSize: executor.batchSize)
    }

    deinit { labels.deallocate() }

    /// The images at `indices` (uint8 CHW, CIFAR's layout), normalised, into consecutive slots of `dst`.
    public static func normalise(_ pixels: [UInt8], _ indices: ArraySlice<Int>, normalization: Normalization,
                                 into dst: UnsafeMutablePointer<Float>) {
        var rng = Xoshiro256(seed: 0)  // unused: no augmentation
        pixels.withUnsafeBufferPointer { src in
            for (j, i) in indices.enumerated() {
                Augment.apply(src.baseAddress! + i * RawImages.imageBytes, into: dst + j * RawImages.imageBytes,
                              normalization: normalization, augmentation: .none, rng: &rng)
            }
        }
    }

    /// Calls `body(logits, n, start)` for each batch of the images at `indices`: the first `n`
    /// rows of `logits` belong to `indices[start ..< start + n]`.
    public func forEachBatch(images pixels: [UInt8], indices: [Int], _ body: (UnsafePointer<Float>, Int, Int) -> Void) {
        let b = executor.batchSize, size = RawImages.imageBytes
        var start = 0
        while start < indices.count {
            let n = min(b, indices.count - start)
            Self.normalise(pixels, indices[start..<(start + n)], normalization: normalization, into: images.pointer)
            if n < b { (images.pointer + n * size).update(repeating: 0, count: (b - n) * size) }
            body(executor.forward(input: resizer.prepare(images.pointer), mode: .eval), n, start)
            start += n
        }
    }

    /// Mean loss and accuracy over the images at `indices` against `labels[index]`.
    public func lossAndAccuracy(images pixels: [UInt8], indices: [Int], labels truth: [Int32]) -> (loss: Double, accuracy: Double) {
        let c = executor.model.numClasses
        var lossSum = 0.0, correct = 0
        forEachBatch(images: pixels, indices: indices) { logits, n, start in
            for j in 0..<n { labels[j] = truth[indices[start + j]] }
            lossSum += CrossEntropy.compute(logits: logits, labels: labels, count: n, classes: c) * Double(n)
            correct += CrossEntropy.correct(logits: logits, labels: labels, count: n, classes: c)
        }
        return (lossSum / Double(indices.count), Double(correct) / Double(indices.count))
    }

    /// Predicted classes (the first largest logit) of the images at `indices`, in that order.
    public func predict(images pixels: [UInt8], indices: [Int]) -> [Int32] {
        let c = executor.model.numClasses
        var out: [Int32] = []
        out.reserveCapacity(indices.count)
        forEachBatch(images: pixels, indices: indices) { logits, n, _ in
            for r in 0..<n { out.append(Int32(CrossEntropy.argmax(logits + r * c, c))) }
        }
        return out
    }

    /// Accuracy, mean loss, per-class accuracy and the confusion matrix over every image;
    /// `onLogits(logits, n, start)` sees each batch's logits (for callers that keep them).
    public func evaluate(images pixels: [UInt8], labels truth: [Int32],
                         onLogits: (UnsafePointer<Float>, Int, Int) -> Void = { _, _, _ in }) -> EvaluationResult {
        let c = executor.model.numClasses
        var confusion = [[Int]](repeating: [Int](repeating: 0, count: c), count: c)
        var lossSum = 0.0
        let indices = Array(truth.indices)
        forEachBatch(images: pixels, indices: indices) { logits, n, start in
            for j in 0..<n { labels[j] = truth[start + j] }
            lossSum += CrossEntropy.compute(logits: logits, labels: labels, count: n, classes: c) * Double(n)
            for j in 0..<n { confusion[Int(truth[start + j])][CrossEntropy.argmax(logits + j * c, c)] += 1 }
            onLogits(logits, n, start)
        }
        return EvaluationResult(confusion: confusion, loss: lossSum / Double(max(indices.count, 1)))
    }
}

/// Brings batches of CIFAR's 32x32 images to a model's input size (`image_size`) by bilinear
/// resizing into a buffer made once; at 32x32 it passes them through.
public final class InputResizer {
    public let resize: BilinearResize?
    private let buffer: FloatBuffer
    private let batchSize: Int

    public init(model: Model, batchSize: Int) {
        let s = model.tensors[model.inputTensor]
        self.batchSize = batchSize
        resize = s.height == 32 ? nil : BilinearResize(from: 32, to: s.height)
        buffer = FloatBuffer(count: resize == nil ? 0 : batchSize * s.perImage)
    }

    /// `count` images (default: a batch) at 32x32, at the model's size.
    public func prepare(_ images: UnsafePointer<Float>, count: Int? = nil) -> UnsafePointer<Float> {
        guard let resize else { return images }
        resize.apply(images: count ?? batchSize, images, into: buffer.pointer)
        return UnsafePointer(buffer.pointer)
    }
}

/// What `sambench eval` reports: `confusion[true][predicted]` counts, and what follows from it.
public struct EvaluationResult: Sendable, Codable, Equatable {
    public var accuracy: Double
    public var correct: Int
    public var total: Int
    public var loss: Double
    /// Accuracy within each true class (nil for a class with no images).
    public var perClass: [Double?]
    public var confusion: [[Int]]

    public init(confusion: [[Int]], loss: Double) {
        self.confusion = confusion
        self.loss = loss
        total = confusion.reduce(0) { $0 + $1.reduce(0, +) }
        correct = confusion.indices.reduce(0) { $0 + confusion[$1][$1] }
        accuracy = total > 0 ? Double(correct) / Double(total) : 0
        perClass = confusion.indices.map { k in
            let n = confusion[k].reduce(0, +)
            return n > 0 ? Double(confusion[k][k]) / Double(n) : nil
        }
    }

    enum CodingKeys: String, CodingKey {
        case accuracy, correct, total, loss, perClass = "per_class", confusion
    }
}
