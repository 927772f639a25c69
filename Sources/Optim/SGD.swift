import Engine

/// SGD with PyTorch's semantics (`torch.optim.SGD`), on the flat parameter vector:
///
///     d   = g + weight_decay * w                      (weight decay before momentum)
///     buf = d                            on the first step (the buffer starts as the first d)
///     buf = momentum * buf + (1 - dampening) * d      afterwards
///     d   = d + momentum * buf  if nesterov, else buf (when momentum != 0)
///     w   = w - lr * d
public struct SGDConfig: Sendable, Hashable, Codable {
    public var momentum: Float
    public var dampening: Float
    public var weightDecay: Float
    public var nesterov: Bool

    public init(momentum: Float = 0.9, dampening: Float = 0, weightDecay: Float = 5e-4, nesterov: Bool = false) {
        self.momentum = momentum
        self.dampening = dampening
        self.weightDecay = weightDecay
        self.nesterov = nesterov
    }

    public func validate() throws {
        guard momentum >= 0 else { throw ConfigurationError("momentum", "SGD: momentum must be >= 0, got \(momentum)") }
        guard weightDecay >= 0 else { throw ConfigurationError("weight_decay", "SGD: weight decay must be >= 0, got \(weightDecay)") }
        guard momentum < 1 else { throw ConfigurationError("momentum", "SGD: momentum must be < 1, got \(momentum)") }
        guard weightDecay <= 1 else { throw ConfigurationError("weight_decay", "SGD: weight decay must be <= 1, got \(weightDecay)") }
        guard (0...1).contains(dampening) else { throw ConfigurationError("momentum", "SGD: dampening must be in [0, 1], got \(dampening)") }
        guard !nesterov || (momentum > 0 && dampening == 0) else {
            throw ConfigurationError("nesterov", "SGD: nesterov needs momentum > 0 and dampening 0 (as in PyTorch)")
        }
    }
}

public final class SGD {
    public let config: SGDConfig
    /// The momentum buffer, one per parameter, in the flat layout.
    public let momentumBuffer: FloatBuffer
    public private(set) var hasMomentumBuffer = false
    /// 1 for a parameter that trains, 0 for a frozen one (no decay, no momentum, no update);
    /// nil: every parameter trains.
    public var trainable: FloatBuffer?

    public init(parameterCount: Int, config: SGDConfig) throws {
        try config.validate()
        self.config = config
        momentumBuffer = FloatBuffer(count: config.momentum != 0 ? parameterCount : 0)
    }

    /// One update of `params` with `grads` (which it leaves unchanged). Allocates nothing.
    public func step(params: FloatBuffer, grads: FloatBuffer, lr: Float) {
        precondition(params.count == grads.count, "SGD.step: \(params.count) params, \(grads.count) grads")
        let w = params.pointer, g = grads.pointer, count = params.count
        let wd = config.weightDecay, mu = config.momentum, damp = 1 - config.dampening
        let frozen = trainable?.pointer
        if mu == 0 {
            for i in 0..<count where frozen.map({ $0[i] != 0 }) ?? true { w[i] -= lr * (g[i] + wd * w[i]) }
            return
        }
        precondition(momentumBuffer.count == count, "SGD.step: optimizer made for \(momentumBuffer.count) parameters, got \(count)")
        let buf = momentumBuffer.pointer
        let first = !hasMomentumBuffer
        let nesterov = config.nesterov
        for i in 0..<count {
            if let frozen, frozen[i] == 0 { continue }
            let d = g[i] + wd * w[i]
            let b = first ? d : mu * buf[i] + damp * d
            buf[i] = b
            w[i] -= lr * (nesterov ? d + mu * b : b)
        }
        hasMomentumBuffer = true
    }

    /// Restores the momentum buffer (e.g. from a checkpoint).
    public func setMomentumBuffer(_ values: UnsafeBufferPointer<Float>) {
        precondition(values.count == momentumBuffer.count)
        momentumBuffer.pointer.update(from: values.baseAddress!, count: values.count)
        hasMomentumBuffer = true
    }
}
