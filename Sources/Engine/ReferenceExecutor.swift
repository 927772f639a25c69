/// Runs a model with `ReferenceOps` on NCHW arrays. Slow and simple: the twin of `DNNLExecutor`.
public final class ReferenceExecutor: InspectableExecutor {
    public let model: Model
    public let state: ModelState
    public let batchSize: Int
    /// Also compute d(loss)/d(input) in backward (for tests of the first layer).
    public let inputGradient: Bool
    /// Training-mode BN with the running statistics, held constant (see `DNNLExecutor.frozenBatchNorm`).
    public let frozenBatchNorm: Bool
    private var values: [[Float]]
    private var grads: [[Float]]
    private var bnBatchStats: [Int: (mean: [Double], variance: [Double])] = [:]
    private var dropoutMasks: [Int: [Float]] = [:]
    private var maxPoolArgmax: [Int: [Int]] = [:]
    private var lastMode: ForwardMode = .eval
    private var logits: FloatBuffer

    public init(state: ModelState, batchSize: Int, inputGradient: Bool = false, frozenBatchNorm: Bool = false) {
        model = state.model
        self.state = state
        self.batchSize = batchSize
        self.inputGradient = inputGradient
        self.frozenBatchNorm = frozenBatchNorm
        values = Array(repeating: [], count: model.tensors.count)
        grads = Array(repeating: [], count: model.tensors.count)
        logits = FloatBuffer(count: batchSize * model.numClasses)
    }

    private func param(_ i: Int) -> [Float] { Array(state.view(model.params[i])) }

    public func forward(input: UnsafePointer<Float>, mode: ForwardMode) -> UnsafePointer<Float> {
        let n = batchSize
        lastMode = mode
        values[0] = Array(UnsafeBufferPointer(start: input, count: n * model.tensors[0].perImage))
        for (nodeIndex, node) in model.nodes.enumerated() {
            let xs = model.tensors[node.inputs[0]]
            let x = values[node.inputs[0]]
            var y: [Float]
            switch node.op {
            case let .conv(w, k, s, p):
                y = ReferenceOps.convForward(x: x, n: n, c: xs.channels, h: xs.height, w: xs.width, weight: param(w),
                                             outChannels: model.params[w].shape[0], kernel: k, stride: s, padding: p).y
            case let .batchNorm(bn, w, b, relu):
                let hw = xs.height * xs.width
                switch mode {
                case .train where frozenBatchNorm:
                    let rm = Array(state.runningMean(bn)), rv = Array(state.runningVar(bn))
                    y = ReferenceOps.batchNormEval(x: x, n: n, c: xs.channels, hw: hw, gamma: param(w), beta: param(b), runningMean: rm, runningVar: rv)
                    bnBatchStats[nodeIndex] = (rm.map(Double.init), rv.map(Double.init))
                case let .train(momentum, _):
                    let r = ReferenceOps.batchNormTrain(x: x, n: n, c: xs.channels, hw: hw, gamma: param(w), beta: param(b))
                    y = r.y
                    bnBatchStats[nodeIndex] = (r.mean, r.variance)
                    let rm = state.runningMean(bn), rv = state.runningVar(bn)
                    let count = Double(n * hw)
                    if momentum != 0 {
                        for ch in 0..<xs.channels {
                            rm[ch] = (1 - momentum) * rm[ch] + momentum * Float(r.mean[ch])
                            rv[ch] = (1 - momentum) * rv[ch] + momentum * Float(r.variance[ch] * count / max(count - 1, 1))
                        }
                    }
                    state.batchesTracked[bn] += 1
                case .eval:
                    y = ReferenceOps.batchNormEval(x: x, n: n, c: xs.channels, hw: hw, gamma: param(w), beta: param(b),
                                                   runningMean: Array(state.runningMean(bn)), runningVar: Array(state.runningVar(bn)))
                }
                if relu { y = ReferenceOps.relu(y) }
            case .relu:
                y = ReferenceOps.relu(x)
            case let .add(relu):
                let x2 = values[node.inputs[1]]
                y = zip(x, x2).map { $0 + $1 }
                if relu { y = ReferenceOps.relu(y) }
            case .globalAvgPool:
                y = ReferenceOps.globalAvgPool(x: x, n: n, c: xs.channels, hw: xs.height * xs.width)
            case let .maxPool(k, s, p):
                let r = ReferenceOps.maxPoolForward(x: x, n: n, c: xs.channels, h: xs.height, w: xs.width, kernel: k, stride: s, padding: p)
                y = r.y
                maxPoolArgmax[nodeIndex] = r.argmax
            case let .dropout(p):
                if case let .train(_, seed) = mode {
                    var mask = [Float](repeating: 0, count: x.count)
                    mask.withUnsafeMutableBufferPointer { DropoutMask.fill($0.baseAddress!, count: x.count, p: p, seed: seed &+ UInt64(nodeIndex)) }
                    dropoutMasks[nodeIndex] = mask
                    y = zip(x, mask).map { $0 * $1 }
                } else {
                    y = x
                }
            case let .linear(w, b):
                y = ReferenceOps.linear(x: x, n: n, inFeatures: xs.perImage, weight: param(w), bias: param(b))
            }
            values[node.output] = y
        }
        let out = values[model.outputTensor]
        for i in out.indices { logits.pointer[i] = out[i] }
        return UnsafePointer(logits.pointer)
    }

    public func backward(logitsGrad: UnsafePointer<Float>) {
        guard case .train = lastMode else { preconditionFailure("backward needs a training-mode forward") }
        let n = batchSize
        for t in model.tensors.indices { grads[t] = [Float](repeating: 0, count: n * model.tensors[t].perImage) }
        grads[model.outputTensor] = Array(UnsafeBufferPointer(start: logitsGrad, count: n * model.numClasses))
        var pg = [[Float]](repeating: [], count: model.params.count)
        for (i, p) in model.params.enumerated() { pg[i] = [Float](repeating: 0, count: p.count) }
        for (nodeIndex, node) in model.nodes.enumerated().reversed() {
            let xi = node.inputs[0]
            let xs = model.tensors[xi]
            var dy = grads[node.output]
            let needDx = xi != 0 || inputGradient
            switch node.op {
            case let .conv(w, k, s, p):
                var dx: [Float]? = needDx ? grads[xi] : nil
                ReferenceOps.convBackward(x: values[xi], n: n, c: xs.channels, h: xs.height, w: xs.width, weight: param(w),
                                          outChannels: model.params[w].shape[0], kernel: k, stride: s, padding: p,
                                          dy: dy, dx: &dx, dw: &pg[w])
                if let dx { grads[xi] = dx }
            case let .batchNorm(_, w, b, relu):
                if relu { var d = [Float](repeating: 0, count: dy.count); ReferenceOps.reluBackward(y: values[node.output], dy: dy, dx: &d); dy = d }
                let st = bnBatchStats[nodeIndex]!
                var gw = pg[w], gb = pg[b]
                ReferenceOps.batchNormBackward(x: values[xi], n: n, c: xs.channels, hw: xs.height * xs.width, gamma: param(w),
                                               mean: st.mean, variance: st.variance, constantStatistics: frozenBatchNorm, dy: dy,
                                               dx: &grads[xi], dgamma: &gw, dbeta: &gb)
                pg[w] = gw; pg[b] = gb
            case .relu:
                ReferenceOps.reluBackward(y: values[node.output], dy: dy, dx: &grads[xi])
            case let .add(relu):
                if relu { var d = [Float](repeating: 0, count: dy.count); ReferenceOps.reluBackward(y: values[node.output], dy: dy, dx: &d); dy = d }
                for i in dy.indices { grads[xi][i] += dy[i] }
                let x2 = node.inputs[1]
                for i in dy.indices { grads[x2][i] += dy[i] }
            case .maxPool:
                ReferenceOps.maxPoolBackward(argmax: maxPoolArgmax[nodeIndex]!, dy: dy, dx: &grads[xi])
            case .globalAvgPool:
                ReferenceOps.globalAvgPoolBackward(dy: dy, n: n, c: xs.channels, hw: xs.height * xs.width, dx: &grads[xi])
            case .dropout:
                let mask = dropoutMasks[nodeIndex]!
                for i in dy.indices { grads[xi][i] += dy[i] * mask[i] }
            case let .linear(w, b):
                var gw = pg[w], gb = pg[b]
                ReferenceOps.linearBackward(x: values[xi], n: n, inFeatures: xs.perImage, weight: param(w), dy: dy,
                                            dx: &grads[xi], dw: &gw, db: &gb)
                pg[w] = gw; pg[b] = gb
            }
        }
        for (i, p) in model.params.enumerated() {
            let g = state.gradView(p)
            for j in 0..<p.count { g[j] = pg[i][j] }
        }
    }

    public func value(of tensor: Int) -> [Float] { values[tensor] }
    public func gradient(of tensor: Int) -> [Float] { grads[tensor] }
}
