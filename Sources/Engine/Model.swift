/// What one trainable tensor is; decides initialisation and (for ASAM) adaptive scaling.
public enum ParamRole: String, Sendable {
    case convWeight, linearWeight, linearBias, bnWeight, bnBias
    /// PyTorch-name convention used by ASAM: parameters called `*.weight` are scaled.
    public var isWeight: Bool { self == .convWeight || self == .linearWeight || self == .bnWeight }
}

/// One parameter tensor: a view `[offset, offset+count)` into the flat parameter vector.
public struct ParamEntry: Sendable {
    public let name: String          // PyTorch state_dict name, e.g. "layer2.0.conv1.weight"
    public let shape: [Int]          // OIHW for convs, [out, in] for linear, [C] otherwise
    public let offset: Int
    public let role: ParamRole
    public var count: Int { shape.reduce(1, *) }
}

/// One batch-norm layer's buffers: running_mean at `statOffset`, running_var at
/// `statOffset + channels` in the flat statistics vector; `num_batches_tracked` separately.
public struct BatchNormEntry: Sendable {
    public let prefix: String        // e.g. "layer1.0.bn1"
    public let channels: Int
    public let statOffset: Int
}

/// Per-image shape of a tensor in the graph (the batch size is the executor's).
public struct TensorShape: Sendable, Equatable {
    public let channels: Int, height: Int, width: Int
    public init(channels: Int, height: Int, width: Int) { self.channels = channels; self.height = height; self.width = width }
    public var perImage: Int { channels * height * width }
}

/// The operations a model is made of. Every one has a oneDNN fast path and a plain-Swift twin.
public enum Op: Sendable {
    /// Cross-correlation, zero padding, no bias. `weight` indexes `Model.params` (OIHW).
    case conv(weight: Int, kernel: Int, stride: Int, padding: Int)
    /// Batch norm over (N, H, W) per channel, optionally followed by ReLU.
    case batchNorm(bn: Int, weight: Int, bias: Int, relu: Bool)
    case relu
    /// inputs[0] + inputs[1], optionally followed by ReLU.
    case add(relu: Bool)
    case globalAvgPool
    /// Max pooling over k x k windows with stride s and padding p (padded positions never win),
    /// floor-sized output as PyTorch's `MaxPool2d(k, s, p)`: the ImageNet ResNet stem's 3x3/2/1.
    case maxPool(kernel: Int, stride: Int, padding: Int)
    /// Inverted dropout (kept values scaled by 1/(1-p)) in training; identity in eval.
    case dropout(p: Float)
    /// y = x W^T + b on [N, in] -> [N, out].
    case linear(weight: Int, bias: Int)
}

public struct Node: Sendable {
    public let op: Op
    public let inputs: [Int]
    public let output: Int
}

/// A model: its parameter table, batch-norm buffers and the graph of ops. It owns no values;
/// those live in `ModelState`, so one model description serves any number of states.
public final class Model: Sendable {
    public let name: String
    public let numClasses: Int
    public let params: [ParamEntry]
    public let batchNorms: [BatchNormEntry]
    public let tensors: [TensorShape]
    public let nodes: [Node]
    /// Tensor 0 is the input image batch; the last tensor is the logits.
    public var inputTensor: Int { 0 }
    public var outputTensor: Int { tensors.count - 1 }
    public let parameterCount: Int
    public let statCount: Int
    /// Per tensor, the node that writes it (-1 for the input) and the nodes that read it, in order.
    public let producer: [Int]
    public let readers: [[Int]]

    init(name: String, numClasses: Int, params: [ParamEntry], batchNorms: [BatchNormEntry],
         tensors: [TensorShape], nodes: [Node]) {
        self.name = name
        self.numClasses = numClasses
        self.params = params
        self.batchNorms = batchNorms
        self.tensors = tensors
        self.nodes = nodes
        parameterCount = params.reduce(0) { $0 + $1.count }
        statCount = batchNorms.reduce(0) { $0 + 2 * $1.channels }
        var producer = Array(repeating: -1, count: tensors.count), readers = Array(repeating: [Int](), count: tensors.count)
        for (i, node) in nodes.enumerated() {
            for x in node.inputs { readers[x].append(i) }
            producer[node.output] = i
        }
        self.producer = producer
        self.readers = readers
    }

    /// Forward multiply-accumulates per image of convolutions and linear layers (what
    /// torch_bench.py counts: BN, ReLU, add and pooling are ignored).
    public var forwardMACsPerImage: Int {
        nodes.reduce(0) { total, node in
            switch node.op {
            case .conv(let w, _, _, _):
                let s = params[w].shape
                return total + tensors[node.output].height * tensors[node.output].width * s[0] * s[1] * s[2] * s[3]
            case .linear(let w, _):
                return total + params[w].count
            default:
                return total
            }
        }
    }

    public func param(named name: String) -> ParamEntry? { params.first { $0.name == name } }

    /// The parameters under any of the module prefixes (`Checkpoint.name(_:isUnder:)`); a prefix
    /// that names no parameter is an error listing the model's top-level modules.
    public func params(under prefixes: [String]) throws -> [ParamEntry] {
        if let unknown = prefixes.first(where: { p in !params.contains { Checkpoint.name($0.name, isUnder: p) } }) {
            let modules = Set(params.map { String($0.name.split(separator: ".")[0]) }).sorted()
            throw EngineError("'\(unknown)' names no parameter of \(name) (its modules: \(modules.joined(separator: ", ")))")
        }
        return params.filter { p in prefixes.contains { Checkpoint.name(p.name, isUnder: $0) } }
    }
}

/// Builds a `Model` layer by layer, naming parameters exactly as PyTorch's state_dict does.
/// Each method takes an input tensor id and returns the output's.
public struct ModelBuilder {
    public private(set) var params: [ParamEntry] = []
    public private(set) var batchNorms: [BatchNormEntry] = []
    public private(set) var tensors: [TensorShape]
    public private(set) var nodes: [Node] = []
    private var paramOffset = 0
    private var statOffset = 0

    public init(input: TensorShape) { tensors = [input] }

    private mutating func addParam(_ name: String, _ shape: [Int], _ role: ParamRole) -> Int {
        params.append(ParamEntry(name: name, shape: shape, offset: paramOffset, role: role))
        paramOffset += shape.reduce(1, *)
        return params.count - 1
    }

    private mutating func addNode(_ op: Op, _ inputs: [Int], _ shape: TensorShape) -> Int {
        tensors.append(shape)
        nodes.append(Node(op: op, inputs: inputs, output: tensors.count - 1))
        return tensors.count - 1
    }

    public mutating func conv(_ x: Int, _ name: String, out: Int, kernel: Int, stride: Int) -> Int {
        let s = tensors[x]
        let pad = kernel / 2
        let w = addParam(name + ".weight", [out, s.channels, kernel, kernel], .convWeight)
        let oh = (s.height + 2 * pad - kernel) / stride + 1
        let ow = (s.width + 2 * pad - kernel) / stride + 1
        return addNode(.conv(weight: w, kernel: kernel, stride: stride, padding: pad), [x],
                       TensorShape(channels: out, height: oh, width: ow))
    }

    public mutating func batchNorm(_ x: Int, _ name: String, relu: Bool) -> Int {
        let c = tensors[x].channels
        let w = addParam(name + ".weight", [c], .bnWeight)
        let b = addParam(name + ".bias", [c], .bnBias)
        batchNorms.append(BatchNormEntry(prefix: name, channels: c, statOffset: statOffset))
        statOffset += 2 * c
        return addNode(.batchNorm(bn: batchNorms.count - 1, weight: w, bias: b, relu: relu), [x], tensors[x])
    }

    public mutating func relu(_ x: Int) -> Int { addNode(.relu, [x], tensors[x]) }

    public mutating func add(_ a: Int, _ b: Int, relu: Bool) -> Int {
        precondition(tensors[a] == tensors[b], "add: shapes \(tensors[a]) and \(tensors[b]) differ")
        return addNode(.add(relu: relu), [a, b], tensors[a])
    }

    public mutating func dropout(_ x: Int, p: Float) -> Int { addNode(.dropout(p: p), [x], tensors[x]) }

    public mutating func globalAvgPool(_ x: Int) -> Int {
        addNode(.globalAvgPool, [x], TensorShape(channels: tensors[x].channels, height: 1, width: 1))
    }

    public mutating func maxPool(_ x: Int, kernel: Int, stride: Int, padding: Int) -> Int {
        let s = tensors[x]
        precondition(padding <= kernel / 2, "maxPool: padding \(padding) exceeds half the kernel \(kernel)")
        let oh = (s.height + 2 * padding - kernel) / stride + 1
        let ow = (s.width + 2 * padding - kernel) / stride + 1
        return addNode(.maxPool(kernel: kernel, stride: stride, padding: padding), [x],
                       TensorShape(channels: s.channels, height: oh, width: ow))
    }

    public mutating func linear(_ x: Int, _ name: String, out: Int) -> Int {
        let inF = tensors[x].perImage
        let w = addParam(name + ".weight", [out, inF], .linearWeight)
        let b = addParam(name + ".bias", [out], .linearBias)
        return addNode(.linear(weight: w, bias: b), [x], TensorShape(channels: out, height: 1, width: 1))
    }

    public func build(name: String, numClasses: Int) -> Model {
        Model(name: name, numClasses: numClasses, params: params, batchNorms: batchNorms,
              tensors: tensors, nodes: nodes)
    }
}
