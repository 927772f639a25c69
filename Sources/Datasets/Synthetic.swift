import Engine
import Foundation

/// A small CIFAR-shaped synthetic task, generated from a seed, so sambench runs end to end
/// with no download. Classes are random mixtures of a shared bank of oriented colour
/// gratings (so they look alike); an image is its class pattern at a random contrast,
/// circularly shifted by up to 4 pixels, possibly mirrored, plus N(0, noise^2) pixel noise,
/// stored as uint8 like CIFAR (value v -> clamp(128 + 64 v)). The tiny net needs a few
/// epochs to learn it.
public enum SyntheticData {
    /// `count` images; the class patterns depend on `seed` only, so a test set made with
    /// another count (and `stream`) shares them.
    public static func make(count: Int, classes: Int = 10, seed: UInt64, stream: UInt64 = 0, noise: Float = 1.0) -> RawImages {
        precondition(count >= 1 && classes >= 2, "synthetic data: count >= 1 and classes >= 2")
        let h = 32, w = 32, c = 3, plane = h * w
        var protoRNG = Xoshiro256(seed: seed)
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
        var rng = Xoshiro256(seed: splitMix64(seed ^ 0x5EED_DA7A) ^ splitMix64(stream &+ UInt64(count)))
        var pixels = [UInt8](repeating: 0, count: count * c * plane)
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
                let v = contrast * protos[(k * c + ch) * plane + sy * w + sx] + noise * Float(rng.nextNormal())
                pixels[((i * c + ch) * h + y) * w + x] = UInt8(max(0, min(255, (128 + 64 * v).rounded())))
            } } }
        }
        return RawImages(pixels: pixels, labels: labels)
    }
}
