// Where a node's input gradient goes (straight in, or accumulated through scratch), shared by the lowerings.
import CDNNL
import Foundation

extension DNNLExecutor {
    /// Where node `i`'s gradient for its input `x` goes: straight into x's gradient if node i
    /// is x's last reader, else into the scratch buffer followed by `x.diff += scratch`.
    func gradientTarget(_ x: Int, node i: Int, lastReader: [Int]) throws -> (dnnl_memory_t, [PendingStep]) {
        if lastReader[x] == i { return (t[x].diffMem!, []) }
        let md = t[x].md
        guard byteSize(md) <= gradScratch.byteCount else { throw EngineError("DNNLExecutor: gradient scratch too small") }
        let scratch = try r.memory(md, gradScratch.pointer)
        return (scratch, [try accumulate(into: x, from: scratch, md)])
    }

    /// x.diff += src (src may be in another layout).
    func accumulate(into x: Int, from src: dnnl_memory_t, _ srcMD: dnnl_memory_desc_t) throws -> PendingStep {
        var md = t[x].md, smd = srcMD
        var desc = dnnl_binary_desc_t()
        try dnnlCheck(dnnl_binary_desc_init(&desc, dnnl_binary_add, &md, &smd, &md), "binary add desc")
        let pd = try r.primitiveDesc(&desc, "gradient accumulate")
        return try exec(pd, [(DNNLArg.src, t[x].diffMem!), (DNNLArg.src1, src), (DNNLArg.dst, t[x].diffMem!)], "accumulate")
    }

    func reluBackward(output: Int, fwd: dnnl_primitive_desc_t, into target: dnnl_memory_t) throws -> PendingStep {
        var md = t[output].md
        var bdesc = dnnl_eltwise_desc_t()
        try dnnlCheck(dnnl_eltwise_backward_desc_init(&bdesc, dnnl_eltwise_relu_use_dst_for_bwd, &md, &md, 0, 0), "relu bwd desc")
        let bpd = try r.primitiveDesc(&bdesc, hint: fwd, "relu bwd")
        return try exec(bpd, [(DNNLArg.dst, t[output].dataMem), (DNNLArg.diffDst, t[output].diffMem!), (DNNLArg.diffSrc, target)], "relu bwd")
    }
}
