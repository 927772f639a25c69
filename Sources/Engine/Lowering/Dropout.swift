import CDNNL
import Foundation

/// Inverted dropout: a mask drawn on the host (seeded per step and node, the same as the twin's),
/// reordered to the blocked layout and multiplied in; the identity in evaluation.
extension DNNLExecutor {
    func lowerDropout(_ node: Node, _ context: LoweringContext, p: Float) throws {
        let n = batchSize, i = context.index, x = context.x, xs = context.xs, lastReader = context.lastReader
        var dataMD = t[x].md
        try defineTensor(dataMD, needsDiff: true)
        let dst = float(t[node.output].data), src = float(t[x].data), bytes = byteSize(dataMD)
        pendingEval.append(host("dropout eval copy") { memcpy(dst, src, bytes) })
        guard training else { return }
        let plainMD = try memoryDesc([n, xs.channels, xs.height, xs.width], dnnl_nchw)
        // [N, C, H, W] plain NCHW: the mask as drawn (0 or 1/(1-p)), and the same in the blocked layout.
        let (plainBuf, plainMask) = try r.allocate(plainMD)
        let (_, mask) = try r.allocate(dataMD)
        let maskP = float(plainBuf), maskCount = n * xs.perImage, nodeKey = UInt64(i)
        pendingTrain.append(host("dropout mask") { [unowned self] in
            DropoutMask.fill(maskP, count: maskCount, p: p, seed: self.dropoutSeed &+ nodeKey)
        })
        pendingTrain.append(try exec(try r.reorderDesc(from: plainMD, to: dataMD), [(DNNLArg.from, plainMask), (DNNLArg.to, mask)], "mask reorder"))
        var mdesc = dnnl_binary_desc_t()
        try dnnlCheck(dnnl_binary_desc_init(&mdesc, dnnl_binary_mul, &dataMD, &dataMD, &dataMD), "dropout desc")
        let mpd = try r.primitiveDesc(&mdesc, "dropout")
        pendingTrain.append(try exec(mpd, [(DNNLArg.src, t[x].dataMem), (DNNLArg.src1, mask), (DNNLArg.dst, t[node.output].dataMem)], "dropout"))
        let (target, acc) = try gradientTarget(x, node: i, lastReader: lastReader)
        pendingBackward.append(try exec(mpd, [(DNNLArg.src, t[node.output].diffMem!), (DNNLArg.src1, mask), (DNNLArg.dst, target)], "dropout bwd"))
        pendingBackward += acc
    }
}
