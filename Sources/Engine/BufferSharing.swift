/// Buffers shared by liveness. A tensor's value or gradient is live over a closed interval of
/// node indices (from the node that writes it to the last that reads it; the direction of time
/// does not matter, so the same plan serves forward values and backward gradients). Two units
/// whose intervals are disjoint can hold their contents in one buffer.
public enum BufferSharing {
    /// Greedy interval partitioning: units in order of their interval's lower bound, each into a
    /// free buffer (one whose units all end before it starts), the smallest free one that is
    /// large enough, else the largest free one, grown; a new buffer when none is free. The
    /// number of buffers is the largest number of units live at once (the least possible).
    /// Returns each unit's buffer and the buffers' byte sizes.
    public static func assign(intervals: [ClosedRange<Int>], bytes: [Int]) -> (buffer: [Int], bufferBytes: [Int]) {
        precondition(intervals.count == bytes.count, "BufferSharing: \(intervals.count) intervals for \(bytes.count) sizes")
        var buffer = Array(repeating: -1, count: intervals.count)
        var bufferBytes: [Int] = [], busyUntil: [Int] = []
        for u in intervals.indices.sorted(by: { (intervals[$0].lowerBound, $0) < (intervals[$1].lowerBound, $1) }) {
            let free = busyUntil.indices.filter { busyUntil[$0] < intervals[u].lowerBound }
            let fitting = free.filter { bufferBytes[$0] >= bytes[u] }
            let chosen = fitting.min { bufferBytes[$0] < bufferBytes[$1] } ?? free.max { bufferBytes[$0] < bufferBytes[$1] }
            if let b = chosen {
                buffer[u] = b
                bufferBytes[b] = max(bufferBytes[b], bytes[u])
                busyUntil[b] = intervals[u].upperBound
            } else {
                buffer[u] = bufferBytes.count
                bufferBytes.append(bytes[u])
                busyUntil.append(intervals[u].upperBound)
            }
        }
        return (buffer, bufferBytes)
    }

    /// Whether tensor k may share a buffer: not the input image (the caller's), and not a tensor
    /// whose channels are not a multiple of 16 (a blocked layout pads them, and the padding must
    /// stay zero, which a buffer shared with another shape would not keep).
    static func shareable(_ model: Model, _ k: Int) -> Bool { k != 0 && model.tensors[k].channels % 16 == 0 }

    /// Each tensor's lifetime in node indices, the same for its value in forward and its
    /// gradient in backward: from the node that writes it (-1 for the input) to the last node
    /// that reads it; the logits' to the end of the step (the caller reads them, and writes
    /// their gradient before backward).
    static func lifetimes(_ model: Model) -> [ClosedRange<Int>] {
        model.tensors.indices.map { k in
            let producer = model.producer[k]
            return producer...max(producer, k == model.outputTensor ? model.nodes.count : model.readers[k].last ?? -1)
        }
    }

    /// Tensors whose gradients are equal and can be one storage: for a residual add y = u + v
    /// (or relu(u + v)) where u is read by the add alone, v's last reader is the add and v's other
    /// readers all come before u's producer (so they accumulate into v's gradient only after u's
    /// producer has consumed u's), u's and v's gradients are both the add's (masked) output
    /// gradient: {u, v}; without the ReLU that is y's gradient itself: {y, u, v}. Groups that
    /// share a tensor are merged (a chain of plain residual adds keeps one gradient buffer), but
    /// only through v: were u already a member (an earlier plain add's output), the earlier
    /// group's use of the storage would reach below u's producer, where v's other readers may be.
    /// Only `shareable` tensors join. Returns each tensor's group id.
    static func residualGradientGroups(_ model: Model) -> [Int?] {
        let count = model.tensors.count
        let readers = model.readers, producer = model.producer
        var parent = Array(0..<count)
        func find(_ a: Int) -> Int { var a = a; while parent[a] != a { parent[a] = parent[parent[a]]; a = parent[a] }; return a }
        var grouped = Array(repeating: false, count: count)
        for (i, node) in model.nodes.enumerated() {
            guard case let .add(relu) = node.op, node.inputs.count == 2, node.inputs[0] != node.inputs[1] else { continue }
            for (u, v) in [(node.inputs[0], node.inputs[1]), (node.inputs[1], node.inputs[0])] {
                guard shareable(model, u), shareable(model, v), !grouped[u], readers[u] == [i], readers[v].last == i,
                      readers[v].dropLast().allSatisfy({ $0 < producer[u] }) else { continue }
                var members = [u, v]
                if !relu, shareable(model, node.output) { members.append(node.output) }
                for m in members { parent[find(m)] = find(u); grouped[m] = true }
                break
            }
        }
        return (0..<count).map { grouped[$0] ? find($0) : nil }
    }
}
