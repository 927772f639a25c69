import CBLAS
import CDNNL
import Foundation

/// The classifier y = x W^T + b on OpenBLAS (plain [N, in] -> [N, out]).
extension DNNLExecutor {
    func lowerLinear(_ node: Node, _ context: LoweringContext, weight w: Int, bias b: Int) throws {
        let n = batchSize, i = context.index, x = context.x, xs = context.xs, ys = context.ys, needDx = context.needDx, lastReader = context.lastReader
        guard xs.height == 1, xs.width == 1 else { throw EngineError("linear: input must be pooled (1x1), got \(xs)") }
        let inF = xs.channels, outF = ys.channels
        try defineTensor(try memoryDesc([n, outF, 1, 1], dnnl_nchw), needsDiff: true)
        let xP = float(t[x].data), yP = float(t[node.output].data)
        let wP = state.params.pointer + model.params[w].offset, bP = state.params.pointer + model.params[b].offset
        let fwd = host("linear fwd") {
            // y = x W^T + b
            for row in 0..<n { (yP + row * outF).update(from: bP, count: outF) }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(outF), Int32(inF), 1, xP, Int32(inF), wP, Int32(inF), 1, yP, Int32(outF))
        }
        pendingTrain.append(fwd); pendingEval.append(fwd)
        guard training else { return }
        let dyP = float(t[node.output].diff!), dxP = t[x].diff.map { float($0) }
        let dwP = state.grads.pointer + model.params[w].offset, dbP = state.grads.pointer + model.params[b].offset
        let first = lastReader[x] == i
        pendingBackward.append(host("linear bwd") {
            // dW = dy^T x ; db = sum_rows dy ; dx (+)= dy W
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(outF), Int32(inF), Int32(n), 1, dyP, Int32(outF), xP, Int32(inF), 0, dwP, Int32(inF))
            for j in 0..<outF { var s: Float = 0; for row in 0..<n { s += dyP[row * outF + j] }; dbP[j] = s }
            if needDx, let dxP {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(inF), Int32(outF), 1, dyP, Int32(outF), wP, Int32(inF), first ? 0 : 1, dxP, Int32(inF))
            }
        })
    }
}
