import CBLAS
import CDNNL
import Dispatch

/// sambench's own Winograd convolutions F(2x2, 3x3) and F(4x4, 3x3) (Lavin and Gray, 2016) for
/// 3x3 kernels with stride 1 and padding 1, on the channel-blocked layouts oneDNN chooses (nChw8c
/// with AVX2, nChw16c with AVX-512): candidates of the per-pass kernel choice where oneDNN 2.6
/// has no Winograd kernel (AVX2). The transforms are written here; the products are OpenBLAS
/// SGEMM calls.
///
/// An m x m output tile (m = `tile`) is
///     Y = A^T [ (G g G^T) (.) (B^T d B) ] A
/// for the (m+2) x (m+2) input tile d (read from -1 around the output tile, zero outside the
/// image) and the 3x3 kernel g of one (output, input) channel pair; (.) is the element-wise
/// product, summed over input channels as (m+2)^2 matrix products [tiles x C] [C x K], one per
/// element of the transformed tile. Backward data is the same convolution of the output gradient
/// by the kernel rotated by 180 degrees with its channel axes swapped; backward weights
/// differentiates the formula:
///     dU = sum over tiles (B^T d B) (.) (A dY A^T),   dg = G^T dU G.
/// The matrices are the Toom-Cook ones for the interpolation points 0, 1, -1 (m = 2) and 0, 1,
/// -1, 2, -1/2 (m = 4), with infinity. For m = 4 these points round about 2.5 times less than
/// the usual 0, +-1, +-2 (Barabasz et al., "Error analysis and improving the accuracy of
/// Winograd convolution for deep neural networks", 2020; measured here the same way): F(4x4, 3x3)
/// in float32 is still off a direct convolution by about 2e-5 of the output's rms with 256 input
/// channels, more than the op-twin tolerance allows on some elements, while F(2x2, 3x3) is within
/// a fifth of it. The kernel choice takes either only where its trial output is within that
/// tolerance of oneDNN's (`DNNLExecutor.chooseImplementation`).
///
/// Tiles are taken a block at a time (`tileBlock`), so that a block's transformed inputs and
/// products stay near the core between the transform, the products and the inverse transform;
/// blocks are shared among `threads` threads of oneDNN's OpenMP runtime, each with its own scratch
/// and single-threaded SGEMM calls (a WinogradConvolution sets OpenBLAS to one thread, for the
/// process: the engine's only other SGEMM calls, the classifier's, are below OpenBLAS's own
/// threshold for threads anyway).
public final class WinogradConvolution: @unchecked Sendable {
    public let batch: Int, inChannels: Int, outChannels: Int, height: Int, width: Int
    /// The output tile's side m: 2 or 4.
    public let tile: Int
    /// Channels per block of the blocked layout, input and output alike (8 or 16).
    public let block: Int
    /// Whether `forward` takes OIHW weights [inChannels, outChannels, 3, 3] (the forward
    /// convolution's [K, C]) rotated by 180 degrees: the backward-data pass of a convolution from
    /// outChannels to inChannels channels.
    public let backwardData: Bool
    public let threads: Int
    public let tileBlock: Int
    /// The transformed tile's side (m + 2) and element count.
    let side: Int, products: Int
    let tilesH: Int, tilesW: Int, tiles: Int
    /// Per thread, the SIMD vectors a transform works in (54: a 6x6 tile and a 6x3 intermediate),
    /// made with the convolution (larger than Swift's stack allocations, and a step allocates nothing).
    let registerFile: UnsafeMutablePointer<SIMD8<Float>>

    /// The kernel choice's name of the F(m x m, 3x3) kernels.
    public static func name(tile: Int) -> String { "sambench:winograd_\(tile)x3" }
    public var name: String { Self.name(tile: tile) }

    /// Whether a pass with these channels on this layout can run here: whole blocks of 8 or 16.
    public static func supports(inChannels: Int, outChannels: Int, block: Int) -> Bool {
        (block == 8 || block == 16) && inChannels % block == 0 && outChannels % block == 0
    }

    public init(tile: Int, batch: Int, inChannels: Int, outChannels: Int, height: Int, width: Int, block: Int,
                backwardData: Bool = false, threads: Int, tileBlock: Int? = nil) {
        precondition(tile == 2 || tile == 4, "Winograd: output tiles of 2 or 4, not \(tile)")
        precondition(Self.supports(inChannels: inChannels, outChannels: outChannels, block: block), "Winograd: channels must be whole blocks")
        self.tile = tile; self.batch = batch; self.inChannels = inChannels; self.outChannels = outChannels
        self.height = height; self.width = width; self.block = block; self.backwardData = backwardData
        side = tile + 2; products = side * side
        tilesH = (height + tile - 1) / tile; tilesW = (width + tile - 1) / tile; tiles = batch * tilesH * tilesW
        // Similar numbers of outputs per block for either tile (measured on an AVX2 EPYC: 32 to 256
        // tiles of 4x4 are within 10% of each other on WRN-16-4's widest layers).
        let tb = tileBlock ?? (tile == 4 ? 64 : 192)
        self.tileBlock = tb
        self.threads = max(1, min(threads, (tiles + tb - 1) / tb))
        registerFile = .allocate(capacity: 54 * self.threads)
        registerFile.initialize(repeating: .zero, count: 54 * self.threads)
        if self.threads > 1 { openblas_set_num_threads(1) }
    }

    deinit { registerFile.deallocate() }

    /// Thread `part`'s SIMD vectors.
    @inline(__always) func registers(_ part: Int) -> UnsafeMutableBufferPointer<SIMD8<Float>> {
        UnsafeMutableBufferPointer(start: registerFile + 54 * part, count: 54)
    }

    /// Floats of scratch `forward` needs: the transformed kernel [P][C][K], then per thread the
    /// transformed inputs [P][tileBlock][C] and the products [P][tileBlock][K] (P = (m+2)^2).
    public var forwardScratch: Int { products * uPlane + threads * perThread }
    /// Floats of scratch `backwardWeights` needs: per thread its tiles' transforms and its
    /// transformed kernel gradient [P][C][K].
    public var backwardWeightsScratch: Int { threads * (perThread + products * uPlane) }
    private var perThread: Int { products * (vPlane + mPlane) }
    /// Floats from one element of the transformed tile to the next in U [P][C][K], V [P][tileBlock][C]
    /// and M [P][tileBlock][K]: each a cache line more than the matrix, so that the P matrices a
    /// transform reads or writes at once do not fall into the same cache sets (their sizes are
    /// often multiples of 4 KiB).
    var uPlane: Int { inChannels * outChannels + 16 }
    var vPlane: Int { tileBlock * inChannels + 16 }
    var mPlane: Int { tileBlock * outChannels + 16 }

    /// The transformed kernel U [P][C][K] = G g G^T of OIHW weights [K, C, 3, 3]; with
    /// `backwardData`, of weights [C, K, 3, 3] rotated by 180 degrees. Eight output channels at a
    /// time, one per SIMD lane.
    public func transformWeights(_ w: UnsafePointer<Float>, into u: UnsafeMutablePointer<Float>) {
        parallel(Job(kind: .transformWeights, a: UnsafeRawPointer(w), out: UnsafeMutableRawPointer(u)))
    }

    private func transformWeights(_ w: UnsafePointer<Float>, into u: UnsafeMutablePointer<Float>, part: Int) {
        let c = inChannels, k = outChannels, plane = uPlane, n = side
        let t = registers(part)
        for i in (c * part / threads)..<(c * (part + 1) / threads) {
            for o in Swift.stride(from: 0, to: k, by: 8) {
                // g[r][s] of the kernels taking input channel i to output channels o..<o+8.
                func g(_ r: Int, _ s: Int) -> SIMD8<Float> {
                    var x = SIMD8<Float>()
                    for lane in 0..<8 {
                        x[lane] = backwardData ? w[(i * k + o + lane) * 9 + (2 - r) * 3 + 2 - s] : w[((o + lane) * c + i) * 9 + r * 3 + s]
                    }
                    return x
                }
                // G g into t[r][s] (n x 3), then t G^T into t[n * 3 + ...] row by row.
                for s in 0..<3 { kernelTransform(g(0, s), g(1, s), g(2, s), into: t, s, 3) }
                for r in 0..<n {
                    kernelTransform(t[r * 3], t[r * 3 + 1], t[r * 3 + 2], into: t, 3 * n, 1)
                    for s in 0..<n {
                        UnsafeMutableRawPointer(u + (r * n + s) * plane + i * k + o).storeBytes(of: t[3 * n + s], as: SIMD8<Float>.self)
                    }
                }
            }
        }
    }

    /// The tiles of thread `part`: whole blocks, shared out evenly.
    private func blocks(of part: Int) -> Range<Int> {
        let count = (tiles + tileBlock - 1) / tileBlock
        return (count * part / threads)..<(count * (part + 1) / threads)
    }

    /// One piece of work shared among the threads: which, and its pointers (no closures, so that
    /// handing it to the OpenMP runtime allocates nothing).
    private struct Job {
        enum Kind { case transformWeights, forward, weightGradients, weightGradientsFinish }
        var kind: Kind
        var a: UnsafeRawPointer? = nil, b: UnsafeRawPointer? = nil
        var out: UnsafeMutableRawPointer? = nil, scratch: UnsafeMutablePointer<Float>? = nil
    }

    private func run(_ job: Job, part: Int) {
        switch job.kind {
        case .transformWeights:
            transformWeights(job.a!.assumingMemoryBound(to: Float.self), into: job.out!.assumingMemoryBound(to: Float.self), part: part)
        case .forward: forward(src: job.a!, dst: job.out!, scratch: job.scratch!, part: part)
        case .weightGradients: weightGradients(src: job.a!, diffDst: job.b!, scratch: job.scratch!, part: part)
        case .weightGradientsFinish:
            weightGradientsFinish(diffWeights: job.out!.assumingMemoryBound(to: Float.self), scratch: job.scratch!, part: part)
        }
    }

    /// Parts 0 ..< threads of a job at once, on oneDNN's OpenMP threads (`sambench_omp_parallel`:
    /// the threads its primitives just ran on; other threads would compete with them while they
    /// spin-wait), or with Dispatch where that runtime is not found. The parts write disjoint
    /// tiles and scratch.
    private func parallel(_ job: Job) {
        if threads == 1 { return run(job, part: 0) }
        var call = (Unmanaged.passUnretained(self), job)
        let ran = withUnsafeMutablePointer(to: &call) { call in
            sambench_omp_parallel({ context in
                let (convolution, job) = context!.assumingMemoryBound(to: (Unmanaged<WinogradConvolution>, Job).self).pointee
                let me = convolution.takeUnretainedValue()
                // A team smaller than asked for (nested parallelism) shares the parts out.
                let team = Int(sambench_omp_num_threads())
                for part in Swift.stride(from: Int(sambench_omp_thread_num()), to: me.threads, by: max(team, 1)) { me.run(job, part: part) }
            }, call, UInt32(threads))
        }
        if ran == 0 {
            let sendable = UncheckedSendable((self, job))
            DispatchQueue.concurrentPerform(iterations: threads) { sendable.value.0.run(sendable.value.1, part: $0) }
        }
    }

    /// dst [N, K, H, W] = the convolution of src [N, C, H, W] by the OIHW weights [K, C, 3, 3]
    /// (with `backwardData`, [C, K, 3, 3] rotated), both blocked; `scratch`: `forwardScratch` floats.
    public func forward(src: UnsafeRawPointer, weights: UnsafePointer<Float>, dst: UnsafeMutableRawPointer, scratch: UnsafeMutablePointer<Float>) {
        transformWeights(weights, into: scratch)
        parallel(Job(kind: .forward, a: src, out: dst, scratch: scratch))
    }

    private func forward(src: UnsafeRawPointer, dst: UnsafeMutableRawPointer, scratch: UnsafeMutablePointer<Float>, part: Int) {
        let c = inChannels, k = outChannels, tb = tileBlock, pcount = products, u = scratch
        let v = scratch + pcount * uPlane + part * perThread, m = v + pcount * vPlane
        for b in blocks(of: part) {
            let first = b * tb, count = min(tb, tiles - first)
            inputTransform(src, channels: c, first: first, count: count, into: v, part: part)
            for p in 0..<pcount {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(count), Int32(k), Int32(c), 1,
                            v + p * vPlane, Int32(c), u + p * uPlane, Int32(k), 0, m + p * mPlane, Int32(k))
            }
            outputTransform(m, first: first, count: count, into: dst, part: part)
        }
    }

    /// The kernel gradient [K, C, 3, 3] (OIHW, overwritten) of the convolution of src [N, C, H, W]
    /// whose output gradient is diffDst [N, K, H, W]; `scratch`: `backwardWeightsScratch` floats.
    public func backwardWeights(src: UnsafeRawPointer, diffDst: UnsafeRawPointer, diffWeights: UnsafeMutablePointer<Float>,
                                scratch: UnsafeMutablePointer<Float>) {
        precondition(!backwardData, "Winograd: backward weights of a backward-data convolution")
        parallel(Job(kind: .weightGradients, a: src, b: diffDst, scratch: scratch))
        parallel(Job(kind: .weightGradientsFinish, out: UnsafeMutableRawPointer(diffWeights), scratch: scratch))
    }

    /// Thread `part`'s share of dU in backward weights.
    private func gradients(_ scratch: UnsafeMutablePointer<Float>, _ part: Int) -> UnsafeMutablePointer<Float> {
        scratch + threads * perThread + part * products * uPlane
    }

    private func weightGradients(src: UnsafeRawPointer, diffDst: UnsafeRawPointer, scratch: UnsafeMutablePointer<Float>, part: Int) {
        let c = inChannels, k = outChannels, tb = tileBlock, pcount = products
        let v = scratch + part * perThread, dm = v + pcount * vPlane, du = gradients(scratch, part)
        du.initialize(repeating: 0, count: pcount * uPlane)
        for b in blocks(of: part) {
            let first = b * tb, count = min(tb, tiles - first)
            inputTransform(src, channels: c, first: first, count: count, into: v, part: part)
            gradientTransform(diffDst, first: first, count: count, into: dm, part: part)
            for p in 0..<pcount {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(c), Int32(k), Int32(count), 1,
                            v + p * vPlane, Int32(c), dm + p * mPlane, Int32(k), 1, du + p * uPlane, Int32(k))
            }
        }
    }

    /// dg = G^T dU G per channel pair, eight output channels at a time: G^T down each of the
    /// m+2 columns, then along the 3 rows.
    private func weightGradientsFinish(diffWeights: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>, part: Int) {
        let c = inChannels, k = outChannels, plane = uPlane, pcount = products, n = side
        let x = registers(part)
        for i in (c * part / threads)..<(c * (part + 1) / threads) {
            for o in Swift.stride(from: 0, to: k, by: 8) {
                // dU, the sum of the threads' parts.
                for p in 0..<pcount {
                    x[p] = .zero
                    for part in 0..<threads {
                        x[p] += UnsafeRawPointer(gradients(scratch, part) + p * plane + i * k + o).loadUnaligned(as: SIMD8<Float>.self)
                    }
                }
                // Columns: x[36 + r * n + s] for r < 3.
                for s in 0..<n {
                    let (a, b, e) = kernelTransformTransposed(x, s, n)
                    x[36 + s] = a; x[36 + n + s] = b; x[36 + 2 * n + s] = e
                }
                for r in 0..<3 {
                    let row = kernelTransformTransposed(x, 36 + r * n, 1)
                    for lane in 0..<8 {
                        let at = ((o + lane) * c + i) * 9 + r * 3
                        diffWeights[at] = row.0[lane]; diffWeights[at + 1] = row.1[lane]; diffWeights[at + 2] = row.2[lane]
                    }
                }
            }
        }
    }
}

extension WinogradConvolution {
    /// A tensor [N, C, H, W] from plain order into the blocked layout of this convolution's
    /// `block`, or with `toBlocked` false back.
    func relayout(_ x: [Float], channels: Int, toBlocked: Bool) -> [Float] {
        var out = [Float](repeating: 0, count: x.count)
        let hw = height * width
        for n in 0..<batch {
            for c in 0..<channels {
                for p in 0..<hw {
                    let plain = (n * channels + c) * hw + p, blocked = ((n * (channels / block) + c / block) * hw + p) * block + c % block
                    if toBlocked { out[blocked] = x[plain] } else { out[plain] = x[blocked] }
                }
            }
        }
        return out
    }

    /// The pass this convolution runs, on plain-order inputs as a kernel choice's trial gives them
    /// (forward and backward data: the input or output gradient [N, C, H, W] and the OIHW weights;
    /// backward weights: the input and the output gradient), timed as oneDNN's candidates are (the
    /// best of `repeats` after one untimed run); the output in plain order.
    public func trial(_ inputs: [[Float]], weightsPass: Bool, repeats: Int = 3) -> (seconds: Double, output: [Float]) {
        let c = inChannels, k = outChannels
        let a = relayout(inputs[0], channels: c, toBlocked: true)
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: weightsPass ? backwardWeightsScratch : forwardScratch)
        defer { scratch.deallocate() }
        var best = Double.infinity
        var out = [Float](repeating: 0, count: weightsPass ? k * c * 9 : batch * k * height * width)
        let b = weightsPass ? relayout(inputs[1], channels: k, toBlocked: true) : inputs[1]
        for attempt in 0...repeats {
            let t0 = DispatchTime.now().uptimeNanoseconds
            a.withUnsafeBytes { a in
                b.withUnsafeBufferPointer { b in
                    out.withUnsafeMutableBufferPointer { o in
                        if weightsPass {
                            backwardWeights(src: a.baseAddress!, diffDst: UnsafeRawPointer(b.baseAddress!), diffWeights: o.baseAddress!, scratch: scratch)
                        } else {
                            forward(src: a.baseAddress!, weights: b.baseAddress!, dst: UnsafeMutableRawPointer(o.baseAddress!), scratch: scratch)
                        }
                    }
                }
            }
            if attempt > 0 { best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9) }
        }
        return (best, weightsPass ? out : relayout(out, channels: k, toBlocked: false))
    }
}

/// A value handed to the threads of `DispatchQueue.concurrentPerform` whose parts touch
/// disjoint memory (the compiler cannot see that through raw pointers).
private struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
