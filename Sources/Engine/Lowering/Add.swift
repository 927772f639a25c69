import CDNNL
import Foundation

/// The residual add, optionally with a ReLU post-op: backward passes the (masked) output gradient
/// to both inputs, accumulated where an input has another reader. Inputs whose gradients are one
/// storage with it (`BufferSharing.residualGradientGroups`) need no copy: without the ReLU that is
/// the output's gradient itself, with it the masked gradient is written straight into that storage.
extension DNNLExecutor {
    func lowerAdd(_ node: Node, _ context: LoweringContext, relu: Bool) throws {
        let i = context.index, x = context.x, lastReader = context.lastReader
        let x2 = node.inputs[1]
        precondition(x2 != x, "add of a tensor with itself is not supported")
        var aMD = t[x].md, bMD = t[x2].md
        try defineTensor(aMD, needsDiff: true)
        var desc = dnnl_binary_desc_t()
        try dnnlCheck(dnnl_binary_desc_init(&desc, dnnl_binary_add, &aMD, &bMD, &aMD), "add desc")
        let pd = try r.primitiveDesc(&desc, attr: relu ? try r.reluPostOpAttr() : nil, "add")
        let step = try exec(pd, [(DNNLArg.src, t[x].dataMem), (DNNLArg.src1, t[x2].dataMem), (DNNLArg.dst, t[node.output].dataMem)], "add")
        pendingTrain.append(step); pendingEval.append(step)
        guard training else { return }
        // Backward: the (ReLU-masked) output gradient g goes unchanged to both inputs.
        let inputs = [x, x2]
        var g = t[node.output].diffMem!, gBuf = t[node.output].diff!
        var done = inputs.filter { sameGradient($0, node.output) }
        if relu {
            var edesc = dnnl_eltwise_desc_t()
            try dnnlCheck(dnnl_eltwise_forward_desc_init(&edesc, dnnl_forward_training, dnnl_eltwise_relu_use_dst_for_bwd, &aMD, 0, 0), "relu desc")
            let epd = try r.primitiveDesc(&edesc, "relu hint")
            // Into an input's gradient where this add writes it (read by no later node), else a buffer of its own.
            if let w = inputs.first(where: { lastReader[$0] == i && sameLayout(t[$0].md, aMD) }) {
                (g, gBuf) = (t[w].diffMem!, t[w].diff!)
                done = inputs.filter { $0 == w || sameGradient($0, w) }
            } else {
                // [N, C, H, W] in the output's layout: the ReLU-masked output gradient.
                (gBuf, g) = try r.allocate(aMD)
            }
            pendingBackward.append(try reluBackward(output: node.output, fwd: epd, into: g))
        }
        for input in inputs where !done.contains(input) {
            if lastReader[input] != i {
                pendingBackward.append(try accumulate(into: input, from: g, aMD))
            } else if sameLayout(t[input].md, aMD) {
                let dst = float(t[input].diff!), src = float(gBuf), bytes = byteSize(aMD)
                pendingBackward.append(host("add bwd copy") { memcpy(dst, src, bytes) })
            } else {
                pendingBackward.append(try exec(try r.reorderDesc(from: aMD, to: t[input].md), [(DNNLArg.from, g), (DNNLArg.to, t[input].diffMem!)], "gradient reorder"))
            }
        }
    }
}
