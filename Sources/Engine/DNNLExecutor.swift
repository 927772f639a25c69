import CBLAS
import CDNNL
import Foundation

/// The fast path: the model's graph as oneDNN primitives on the blocked layout chosen by the
/// library (format `any`: nChw16c with AVX-512), from the first convolution to the global
/// pool; the classifier runs on OpenBLAS. Every primitive, memory and buffer is created here,
/// once per (model, batch size); `forward` and `backward` allocate nothing.
///
/// Backward overwrites `state.grads`. A tensor read by several ops gets its gradient written
/// by the last reader (the first in backward order) and accumulated by the others.
///
/// Memory: activations stay apart in training (backward reads them); gradient buffers are shared
/// by liveness, and a residual add's inputs hold their gradients in one buffer with its
/// (masked) output gradient, so backward copies nothing there (`BufferSharing`). An
/// evaluation-only executor (`training: false`) builds no backward and shares its activations.
///
/// Each convolution pass runs oneDNN's first choice of kernel, or with `ConvolutionTuning` on the
/// fastest eligible one for this machine (oneDNN's 1x1, direct or Winograd, or sambench's own
/// Winograd F(2x2, 3x3) and F(4x4, 3x3) on OpenBLAS products; Tuning.swift, Winograd.swift). With `profiling`
/// every step is timed (`sambench bench --profile`).
///
/// `build` walks the graph once; each op family's lowering (its oneDNN primitives for
/// forward-train, forward-eval and backward) is one file in `Lowering/`: adding an op is one
/// `Op` case, its lowering file and the line that dispatches to it.
public final class DNNLExecutor: InspectableExecutor {
    public let model: Model
    public let state: ModelState
    public let batchSize: Int
    public let inputGradient: Bool
    /// False for an evaluation-only executor: no training forward, no backward, no gradient
    /// buffers, and activation buffers shared by liveness (`forward(mode: .train)` is refused).
    public let training: Bool
    /// Every tensor's gradient in a buffer of its own, readable after `backward` with
    /// `gradient(of:)` (tests). Otherwise gradient buffers are shared by liveness and the gradients
    /// of a residual add's inputs are one buffer (`BufferSharing`), and only the input image's
    /// gradient (with `inputGradient`) is kept.
    public let keepGradients: Bool
    /// Training-mode forwards normalise with the running statistics and leave them (and
    /// num_batches_tracked) untouched, as PyTorch's BN in eval mode inside a training loop (the
    /// finetuning recipe of frozen BN); backward treats those statistics as constants.
    public let frozenBatchNorm: Bool
    /// The oneDNN implementation chosen for each convolution, e.g. "layer1.0.conv1: jit:avx512_core".
    public internal(set) var implementations: [String] = []
    /// The convolution passes this executor timed to choose their implementation (`ConvolutionTuning`).
    public internal(set) var tuned: [TunedPass] = []

    let r: DNNLResources
    /// One graph tensor: its value [N, C, H, W] in the layout `md` describes (blocked nChw16c
    /// from the first convolution to the pool, plain NCHW for the input, the pooled features and
    /// the logits), and its gradient in the same layout where one is needed.
    struct TensorMemory {
        var md: dnnl_memory_desc_t
        var data: ByteBuffer
        var dataMem: dnnl_memory_t
        var diff: ByteBuffer?
        var diffMem: dnnl_memory_t?
    }
    /// Indexed like `model.tensors`.
    var t: [TensorMemory] = []

    enum Step {
        case exec(dnnl_primitive_t, UnsafeMutablePointer<dnnl_exec_arg_t>, Int32, label: Int)
        case host(() -> Void, label: Int)
    }
    /// A step as the lowering makes it: the primitive with its arguments (the scratchpad is
    /// added by `finalize`), or host code run between primitives; `label` indexes `stepLabels`.
    enum PendingStep {
        case exec(dnnl_primitive_desc_t, dnnl_primitive_t, [(Int32, dnnl_memory_t)], label: Int)
        case host(() -> Void, label: Int)
    }
    /// What each step is, for `--profile`: the layer, the operation and oneDNN's implementation.
    private(set) var stepLabels: [StepLabel] = []
    /// The layer the lowering is working on (labels its steps).
    var currentLayer = ""
    /// Multiply-accumulates of the current node when it is a convolution (its rate in profiles).
    var currentMACs = 0
    /// The current convolution's shape, "N x C x H x W -> O, kK sS" (labels, tuning keys).
    var currentShape = ""
    /// Seconds and calls per label, per plan (train forward, eval forward, backward), while `profiling`.
    var profileSeconds: [[Double]] = [], profileCalls: [[Int]] = []
    /// Time every step of the forwards and backwards that follow (for `sambench bench --profile`;
    /// each step is waited for, which costs next to nothing on the CPU stream).
    public var profiling = false
    /// What the lowering appends to: the training forward, the evaluation forward, and the
    /// current node's backward steps (run in reverse node order).
    var pendingTrain: [PendingStep] = [], pendingEval: [PendingStep] = [], pendingBackward: [PendingStep] = []
    var trainSteps: [Step] = [], evalSteps: [Step] = [], backwardSteps: [Step] = []
    private var argStorage: [UnsafeMutablePointer<dnnl_exec_arg_t>] = []

    /// BN momentum and dropout seed of the current training forward (read by host steps).
    var momentum: Float = 0.1
    var dropoutSeed: UInt64 = 0
    private var trainedForward = false
    /// [N, C padded to 16, H, W] of the largest tensor: gradient contributions to be accumulated.
    let gradScratch: ByteBuffer
    /// oneDNN's scratchpad, shared by every primitive (they run one at a time).
    private var scratchpad: ByteBuffer?
    /// The scratch of sambench's own kernels, shared by every pass that runs one (made by
    /// `finalize` at the largest size a pass asked for in `ownScratch.floats`).
    let ownScratch = OwnScratch()
    /// Buffers shared by liveness, and per tensor the one holding its value or gradient (nil: a
    /// buffer of its own). Values are shared only without `training`, gradients unless `keepGradients`.
    private var shared: [ByteBuffer] = []
    var dataSlot: [Int?] = [], diffSlot: [Int?] = []
    /// Per tensor, the residual group whose gradients are one storage (`BufferSharing`), and the
    /// layout of each group's first defined member (a member in another layout leaves the group).
    private(set) var gradientGroup: [Int?] = []
    private var groupLayout: [Int: dnnl_memory_desc_t] = [:]

    public init(state: ModelState, batchSize: Int, inputGradient: Bool = false, frozenBatchNorm: Bool = false,
                training: Bool = true, keepGradients: Bool = false) throws {
        guard batchSize >= 1 else { throw EngineError("DNNLExecutor: batch size must be >= 1, got \(batchSize)") }
        model = state.model
        self.state = state
        self.batchSize = batchSize
        self.inputGradient = inputGradient && training
        self.frozenBatchNorm = frozenBatchNorm
        self.training = training
        self.keepGradients = keepGradients
        r = try DNNLResources()
        // One scratch buffer receives the gradient contributions that must be accumulated;
        // sized for the largest tensor in any fp32 blocked layout (channels padded to 16).
        gradScratch = ByteBuffer(byteCount: training ? model.tensors.map { Self.upperBoundBytes($0, batchSize) }.max()! : 0)
        planSharedBuffers()
        try build()
        try finalize()
    }

    /// Bytes of a batch of a tensor in any fp32 layout oneDNN may choose (channels padded to 16).
    private static func upperBoundBytes(_ s: TensorShape, _ batchSize: Int) -> Int {
        batchSize * ((s.channels + 15) / 16 * 16) * s.height * s.width * 4
    }

    /// Which tensors share buffers, decided from the graph before anything is built, by their
    /// lifetimes (`BufferSharing.lifetimes`; a residual group's is its members' union); tensors
    /// that are not `BufferSharing.shareable` keep buffers of their own.
    private func planSharedBuffers() {
        let count = model.tensors.count
        let live = BufferSharing.lifetimes(model)
        let shareable = (0..<count).filter { BufferSharing.shareable(model, $0) }
        func plan(_ units: [[Int]]) -> [Int?] {
            let intervals = units.map { u in u.map { live[$0].lowerBound }.min()!...u.map { live[$0].upperBound }.max()! }
            let bytes = units.map { u in u.map { Self.upperBoundBytes(model.tensors[$0], batchSize) }.max()! }
            let (slot, slotBytes) = BufferSharing.assign(intervals: intervals, bytes: bytes)
            let first = shared.count
            shared += slotBytes.map { ByteBuffer(byteCount: $0) }
            var out: [Int?] = Array(repeating: nil, count: count)
            for (u, members) in units.enumerated() { for k in members { out[k] = first + slot[u] } }
            return out
        }
        let none = [Int?](repeating: nil, count: count)
        dataSlot = training ? none : plan(shareable.map { [$0] })
        gradientGroup = training && !keepGradients ? BufferSharing.residualGradientGroups(model) : none
        guard training, !keepGradients else { diffSlot = none; return }
        var units: [[Int]] = [], unitOfGroup: [Int: Int] = [:]
        for k in shareable {
            if let g = gradientGroup[k] {
                if let u = unitOfGroup[g] { units[u].append(k); continue }
                unitOfGroup[g] = units.count
            }
            units.append([k])
        }
        diffSlot = plan(units)
    }

    deinit { for a in argStorage { a.deallocate() } }

    /// Where a node sits in the graph, for its lowering.
    struct LoweringContext {
        /// The node's position in `model.nodes`.
        var index: Int
        /// Its first input tensor and the shapes of that input and of its output.
        var x: Int
        var xs: TensorShape, ys: TensorShape
        /// Whether the first input needs a gradient (the image batch only when asked for).
        var needDx: Bool
        /// For every tensor, the last node that reads it (it writes the gradient; others accumulate).
        var lastReader: [Int]
    }

    // MARK: building

    /// The next tensor's value (and, training, its gradient): in its shared buffer where the plan
    /// gave it one, else in a buffer of its own.
    func defineTensor(_ md: dnnl_memory_desc_t, needsDiff: Bool) throws {
        let k = t.count
        let (data, mem) = try storage(md, slot: dataSlot[k])
        var tm = TensorMemory(md: md, data: data, dataMem: mem)
        if needsDiff && training {
            var slot = diffSlot[k]
            if let g = gradientGroup[k] {
                if let first = groupLayout[g] {
                    if !sameLayout(first, md) { gradientGroup[k] = nil; slot = nil }
                } else {
                    groupLayout[g] = md
                }
            }
            let (diff, dmem) = try storage(md, slot: slot)
            tm.diff = diff
            tm.diffMem = dmem
        }
        t.append(tm)
    }

    private func storage(_ md: dnnl_memory_desc_t, slot: Int?) throws -> (ByteBuffer, dnnl_memory_t) {
        guard let slot else { return try r.allocate(md) }
        let buffer = shared[slot]
        guard byteSize(md) <= buffer.byteCount else {
            throw EngineError("DNNLExecutor: tensor \(t.count) needs \(byteSize(md)) bytes, its shared buffer has \(buffer.byteCount)")
        }
        return (buffer, try r.memory(md, buffer.pointer))
    }

    /// Whether tensors a and b hold their gradients in one storage (a residual group).
    func sameGradient(_ a: Int, _ b: Int) -> Bool { gradientGroup[a] != nil && gradientGroup[a] == gradientGroup[b] }

    func float(_ b: ByteBuffer) -> UnsafeMutablePointer<Float> { b.pointer.assumingMemoryBound(to: Float.self) }

    func exec(_ pd: dnnl_primitive_desc_t, _ args: [(Int32, dnnl_memory_t)], _ what: String) throws -> PendingStep {
        .exec(pd, try r.primitive(pd, what), args, label: label(what, implementation: r.implementation(pd)))
    }

    /// Host code run between primitives (the stream is waited for first).
    func host(_ what: String, implementation: String = "host", _ f: @escaping () -> Void) -> PendingStep {
        .host(f, label: label(what, implementation: implementation))
    }

    private func label(_ what: String, implementation: String) -> Int {
        let conv = what.hasPrefix("conv")
        stepLabels.append(StepLabel(layer: currentLayer, operation: what, implementation: implementation,
                                    macs: conv ? currentMACs : 0, shape: conv ? currentShape : ""))
        return stepLabels.count - 1
    }

    private func build() throws {
        let n = batchSize
        let lastReader = model.readers.map { $0.last ?? -1 }
        let s0 = model.tensors[0]
        try defineTensor(try memoryDesc([n, s0.channels, s0.height, s0.width], dnnl_nchw), needsDiff: inputGradient)

        // Each node's backward steps are collected apart and run in reverse node order.
        var backwardGroups: [[PendingStep]] = []
        // The layer that wrote each tensor (names the ops without parameters in profiles).
        var producers: [Int: String] = [:]
        for (i, node) in model.nodes.enumerated() {
            backwardGroups.append(pendingBackward)
            pendingBackward = []
            let x = node.inputs[0]
            let xs = model.tensors[x], ys = model.tensors[node.output]
            let needDx = x != 0 || inputGradient
            let context = LoweringContext(index: i, x: x, xs: xs, ys: ys, needDx: needDx, lastReader: lastReader)
            currentLayer = layerName(node, producers: producers)
            producers[node.output] = currentLayer
            currentMACs = 0
            currentShape = ""
            // One lowering per op family (Lowering/*.swift): forward-train, forward-eval and backward steps.
            switch node.op {
            case let .conv(w, _, s, p): try lowerConvolution(node, context, weight: w, stride: s, padding: p)
            case let .batchNorm(bn, w, b, relu): try lowerBatchNorm(node, context, bn: bn, weight: w, bias: b, relu: relu)
            case .relu: try lowerReLU(node, context)
            case let .add(relu): try lowerAdd(node, context, relu: relu)
            case .globalAvgPool: try lowerGlobalAveragePool(node, context)
            case let .maxPool(k, s, p): try lowerMaxPool(node, context, kernel: k, stride: s, padding: p)
            case let .dropout(p): try lowerDropout(node, context, p: p)
            case let .linear(w, b): try lowerLinear(node, context, weight: w, bias: b)
            }
        }
        backwardGroups.append(pendingBackward)
        pendingBackward = backwardGroups.reversed().flatMap { $0 }
        guard t.count == model.tensors.count else { throw EngineError("DNNLExecutor: graph defines \(t.count) of \(model.tensors.count) tensors") }
    }

    /// A layer's name in profiles: its parameters' module ("layer1.0.conv1"), or for ops without
    /// parameters the op within the block of the layer that wrote its input ("layer1.0.add").
    private func layerName(_ node: Node, producers: [Int: String]) -> String {
        func module(_ param: Int) -> String {
            let name = model.params[param].name
            return name.hasSuffix(".weight") ? String(name.dropLast(7)) : name
        }
        let block = (producers[node.inputs[0]] ?? "").split(separator: ".").dropLast().joined(separator: ".")
        func inBlock(_ op: String) -> String { block.isEmpty ? op : "\(block).\(op)" }
        switch node.op {
        case let .conv(w, _, _, _): return module(w)
        case let .batchNorm(bn, _, _, _): return model.batchNorms[bn].prefix
        case let .linear(w, _): return module(w)
        case .relu: return inBlock("relu")
        case .add: return inBlock("add")
        case .globalAvgPool: return "avgpool"
        case .maxPool: return "maxpool"
        case .dropout: return inBlock("dropout")
        }
    }

    /// Gives every primitive the one shared scratchpad (primitives run one at a time) and turns
    /// argument lists into the C arrays `dnnl_primitive_execute` reads.
    private func finalize() throws {
        let all = pendingTrain + pendingEval + pendingBackward
        var maxScratch = 0
        for case let .exec(pd, _, _, _) in all { maxScratch = max(maxScratch, byteSize(r.query(pd, dnnl_query_scratchpad_md))) }
        let scratch = ByteBuffer(byteCount: maxScratch)
        scratchpad = scratch
        ownScratch.make()
        var cache: [UnsafeMutableRawPointer: Step] = [:]
        func convert(_ list: [PendingStep]) throws -> [Step] {
            try list.map { p in
                switch p {
                case let .host(f, label): return .host(f, label: label)
                case let .exec(pd, prim, args, label):
                    // A primitive shared by two plans (train and eval) gets one argument array.
                    if let s = cache[UnsafeMutableRawPointer(prim)] { return s }
                    var a = args
                    let smd = r.query(pd, dnnl_query_scratchpad_md)
                    if byteSize(smd) > 0 { a.append((DNNLArg.scratchpad, try r.memory(smd, scratch.pointer))) }
                    let ptr = UnsafeMutablePointer<dnnl_exec_arg_t>.allocate(capacity: a.count)
                    for (k, (arg, mem)) in a.enumerated() { ptr[k] = dnnl_exec_arg_t(arg: arg, memory: mem) }
                    argStorage.append(ptr)
                    let s = Step.exec(prim, ptr, Int32(a.count), label: label)
                    cache[UnsafeMutableRawPointer(prim)] = s
                    return s
                }
            }
        }
        trainSteps = try convert(pendingTrain)
        evalSteps = try convert(pendingEval)
        backwardSteps = try convert(pendingBackward)
        pendingTrain = []; pendingEval = []; pendingBackward = []
        resetProfile()
    }

    /// Bytes of every buffer this executor owns (activations, gradients, workspaces, scratch).
    public var bufferBytes: Int {
        (r.buffers + shared).reduce(0) { $0 + $1.byteCount } + gradScratch.byteCount + (scratchpad?.byteCount ?? 0)
            + ownScratch.floats * 4
    }

    // MARK: running

    private func run(_ steps: [Step], plan: Int) {
        if profiling { return runProfiled(steps, plan: plan) }
        for step in steps {
            switch step {
            case let .exec(prim, args, count, _):
                let status = dnnl_primitive_execute(prim, r.stream, count, args)
                precondition(status == dnnl_success, "oneDNN execute failed: \(String(cString: dnnl_status2str(status)))")
            case let .host(f, _):
                dnnl_stream_wait(r.stream)
                f()
            }
        }
        dnnl_stream_wait(r.stream)
    }

    /// `run` with every step waited for and timed.
    private func runProfiled(_ steps: [Step], plan: Int) {
        for step in steps {
            let t0 = DispatchTime.now().uptimeNanoseconds
            let label: Int
            switch step {
            case let .exec(prim, args, count, l):
                let status = dnnl_primitive_execute(prim, r.stream, count, args)
                precondition(status == dnnl_success, "oneDNN execute failed: \(String(cString: dnnl_status2str(status)))")
                dnnl_stream_wait(r.stream)
                label = l
            case let .host(f, l):
                dnnl_stream_wait(r.stream)
                f()
                label = l
            }
            profileSeconds[plan][label] += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            profileCalls[plan][label] += 1
        }
    }

    public func forward(input: UnsafePointer<Float>, mode: ForwardMode) -> UnsafePointer<Float> {
        memcpy(t[0].data.pointer, input, batchSize * model.tensors[0].perImage * 4)
        switch mode {
        case let .train(m, seed):
            precondition(training, "a training forward on an evaluation-only executor")
            momentum = m
            dropoutSeed = seed
            run(trainSteps, plan: 0)
            trainedForward = true
        case .eval:
            run(evalSteps, plan: 1)
            trainedForward = false
        }
        return UnsafePointer(float(t[model.outputTensor].data))
    }

    public func backward(logitsGrad: UnsafePointer<Float>) {
        precondition(trainedForward, "backward needs a training-mode forward first")
        memcpy(t[model.outputTensor].diff!.pointer, logitsGrad, batchSize * model.numClasses * 4)
        run(backwardSteps, plan: 2)
    }
}
