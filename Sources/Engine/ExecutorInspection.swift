// The DNNLExecutor's step profiles and its inspection of values and gradients in plain layout.
import CDNNL
import Foundation

extension DNNLExecutor {
    /// Forgets what profiling has measured so far.
    public func resetProfile() {
        profileSeconds = Array(repeating: Array(repeating: 0, count: stepLabels.count), count: 3)
        profileCalls = Array(repeating: Array(repeating: 0, count: stepLabels.count), count: 3)
    }

    /// What profiling measured since the last reset: one entry per step that ran, in plan order
    /// (training forward, evaluation forward, backward).
    public func profile() -> [StepProfile] {
        let passes = ["forward", "eval", "backward"]
        let plans = [trainSteps, evalSteps, backwardSteps]
        var out: [StepProfile] = []
        for (p, steps) in plans.enumerated() {
            var seen = Set<Int>()
            for step in steps {
                let label: Int
                switch step { case let .exec(_, _, _, l): label = l; case let .host(_, l): label = l }
                guard profileCalls[p][label] > 0, seen.insert(label).inserted else { continue }
                out.append(StepProfile(label: stepLabels[label], pass: passes[p], calls: profileCalls[p][label], seconds: profileSeconds[p][label]))
            }
        }
        return out
    }

    func toPlain(_ mem: dnnl_memory_t, _ md: dnnl_memory_desc_t, tensor: Int) -> [Float] {
        let s = model.tensors[tensor]
        let plain = try! memoryDesc([batchSize, s.channels, s.height, s.width], dnnl_nchw)
        var out = [Float](repeating: 0, count: batchSize * s.perImage)
        out.withUnsafeMutableBytes { raw in
            var pd: dnnl_primitive_desc_t?
            var src = md, dst = plain
            var status = dnnl_reorder_primitive_desc_create(&pd, &src, r.engine, &dst, r.engine, nil)
            precondition(status == dnnl_success, "inspection reorder desc")
            var prim: dnnl_primitive_t?
            status = dnnl_primitive_create(&prim, pd)
            precondition(status == dnnl_success, "inspection reorder")
            var m: dnnl_memory_t?
            status = dnnl_memory_create(&m, &dst, r.engine, raw.baseAddress!)
            precondition(status == dnnl_success, "inspection memory")
            var args = [dnnl_exec_arg_t(arg: DNNLArg.from, memory: mem), dnnl_exec_arg_t(arg: DNNLArg.to, memory: m)]
            status = dnnl_primitive_execute(prim, r.stream, 2, &args)
            precondition(status == dnnl_success, "inspection execute")
            dnnl_stream_wait(r.stream)
            dnnl_memory_destroy(m); dnnl_primitive_destroy(prim); dnnl_primitive_desc_destroy(pd)
        }
        return out
    }

    /// Empty for a tensor whose buffer is shared (in an evaluation-only executor, most of them).
    public func value(of tensor: Int) -> [Float] {
        guard dataSlot[tensor] == nil else { return [] }
        return toPlain(t[tensor].dataMem, t[tensor].md, tensor: tensor)
    }

    /// Empty unless the gradient is kept: every tensor's with `keepGradients`, else the input's.
    public func gradient(of tensor: Int) -> [Float] {
        guard let m = t[tensor].diffMem, keepGradients || tensor == 0 else { return [] }
        return toPlain(m, t[tensor].md, tensor: tensor)
    }
}
