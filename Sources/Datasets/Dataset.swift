import Engine
import Foundation

/// Images as normalised float32 NCHW [count, 3, 32, 32] with integer labels.
public struct Dataset: Sendable {
    public let name: String
    public let images: [Float]
    public let labels: [Int32]
    public let classes: Int
    public let channels: Int, height: Int, width: Int

    public init(name: String, images: [Float], labels: [Int32], classes: Int, channels: Int = 3, height: Int = 32, width: Int = 32) {
        precondition(images.count == labels.count * channels * height * width,
                     "Dataset \(name): \(images.count) pixel values for \(labels.count) images")
        self.name = name
        self.images = images
        self.labels = labels
        self.classes = classes
        self.channels = channels
        self.height = height
        self.width = width
    }

    public var count: Int { labels.count }
    public var imageSize: Int { channels * height * width }
}

/// A small CIFAR-shaped synthetic task, generated from a seed, so sambench runs end to end
/// with no download. Classes are random mixtures of a shared bank of oriented colour
/// gratings (so they look alike); an image is its class pattern at a random contrast,
/// circularly shifted by up to 4 pixels, possibly mirrored, plus N(0, noise^2) pixel noise.
/// The tiny net needs a few epochs to learn it (about 30% after one, above 95% after five).
public enum SyntheticData {
    public static func make(count: Int, classes: Int = 10, seed: UInt64, noise: Float = 1.0) -> Dataset {
        precondition(count >= 1 && classes >= 2, "synthetic data: count >= 1 and classes >= 2")
        let h = 32, w = 32, c = 3, plane = h * w
        // Class patterns come from the seed's own stream, images from a derived one, so a test
        // set made with another `count` shares the patterns.
        var protoRNG = Xoshiro256(seed: seed)
        // A bank of oriented colour gratings shared by all classes; a class is a random
        // mixture of them, so classes look alike and differ in proportions.
        let bankSize = 8
        var bank = [Float](repeating: 0, count: bankSize * c * plane)
        for g in 0..<bankSize {
            let fx = protoRNG.nextUniform() * 0.8 + 0.1, fy = protoRNG.nextUniform() * 0.8 + 0.1
            let phase = protoRNG.nextUniform() * 6.283
            let colour = (0..<c).map { _ in Float(protoRNG.nextNormal()) }
            for y in 0..<h { for x in 0..<w {
                let v = Float(Foundation.sin(fx * Double(x) + fy * Double(y) + phase))
                for ch in 0..<c { bank[(g * c + ch) * plane + y * w + x] = colour[ch] * v }
            } }
        }
        var protos = [Float](repeating: 0, count: classes * c * plane)
        for k in 0..<classes {
            for g in 0..<bankSize {
                let weight = Float(protoRNG.nextNormal()) / Float(bankSize).squareRoot()
                for i in 0..<(c * plane) { protos[k * c * plane + i] += weight * bank[g * c * plane + i] }
            }
        }
        var rng = Xoshiro256(seed: splitMix64(seed ^ 0x5EED_DA7A) ^ UInt64(count))
        var images = [Float](repeating: 0, count: count * c * plane)
        var labels = [Int32](repeating: 0, count: count)
        for i in 0..<count {
            let k = rng.nextInt(below: classes)
            labels[i] = Int32(k)
            let contrast = Float(0.4 + 0.8 * rng.nextUniform())
            let dx = rng.nextInt(below: 9) - 4, dy = rng.nextInt(below: 9) - 4
            let flip = rng.nextUniform() < 0.5
            for ch in 0..<c { for y in 0..<h { for x in 0..<w {
                let sx0 = flip ? w - 1 - x : x
                let sy = (y + dy + h) % h, sx = (sx0 + dx + w) % w
                images[((i * c + ch) * h + y) * w + x] = contrast * protos[(k * c + ch) * plane + sy * w + sx] + noise * Float(rng.nextNormal())
            } } }
        }
        return Dataset(name: "synthetic", images: images, labels: labels, classes: classes)
    }
}
