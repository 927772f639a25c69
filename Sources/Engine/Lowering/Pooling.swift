import CDNNL
import Foundation

/// Global average pooling: from the blocked layout to a plain [N, C, 1, 1] tensor for the
/// classifier, and back in backward.
extension DNNLExecutor {
    func lowerGlobalAveragePool(_ node: Node, _ context: LoweringContext) throws {
        let n = batchSize, i = context.index, x = context.x, xs = context.xs, lastReader = context.lastReader
        var srcMD = t[x].md
        var anyY = try memoryDesc([n, xs.channels, 1, 1], dnnl_format_tag_any)
        let strides: [Int64] = [1, 1], kernel: [Int64] = [Int64(xs.height), Int64(xs.width)], pads: [Int64] = [0, 0]
        var fdesc = dnnl_pooling_desc_t()
        try dnnlCheck(dnnl_pooling_forward_desc_init(&fdesc, dnnl_forward_training, dnnl_pooling_avg_exclude_padding,
                                                     &srcMD, &anyY, strides, kernel, pads, pads), "pool desc")
        let fpd = try r.primitiveDesc(&fdesc, "pool fwd")
        var pooledMD = r.query(fpd, dnnl_query_dst_md)
        // [N, C, 1, 1] in the pooling kernel's layout: the pooled values and their gradient.
        let (_, pooled) = try r.allocate(pooledMD)
        let plain = try memoryDesc([n, xs.channels, 1, 1], dnnl_nchw)
        try defineTensor(plain, needsDiff: true)
        let f1 = try exec(fpd, [(DNNLArg.src, t[x].dataMem), (DNNLArg.dst, pooled)], "pool fwd")
        let f2 = try exec(try r.reorderDesc(from: pooledMD, to: plain), [(DNNLArg.from, pooled), (DNNLArg.to, t[node.output].dataMem)], "pool reorder")
        pendingTrain += [f1, f2]; pendingEval += [f1, f2]
        guard training else { return }
        let (_, pooledDiff) = try r.allocate(pooledMD)
        pendingBackward.append(try exec(try r.reorderDesc(from: plain, to: pooledMD), [(DNNLArg.from, t[node.output].diffMem!), (DNNLArg.to, pooledDiff)], "pool diff reorder"))
        var bdesc = dnnl_pooling_desc_t()
        try dnnlCheck(dnnl_pooling_backward_desc_init(&bdesc, dnnl_pooling_avg_exclude_padding, &srcMD, &pooledMD,
                                                      strides, kernel, pads, pads), "pool bwd desc")
        let bpd = try r.primitiveDesc(&bdesc, hint: fpd, "pool bwd")
        let (target, acc) = try gradientTarget(x, node: i, lastReader: lastReader)
        pendingBackward.append(try exec(bpd, [(DNNLArg.diffDst, pooledDiff), (DNNLArg.diffSrc, target)], "pool bwd"))
        pendingBackward += acc
    }
}

/// Max pooling on the blocked layout: one forward primitive (training kind, so it records the
/// position of each window's maximum in its workspace) serves training and evaluation; backward
/// sends each output's gradient to that position.
extension DNNLExecutor {
    func lowerMaxPool(_ node: Node, _ context: LoweringContext, kernel k: Int, stride s: Int, padding p: Int) throws {
        let n = batchSize, i = context.index, x = context.x, ys = context.ys, lastReader = context.lastReader
        var srcMD = t[x].md
        var anyY = try memoryDesc([n, ys.channels, ys.height, ys.width], dnnl_format_tag_any)
        let strides: [Int64] = [Int64(s), Int64(s)], kernel: [Int64] = [Int64(k), Int64(k)], pads: [Int64] = [Int64(p), Int64(p)]
        var fdesc = dnnl_pooling_desc_t()
        try dnnlCheck(dnnl_pooling_forward_desc_init(&fdesc, dnnl_forward_training, dnnl_pooling_max,
                                                     &srcMD, &anyY, strides, kernel, pads, pads), "max pool desc")
        let fpd = try r.primitiveDesc(&fdesc, "max pool fwd")
        var yMD = r.query(fpd, dnnl_query_dst_md)
        try defineTensor(yMD, needsDiff: true)
        // The argmax of every window, kept from the forward to the backward.
        let (_, workspace) = try r.allocate(r.query(fpd, dnnl_query_workspace_md))
        let f = try exec(fpd, [(DNNLArg.src, t[x].dataMem), (DNNLArg.dst, t[node.output].dataMem), (DNNLArg.workspace, workspace)], "max pool fwd")
        pendingTrain.append(f); pendingEval.append(f)
        guard training, context.needDx else { return }
        var bdesc = dnnl_pooling_desc_t()
        try dnnlCheck(dnnl_pooling_backward_desc_init(&bdesc, dnnl_pooling_max, &srcMD, &yMD, strides, kernel, pads, pads),
                      "max pool bwd desc")
        let bpd = try r.primitiveDesc(&bdesc, hint: fpd, "max pool bwd")
        let (target, acc) = try gradientTarget(x, node: i, lastReader: lastReader)
        pendingBackward.append(try exec(bpd, [(DNNLArg.diffDst, t[node.output].diffMem!), (DNNLArg.workspace, workspace),
                                              (DNNLArg.diffSrc, target)], "max pool bwd"))
        pendingBackward += acc
    }
}
