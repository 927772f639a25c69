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
        // 3x3 stride-1 convolutions can also run as Winograd F(4x4, 3x3), oneDNN's (AVX-512) or
        // sambench's own (tried only when tuning).
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
        let (cin, cout, height, width) = (pe.shape[1], pe.shape[0], context.xs.height, context.xs.width)
        // sambench's own Winograd kernels (Winograd.swift), for 3x3 stride-1 padding-1 passes
        // between blocked layouts of whole channel blocks (offered only when tuning).
        var ownBlock: Int?
        if winograd, p == 1, let b = r.channelBlock(srcMD), r.channelBlock(firstDst) == b,
           WinogradConvolution.supports(inChannels: cin, outChannels: cout, block: b) { ownBlock = b }
        /// The own kernels for a pass, F(2x2, 3x3) and F(4x4, 3x3): the convolution (or with
        /// `backwardData`, its backward-data convolution from cout to cin channels), with their trials.
        func own(backwardData: Bool = false, weightsPass: Bool = false) -> [(WinogradConvolution, OwnKernel)] {
            guard let b = ownBlock else { return [] }
            return [2, 4].map { m in
                let wino = WinogradConvolution(tile: m, batch: n, inChannels: backwardData ? cout : cin, outChannels: backwardData ? cin : cout,
                                               height: height, width: width, block: b, backwardData: backwardData, threads: EngineThreads.current)
                return (wino, OwnKernel(name: wino.name) { wino.trial($0, weightsPass: weightsPass) })
            }
        }
        let scratch = ownScratch
        let weights = UnsafePointer(state.params.pointer + pe.offset)
        let ownForward = own()
        let fkernel = try chooseImplementation(forward, "conv fwd", arguments: [(DNNLArg.src, dnnl_query_src_md),
                                                                             (DNNLArg.weights, dnnl_query_weights_md), (DNNLArg.dst, dnnl_query_dst_md)],
                                               own: ownForward.map(\.1))
        // The forward kernel's weights (OIHW in the flat vector, or reordered each forward).
        var fwdW: dnnl_memory_desc_t?, fwdWMem = userWMem
        switch fkernel {
        case let .own(k):
            let wino = ownForward[k].0
            implementations.append("\(pe.name): \(wino.name)")
            try defineTensor(firstDst, needsDiff: true)
            let src = UnsafeRawPointer(r.dataHandle(t[x].dataMem)), dst = r.dataHandle(t[node.output].dataMem)
            scratch.need(wino.forwardScratch)
            let step = host("conv fwd", implementation: wino.name) {
                wino.forward(src: src, weights: weights, dst: dst, scratch: scratch.pointer)
            }
            pendingTrain.append(step); pendingEval.append(step)
        case let .dnnl(fpd):
            implementations.append("\(pe.name): \(r.implementation(fpd))")
            try defineTensor(r.query(fpd, dnnl_query_dst_md), needsDiff: true)
            let w = r.query(fpd, dnnl_query_weights_md)
            fwdW = w
            if !sameLayout(w, userW) {
                // [O, I, kH, kW] in the forward kernel's weight layout.
                let (_, m) = try r.allocate(w)
                fwdWMem = m
                let step = try exec(try r.reorderDesc(from: userW, to: w), [(DNNLArg.from, userWMem), (DNNLArg.to, m)], "weights reorder")
                pendingTrain.append(step); pendingEval.append(step)
            }
            let fstep = try exec(fpd, [(DNNLArg.src, t[x].dataMem), (DNNLArg.weights, fwdWMem), (DNNLArg.dst, t[node.output].dataMem)], "conv fwd")
            pendingTrain.append(fstep); pendingEval.append(fstep)
        }
        guard training else { return }
        // oneDNN's backward descriptors take the forward one chosen as their hint (its first
        // choice when the forward runs sambench's own kernel).
        let hint: dnnl_primitive_desc_t
        if case let .dnnl(fpd) = fkernel { hint = fpd } else { hint = forward[0] }

        var yMD = t[node.output].md
        if needDx {
            let backwardData = try candidates("conv bwd data", hint: hint) {
                dnnl_convolution_backward_data_desc_init(&$0, $1, &srcMD, &anyW, &yMD, strides, pads, pads)
            }
            let ownBackwardData = own(backwardData: true)
            let bkernel = try chooseImplementation(backwardData, "conv bwd data",
                                                   arguments: [(DNNLArg.diffDst, dnnl_query_diff_dst_md), (DNNLArg.weights, dnnl_query_weights_md),
                                                               (DNNLArg.diffSrc, dnnl_query_diff_src_md)],
                                                   own: ownBackwardData.map(\.1))
            let (target, acc) = try gradientTarget(x, node: i, lastReader: lastReader)
            switch bkernel {
            case let .own(k):
                let wino = ownBackwardData[k].0
                let dy = UnsafeRawPointer(r.dataHandle(t[node.output].diffMem!)), dx = r.dataHandle(target)
                scratch.need(wino.forwardScratch)
                pendingBackward.append(host("conv bwd data", implementation: wino.name) {
                    wino.forward(src: dy, weights: weights, dst: dx, scratch: scratch.pointer)
                })
            case let .dnnl(bpd):
                let bwdW = r.query(bpd, dnnl_query_weights_md)
                var bwdWMem = userWMem
                if let fwdW, sameLayout(bwdW, fwdW) {
                    bwdWMem = fwdWMem
                } else if !sameLayout(bwdW, userW) {
                    // [O, I, kH, kW] in the backward-data kernel's weight layout.
                    let (_, m) = try r.allocate(bwdW)
                    bwdWMem = m
                    pendingBackward.append(try exec(try r.reorderDesc(from: userW, to: bwdW), [(DNNLArg.from, userWMem), (DNNLArg.to, m)], "weights reorder"))
                }
                pendingBackward.append(try exec(bpd, [(DNNLArg.diffDst, t[node.output].diffMem!), (DNNLArg.weights, bwdWMem), (DNNLArg.diffSrc, target)], "conv bwd data"))
            }
            pendingBackward += acc
        }
        let backwardWeights = try candidates("conv bwd weights", hint: hint) {
            dnnl_convolution_backward_weights_desc_init(&$0, $1, &srcMD, &anyW, nil, &yMD, strides, pads, pads)
        }
        let ownBackwardWeights = own(weightsPass: true)
        let wkernel = try chooseImplementation(backwardWeights, "conv bwd weights",
                                               arguments: [(DNNLArg.src, dnnl_query_src_md), (DNNLArg.diffDst, dnnl_query_diff_dst_md),
                                                           (DNNLArg.diffWeights, dnnl_query_diff_weights_md)],
                                               own: ownBackwardWeights.map(\.1))
        switch wkernel {
        case let .own(k):
            let wino = ownBackwardWeights[k].0
            let src = UnsafeRawPointer(r.dataHandle(t[x].dataMem)), dy = UnsafeRawPointer(r.dataHandle(t[node.output].diffMem!))
            let dW = state.grads.pointer + pe.offset
            scratch.need(wino.backwardWeightsScratch)
            pendingBackward.append(host("conv bwd weights", implementation: wino.name) {
                wino.backwardWeights(src: src, diffDst: dy, diffWeights: dW, scratch: scratch.pointer)
            })
        case let .dnnl(wpd):
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
}
