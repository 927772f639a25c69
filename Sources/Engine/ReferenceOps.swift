/// Plain-Swift NCHW reference twins of every op. They are written for clarity, accumulate in
/// Double, and are what the oneDNN fast path is tested against (and they against finite
/// differences and PyTorch). Backward functions *add* into gradient outputs the caller zeroed.
public enum ReferenceOps {
    public static let bnEpsilon: Double = 1e-5

    /// y[n,o,i,j] = sum_{c,ki,kj} x[n,c,i*s+ki-p, j*s+kj-p] * w[o,c,ki,kj]   (zero padding)
    public static func convForward(x: [Float], n: Int, c: Int, h: Int, w: Int,
                                   weight: [Float], outChannels o: Int, kernel k: Int, stride s: Int, padding p: Int)
        -> (y: [Float], oh: Int, ow: Int) {
        let oh = (h + 2 * p - k) / s + 1, ow = (w + 2 * p - k) / s + 1
        var y = [Float](repeating: 0, count: n * o * oh * ow)
        for b in 0..<n { for oc in 0..<o { for i in 0..<oh { for j in 0..<ow {
            var acc = 0.0
            for ic in 0..<c { for ki in 0..<k { for kj in 0..<k {
                let yi = i * s + ki - p, xj = j * s + kj - p
                if yi < 0 || yi >= h || xj < 0 || xj >= w { continue }
                acc += Double(x[((b * c + ic) * h + yi) * w + xj]) * Double(weight[((oc * c + ic) * k + ki) * k + kj])
            } } }
            y[((b * o + oc) * oh + i) * ow + j] = Float(acc)
        } } } }
        return (y, oh, ow)
    }

    /// dx += conv^T(dy, w); dw += correlation of x with dy.
    public static func convBackward(x: [Float], n: Int, c: Int, h: Int, w: Int,
                                    weight: [Float], outChannels o: Int, kernel k: Int, stride s: Int, padding p: Int,
                                    dy: [Float], dx: inout [Float]?, dw: inout [Float]) {
        let oh = (h + 2 * p - k) / s + 1, ow = (w + 2 * p - k) / s + 1
        precondition(dy.count == n * o * oh * ow, "convBackward: dy has \(dy.count), expected \(n * o * oh * ow)")
        var dxd = [Double](repeating: 0, count: dx == nil ? 0 : x.count)
        var dwd = [Double](repeating: 0, count: weight.count)
        for b in 0..<n { for oc in 0..<o { for i in 0..<oh { for j in 0..<ow {
            let g = Double(dy[((b * o + oc) * oh + i) * ow + j])
            if g == 0 { continue }
            for ic in 0..<c { for ki in 0..<k { for kj in 0..<k {
                let yi = i * s + ki - p, xj = j * s + kj - p
                if yi < 0 || yi >= h || xj < 0 || xj >= w { continue }
                let xi = ((b * c + ic) * h + yi) * w + xj, wi = ((oc * c + ic) * k + ki) * k + kj
                dwd[wi] += g * Double(x[xi])
                if dx != nil { dxd[xi] += g * Double(weight[wi]) }
            } } }
        } } } }
        for i in dw.indices { dw[i] += Float(dwd[i]) }
        if dx != nil { for i in dxd.indices { dx![i] += Float(dxd[i]) } }
    }

    /// Training-mode batch norm: statistics over (N, H, W), biased variance to normalise.
    /// Returns y and the batch mean and biased variance per channel.
    public static func batchNormTrain(x: [Float], n: Int, c: Int, hw: Int, gamma: [Float], beta: [Float])
        -> (y: [Float], mean: [Double], variance: [Double]) {
        let m = Double(n * hw)
        var mean = [Double](repeating: 0, count: c), variance = [Double](repeating: 0, count: c)
        for ch in 0..<c {
            var s = 0.0
            for b in 0..<n { for i in 0..<hw { s += Double(x[(b * c + ch) * hw + i]) } }
            mean[ch] = s / m
            var v = 0.0
            for b in 0..<n { for i in 0..<hw { let d = Double(x[(b * c + ch) * hw + i]) - mean[ch]; v += d * d } }
            variance[ch] = v / m
        }
        var y = [Float](repeating: 0, count: x.count)
        for b in 0..<n { for ch in 0..<c {
            let inv = 1 / (variance[ch] + bnEpsilon).squareRoot()
            for i in 0..<hw {
                let idx = (b * c + ch) * hw + i
                y[idx] = Float((Double(x[idx]) - mean[ch]) * inv * Double(gamma[ch]) + Double(beta[ch]))
            }
        } }
        return (y, mean, variance)
    }

    /// Eval-mode batch norm with running statistics.
    public static func batchNormEval(x: [Float], n: Int, c: Int, hw: Int, gamma: [Float], beta: [Float],
                                     runningMean: [Float], runningVar: [Float]) -> [Float] {
        var y = [Float](repeating: 0, count: x.count)
        for b in 0..<n { for ch in 0..<c {
            let inv = 1 / (Double(runningVar[ch]) + bnEpsilon).squareRoot()
            for i in 0..<hw {
                let idx = (b * c + ch) * hw + i
                y[idx] = Float((Double(x[idx]) - Double(runningMean[ch])) * inv * Double(gamma[ch]) + Double(beta[ch]))
            }
        } }
        return y
    }

    /// Backward of training-mode batch norm:
    /// dbeta = sum dy, dgamma = sum dy*xhat, dx = gamma/sqrt(var+eps) * (dy - dbeta/M - xhat*dgamma/M).
    /// With `constantStatistics` (frozen BN: mean and variance are the running ones, not functions
    /// of x) the last two terms vanish: dx = gamma/sqrt(var+eps) * dy.
    public static func batchNormBackward(x: [Float], n: Int, c: Int, hw: Int, gamma: [Float],
                                         mean: [Double], variance: [Double], constantStatistics: Bool = false, dy: [Float],
                                         dx: inout [Float], dgamma: inout [Float], dbeta: inout [Float]) {
        let m = Double(n * hw)
        for ch in 0..<c {
            let inv = 1 / (variance[ch] + bnEpsilon).squareRoot()
            var sdy = 0.0, sdyx = 0.0
            for b in 0..<n { for i in 0..<hw {
                let idx = (b * c + ch) * hw + i
                sdy += Double(dy[idx]); sdyx += Double(dy[idx]) * (Double(x[idx]) - mean[ch]) * inv
            } }
            dbeta[ch] += Float(sdy); dgamma[ch] += Float(sdyx)
            for b in 0..<n { for i in 0..<hw {
                let idx = (b * c + ch) * hw + i
                let xhat = (Double(x[idx]) - mean[ch]) * inv
                let centred = constantStatistics ? Double(dy[idx]) : Double(dy[idx]) - sdy / m - xhat * sdyx / m
                dx[idx] += Float(Double(gamma[ch]) * inv * centred)
            } }
        }
    }

    public static func relu(_ x: [Float]) -> [Float] { x.map { $0 > 0 ? $0 : 0 } }

    /// PyTorch's convention: the gradient passes where the *output* is positive.
    public static func reluBackward(y: [Float], dy: [Float], dx: inout [Float]) {
        for i in dx.indices where y[i] > 0 { dx[i] += dy[i] }
    }

    public static func globalAvgPool(x: [Float], n: Int, c: Int, hw: Int) -> [Float] {
        var y = [Float](repeating: 0, count: n * c)
        for i in 0..<(n * c) {
            var s = 0.0
            for j in 0..<hw { s += Double(x[i * hw + j]) }
            y[i] = Float(s / Double(hw))
        }
        return y
    }

    public static func globalAvgPoolBackward(dy: [Float], n: Int, c: Int, hw: Int, dx: inout [Float]) {
        for i in 0..<(n * c) { for j in 0..<hw { dx[i * hw + j] += dy[i] / Float(hw) } }
    }

    /// logits[b, o] = sum_i x[b, i] * w[o, i] + bias[o]
    public static func linear(x: [Float], n: Int, inFeatures: Int, weight: [Float], bias: [Float]) -> [Float] {
        let o = bias.count
        var y = [Float](repeating: 0, count: n * o)
        for b in 0..<n { for j in 0..<o {
            var s = Double(bias[j])
            for i in 0..<inFeatures { s += Double(x[b * inFeatures + i]) * Double(weight[j * inFeatures + i]) }
            y[b * o + j] = Float(s)
        } }
        return y
    }

    public static func linearBackward(x: [Float], n: Int, inFeatures: Int, weight: [Float], dy: [Float],
                                      dx: inout [Float], dw: inout [Float], db: inout [Float]) {
        let o = db.count
        for b in 0..<n { for j in 0..<o {
            let g = dy[b * o + j]
            db[j] += g
            for i in 0..<inFeatures {
                dw[j * inFeatures + i] += g * x[b * inFeatures + i]
                dx[b * inFeatures + i] += g * weight[j * inFeatures + i]
            }
        } }
    }
}

/// Dropout masks keyed by (seed, logical NCHW index), so the fast path (blocked layout) and the
/// reference (NCHW) draw the very same mask. Kept elements are scaled by 1/(1-p).
public enum DropoutMask {
    public static func fill(_ mask: UnsafeMutablePointer<Float>, count: Int, p: Float, seed: UInt64) {
        let scale = 1 / (1 - p)
        let threshold = UInt64(Double(p) * 16_777_216.0)
        let key = splitMix64(seed)
        for i in 0..<count {
            let u = splitMix64(key ^ UInt64(i)) >> 40
            mask[i] = u < threshold ? 0 : scale
        }
    }
}

extension ReferenceOps {
    /// y[n,c,i,j] = max over the window x[n,c,i*s+ki-p, j*s+kj-p] inside the image; also the
    /// index into x of each output's maximum (the first in row-major window order on ties).
    public static func maxPoolForward(x: [Float], n: Int, c: Int, h: Int, w: Int, kernel k: Int, stride s: Int, padding p: Int)
        -> (y: [Float], argmax: [Int]) {
        let oh = (h + 2 * p - k) / s + 1, ow = (w + 2 * p - k) / s + 1
        var y = [Float](repeating: 0, count: n * c * oh * ow), argmax = [Int](repeating: 0, count: y.count)
        for b in 0..<n { for ch in 0..<c { for i in 0..<oh { for j in 0..<ow {
            var best = -Float.infinity, at = -1
            for ki in 0..<k { for kj in 0..<k {
                let yi = i * s + ki - p, xj = j * s + kj - p
                if yi < 0 || yi >= h || xj < 0 || xj >= w { continue }
                let idx = ((b * c + ch) * h + yi) * w + xj
                if at < 0 || x[idx] > best { best = x[idx]; at = idx }
            } }
            let o = ((b * c + ch) * oh + i) * ow + j
            y[o] = best
            argmax[o] = at
        } } } }
        return (y, argmax)
    }

    /// dx[argmax[o]] += dy[o].
    public static func maxPoolBackward(argmax: [Int], dy: [Float], dx: inout [Float]) {
        for o in dy.indices { dx[argmax[o]] += dy[o] }
    }
}
