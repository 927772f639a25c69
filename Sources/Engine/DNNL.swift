import CDNNL
import Foundation

// Every oneDNN call of the project lives in this file and DNNLExecutor.swift (the oneDNN 2.6
// `*_desc_init` API; a v3 port touches these two files only).

/// Execution-argument indices (the DNNL_ARG_* macros, spelt out because macros defined in
/// terms of other macros do not all import into Swift).
enum DNNLArg {
    static let src: Int32 = 1, src1: Int32 = 2, dst: Int32 = 17, weights: Int32 = 33
    static let mean: Int32 = 49, variance: Int32 = 50, scale: Int32 = 51, shift: Int32 = 52
    static let workspace: Int32 = 64, scratchpad: Int32 = 80
    static let diffSrc: Int32 = 129, diffDst: Int32 = 145, diffWeights: Int32 = 161
    static let diffScale: Int32 = 255, diffShift: Int32 = 256
    static let from: Int32 = 1, to: Int32 = 17
}

func dnnlCheck(_ status: dnnl_status_t, _ what: @autoclosure () -> String) throws {
    guard status == dnnl_success else {
        throw EngineError("oneDNN: \(what()) failed: \(String(cString: dnnl_status2str(status)))")
    }
}

/// Process-wide thread settings for the engine's OpenMP runtime.
public enum EngineThreads {
    /// Sets the number of threads oneDNN uses (OpenMP). Call before building executors.
    public static func set(_ n: Int) {
        precondition(n >= 1, "threads must be >= 1")
        _ = sambench_set_omp_threads(Int32(n))
    }
    public static var current: Int { Int(sambench_get_omp_max_threads()) }
}

/// What oneDNN runs on this CPU.
public enum EngineCPU {
    /// Whether oneDNN runs its AVX-512 kernels here (its f32 Winograd convolution exists only there).
    public static var avx512: Bool {
        let isa = dnnl_get_effective_cpu_isa().rawValue, core = dnnl_cpu_isa_avx512_core.rawValue
        return isa & core == core
    }
}

/// A plain (row-major) or explicitly tagged memory descriptor.
func memoryDesc(_ dims: [Int], _ tag: dnnl_format_tag_t) throws -> dnnl_memory_desc_t {
    var md = dnnl_memory_desc_t()
    let d = dims.map { Int64($0) }
    try dnnlCheck(dnnl_memory_desc_init_by_tag(&md, Int32(d.count), d, dnnl_f32, tag), "memory desc \(dims)")
    return md
}

func sameLayout(_ a: dnnl_memory_desc_t, _ b: dnnl_memory_desc_t) -> Bool {
    var a = a, b = b
    return dnnl_memory_desc_equal(&a, &b) != 0
}

func byteSize(_ md: dnnl_memory_desc_t) -> Int {
    var md = md
    return Int(dnnl_memory_desc_get_size(&md))
}

/// Owns the oneDNN engine, stream and every primitive, primitive descriptor and memory object
/// an executor creates, and destroys them together.
final class DNNLResources {
    let engine: dnnl_engine_t
    let stream: dnnl_stream_t
    /// Attributes with a user-managed scratchpad, so that executing a primitive never allocates.
    let attr: dnnl_primitive_attr_t
    private var pds: [dnnl_primitive_desc_t] = []
    private var prims: [dnnl_primitive_t] = []
    private var mems: [dnnl_memory_t] = []
    private var attrs: [dnnl_primitive_attr_t] = []
    private var postOps: [dnnl_post_ops_t] = []
    private(set) var buffers: [ByteBuffer] = []

    init() throws {
        var e: dnnl_engine_t?
        try dnnlCheck(dnnl_engine_create(&e, dnnl_cpu, 0), "engine create")
        engine = e!
        var s: dnnl_stream_t?
        try dnnlCheck(dnnl_stream_create(&s, engine, dnnl_stream_default_flags.rawValue), "stream create")
        stream = s!
        var a: dnnl_primitive_attr_t?
        try dnnlCheck(dnnl_primitive_attr_create(&a), "attr create")
        attr = a!
        try dnnlCheck(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "scratchpad mode")
    }

    deinit {
        for m in mems { dnnl_memory_destroy(m) }
        for p in prims { dnnl_primitive_destroy(p) }
        for p in pds { dnnl_primitive_desc_destroy(p) }
        for p in postOps { dnnl_post_ops_destroy(p) }
        for a in attrs { dnnl_primitive_attr_destroy(a) }
        dnnl_primitive_attr_destroy(attr)
        dnnl_stream_destroy(stream)
        dnnl_engine_destroy(engine)
    }

    /// Attributes with the user scratchpad and an eltwise ReLU post-op.
    func reluPostOpAttr() throws -> dnnl_primitive_attr_t {
        var a: dnnl_primitive_attr_t?
        try dnnlCheck(dnnl_primitive_attr_clone(&a, attr), "attr clone")
        attrs.append(a!)
        var po: dnnl_post_ops_t?
        try dnnlCheck(dnnl_post_ops_create(&po), "post-ops create")
        postOps.append(po!)
        try dnnlCheck(dnnl_post_ops_append_eltwise(po, 1, dnnl_eltwise_relu, 0, 0), "post-op relu")
        try dnnlCheck(dnnl_primitive_attr_set_post_ops(a, po), "set post-ops")
        return a!
    }

    /// A primitive descriptor from an op descriptor (any `dnnl_*_desc_t`).
    func primitiveDesc<D>(_ desc: inout D, attr: dnnl_primitive_attr_t? = nil, hint: dnnl_primitive_desc_t? = nil,
                          _ what: String) throws -> dnnl_primitive_desc_t {
        var pd: dnnl_primitive_desc_t?
        try withUnsafePointer(to: &desc) { d in
            try dnnlCheck(dnnl_primitive_desc_create(&pd, UnsafeRawPointer(d),
                                                     attr ?? self.attr, engine, hint), what)
        }
        pds.append(pd!)
        return pd!
    }

    /// Every implementation oneDNN offers for an op descriptor, in the library's order of
    /// preference, each name once; reference kernels are left out unless there is nothing else and
    /// `allowReference`.
    func candidates<D>(_ desc: inout D, attr: dnnl_primitive_attr_t? = nil, hint: dnnl_primitive_desc_t? = nil,
                       allowReference: Bool = true, _ what: String) throws -> [dnnl_primitive_desc_t] {
        var it: dnnl_primitive_desc_iterator_t?
        try withUnsafePointer(to: &desc) { d in
            try dnnlCheck(dnnl_primitive_desc_iterator_create(&it, UnsafeRawPointer(d), attr ?? self.attr, engine, hint), what)
        }
        defer { dnnl_primitive_desc_iterator_destroy(it) }
        var all: [dnnl_primitive_desc_t] = []
        repeat {
            if let pd = dnnl_primitive_desc_iterator_fetch(it) { all.append(pd) }
        } while dnnl_primitive_desc_iterator_next(it) == dnnl_success
        // oneDNN 2.6 offers an implementation once more for every earlier descriptor of the same
        // shape (its primitive cache, it seems): each name is kept once, at its first place.
        var names = Set<String>()
        let distinct = all.filter { names.insert(implementation($0)).inserted }
        let fast = distinct.filter { !implementation($0).hasPrefix("ref") }
        let kept = fast.isEmpty && allowReference ? distinct : fast
        for pd in all where !kept.contains(where: { $0 == pd }) { dnnl_primitive_desc_destroy(pd) }
        pds += kept
        return kept
    }

    /// One implementation tried on scratch buffers made for every memory it names, so that trying
    /// it touches nothing of the model: the inputs hold the same values whatever their layout (a
    /// seeded draw in plain order, reordered), and the result comes back in plain order.
    /// `arguments` are (argument, what it is) with the output last; returns the seconds of one
    /// execution (the best of `repeats` after a warm-up) and the output.
    func trial(_ pd: dnnl_primitive_desc_t, arguments: [(Int32, dnnl_query_t)], repeats: Int = 3) throws -> (seconds: Double, output: [Float]) {
        var made: [dnnl_memory_t] = []
        var keep: [ByteBuffer] = []
        defer { for m in made { dnnl_memory_destroy(m) } }
        func scratchMemory(_ md: dnnl_memory_desc_t, _ buffer: ByteBuffer? = nil) throws -> dnnl_memory_t {
            let b = buffer ?? ByteBuffer(byteCount: max(byteSize(md), 1))
            keep.append(b)
            var m: dnnl_memory_t?
            var md = md
            try dnnlCheck(dnnl_memory_create(&m, &md, engine, b.pointer), "memory create")
            made.append(m!)
            return m!
        }
        func reorder(_ from: dnnl_memory_t, _ fromMD: dnnl_memory_desc_t, _ to: dnnl_memory_t, _ toMD: dnnl_memory_desc_t) throws {
            var pd: dnnl_primitive_desc_t?, p: dnnl_primitive_t?
            var s = fromMD, d = toMD
            try dnnlCheck(dnnl_reorder_primitive_desc_create(&pd, &s, engine, &d, engine, nil), "trial reorder desc")
            defer { dnnl_primitive_desc_destroy(pd) }
            try dnnlCheck(dnnl_primitive_create(&p, pd), "trial reorder")
            defer { dnnl_primitive_destroy(p) }
            var args = [dnnl_exec_arg_t(arg: DNNLArg.from, memory: from), dnnl_exec_arg_t(arg: DNNLArg.to, memory: to)]
            try dnnlCheck(dnnl_primitive_execute(p, stream, 2, &args), "trial reorder execute")
            dnnl_stream_wait(stream)
        }
        var args: [dnnl_exec_arg_t] = []
        var rng = Xoshiro256(seed: Self.trialSeed)
        for (k, (arg, q)) in arguments.enumerated() {
            let md = query(pd, q)
            let mem = try scratchMemory(md)
            args.append(dnnl_exec_arg_t(arg: arg, memory: mem))
            guard k < arguments.count - 1 else { break }
            let pmd = try plain(md)
            let values = ByteBuffer(byteCount: byteSize(pmd))
            Self.drawTrialValues(values.pointer.assumingMemoryBound(to: Float.self), count: byteSize(pmd) / 4, &rng)
            try reorder(try scratchMemory(pmd, values), pmd, mem, md)
        }
        let smd = query(pd, dnnl_query_scratchpad_md)
        if byteSize(smd) > 0 { args.append(dnnl_exec_arg_t(arg: DNNLArg.scratchpad, memory: try scratchMemory(smd))) }
        var p: dnnl_primitive_t?
        try dnnlCheck(dnnl_primitive_create(&p, pd), "primitive create (trial of \(implementation(pd)))")
        defer { dnnl_primitive_destroy(p) }
        var best = Double.infinity
        for k in 0...repeats {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try dnnlCheck(dnnl_primitive_execute(p, stream, Int32(args.count), &args), "execute (trial)")
            dnnl_stream_wait(stream)
            if k > 0 { best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9) }
        }
        let outMD = query(pd, arguments.last!.1), outPlain = try plain(outMD)
        let result = ByteBuffer(byteCount: byteSize(outPlain))
        try reorder(args[arguments.count - 1].memory, outMD, try scratchMemory(outPlain, result), outPlain)
        return (best, Array(UnsafeBufferPointer(start: result.pointer.assumingMemoryBound(to: Float.self), count: byteSize(outPlain) / 4)))
    }

    /// A trial's inputs, in plain order, input after input (`arguments` but the last): a seeded
    /// draw, the same for every candidate of a pass (sambench's own kernels get them as arrays,
    /// `trialInputs`; oneDNN's are drawn straight into their scratch buffers).
    static let trialSeed: UInt64 = 20_261_203
    static func drawTrialValues(_ f: UnsafeMutablePointer<Float>, count: Int, _ rng: inout Xoshiro256) {
        for i in 0..<count { f[i] = rng.nextUniformFloat() * 2 - 1 }
    }

    func trialInputs(_ pd: dnnl_primitive_desc_t, arguments: [(Int32, dnnl_query_t)]) throws -> [[Float]] {
        var rng = Xoshiro256(seed: Self.trialSeed)
        return try arguments.dropLast().map { (_, q) in
            let count = byteSize(try plain(query(pd, q))) / 4
            return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                Self.drawTrialValues(buffer.baseAddress!, count: count, &rng)
                initialized = count
            }
        }
    }

    /// A memory's dims.
    func dims(_ md: dnnl_memory_desc_t) -> [Int] {
        var md = md
        return withUnsafeBytes(of: &md.dims) { Array($0.bindMemory(to: Int64.self).prefix(Int(md.ndims))).map(Int.init) }
    }

    /// The same dims in plain row-major order.
    func plain(_ md: dnnl_memory_desc_t) throws -> dnnl_memory_desc_t {
        let tags = [dnnl_a, dnnl_ab, dnnl_abc, dnnl_abcd, dnnl_abcde]
        return try memoryDesc(dims(md), tags[Int(md.ndims) - 1])
    }

    /// The buffer a memory object points at.
    func dataHandle(_ m: dnnl_memory_t) -> UnsafeMutableRawPointer {
        var handle: UnsafeMutableRawPointer?
        dnnl_memory_get_data_handle(m, &handle)
        return handle!
    }

    /// The channel block (8 or 16) of a 4-d memory in nChw8c or nChw16c, else nil.
    func channelBlock(_ md: dnnl_memory_desc_t) -> Int? {
        guard md.ndims == 4 else { return nil }
        for (block, tag) in [(8, dnnl_nChw8c), (16, dnnl_nChw16c)] {
            if let blocked = try? memoryDesc(dims(md), tag), sameLayout(blocked, md) { return block }
        }
        return nil
    }

    func reorderDesc(from src: dnnl_memory_desc_t, to dst: dnnl_memory_desc_t) throws -> dnnl_primitive_desc_t {
        var pd: dnnl_primitive_desc_t?
        var s = src, d = dst
        try dnnlCheck(dnnl_reorder_primitive_desc_create(&pd, &s, engine, &d, engine, attr), "reorder desc")
        pds.append(pd!)
        return pd!
    }

    func primitive(_ pd: dnnl_primitive_desc_t, _ what: String) throws -> dnnl_primitive_t {
        var p: dnnl_primitive_t?
        try dnnlCheck(dnnl_primitive_create(&p, pd), "primitive create (\(what))")
        prims.append(p!)
        return p!
    }

    func query(_ pd: dnnl_primitive_desc_t, _ what: dnnl_query_t, _ index: Int32 = 0) -> dnnl_memory_desc_t {
        dnnl_primitive_desc_query_md(pd, what, index)!.pointee
    }

    func implementation(_ pd: dnnl_primitive_desc_t) -> String {
        var s: UnsafePointer<CChar>?
        guard dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s) == dnnl_success, let s else { return "?" }
        return String(cString: s)
    }

    /// A memory object over `handle` (never owned by oneDNN).
    func memory(_ md: dnnl_memory_desc_t, _ handle: UnsafeMutableRawPointer) throws -> dnnl_memory_t {
        var m: dnnl_memory_t?
        var md = md
        try dnnlCheck(dnnl_memory_create(&m, &md, engine, handle), "memory create")
        mems.append(m!)
        return m!
    }

    /// A zeroed buffer for `md` owned by these resources, and a memory object over it.
    func allocate(_ md: dnnl_memory_desc_t) throws -> (buffer: ByteBuffer, memory: dnnl_memory_t) {
        let b = ByteBuffer(byteCount: byteSize(md))
        buffers.append(b)
        return (b, try memory(md, b.pointer))
    }
}

/// What the machine's cores can do, measured: the ceiling a step's rate is compared with.
public enum MachineCeiling {
    /// GFLOP/s of oneDNN's SGEMM (its AVX-512/AVX2 kernels) on an n x n by n x n product, the best
    /// of `repeats` after one warm-up, on the current thread count.
    public static func sgemmGFLOPs(n: Int = 2048, repeats: Int = 5) -> Double {
        let a = FloatBuffer(count: n * n), b = FloatBuffer(count: n * n), c = FloatBuffer(count: n * n)
        for i in 0..<(n * n) { a.pointer[i] = Float(i % 7) * 0.1; b.pointer[i] = Float(i % 5) * 0.1 }
        let N = CChar(UInt8(ascii: "N")), d = Int64(n)
        var best = Double.infinity
        for k in 0...repeats {
            let t0 = DispatchTime.now().uptimeNanoseconds
            let status = dnnl_sgemm(N, N, d, d, d, 1, a.pointer, d, b.pointer, d, 0, c.pointer, d)
            precondition(status == dnnl_success, "dnnl_sgemm failed")
            if k > 0 { best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9) }
        }
        return 2 * Double(n) * Double(n) * Double(n) / best / 1e9
    }
}
