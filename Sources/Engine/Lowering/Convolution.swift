import CDNNL
import Foundation

/// Convolution (no bias, zero padding) on the blocked layout chosen by oneDNN (`any`): forward
/// (shared by training and evaluation), backward data (only where the input needs a gradient) and
/// backward weights. The weights stay OIHW views into the flat parameter vector and are reordered
/// into the kernel's layout before each use; the weight gradient is reordered back into the flat
/// gradient vector.
extension DNNLExecutor {
    func lowerConvolution(_ node: Node, _ context: LoweringContext, weight w: Int, stride s: Int, padding p: Int) throws {
        let n = batchSize, i = context.index, x = context.x, ys = context.ys, needDx = context.needDx, lastReader = context.lastReader
        let pe = model.params[w]
        let userW = try memoryDesc(pe.shape, dnnl_oihw)
        let userWMem = try r.memory(userW, state.params.pointer + pe.offset)
        let userGMem = try r.memory(userW, state.grads.pointer + pe.offset)
        var anyW = try memoryDesc(pe.shape, dnnl_format_tag_any)
        var anyY = try memoryDesc([n, ys.channels, ys.height, ys.width], dnnl_format_tag_any)
        var srcMD = t[x].md
        currentMACs = n * ys.channels * ys.height * ys.width * pe.shape[1] * pe.shape[2] * pe.shape[3]
        currentShape = "\(n)x\(pe.shape[1])x\(context.xs.height)x\(context.xs.width) -> \(pe.shape[0]), k\(pe.shape[2]) s\(s)"
        let strides: [Int64] = [Int64(s), Int64(s)], pads: [Int64] = [Int64(p), Int64(p)]
        // 3x3 stride-1 convolutions can also run as Winograd F(4x4, 3x3) (tried only when tuning).
        let winograd = ConvolutionTuning.shared.enabled && pe.shape[2] == 3 && pe.shape[3] == 3 && s == 1
        /// A pass's candidates: the direct algorithm's, then Winograd's where it applies and oneDNN has it.
        func candidates(_ what: String, hint: dnnl_primitive_desc_t? = nil,
                        _ initialize: (inout dnnl_convolution_desc_t, dnnl_alg_kind_t) -> dnnl_status_t) throws -> [dnnl_primitive_desc_t] {
            var desc = dnnl_convolution_desc_t()
            try dnnlCheck(initialize(&desc, dnnl_convolution_direct), "\(what) desc \(pe.name)")
            var found = try r.candidates(&desc, hint: hint, "\(what) \(pe.name)")
            var wdesc = dnnl_convolution_desc_t()
            if winograd, initialize(&wdesc, dnnl_convolution_winograd) == dnnl_success {
                found += (try? r.candidates(&wdesc, hint: hint, allowReference: false, "\(what) winograd \(pe.name)")) ?? []
            }
            return found
        }
        var forward = try candidates("conv fwd") {
            dnnl_convolution_forward_desc_init(&$0, dnnl_forward_training, $1, &srcMD, &anyW, nil, &anyY, strides, pads, pads)
        }
        // Candidates that write the layout of oneDNN's first choice (the graph's layout downstream).
        let firstDst = r.query(forward[0], dnnl_query_dst_md)
        forward = forward.filter { sameLayout(r.query($0, dnnl_query_dst_md), firstDst) }
        let fpd = try chooseImplementation(forward, "conv fwd", arguments: [(DNNLArg.src, dnnl_query_src_md),
                                                                         (DNNLArg.weights, dnnl_query_weights_md), (DNNLArg.dst, dnnl_query_dst_md)])
        implementations.append("\(pe.name): \(r.implementation(fpd))")
        try defineTensor(r.query(fpd, dnnl_query_dst_md), needsDiff: true)
        // Weights: OIHW view into the flat vector, reordered to the kernel's layout each forward.
        let fwdW = r.query(fpd, dnnl_query_weights_md)
        var fwdWMem = userWMem
        if !sameLayout(fwdW, userW) {
            // [O, I, kH, kW] in the forward kernel's weight layout.
            let (_, m) = try r.allocate(fwdW)
            fwdWMem = m
            let step = try exec(try r.reorderDesc(from: userW, to: fwdW), [(DNNLArg.from, userWMem), (DNNLArg.to, m)], "weights reorder")
            pendingTrain.append(step); pendingEval.append(step)
        }
        let fstep = try exec(fpd, [(DNNLArg.src, t[x].dataMem), (DNNLArg.weights, fwdWMem), (DNNLArg.dst, t[node.output].dataMem)], "conv fwd")
        pendingTrain.append(fstep); pendingEval.append(fstep)
        guard training else { return }

        var yMD = t[node.output].md
        if needDx {
            let backwardData = try candidates("conv bwd data", hint: fpd) {
                dnnl_convolution_backward_data_desc_init(&$0, $1, &srcMD, &anyW, &yMD, strides, pads, pads)
            }
            let bpd = try chooseImplementation(backwardData, "conv bwd data",
                                               arguments: [(DNNLArg.diffDst, dnnl_query_diff_dst_md), (DNNLArg.weights, dnnl_query_weights_md),
                                                           (DNNLArg.diffSrc, dnnl_query_diff_src_md)])
            let bwdW = r.query(bpd, dnnl_query_weights_md)
            var bwdWMem = userWMem
            if sameLayout(bwdW, fwdW) {
                bwdWMem = fwdWMem
            } else if !sameLayout(bwdW, userW) {
                // [O, I, kH, kW] in the backward-data kernel's weight layout.
                let (_, m) = try r.allocate(bwdW)
                bwdWMem = m
                pendingBackward.append(try exec(try r.reorderDesc(from: userW, to: bwdW), [(DNNLArg.from, userWMem), (DNNLArg.to, m)], "weights reorder"))
            }
            let (target, acc) = try gradientTarget(x, node: i, lastReader: lastReader)
            pendingBackward.append(try exec(bpd, [(DNNLArg.diffDst, t[node.output].diffMem!), (DNNLArg.weights, bwdWMem), (DNNLArg.diffSrc, target)], "conv bwd data"))
            pendingBackward += acc
        }
        let backwardWeights = try candidates("conv bwd weights", hint: fpd) {
            dnnl_convolution_backward_weights_desc_init(&$0, $1, &srcMD, &anyW, nil, &yMD, strides, pads, pads)
        }
        let wpd = try chooseImplementation(backwardWeights, "conv bwd weights",
                                           arguments: [(DNNLArg.src, dnnl_query_src_md), (DNNLArg.diffDst, dnnl_query_diff_dst_md),
                                                       (DNNLArg.diffWeights, dnnl_query_diff_weights_md)])
        let dW = r.query(wpd, dnnl_query_diff_weights_md)
        if sameLayout(dW, userW) {
            pendingBackward.append(try exec(wpd, [(DNNLArg.src, t[x].dataMem), (DNNLArg.diffDst, t[node.output].diffMem!), (DNNLArg.diffWeights, userGMem)], "conv bwd weights"))
        } else {
            // [O, I, kH, kW] weight gradient in the kernel's layout, reordered into the flat vector.
            let (_, m) = try r.allocate(dW)
            pendingBackward.append(try exec(wpd, [(DNNLArg.src, t[x].dataMem), (DNNLArg.diffDst, t[node.output].diffMem!), (DNNLArg.diffWeights, m)], "conv bwd weights"))
            pendingBackward.append(try exec(try r.reorderDesc(from: dW, to: userW), [(DNNLArg.from, m), (DNNLArg.to, userGMem)], "grad reorder"))
        }
    }
}
