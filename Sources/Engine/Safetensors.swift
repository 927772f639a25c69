import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The safetensors format (huggingface/safetensors): an 8-byte little-endian header length N,
/// N bytes of JSON `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}`
/// padded with spaces, then the raw little-endian tensor bytes, offsets relative to their start.
public enum SafetensorsDType: String, Sendable {
    case F32, F64, I64
    public var byteSize: Int { self == .F32 ? 4 : 8 }
}

public struct SafetensorsTensor: Sendable, Equatable {
    public let dtype: SafetensorsDType
    public let shape: [Int]
    /// Raw little-endian bytes.
    public let bytes: [UInt8]

    public var elementCount: Int { shape.reduce(1, *) }

    public init(dtype: SafetensorsDType, shape: [Int], bytes: [UInt8]) {
        precondition(bytes.count == shape.reduce(1, *) * dtype.byteSize, "safetensors: \(bytes.count) bytes for shape \(shape) \(dtype)")
        self.dtype = dtype
        self.shape = shape
        self.bytes = bytes
    }

    public init(floats: UnsafeBufferPointer<Float>, shape: [Int]) {
        self.init(dtype: .F32, shape: shape, bytes: Array(UnsafeRawBufferPointer(floats)))
    }

    public init(floats: [Float], shape: [Int]) {
        self.init(dtype: .F32, shape: shape, bytes: floats.withUnsafeBytes { Array($0) })
    }

    public init(int64: Int64, shape: [Int] = []) {
        self.init(dtype: .I64, shape: shape, bytes: withUnsafeBytes(of: int64.littleEndian) { Array($0) })
    }

    public init(int64s: [Int64]) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(int64s.count * 8)
        for v in int64s { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
        self.init(dtype: .I64, shape: [int64s.count], bytes: bytes)
    }

    /// The values as Float (F64 rounded to nearest, I64 converted).
    public var floats: [Float] {
        bytes.withUnsafeBytes { raw in
            switch dtype {
            case .F32: return (0..<elementCount).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
            case .F64: return (0..<elementCount).map { Float(Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self)))) }
            case .I64: return (0..<elementCount).map { Float(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self))) }
            }
        }
    }

    /// The values as Double (F64 exactly, F32 widened, I64 converted).
    public var doubles: [Double] {
        guard dtype == .F64 else { return dtype == .F32 ? floats.map(Double.init) : int64s.map(Double.init) }
        return bytes.withUnsafeBytes { raw in
            (0..<elementCount).map { Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self))) }
        }
    }

    public var int64s: [Int64] {
        bytes.withUnsafeBytes { raw in
            switch dtype {
            case .I64: return (0..<elementCount).map { Int64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) }
            default: return floats.map { Int64($0) }
            }
        }
    }
}

public struct SafetensorsError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

public struct SafetensorsFile: Sendable {
    public var tensors: [String: SafetensorsTensor]
    public var metadata: [String: String]

    public init(tensors: [String: SafetensorsTensor] = [:], metadata: [String: String] = [:]) {
        self.tensors = tensors
        self.metadata = metadata
    }

    public subscript(name: String) -> SafetensorsTensor? { tensors[name] }

    /// The largest header read. The reference implementation allows 100 MB, but a header is parsed
    /// whole (Foundation's JSON takes about 60 times its size in memory) before anything is checked,
    /// and sambench's largest file, a Co-teaching training checkpoint of two ResNet-1202s with
    /// their momentum, has about 22,000 tensors in a header of about 2.5 MB.
    public static let maxHeaderBytes = 4 << 20

    /// Reads and validates a file: header length within the file, JSON well-formed, known
    /// dtypes, byte ranges inside the data area, matching their shape and not overlapping. The
    /// header is read and checked first, then each tensor's bytes, so a file with a damaged
    /// header is refused without reading its body.
    public static func read(_ path: String) throws -> SafetensorsFile {
        func fail(_ what: String) -> SafetensorsError { SafetensorsError(description: "\(path): \(what)") }
        let file: InputFile.Handle
        do { file = try InputFile.open(path, what: "the safetensors file") } catch { throw SafetensorsError(description: "\(error)") }
        do {
            return try parse(size: file.size, read: file.read(at:count:), fail: fail)
        } catch let error as InputFile.Unreadable { throw SafetensorsError(description: "\(error)") }
    }

    /// Parses a file's bytes already read (errors name `path`).
    public static func parse(path: String, bytes: [UInt8]) throws -> SafetensorsFile {
        try parse(size: bytes.count, read: { Array(bytes[$0..<($0 + $1)]) }) { SafetensorsError(description: "\(path): \($0)") }
    }

    /// Parses a file of `size` bytes whose ranges `read(offset, count)` returns.
    static func parse(size: Int, read: (Int, Int) throws -> [UInt8], fail: (String) -> SafetensorsError) throws -> SafetensorsFile {
        guard size >= 8 else { throw fail("truncated: \(size) bytes, a safetensors file starts with an 8-byte header length") }
        let lengthBytes = try read(0, 8)
        var n: UInt64 = 0
        for i in 0..<8 { n |= UInt64(lengthBytes[i]) << (8 * UInt64(i)) }
        guard n <= UInt64(size - 8) else {
            throw fail("truncated or not safetensors: header length \(n) exceeds the \(size - 8) bytes after it")
        }
        guard n <= UInt64(maxHeaderBytes) else {
            throw fail("a \(n)-byte header, more than the \(maxHeaderBytes >> 20) MiB sambench reads (not a checkpoint of a model it builds)")
        }
        let headerEnd = 8 + Int(n)
        guard let json = try? JSONSerialization.jsonObject(with: Data(try read(8, Int(n)))), let header = json as? [String: Any] else {
            throw fail("header is not a JSON object")
        }
        let dataSize = size - headerEnd
        var file = SafetensorsFile()
        var ranges: [(Int, Int, String)] = []
        var entries: [(name: String, dtype: SafetensorsDType, shape: [Int])] = []
        for (name, value) in header {
            if name == "__metadata__" {
                guard let meta = value as? [String: Any] else { throw fail("__metadata__ is not an object") }
                for (k, v) in meta {
                    guard let s = v as? String else { throw fail("__metadata__[\(k)] is not a string") }
                    file.metadata[k] = s
                }
                continue
            }
            guard let entry = value as? [String: Any] else { throw fail("tensor \(name): entry is not an object") }
            guard let ds = entry["dtype"] as? String else { throw fail("tensor \(name): missing dtype") }
            guard let dtype = SafetensorsDType(rawValue: ds) else { throw fail("tensor \(name): unsupported dtype \(ds) (F32, F64, I64 are read)") }
            guard let shapeAny = entry["shape"] as? [Any] else { throw fail("tensor \(name): missing shape") }
            let shape = try shapeAny.map { v -> Int in
                guard let num = v as? NSNumber, let d = Int(exactly: num.doubleValue), d >= 0 else { throw fail("tensor \(name): bad shape \(shapeAny)") }
                return d
            }
            guard let offs = entry["data_offsets"] as? [Any], offs.count == 2,
                  let b0 = (offs[0] as? NSNumber).flatMap({ Int(exactly: $0.doubleValue) }),
                  let b1 = (offs[1] as? NSNumber).flatMap({ Int(exactly: $0.doubleValue) }) else {
                throw fail("tensor \(name): bad data_offsets")
            }
            guard b0 >= 0, b0 <= b1, b1 <= dataSize else {
                throw fail("tensor \(name): data_offsets [\(b0), \(b1)] outside the \(dataSize)-byte data area (truncated file?)")
            }
            // The shape is the file's word: its element count may overflow (a trap, not an error).
            let expected = try shape.reduce(dtype.byteSize) { acc, d in
                let (p, overflow) = acc.multipliedReportingOverflow(by: d)
                guard !overflow else { throw fail("tensor \(name): shape \(shape) has more elements than any file can hold") }
                return p
            }
            guard b1 - b0 == expected else {
                throw fail("tensor \(name): \(b1 - b0) bytes for shape \(shape) \(dtype), expected \(expected)")
            }
            ranges.append((b0, b1, name))
            entries.append((name, dtype, shape))
        }
        ranges.sort { $0.0 < $1.0 || ($0.0 == $1.0 && $0.1 < $1.1) }
        for (a, b) in zip(ranges, ranges.dropFirst()) where b.0 < a.1 {
            throw fail("tensors \(a.2) and \(b.2) overlap (bytes \(a.0)..<\(a.1) and \(b.0)..<\(b.1))")
        }
        // The whole header is sound: only now are the tensors read, each once.
        let shapes = Dictionary(uniqueKeysWithValues: entries.map { ($0.name, ($0.dtype, $0.shape)) })
        for (b0, b1, name) in ranges {
            let (dtype, shape) = shapes[name]!
            file.tensors[name] = SafetensorsTensor(dtype: dtype, shape: shape, bytes: try read(headerEnd + b0, b1 - b0))
        }
        return file
    }

    /// Serialises deterministically: tensors in name order, contiguous, header padded with
    /// spaces to a multiple of 8 bytes (as the reference implementation does).
    public func serialized() -> [UInt8] {
        var parts: [String] = []
        if !metadata.isEmpty {
            let kv = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
            parts.append("\"__metadata__\":{\(kv.joined(separator: ","))}")
        }
        var offset = 0
        let names = tensors.keys.sorted()
        for name in names {
            let t = tensors[name]!
            let shape = t.shape.map(String.init).joined(separator: ",")
            parts.append("\(jsonString(name)):{\"dtype\":\"\(t.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + t.bytes.count)]}")
            offset += t.bytes.count
        }
        var header = Array("{\(parts.joined(separator: ","))}".utf8)
        while header.count % 8 != 0 { header.append(0x20) }
        var out: [UInt8] = []
        out.reserveCapacity(8 + header.count + offset)
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { out += $0 }
        out += header
        for name in names { out += tensors[name]!.bytes }
        return out
    }

    /// Writes atomically and durably: a temporary file beside `path`, flushed to disk, then
    /// renamed over it (and the folder flushed), so a kill or a power cut at any moment leaves
    /// either the old file or the new one under `path`, never half of one. `halfWritten` is
    /// for fault injection in the reliability tests: called once half of the bytes are in the
    /// temporary file.
    public func write(to path: String, halfWritten: (() -> Void)? = nil) throws {
        func fail(_ what: String, _ code: Int32 = errno) -> SafetensorsError {
            SafetensorsError(description: "\(path): cannot write: \(what) (\(String(cString: strerror(code))))")
        }
        do { try OutputFile.check(path) } catch { throw SafetensorsError(description: "\(error)") }
        let bytes = serialized()
        let temporary = path + ".partial-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw fail("cannot create \(temporary)") }
        var ok = false
        defer { if !ok { close(fd); unlink(temporary) } }
        var offset = 0, reachedHalf = false
        while offset < bytes.count {
            if !reachedHalf && offset >= bytes.count / 2 { halfWritten?(); reachedHalf = true }
            let end = reachedHalf ? bytes.count : bytes.count / 2
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, min(end - offset, 1 << 24)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw fail("writing \(temporary)") }
            offset += n
        }
        guard fsync(fd) == 0 else { throw fail("flushing \(temporary)") }
        ok = true
        close(fd)
        guard rename(temporary, path) == 0 else { let e = errno; unlink(temporary); throw fail("renaming \(temporary)", e) }
        let folder = (path as NSString).deletingLastPathComponent
        let dir = open(folder.isEmpty ? "." : folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dir >= 0 { _ = fsync(dir); close(dir) }
    }
}

private func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
        }
    }
    return out + "\""
}

/// Model checkpoints in safetensors with PyTorch state_dict names (parameters, BN running
/// statistics and num_batches_tracked), loadable by `model.load_state_dict` in PyTorch.
public enum Checkpoint {
    public static func tensors(of state: ModelState) -> [String: SafetensorsTensor] {
        var out: [String: SafetensorsTensor] = [:]
        for p in state.model.params { out[p.name] = SafetensorsTensor(floats: UnsafeBufferPointer(state.view(p)), shape: p.shape) }
        for (i, bn) in state.model.batchNorms.enumerated() {
            out[bn.prefix + ".running_mean"] = SafetensorsTensor(floats: UnsafeBufferPointer(state.runningMean(i)), shape: [bn.channels])
            out[bn.prefix + ".running_var"] = SafetensorsTensor(floats: UnsafeBufferPointer(state.runningVar(i)), shape: [bn.channels])
            out[bn.prefix + ".num_batches_tracked"] = SafetensorsTensor(int64: state.batchesTracked[i])
        }
        return out
    }

    public static func save(_ state: ModelState, to path: String, metadata: [String: String] = [:]) throws {
        var meta = metadata
        meta["model"] = state.model.name
        meta["num_classes"] = String(state.model.numClasses)
        meta["format"] = "pt"
        try SafetensorsFile(tensors: tensors(of: state), metadata: meta).write(to: path)
    }

    /// Whether a tensor name lies under a module prefix: "fc" covers "fc.weight" and "fc.bias",
    /// not "fc2.weight"; "layer4." covers everything in layer4.
    public static func name(_ name: String, isUnder prefix: String) -> Bool {
        prefix.hasSuffix(".") ? name.hasPrefix(prefix) : (name == prefix || name.hasPrefix(prefix + "."))
    }

    /// The module prefix of a model's classifier (its last linear layer), e.g. "fc".
    public static func classifierPrefix(of model: Model) -> String? {
        for node in model.nodes.reversed() {
            if case let .linear(w, _) = node.op { return String(model.params[w].name.dropLast(".weight".count)) }
        }
        return nil
    }

    /// Loads every parameter and buffer of `state` from a file. Every tensor the model has
    /// must be present with its exact shape (F32 for values, I64 for num_batches_tracked);
    /// a tensor the model does not have is an error unless `allowUnexpected`.
    public static func load(into state: ModelState, from path: String, allowUnexpected: Bool = false) throws {
        try load(into: state, file: try SafetensorsFile.read(path), source: path, allowUnexpected: allowUnexpected)
    }

    /// What a load did besides copying: the state's own tensors left as they were (under a skipped
    /// prefix), and the file's tensors it ignored.
    public struct LoadReport: Sendable, Equatable {
        public var keptFromState: [String] = []
        public var ignoredInFile: [String] = []
        /// BN layers whose num_batches_tracked the file lacks (older PyTorch files): set to 0.
        public var missingBatchCounts: [String] = []
    }

    /// The largest magnitude a loaded weight or statistic may have: trained networks stay within
    /// tens; beyond this a file is damaged or crafted (a value near Float.max overflows the first
    /// products and trains to nothing).
    public static let maxMagnitude: Float = 1e8

    /// Loads a state dict into `state`, strictly: every tensor of the model not under a `skip`
    /// prefix must be in the file with its exact shape (F32 values, an I64 scalar for
    /// num_batches_tracked, which may be absent as in files from before PyTorch 0.4.1), and every
    /// tensor of the file must belong to the model or lie under a `skip` prefix. All mismatches
    /// are listed in one error, and a refused file changes nothing. Values must be finite, within
    /// `maxMagnitude`, variances >= 0 and batch counts >= 0.
    @discardableResult
    public static func load(into state: ModelState, file: SafetensorsFile, source: String, skip: [String] = [],
                            allowUnexpected: Bool = false) throws -> LoadReport {
        let model = state.model
        let report = try check(file, fits: model, source: source, skip: skip, allowUnexpected: allowUnexpected)
        func skipped(_ name: String) -> Bool { skip.contains { Checkpoint.name(name, isUnder: $0) } }
        for p in model.params where !skipped(p.name) { copy(file[p.name]!.floats, into: state.view(p)) }
        for (i, bn) in model.batchNorms.enumerated() {
            for (suffix, dst) in [(".running_mean", state.runningMean(i)), (".running_var", state.runningVar(i))] where !skipped(bn.prefix + suffix) {
                copy(file[bn.prefix + suffix]!.floats, into: dst)
            }
            let nbt = bn.prefix + ".num_batches_tracked"
            if !skipped(nbt) { state.batchesTracked[i] = file[nbt]?.int64s[0] ?? 0 }
        }
        return report
    }

    private static func copy(_ values: [Float], into dst: UnsafeMutableBufferPointer<Float>) {
        for i in values.indices { dst[i] = values[i] }
    }

    /// Whether `file` fits `model` as `load` requires, checked on the model's description alone, so
    /// that a file naming a model of gigabytes is refused before its weights are allocated.
    @discardableResult
    public static func check(_ file: SafetensorsFile, fits model: Model, source: String, skip: [String] = [],
                             allowUnexpected: Bool = false) throws -> LoadReport {
        func skipped(_ name: String) -> Bool { skip.contains { Checkpoint.name(name, isUnder: $0) } }
        var report = LoadReport()
        var missing: [String] = [], wrong: [String] = []
        var expected = Set<String>()
        func floats(_ name: String, _ shape: [Int], variance: Bool = false) {
            expected.insert(name)
            if skipped(name) { report.keptFromState.append(name); return }
            guard let t = file[name] else { missing.append("\(name) \(shape)"); return }
            guard t.dtype == .F32 else { wrong.append("\(name): dtype \(t.dtype), expected F32"); return }
            guard t.shape == shape else { wrong.append("\(name): shape \(t.shape) in the file, \(shape) in the model"); return }
            let v = t.floats
            // NaN or infinite weights or statistics would train (or evaluate) to chance and end
            // `done`; values beyond `maxMagnitude` overflow the first products; a negative
            // running variance has no square root.
            if let first = v.firstIndex(where: { !$0.isFinite }) {
                wrong.append("\(name): \(v.count(where: { !$0.isFinite })) non-finite values (the first, \(v[first]), at index \(first))")
                return
            }
            if let first = v.firstIndex(where: { abs($0) > maxMagnitude }) {
                wrong.append("\(name): \(v.count(where: { abs($0) > maxMagnitude })) values beyond +-\(maxMagnitude) (the first, \(v[first]), at index \(first))")
                return
            }
            if variance, let first = v.firstIndex(where: { $0 < 0 }) {
                wrong.append("\(name): \(v.count(where: { $0 < 0 })) negative variances (the first, \(v[first]), at index \(first))")
                return
            }
        }
        for p in model.params { floats(p.name, p.shape) }
        for bn in model.batchNorms {
            floats(bn.prefix + ".running_mean", [bn.channels])
            floats(bn.prefix + ".running_var", [bn.channels], variance: true)
            let nbt = bn.prefix + ".num_batches_tracked"
            expected.insert(nbt)
            if skipped(nbt) { report.keptFromState.append(nbt); continue }
            guard let t = file[nbt] else { report.missingBatchCounts.append(bn.prefix); continue }
            guard t.dtype == .I64, t.elementCount == 1 else { wrong.append("\(nbt): \(t.dtype) \(t.shape), expected an I64 scalar"); continue }
            guard t.int64s[0] >= 0 else { wrong.append("\(nbt): \(t.int64s[0]), expected a count >= 0"); continue }
        }
        let extra = Set(file.tensors.keys).subtracting(expected).sorted()
        report.ignoredInFile = file.tensors.keys.filter(skipped).sorted()
        let unexpected = extra.filter { !skipped($0) }
        if !(missing.isEmpty && wrong.isEmpty && (unexpected.isEmpty || allowUnexpected)) {
            func list(_ title: String, _ items: [String]) -> String? {
                guard !items.isEmpty else { return nil }
                let shown = items.prefix(40).map { "  " + $0 }.joined(separator: "\n")
                return "\(items.count) \(title):\n\(shown)" + (items.count > 40 ? "\n  ... and \(items.count - 40) more" : "")
            }
            let parts = [list("missing from the file", missing), list("mis-shaped", wrong),
                         allowUnexpected ? nil : list("in the file but not in the model", unexpected)].compactMap { $0 }
            var hint = ""
            if let fc = classifierPrefix(of: model), missing.isEmpty, unexpected.isEmpty, !wrong.isEmpty,
               wrong.allSatisfy({ $0.hasPrefix(fc + ".") }) {
                hint = "\n(only the classifier differs, in its class count: a finetune from this file leaves it freshly initialised)"
            }
            throw SafetensorsError(description: "\(source) does not fit model \(model.name) (\(model.numClasses) classes):\n" +
                                   parts.joined(separator: "\n") + hint)
        }
        return report
    }
}
