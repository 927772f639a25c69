import CDNNL
import Foundation

/// Batch norm over (N, H, W) per channel, optionally fused with ReLU: training (batch statistics,
/// then PyTorch's running-statistics update on the host), evaluation (running statistics) and
/// backward (scale and shift gradients into the flat gradient vector). With `frozenBatchNorm`
/// training normalises with the running statistics too, updates nothing, and backward holds the
/// statistics constant (oneDNN's `use_global_stats` in both directions).
extension DNNLExecutor {
    func lowerBatchNorm(_ node: Node, _ context: LoweringContext, bn: Int, weight w: Int, bias b: Int, relu: Bool) throws {
        let n = batchSize, i = context.index, x = context.x, xs = context.xs, lastReader = context.lastReader
        let c = xs.channels
        var dataMD = t[x].md
        try defineTensor(dataMD, needsDiff: true)
        let vecMD = try memoryDesc([c], dnnl_a)
        let scale = try r.memory(vecMD, state.params.pointer + model.params[w].offset)
        let shift = try r.memory(vecMD, state.params.pointer + model.params[b].offset)
        let runMean = try r.memory(vecMD, state.runningMean(bn).baseAddress!)
        let runVar = try r.memory(vecMD, state.runningVar(bn).baseAddress!)
        let baseFlags = dnnl_use_scale.rawValue | dnnl_use_shift.rawValue | (relu ? dnnl_fuse_norm_relu.rawValue : 0)
        let eps = Float(ReferenceOps.bnEpsilon)

        var edesc = dnnl_batch_normalization_desc_t()
        try dnnlCheck(dnnl_batch_normalization_forward_desc_init(&edesc, dnnl_forward_inference, &dataMD, eps,
                                                                 baseFlags | dnnl_use_global_stats.rawValue), "bn eval desc")
        let epd = try r.primitiveDesc(&edesc, "bn eval")
        pendingEval.append(try exec(epd, [(DNNLArg.src, t[x].dataMem), (DNNLArg.dst, t[node.output].dataMem),
                                          (DNNLArg.scale, scale), (DNNLArg.shift, shift),
                                          (DNNLArg.mean, runMean), (DNNLArg.variance, runVar)], "bn eval"))

        guard training else { return }

        let dScale = try r.memory(vecMD, state.grads.pointer + model.params[w].offset)
        let dShift = try r.memory(vecMD, state.grads.pointer + model.params[b].offset)
        // [C] each: the batch mean and (biased) variance of the last training forward.
        let (meanBuf, mean) = try r.allocate(vecMD)
        let (varBuf, variance) = try r.allocate(vecMD)
        // Frozen: the statistics training normalises with (and backward holds constant) are the running ones.
        let trainFlags = baseFlags | (frozenBatchNorm ? dnnl_use_global_stats.rawValue : 0)
        let (statMean, statVar) = frozenBatchNorm ? (runMean, runVar) : (mean, variance)
        var fdesc = dnnl_batch_normalization_desc_t()
        try dnnlCheck(dnnl_batch_normalization_forward_desc_init(&fdesc, dnnl_forward_training, &dataMD, eps, trainFlags), "bn fwd desc")
        let fpd = try r.primitiveDesc(&fdesc, "bn fwd")
        var fargs: [(Int32, dnnl_memory_t)] = [(DNNLArg.src, t[x].dataMem), (DNNLArg.dst, t[node.output].dataMem),
                                               (DNNLArg.scale, scale), (DNNLArg.shift, shift),
                                               (DNNLArg.mean, statMean), (DNNLArg.variance, statVar)]
        var workspace: dnnl_memory_t?
        if relu {
            // oneDNN's workspace of the fused ReLU (its mask), kept from forward to backward.
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
        if !frozenBatchNorm { pendingTrain.append(host("bn running stats") { [unowned self] in
            let m = self.momentum
            if m != 0 {
                for ch in 0..<c {
                    rm[ch] = (1 - m) * rm[ch] + m * meanP[ch]
                    rv[ch] = (1 - m) * rv[ch] + m * (varP[ch] * unbias)
                }
            }
            self.state.batchesTracked[bn] += 1
        }) }

        var bdesc = dnnl_batch_normalization_desc_t()
        try dnnlCheck(dnnl_batch_normalization_backward_desc_init(&bdesc, dnnl_backward, &dataMD, &dataMD, eps, trainFlags), "bn bwd desc")
        let bpd = try r.primitiveDesc(&bdesc, hint: fpd, "bn bwd")
        let (target, acc) = try gradientTarget(x, node: i, lastReader: lastReader)
        var bargs: [(Int32, dnnl_memory_t)] = [(DNNLArg.src, t[x].dataMem), (DNNLArg.mean, statMean), (DNNLArg.variance, statVar),
                                               (DNNLArg.diffDst, t[node.output].diffMem!), (DNNLArg.scale, scale), (DNNLArg.shift, shift),
                                               (DNNLArg.diffSrc, target), (DNNLArg.diffScale, dScale), (DNNLArg.diffShift, dShift)]
        if let workspace { bargs.append((DNNLArg.workspace, workspace)) }
        pendingBackward.append(try exec(bpd, bargs, "bn bwd"))
        pendingBackward += acc
    }
}
