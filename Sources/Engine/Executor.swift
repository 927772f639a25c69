/// How a forward pass treats batch norm and dropout.
public enum ForwardMode: Sendable, Equatable {
    /// Batch statistics; running statistics updated with `bnMomentum` (0 leaves them untouched,
    /// as SAM's second pass needs); num_batches_tracked incremented; dropout drawn from `dropoutSeed`.
    case train(bnMomentum: Float = 0.1, dropoutSeed: UInt64 = 0)
    /// Running statistics; dropout is the identity.
    case eval
}

/// Runs a model's graph for one batch size on a `ModelState`. Two implementations: the oneDNN
/// fast path (`DNNLExecutor`) and the plain-Swift twin (`ReferenceExecutor`).
public protocol Executor: AnyObject {
    var model: Model { get }
    var state: ModelState { get }
    var batchSize: Int { get }
    /// `input` is NCHW float32 [batchSize, C, H, W]. Returns the logits [batchSize, classes],
    /// valid until the next call.
    func forward(input: UnsafePointer<Float>, mode: ForwardMode) -> UnsafePointer<Float>
    /// Back-propagates d(loss)/d(logits) [batchSize, classes] through the last *training*
    /// forward and overwrites `state.grads` with the parameter gradients.
    func backward(logitsGrad: UnsafePointer<Float>)
}

/// Inspection, for tests and debugging (allocates; never on the training path).
public protocol InspectableExecutor: Executor {
    /// The value of a graph tensor from the last forward, NCHW.
    func value(of tensor: Int) -> [Float]
    /// d(loss)/d(tensor) from the last backward, NCHW (tensor 0 only with `inputGradient`).
    func gradient(of tensor: Int) -> [Float]
}
