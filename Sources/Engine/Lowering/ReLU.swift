import CDNNL
import Foundation

/// ReLU (computed from its output in backward).
extension DNNLExecutor {
    func lowerReLU(_ node: Node, _ context: LoweringContext) throws {
        let i = context.index, x = context.x, lastReader = context.lastReader
        var dataMD = t[x].md
        try defineTensor(dataMD, needsDiff: true)
        var fdesc = dnnl_eltwise_desc_t()
        try dnnlCheck(dnnl_eltwise_forward_desc_init(&fdesc, dnnl_forward_training, dnnl_eltwise_relu_use_dst_for_bwd, &dataMD, 0, 0), "relu desc")
        let fpd = try r.primitiveDesc(&fdesc, "relu fwd")
        let step = try exec(fpd, [(DNNLArg.src, t[x].dataMem), (DNNLArg.dst, t[node.output].dataMem)], "relu")
        pendingTrain.append(step); pendingEval.append(step)
        guard training else { return }
        let (target, acc) = try gradientTarget(x, node: i, lastReader: lastReader)
        pendingBackward.append(try reluBackward(output: node.output, fwd: fpd, into: target))
        pendingBackward += acc
    }
}
