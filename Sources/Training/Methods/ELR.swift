// ELR: early-learning regularisation with per-sample target averages kept across the run.
import Engine
import Foundation

/// Early-learning regularization (Liu et al., NeurIPS 2020; shengliu66/ELR): cross-entropy plus
/// lambda log(1 - <t_i, p_i>) (`ELRLoss`), t_i a running average of sample i's prediction kept
/// for every training image across the run, zero at the start as in the reference code. The
/// batch's sample indices say which rows it trains (`TrackedRows`); each is updated once per
/// step, at the first pass that sees it. The table is part of the run's checkpoint
/// (`method.elr_targets`), so a resumed run continues with the same targets.
public final class ELR: TrainingMethod {
    public let loss: Loss
    let context: MethodContext
    /// [samples, classes]: the running targets.
    let table: FloatBuffer
    private let pending: UnsafeMutablePointer<UInt8>
    static let stateName = "method.elr_targets"

    public init(beta: Double, lambda: Double, context: MethodContext) {
        precondition(context.samples > 0, "ELR needs the number of training samples")
        self.context = context
        loss = ELRLoss(beta: beta, lambda: lambda)
        table = FloatBuffer(count: context.samples * context.classes)
        table.zero()
        pending = .allocate(capacity: context.batchSize)
    }

    deinit { pending.deallocate() }

    public func prepare(input: UnsafePointer<Float>, labels: UnsafePointer<Int32>, indices: UnsafePointer<Int32>?, iteration: Int) -> PreparedBatch {
        guard let indices else { preconditionFailure("ELR needs the batch's sample indices") }
        for b in 0..<context.batchSize {
            precondition(indices[b] >= 0 && Int(indices[b]) < context.samples, "ELR: sample index \(indices[b]) out of range 0..<\(context.samples)")
            pending[b] = 1
        }
        return PreparedBatch(input: input, targets: .tracked(labels, TrackedRows(table: table.pointer, indices: indices, pending: pending)), labels: labels)
    }

    /// The running targets, [samples, classes].
    public var targets: [Float] { Array(UnsafeBufferPointer(start: table.pointer, count: table.count)) }

    public func stateTensors() -> [String: SafetensorsTensor] {
        [Self.stateName: SafetensorsTensor(floats: UnsafeBufferPointer(start: table.pointer, count: table.count), shape: [context.samples, context.classes])]
    }

    public func restoreState(from file: SafetensorsFile, source: String) throws {
        guard let t = file[Self.stateName] else { throw EngineError("\(source): no \(Self.stateName) (the ELR targets): not a checkpoint of this run") }
        guard t.dtype == .F32, t.shape == [context.samples, context.classes] else {
            throw EngineError("\(source): \(Self.stateName) has shape \(t.shape), expected [\(context.samples), \(context.classes)]")
        }
        t.floats.withUnsafeBufferPointer { table.pointer.update(from: $0.baseAddress!, count: table.count) }
    }
}
