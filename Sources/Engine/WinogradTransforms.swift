// The Winograd transforms: kernel (G g G^T), input (B^T d B), output (A^T m A) and gradient, in SIMD8 over a channel block.
import Foundation

extension WinogradConvolution {
    /// G x for the 3-vector x0, x1, x2: the m+2 results into y[base + r * step].
    @inline(__always)
    func kernelTransform(_ x0: SIMD8<Float>, _ x1: SIMD8<Float>, _ x2: SIMD8<Float>, into y: UnsafeMutableBufferPointer<SIMD8<Float>>, _ base: Int, _ step: Int) {
        if tile == 2 {
            let half: Float = 0.5
            y[base] = -x0
            y[base + step] = half * (x0 + x1 + x2)
            y[base + 2 * step] = half * (x0 - x1 + x2)
            y[base + 3 * step] = x2
            return
        }
        let third: Float = 1.0 / 3, fifteenth: Float = 1.0 / 15, two: Float = 2, four: Float = 4, eight: Float = 8, sixteen: Float = 16
        y[base] = x0
        y[base + step] = -third * (x0 + x1 + x2)
        y[base + 2 * step] = third * (x0 - x1 + x2)
        y[base + 3 * step] = fifteenth * (x0 + two * x1 + four * x2)
        y[base + 4 * step] = fifteenth * (eight * x1 - sixteen * x0 - four * x2)
        y[base + 5 * step] = x2
    }

    /// G^T x for the (m+2)-vector x[base + r * step]: its 3 results.
    @inline(__always)
    func kernelTransformTransposed(_ x: UnsafeMutableBufferPointer<SIMD8<Float>>, _ base: Int, _ step: Int) -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>) {
        let x0 = x[base], x1 = x[base + step], x2 = x[base + 2 * step], x3 = x[base + 3 * step]
        let half: Float = 0.5
        if tile == 2 {
            return (half * (x1 + x2) - x0, half * (x1 - x2), half * (x1 + x2) + x3)
        }
        let x4 = x[base + 4 * step], x5 = x[base + 5 * step]
        let third: Float = 1.0 / 3, fifteenth: Float = 1.0 / 15, two: Float = 2, four: Float = 4, eight: Float = 8, sixteen: Float = 16
        return (x0 + third * (x2 - x1) + fifteenth * (x3 - sixteen * x4),
                fifteenth * (two * x3 + eight * x4) - third * (x1 + x2),
                third * (x2 - x1) + fifteenth * (four * x3 - four * x4) + x5)
    }

    /// Byte offset of the 8 channels from `channel` (a multiple of 8) at pixel (0, 0) of image n
    /// of a blocked tensor with `channels` channels; pixel (h, w) is `(h * width + w) * block * 4`
    /// bytes further.
    @inline(__always) func planeOffset(_ n: Int, _ channel: Int, channels: Int) -> Int {
        (n * (channels / block) + channel / block) * height * width * block * 4 + (channel % block) * 4
    }

    /// V [P][tileBlock][channels] = B^T d B of `count` tiles from `first`.
    @inline(__always)
    func inputTransform(_ src: UnsafeRawPointer, channels: Int, first: Int, count: Int, into v: UnsafeMutablePointer<Float>, part: Int) {
        let stride = vPlane, perImage = tilesH * tilesW, n = side, m = tile
        let d = registers(part)
        for t in 0..<count {
            let index = first + t, image = index / perImage, ty = index % perImage / tilesW, tx = index % tilesW
            let h0 = ty * m - 1, w0 = tx * m - 1
            for q in Swift.stride(from: 0, to: channels, by: 8) {
                gather(src + planeOffset(image, q, channels: channels), h0, w0, size: n, into: d)
                // B^T d (down the columns), then (B^T d) B (along the rows).
                for j in 0..<n { inputRows(d, j, n) }
                for i in 0..<n { inputRows(d, i * n, 1) }
                scatter(d, to: v + t * channels + q, stride: stride)
            }
        }
    }

    /// x[i * (m+2) + j] = the 8 channels of `plane` at pixel (h0 + i, w0 + j), for i, j < size:
    /// zero outside the image.
    @inline(__always)
    func gather(_ plane: UnsafeRawPointer, _ h0: Int, _ w0: Int, size: Int, into x: UnsafeMutableBufferPointer<SIMD8<Float>>) {
        let inside = h0 >= 0 && w0 >= 0 && h0 + size <= height && w0 + size <= width, pixel = block * 4
        for i in 0..<size {
            let h = h0 + i
            for j in 0..<size {
                let w = w0 + j
                x[i * side + j] = inside || (h >= 0 && h < height && w >= 0 && w < width)
                    ? plane.loadUnaligned(fromByteOffset: (h * width + w) * pixel, as: SIMD8<Float>.self) : .zero
            }
        }
    }

    /// Element p of the transformed tile x to matrix p of a transform buffer, `stride` floats apart.
    @inline(__always)
    func scatter(_ x: UnsafeMutableBufferPointer<SIMD8<Float>>, to out: UnsafeMutablePointer<Float>, stride: Int) {
        let out = UnsafeMutableRawPointer(out)
        for p in 0..<products { out.storeBytes(of: x[p], toByteOffset: p * stride * 4, as: SIMD8<Float>.self) }
    }

    /// B^T x in place for the m+2 vectors x[base + r * step].
    @inline(__always)
    func inputRows(_ x: UnsafeMutableBufferPointer<SIMD8<Float>>, _ base: Int, _ step: Int) {
        let x0 = x[base], x1 = x[base + step], x2 = x[base + 2 * step], x3 = x[base + 3 * step]
        if tile == 2 {
            x[base] = x2 - x0
            x[base + step] = x1 + x2
            x[base + 2 * step] = x2 - x1
            x[base + 3 * step] = x3 - x1
            return
        }
        let x4 = x[base + 4 * step], x5 = x[base + 5 * step]
        let half: Float = 0.5, oneAndHalf: Float = 1.5, two: Float = 2, twoAndHalf: Float = 2.5
        x[base] = x0 + oneAndHalf * (x1 - x3) - two * x2 + x4
        x[base + step] = x4 - x1 - twoAndHalf * x2 - half * x3
        x[base + 2 * step] = x4 + x1 + half * x2 - twoAndHalf * x3
        x[base + 3 * step] = x4 - x2 + half * (x3 - x1)
        x[base + 4 * step] = x4 - x2 + two * (x1 - x3)
        x[base + 5 * step] = x5 + x1 + oneAndHalf * (x2 - x4) - two * x3
    }

    /// dst tiles = A^T m A of the products m [P][tileBlock][K].
    @inline(__always)
    func outputTransform(_ products: UnsafeMutablePointer<Float>, first: Int, count: Int, into dst: UnsafeMutableRawPointer, part: Int) {
        let k = outChannels, stride = mPlane, perImage = tilesH * tilesW, n = side, m = tile, pixel = block * 4
        let x = registers(part)
        for t in 0..<count {
            let index = first + t, image = index / perImage, ty = index % perImage / tilesW, tx = index % tilesW
            for q in Swift.stride(from: 0, to: k, by: 8) {
                let from = UnsafeRawPointer(products + t * k + q)
                for p in 0..<self.products { x[p] = from.loadUnaligned(fromByteOffset: p * stride * 4, as: SIMD8<Float>.self) }
                // A^T x down the columns (into their first m rows), then along those rows.
                for j in 0..<n { outputRows(x, j, n) }
                for i in 0..<m { outputRows(x, i * n, 1) }
                let plane = dst + planeOffset(image, q, channels: k)
                for i in 0..<m where ty * m + i < height {
                    for j in 0..<m where tx * m + j < width {
                        plane.storeBytes(of: x[i * n + j], toByteOffset: ((ty * m + i) * width + tx * m + j) * pixel, as: SIMD8<Float>.self)
                    }
                }
            }
        }
    }

    /// A^T x in place (into the first m of the m+2 vectors x[base + r * step]).
    @inline(__always)
    func outputRows(_ x: UnsafeMutableBufferPointer<SIMD8<Float>>, _ base: Int, _ step: Int) {
        let x0 = x[base], x1 = x[base + step], x2 = x[base + 2 * step], x3 = x[base + 3 * step]
        if tile == 2 {
            x[base] = x0 + x1 + x2
            x[base + step] = x1 - x2 + x3
            return
        }
        let x4 = x[base + 4 * step], x5 = x[base + 5 * step]
        let a = x1 + x2, b = x1 - x2
        let half: Float = 0.5, quarter: Float = 0.25, eighth: Float = 0.125, two: Float = 2, four: Float = 4, eight: Float = 8
        x[base] = x0 + a + x3 + x4
        x[base + step] = b + two * x3 - half * x4
        x[base + 2 * step] = a + four * x3 + quarter * x4
        x[base + 3 * step] = b + eight * x3 - eighth * x4 + x5
    }

    /// dM [P][tileBlock][K] = A dY A^T of the output gradient's tiles (zero outside the image).
    @inline(__always)
    func gradientTransform(_ dy: UnsafeRawPointer, first: Int, count: Int, into dm: UnsafeMutablePointer<Float>, part: Int) {
        let k = outChannels, stride = mPlane, perImage = tilesH * tilesW, n = side, m = tile
        let x = registers(part)
        for t in 0..<count {
            let index = first + t, image = index / perImage, ty = index % perImage / tilesW, tx = index % tilesW
            for q in Swift.stride(from: 0, to: k, by: 8) {
                gather(dy + planeOffset(image, q, channels: k), ty * m, tx * m, size: m, into: x)
                // A y (m+2 from m) down the m columns, then along the m+2 rows.
                for j in 0..<m { gradientRows(x, j, n) }
                for i in 0..<n { gradientRows(x, i * n, 1) }
                scatter(x, to: dm + t * k + q, stride: stride)
            }
        }
    }

    /// A y in place: the m vectors x[base + r * step], r < m, become m+2.
    @inline(__always)
    func gradientRows(_ x: UnsafeMutableBufferPointer<SIMD8<Float>>, _ base: Int, _ step: Int) {
        let y0 = x[base], y1 = x[base + step]
        if tile == 2 {
            x[base + 2 * step] = y0 - y1
            x[base + 3 * step] = y1
            x[base + step] = y0 + y1
            return
        }
        let y2 = x[base + 2 * step], y3 = x[base + 3 * step]
        let half: Float = 0.5, quarter: Float = 0.25, eighth: Float = 0.125, two: Float = 2, four: Float = 4, eight: Float = 8
        x[base + step] = y0 + y1 + y2 + y3
        x[base + 2 * step] = y0 - y1 + y2 - y3
        x[base + 3 * step] = y0 + two * y1 + four * y2 + eight * y3
        x[base + 4 * step] = y0 - half * y1 + quarter * y2 - eighth * y3
        x[base + 5 * step] = y3
    }
}
