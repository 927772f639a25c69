import CBLAS
import CDNNL
import Foundation

/// The fast path: the model's graph as oneDNN primitives on the blocked layout chosen by the
/// library (format `any`: nChw16c with AVX-512), from the first convolution to the global
/// pool; the classifier runs on OpenBLAS. Every primitive, memory and buffer is created here,
/// once per (model, batch size); `forward` and `backward` allocate nothing.
///
/// Backward overwrites `state.grads`. A tensor read by several ops gets its gradient written
/// by the last reader (the first in backward order) and accumulated by the others.
public final class DNNLExecutor: InspectableExecutor {
    public let model: Model
    public let state: ModelState
    public let batchSize: Int
    public let inputGradient: Bool
    /// The oneDNN implementation chosen for each convolution, e.g. "layer1.0.conv1: jit:avx512_core".
    public private(set) var implementations: [String] = []

    private let r: DNNLResources
    private struct TensorMemory {
        var md: dnnl_memory_desc_t
        var data: ByteBuffer
        var dataMem: dnnl_memory_t
        var diff: ByteBuffer?
        var diffMem: dnnl_memory_t?
    }
    private var t: [TensorMemory] = []

    private enum Step {
        case exec(dnnl_primitive_t, UnsafeMutablePointer<dnnl_exec_arg_t>, Int32)
        case host(() -> Void)
    }
    private enum PendingStep {
        case exec(dnnl_primitive_desc_t, dnnl_primitive_t, [(Int32, dnnl_memory_t)])
        case host(() -> Void)
    }
    private var pendingTrain: [PendingStep] = [], pendingEval: [PendingStep] = [], pendingBackward: [PendingStep] = []
    private var trainSteps: [Step] = [], evalSteps: [Step] = [], backwardSteps: [Step] = []
    private var argStorage: [UnsafeMutablePointer<dnnl_exec_arg_t>] = []

    private var momentum: Float = 0.1
    private var dropoutSeed: UInt64 = 0
    private var trainedForward = false
    private let gradScratch: ByteBuffer
    /// oneDNN's scratchpad, shared by every primitive (they run one at a time).
    private var scratchpad: ByteBuffer?

    public init(state: ModelState, batchSize: Int, inputGradient: Bool = false) throws {
        guard batchSize >= 1 else { throw EngineError("DNNLExecutor: batch size must be >= 1, got \(batchSize)") }
        model = state.model
        self.state = state
        self.batchSize = batchSize
        self.inputGradient = inputGradient
        r = try DNNLResources()
        // One scratch buffer receives the gradient contributions that must be accumulated;
        // sized for the largest tensor in any fp32 blocked layout (channels padded to 16).
        let maxBytes = model.tensors.map { batchSize * (($0.channels + 15) / 16 * 16) * $0.height * $0.width * 4 }.max()!
        gradScratch = ByteBuffer(byteCount: maxBytes)
        try build()
        try finalize()
    }

    deinit { for a in argStorage { a.deallocate() } }

    // MARK: building

    private func defineTensor(_ md: dnnl_memory_desc_t, needsDiff: Bool) throws {
        let (data, mem) = try r.allocate(md)
        var tm = TensorMemory(md: md, data: data, dataMem: mem)
        if needsDiff {
            let (diff, dmem) = try r.allocate(md)
            tm.diff = diff
            tm.diffMem = dmem
        }
        t.append(tm)
    }

    private func float(_ b: ByteBuffer) -> UnsafeMutablePointer<Float> { b.pointer.assumingMemoryBound(to: Float.self) }

    private func exec(_ pd: dnnl_primitive_desc_t, _ args: [(Int32, dnnl_memory_t)], _ what: String) throws -> PendingStep {
        .exec(pd, try r.primitive(pd, what), args)
    }

    /// Where node `i`'s gradient for its input `x` goes: straight into x's gradient if node i
    /// is x's last reader, else into the scratch buffer followed by `x.diff += scratch`.
    private func gradientTarget(_ x: Int, node i: Int, lastReader: [Int]) throws -> (dnnl_memory_t, [PendingStep]) {
        if lastReader[x] == i { return (t[x].diffMem!, []) }
        let md = t[x].md
        guard byteSize(md) <= gradScratch.byteCount else { throw EngineError("DNNLExecutor: gradient scratch too small") }
        let scratch = try r.memory(md, gradScratch.pointer)
        return (scratch, [try accumulate(into: x, from: scratch, md)])
    }

    /// x.diff += src (src may be in another layout).
    private func accumulate(into x: Int, from src: dnnl_memory_t, _ srcMD: dnnl_memory_desc_t) throws -> PendingStep {
        var md = t[x].md, smd = srcMD
        var desc = dnnl_binary_desc_t()
        try dnnlCheck(dnnl_binary_desc_init(&desc, dnnl_binary_add, &md, &smd, &md), "binary add desc")
        let pd = try r.primitiveDesc(&desc, "gradient accumulate")
        return try exec(pd, [(DNNLArg.src, t[x].diffMem!), (DNNLArg.src1, src), (DNNLArg.dst, t[x].diffMem!)], "accumulate")
    }

    private func build() throws {
        let n = batchSize
        var lastReader = Array(repeating: -1, count: model.tensors.count)
        for (i, node) in model.nodes.enumerated() { for x in node.inputs { lastReader[x] = i } }
        let s0 = model.tensors[0]
        try defineTensor(try memoryDesc([n, s0.channels, s0.height, s0.width], dnnl_nchw), needsDiff: inputGradient)

        // Each node's backward steps are collected apart and run in reverse node order.
        var backwardGroups: [[PendingStep]] = []
        for (i, node) in model.nodes.enumerated() {
            backwardGroups.append(pendingBackward)
            pendingBackward = []
            let x = node.inputs[0]
            let xs = model.tensors[x], ys = model.tensors[node.output]
            let needDx = x != 0 || inputGradient
            switch node.op {
            case let .conv(w, _, s, p):
                let pe = model.params[w]
                let userW = try memoryDesc(pe.shape, dnnl_oihw)
                let userWMem = try r.memory(userW, state.params.pointer + pe.offset)
                let userGMem = try r.memory(userW, state.grads.pointer + pe.offset)
                var anyW = try memoryDesc(pe.shape, dnnl_format_tag_any)
                var anyY = try memoryDesc([n, ys.channels, ys.height, ys.width], dnnl_format_tag_any)
                var srcMD = t[x].md
                let strides: [Int64] = [Int64(s), Int64(s)], pads: [Int64] = [Int64(p), Int64(p)]
                var fdesc = dnnl_convolution_desc_t()
                try dnnlCheck(dnnl_convolution_forward_desc_init(&fdesc, dnnl_forward_training, dnnl_convolution_direct,
                                                                 &srcMD, &anyW, nil, &anyY, strides, pads, pads), "conv fwd desc \(pe.name)")
                let fpd = try r.primitiveDesc(&fdesc, "conv fwd \(pe.name)")
                implementations.append("\(pe.name): \(r.implementation(fpd))")
                try defineTensor(r.query(fpd, dnnl_query_dst_md), needsDiff: true)
                // Weights: OIHW view into the flat vector, reordered to the kernel's layout each forward.
                let fwdW = r.query(fpd, dnnl_query_weights_md)
                var fwdWMem = userWMem
                if !sameLayout(fwdW, userW) {
                    let (_, m) = try r.allocate(fwdW)
                    fwdWMem = m
                    let step = try exec(try r.reorderDesc(from: userW, to: fwdW), [(DNNLArg.from, userWMem), (DNNLArg.to, m)], "weights reorder")
                    pendingTrain.append(step); pendingEval.append(step)
                }
                let fstep = try exec(fpd, [(DNNLArg.src, t[x].dataMem), (DNNLArg.weights, fwdWMem), (DNNLArg.dst, t[node.output].dataMem)], "conv fwd")
                pendingTrain.append(fstep); pendingEval.append(fstep)

                var yMD = t[node.output].md
                if needDx {
                    var bdesc = dnnl_convolution_desc_t()
                    try dnnlCheck(dnnl_convolution_backward_data_desc_init(&bdesc, dnnl_convolution_direct, &srcMD, &anyW, &yMD,
                                                                           strides, pads, pads), "conv bwd data desc \(pe.name)")
                    let bpd = try r.primitiveDesc(&bdesc, hint: fpd, "conv bwd data \(pe.name)")
                    let bwdW = r.query(bpd, dnnl_query_weights_md)
                    var bwdWMem = userWMem
                    if sameLayout(bwdW, fwdW) {
                        bwdWMem = fwdWMem
                    } else if !sameLayout(bwdW, userW) {
                        let (_, m) = try r.allocate(bwdW)
                        bwdWMem = m
                        pendingBackward.append(try exec(try r.reorderDesc(from: userW, to: bwdW), [(DNNLArg.from, userWMem), (DNNLArg.to, m)], "weights reorder"))
                    }
                    let (target, acc) = try gradientTarget(x, node: i, lastReader: lastReader)
                    pendingBackward.append(try exec(bpd, [(DNNLArg.diffDst, t[node.output].diffMem!), (DNNLArg.weights, bwdWMem), (DNNLArg.diffSrc, target)], "conv bwd data"))
                    pendingBackward += acc
                }
                var wdesc = dnnl_convolution_desc_t()
                try dnnlCheck(dnnl_convolution_backward_weights_desc_init(&wdesc, dnnl_convolution_direct, &srcMD, &anyW, nil, &yMD,
                                                                          strides, pads, pads), "conv bwd weights desc \(pe.name)")
                let wpd = try r.primitiveDesc(&wdesc, hint: fpd, "conv bwd weights \(pe.name)")
                let dW = r.query(wpd, dnnl_query_diff_weights_md)
                if sameLayout(dW, userW) {
                    pendingBackward.append(try exec(wpd, [(DNNLArg.src, t[x].dataMem), (DNNLArg.diffDst, t[node.output].diffMem!), (DNNLArg.diffWeights, userGMem)], "conv bwd weights"))
                } else {
                    let (_, m) = try r.allocate(dW)
                    pendingBackward.append(try exec(wpd, [(DNNLArg.src, t[x].dataMem), (DNNLArg.diffDst, t[node.output].diffMem!), (DNNLArg.diffWeights, m)], "conv bwd weights"))
                    pendingBackward.append(try exec(try r.reorderDesc(from: dW, to: userW), [(DNNLArg.from, m), (DNNLArg.to, userGMem)], "grad reorder"))
                }

            case let .batchNorm(bn, w, b, relu):
                let c = xs.channels
                var dataMD = t[x].md
                try defineTensor(dataMD, needsDiff: true)
                let vecMD = try memoryDesc([c], dnnl_a)
                let scale = try r.memory(vecMD, state.params.pointer + model.params[w].offset)
                let shift = try r.memory(vecMD, state.params.pointer + model.params[b].offset)
                let dScale = try r.memory(vecMD, state.grads.pointer + model.params[w].offset)
                let dShift = try r.memory(vecMD, state.grads.pointer + model.params[b].offset)
                let (meanBuf, mean) = try r.allocate(vecMD)
                let (varBuf, variance) = try r.allocate(vecMD)
                let runMean = try r.memory(vecMD, state.runningMean(bn).baseAddress!)
                let runVar = try r.memory(vecMD, state.runningVar(bn).baseAddress!)
                let baseFlags = dnnl_use_scale.rawValue | dnnl_use_shift.rawValue | (relu ? dnnl_fuse_norm_relu.rawValue : 0)
                let eps = Float(ReferenceOps.bnEpsilon)

                var fdesc = dnnl_batch_normalization_desc_t()
                try dnnlCheck(dnnl_batch_normalization_forward_desc_init(&fdesc, dnnl_forward_training, &dataMD, eps, baseFlags), "bn fwd desc")
                let fpd = try r.primitiveDesc(&fdesc, "bn fwd")
                var fargs: [(Int32, dnnl_memory_t)] = [(DNNLArg.src, t[x].dataMem), (DNNLArg.dst, t[node.output].dataMem),
                                                       (DNNLArg.scale, scale), (DNNLArg.shift, shift),
                                                       (DNNLArg.mean, mean), (DNNLArg.variance, variance)]
                var workspace: dnnl_memory_t?
                if relu {
                    let (_, ws) = try r.allocate(r.query(fpd, dnnl_query_workspace_md))
                    workspace = ws
                    fargs.append((DNNLArg.workspace, ws))
                }
                pendingTrain.append(try exec(fpd, fargs, "bn fwd"))
                // Running statistics as PyTorch: biased variance normalises, the unbiased one is averaged in.
                let meanP = float(meanBuf), varP = float(varBuf)
                let rm = state.runningMean(bn).baseAddress!, rv = state.runningVar(bn).baseAddress!
                let count = Float(n * xs.height * xs.width)
                let unbias = count / max(count - 1, 1)
                pendingTrain.append(.host { [unowned self] in
                    let m = self.momentum
                    if m != 0 {
                        for ch in 0..<c {
                            rm[ch] = (1 - m) * rm[ch] + m * meanP[ch]
                            rv[ch] = (1 - m) * rv[ch] + m * (varP[ch] * unbias)
                        }
                    }
                    self.state.batchesTracked[bn] += 1
                })

                var edesc = dnnl_batch_normalization_desc_t()
                try dnnlCheck(dnnl_batch_normalization_forward_desc_init(&edesc, dnnl_forward_inference, &dataMD, eps,
                                                                         baseFlags | dnnl_use_global_stats.rawValue), "bn eval desc")
                let epd = try r.primitiveDesc(&edesc, "bn eval")
                pendingEval.append(try exec(epd, [(DNNLArg.src, t[x].dataMem), (DNNLArg.dst, t[node.output].dataMem),
                                                  (DNNLArg.scale, scale), (DNNLArg.shift, shift),
                                                  (DNNLArg.mean, runMean), (DNNLArg.variance, runVar)], "bn eval"))

                var bdesc = dnnl_batch_normalization_desc_t()
                try dnnlCheck(dnnl_batch_normalization_backward_desc_init(&bdesc, dnnl_backward, &dataMD, &dataMD, eps, baseFlags), "bn bwd desc")
                let bpd = try r.primitiveDesc(&bdesc, hint: fpd, "bn bwd")
                let (target, acc) = try gradientTarget(x, node: i, lastReader: lastReader)
                var bargs: [(Int32, dnnl_memory_t)] = [(DNNLArg.src, t[x].dataMem), (DNNLArg.mean, mean), (DNNLArg.variance, variance),
                                                       (DNNLArg.diffDst, t[node.output].diffMem!), (DNNLArg.scale, scale), (DNNLArg.shift, shift),
                                                       (DNNLArg.diffSrc, target), (DNNLArg.diffScale, dScale), (DNNLArg.diffShift, dShift)]
                if let workspace { bargs.append((DNNLArg.workspace, workspace)) }
                pendingBackward.append(try exec(bpd, bargs, "bn bwd"))
                pendingBackward += acc

            case .relu:
                var dataMD = t[x].md
                try defineTensor(dataMD, needsDiff: true)
                var fdesc = dnnl_eltwise_desc_t()
                try dnnlCheck(dnnl_eltwise_forward_desc_init(&fdesc, dnnl_forward_training, dnnl_eltwise_relu_use_dst_for_bwd, &dataMD, 0, 0), "relu desc")
                let fpd = try r.primitiveDesc(&fdesc, "relu fwd")
                let step = try exec(fpd, [(DNNLArg.src, t[x].dataMem), (DNNLArg.dst, t[node.output].dataMem)], "relu")
                pendingTrain.append(step); pendingEval.append(step)
                let (target, acc) = try gradientTarget(x, node: i, lastReader: lastReader)
                pendingBackward.append(try reluBackward(output: node.output, fwd: fpd, into: target))
                pendingBackward += acc

            case let .add(relu):
                let x2 = node.inputs[1]
                precondition(x2 != x, "add of a tensor with itself is not supported")
                var aMD = t[x].md, bMD = t[x2].md
                try defineTensor(aMD, needsDiff: true)
                var desc = dnnl_binary_desc_t()
                try dnnlCheck(dnnl_binary_desc_init(&desc, dnnl_binary_add, &aMD, &bMD, &aMD), "add desc")
                let pd = try r.primitiveDesc(&desc, attr: relu ? try r.reluPostOpAttr() : nil, "add")
                let step = try exec(pd, [(DNNLArg.src, t[x].dataMem), (DNNLArg.src1, t[x2].dataMem), (DNNLArg.dst, t[node.output].dataMem)], "add")
                pendingTrain.append(step); pendingEval.append(step)
                // Backward: the (ReLU-masked) output gradient goes unchanged to both inputs.
                var g = t[node.output].diffMem!
                var gBuf = t[node.output].diff!
                if relu {
                    var edesc = dnnl_eltwise_desc_t()
                    try dnnlCheck(dnnl_eltwise_forward_desc_init(&edesc, dnnl_forward_training, dnnl_eltwise_relu_use_dst_for_bwd, &aMD, 0, 0), "relu desc")
                    let epd = try r.primitiveDesc(&edesc, "relu hint")
                    let (buf, mem) = try r.allocate(aMD)
                    pendingBackward.append(try reluBackward(output: node.output, fwd: epd, into: mem))
                    g = mem; gBuf = buf
                }
                for input in [x, x2] {
                    if lastReader[input] != i {
                        pendingBackward.append(try accumulate(into: input, from: g, aMD))
                    } else if sameLayout(t[input].md, aMD) {
                        let dst = float(t[input].diff!), src = float(gBuf), bytes = byteSize(aMD)
                        pendingBackward.append(.host { memcpy(dst, src, bytes) })
                    } else {
                        pendingBackward.append(try exec(try r.reorderDesc(from: aMD, to: t[input].md), [(DNNLArg.from, g), (DNNLArg.to, t[input].diffMem!)], "gradient reorder"))
                    }
                }

            case .globalAvgPool:
                var srcMD = t[x].md
                var anyY = try memoryDesc([n, xs.channels, 1, 1], dnnl_format_tag_any)
                let strides: [Int64] = [1, 1], kernel: [Int64] = [Int64(xs.height), Int64(xs.width)], pads: [Int64] = [0, 0]
                var fdesc = dnnl_pooling_desc_t()
                try dnnlCheck(dnnl_pooling_forward_desc_init(&fdesc, dnnl_forward_training, dnnl_pooling_avg_exclude_padding,
                                                             &srcMD, &anyY, strides, kernel, pads, pads), "pool desc")
                let fpd = try r.primitiveDesc(&fdesc, "pool fwd")
                var pooledMD = r.query(fpd, dnnl_query_dst_md)
                let (_, pooled) = try r.allocate(pooledMD)
                let (_, pooledDiff) = try r.allocate(pooledMD)
                let plain = try memoryDesc([n, xs.channels, 1, 1], dnnl_nchw)
                try defineTensor(plain, needsDiff: true)
                let f1 = try exec(fpd, [(DNNLArg.src, t[x].dataMem), (DNNLArg.dst, pooled)], "pool fwd")
                let f2 = try exec(try r.reorderDesc(from: pooledMD, to: plain), [(DNNLArg.from, pooled), (DNNLArg.to, t[node.output].dataMem)], "pool reorder")
                pendingTrain += [f1, f2]; pendingEval += [f1, f2]
                pendingBackward.append(try exec(try r.reorderDesc(from: plain, to: pooledMD), [(DNNLArg.from, t[node.output].diffMem!), (DNNLArg.to, pooledDiff)], "pool diff reorder"))
                var bdesc = dnnl_pooling_desc_t()
                try dnnlCheck(dnnl_pooling_backward_desc_init(&bdesc, dnnl_pooling_avg_exclude_padding, &srcMD, &pooledMD,
                                                              strides, kernel, pads, pads), "pool bwd desc")
                let bpd = try r.primitiveDesc(&bdesc, hint: fpd, "pool bwd")
                let (target, acc) = try gradientTarget(x, node: i, lastReader: lastReader)
                pendingBackward.append(try exec(bpd, [(DNNLArg.diffDst, pooledDiff), (DNNLArg.diffSrc, target)], "pool bwd"))
                pendingBackward += acc

            case let .dropout(p):
                var dataMD = t[x].md
                try defineTensor(dataMD, needsDiff: true)
                let plainMD = try memoryDesc([n, xs.channels, xs.height, xs.width], dnnl_nchw)
                let (plainBuf, plainMask) = try r.allocate(plainMD)
                let (_, mask) = try r.allocate(dataMD)
                let maskP = float(plainBuf), maskCount = n * xs.perImage, nodeKey = UInt64(i)
                pendingTrain.append(.host { [unowned self] in
                    DropoutMask.fill(maskP, count: maskCount, p: p, seed: self.dropoutSeed &+ nodeKey)
                })
                pendingTrain.append(try exec(try r.reorderDesc(from: plainMD, to: dataMD), [(DNNLArg.from, plainMask), (DNNLArg.to, mask)], "mask reorder"))
                var mdesc = dnnl_binary_desc_t()
                try dnnlCheck(dnnl_binary_desc_init(&mdesc, dnnl_binary_mul, &dataMD, &dataMD, &dataMD), "dropout desc")
                let mpd = try r.primitiveDesc(&mdesc, "dropout")
                pendingTrain.append(try exec(mpd, [(DNNLArg.src, t[x].dataMem), (DNNLArg.src1, mask), (DNNLArg.dst, t[node.output].dataMem)], "dropout"))
                let dst = float(t[node.output].data), src = float(t[x].data), bytes = byteSize(dataMD)
                pendingEval.append(.host { memcpy(dst, src, bytes) })
                let (target, acc) = try gradientTarget(x, node: i, lastReader: lastReader)
                pendingBackward.append(try exec(mpd, [(DNNLArg.src, t[node.output].diffMem!), (DNNLArg.src1, mask), (DNNLArg.dst, target)], "dropout bwd"))
                pendingBackward += acc

            case let .linear(w, b):
                guard xs.height == 1, xs.width == 1 else { throw EngineError("linear: input must be pooled (1x1), got \(xs)") }
                let inF = xs.channels, outF = ys.channels
                try defineTensor(try memoryDesc([n, outF, 1, 1], dnnl_nchw), needsDiff: true)
                let xP = float(t[x].data), yP = float(t[node.output].data)
                let dyP = float(t[node.output].diff!), dxP = t[x].diff.map { float($0) }
                let wP = state.params.pointer + model.params[w].offset, bP = state.params.pointer + model.params[b].offset
                let dwP = state.grads.pointer + model.params[w].offset, dbP = state.grads.pointer + model.params[b].offset
                let fwd = PendingStep.host {
                    // y = x W^T + b
                    for row in 0..<n { (yP + row * outF).update(from: bP, count: outF) }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(outF), Int32(inF), 1, xP, Int32(inF), wP, Int32(inF), 1, yP, Int32(outF))
                }
                pendingTrain.append(fwd); pendingEval.append(fwd)
                let first = lastReader[x] == i
                pendingBackward.append(.host {
                    // dW = dy^T x ; db = sum_rows dy ; dx (+)= dy W
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(outF), Int32(inF), Int32(n), 1, dyP, Int32(outF), xP, Int32(inF), 0, dwP, Int32(inF))
                    for j in 0..<outF { var s: Float = 0; for row in 0..<n { s += dyP[row * outF + j] }; dbP[j] = s }
                    if needDx, let dxP {
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(inF), Int32(outF), 1, dyP, Int32(outF), wP, Int32(inF), first ? 0 : 1, dxP, Int32(inF))
                    }
                })
            }
        }
        backwardGroups.append(pendingBackward)
        pendingBackward = backwardGroups.reversed().flatMap { $0 }
        guard t.count == model.tensors.count else { throw EngineError("DNNLExecutor: graph defines \(t.count) of \(model.tensors.count) tensors") }
    }

    private func reluBackward(output: Int, fwd: dnnl_primitive_desc_t, into target: dnnl_memory_t) throws -> PendingStep {
        var md = t[output].md
        var bdesc = dnnl_eltwise_desc_t()
        try dnnlCheck(dnnl_eltwise_backward_desc_init(&bdesc, dnnl_eltwise_relu_use_dst_for_bwd, &md, &md, 0, 0), "relu bwd desc")
        let bpd = try r.primitiveDesc(&bdesc, hint: fwd, "relu bwd")
        return try exec(bpd, [(DNNLArg.dst, t[output].dataMem), (DNNLArg.diffDst, t[output].diffMem!), (DNNLArg.diffSrc, target)], "relu bwd")
    }

    /// Gives every primitive the one shared scratchpad (primitives run one at a time) and turns
    /// argument lists into the C arrays `dnnl_primitive_execute` reads.
    private func finalize() throws {
        let all = pendingTrain + pendingEval + pendingBackward
        var maxScratch = 0
        for case let .exec(pd, _, _) in all { maxScratch = max(maxScratch, byteSize(r.query(pd, dnnl_query_scratchpad_md))) }
        let scratch = ByteBuffer(byteCount: maxScratch)
        scratchpad = scratch
        var cache: [UnsafeMutableRawPointer: Step] = [:]
        func convert(_ list: [PendingStep]) throws -> [Step] {
            try list.map { p in
                switch p {
                case let .host(f): return .host(f)
                case let .exec(pd, prim, args):
                    // A primitive shared by two plans (train and eval) gets one argument array.
                    if let s = cache[UnsafeMutableRawPointer(prim)] { return s }
                    var a = args
                    let smd = r.query(pd, dnnl_query_scratchpad_md)
                    if byteSize(smd) > 0 { a.append((DNNLArg.scratchpad, try r.memory(smd, scratch.pointer))) }
                    let ptr = UnsafeMutablePointer<dnnl_exec_arg_t>.allocate(capacity: a.count)
                    for (k, (arg, mem)) in a.enumerated() { ptr[k] = dnnl_exec_arg_t(arg: arg, memory: mem) }
                    argStorage.append(ptr)
                    let s = Step.exec(prim, ptr, Int32(a.count))
                    cache[UnsafeMutableRawPointer(prim)] = s
                    return s
                }
            }
        }
        trainSteps = try convert(pendingTrain)
        evalSteps = try convert(pendingEval)
        backwardSteps = try convert(pendingBackward)
        pendingTrain = []; pendingEval = []; pendingBackward = []
    }

    /// Bytes of every buffer this executor owns (activations, gradients, workspaces, scratch).
    public var bufferBytes: Int {
        r.buffers.reduce(0) { $0 + $1.byteCount } + gradScratch.byteCount + (scratchpad?.byteCount ?? 0)
    }

    // MARK: running

    private func run(_ steps: [Step]) {
        for step in steps {
            switch step {
            case let .exec(prim, args, count):
                let status = dnnl_primitive_execute(prim, r.stream, count, args)
                precondition(status == dnnl_success, "oneDNN execute failed: \(String(cString: dnnl_status2str(status)))")
            case let .host(f):
                dnnl_stream_wait(r.stream)
                f()
            }
        }
        dnnl_stream_wait(r.stream)
    }

    public func forward(input: UnsafePointer<Float>, mode: ForwardMode) -> UnsafePointer<Float> {
        memcpy(t[0].data.pointer, input, batchSize * model.tensors[0].perImage * 4)
        switch mode {
        case let .train(m, seed):
            momentum = m
            dropoutSeed = seed
            run(trainSteps)
            trainedForward = true
        case .eval:
            run(evalSteps)
            trainedForward = false
        }
        return UnsafePointer(float(t[model.outputTensor].data))
    }

    public func backward(logitsGrad: UnsafePointer<Float>) {
        precondition(trainedForward, "backward needs a training-mode forward first")
        memcpy(t[model.outputTensor].diff!.pointer, logitsGrad, batchSize * model.numClasses * 4)
        run(backwardSteps)
    }

    // MARK: inspection

    private func toPlain(_ mem: dnnl_memory_t, _ md: dnnl_memory_desc_t, tensor: Int) -> [Float] {
        let s = model.tensors[tensor]
        let plain = try! memoryDesc([batchSize, s.channels, s.height, s.width], dnnl_nchw)
        var out = [Float](repeating: 0, count: batchSize * s.perImage)
        out.withUnsafeMutableBytes { raw in
            var pd: dnnl_primitive_desc_t?
            var src = md, dst = plain
            var status = dnnl_reorder_primitive_desc_create(&pd, &src, r.engine, &dst, r.engine, nil)
            precondition(status == dnnl_success, "inspection reorder desc")
            var prim: dnnl_primitive_t?
            status = dnnl_primitive_create(&prim, pd)
            precondition(status == dnnl_success, "inspection reorder")
            var m: dnnl_memory_t?
            status = dnnl_memory_create(&m, &dst, r.engine, raw.baseAddress!)
            precondition(status == dnnl_success, "inspection memory")
            var args = [dnnl_exec_arg_t(arg: DNNLArg.from, memory: mem), dnnl_exec_arg_t(arg: DNNLArg.to, memory: m)]
            status = dnnl_primitive_execute(prim, r.stream, 2, &args)
            precondition(status == dnnl_success, "inspection execute")
            dnnl_stream_wait(r.stream)
            dnnl_memory_destroy(m); dnnl_primitive_destroy(prim); dnnl_primitive_desc_destroy(pd)
        }
        return out
    }

    public func value(of tensor: Int) -> [Float] { toPlain(t[tensor].dataMem, t[tensor].md, tensor: tensor) }

    public func gradient(of tensor: Int) -> [Float] {
        guard let m = t[tensor].diffMem else { return [] }
        return toPlain(m, t[tensor].md, tensor: tensor)
    }
}
