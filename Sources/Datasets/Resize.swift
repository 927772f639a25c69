/// Bilinear resizing of square CHW float images, as PyTorch's
/// `F.interpolate(x, size=(S, S), mode="bilinear", align_corners=False)` (no antialiasing):
/// output pixel i samples the input at (i + 0.5) * in/out - 0.5, clamped below at 0, from its
/// two neighbours. Indices and weights are computed once; `apply` allocates nothing.
public struct BilinearResize: Sendable {
    public let from: Int
    public let to: Int
    private let low: [Int], high: [Int], weight: [Float]

    public init(from: Int, to: Int) {
        precondition(from >= 1 && to >= 1, "BilinearResize: sizes must be >= 1")
        self.from = from
        self.to = to
        // In float32, as PyTorch's CPU kernel computes them (the weights then agree to within an ulp
        // of the source position, which a fused multiply-add may round differently).
        let scale = Float(from) / Float(to)
        var low: [Int] = [], high: [Int] = [], weight: [Float] = []
        for i in 0..<to {
            let source = max(scale * (Float(i) + 0.5) - 0.5, 0)
            let l = min(Int(source), from - 1)
            low.append(l)
            high.append(min(l + 1, from - 1))
            weight.append(source - Float(l))
        }
        (self.low, self.high, self.weight) = (low, high, weight)
    }

    /// Resizes `count` consecutive 3-channel images.
    public func apply(images count: Int, _ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>) {
        for j in 0..<count { apply(src + j * 3 * from * from, into: dst + j * 3 * to * to) }
    }

    /// Resizes `channels` planes of from x from at `src` into planes of to x to at `dst`.
    public func apply(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, channels: Int = 3) {
        for c in 0..<channels {
            let plane = src + c * from * from, out = dst + c * to * to
            for y in 0..<to {
                let r0 = plane + low[y] * from, r1 = plane + high[y] * from, wy = weight[y]
                for x in 0..<to {
                    let x0 = low[x], x1 = high[x], wx = weight[x]
                    let top = r0[x0] + (r0[x1] - r0[x0]) * wx
                    let bottom = r1[x0] + (r1[x1] - r1[x0]) * wx
                    out[y * to + x] = top + (bottom - top) * wy
                }
            }
        }
    }
}
