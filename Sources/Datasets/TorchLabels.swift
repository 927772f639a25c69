import Engine
import Foundation

/// Reads the official CIFAR-N label files (`CIFAR-10_human.pt`, `CIFAR-100_human.pt`): a zip
/// archive whose `*/data.pkl` pickles a dict of int64 NumPy arrays. Only that subset of pickle
/// is understood, by a small stack machine that calls nothing: the four globals NumPy uses to
/// pickle an array are recognised by name and rebuilt as data, and anything else is refused.
public enum TorchLabels {
    /// The array stored under `key`, as Int32 labels.
    public static func read(_ path: String, key: String) throws -> [Int32] {
        let arrays = try readArrays(path)
        guard let a = arrays[key] else {
            throw DataError("\(path): no key '\(key)'; keys: \(arrays.keys.sorted().joined(separator: ", "))")
        }
        return a
    }

    public static func readArrays(_ path: String) throws -> [String: [Int32]] {
        let data: [UInt8]
        do { data = try InputFile.contents(path, what: "the label file", limit: 256 << 20) } catch { throw DataError("\(error)") }
        return try parseArrays(data, source: path)
    }

    /// The arrays of a `.pt` file's bytes already read (errors name `source`).
    public static func parseArrays(_ bytes: [UInt8], source: String) throws -> [String: [Int32]] {
        let zip = try ZipArchive(bytes: bytes, source: source)
        guard let name = zip.names.first(where: { $0.hasSuffix("/data.pkl") || $0 == "data.pkl" }) else {
            throw DataError("\(source): no data.pkl in the archive (not a torch.save file?)")
        }
        return try Unpickler(bytes: try zip.contents(of: name), source: "\(source):\(name)").labelArrays()
    }
}

/// The stored (uncompressed) members of a zip archive, as torch.save writes them.
struct ZipArchive {
    let bytes: [UInt8]
    let source: String
    private(set) var entries: [String: (offset: Int, size: Int, method: Int)] = [:]
    var names: [String] { entries.keys.sorted() }

    init(bytes: [UInt8], source: String) throws {
        self.bytes = bytes
        self.source = source
        func u16(_ o: Int) -> Int { Int(bytes[o]) | Int(bytes[o + 1]) << 8 }
        func u32(_ o: Int) -> Int { u16(o) | u16(o + 2) << 16 }
        // End of central directory: signature 0x06054b50 within the last 64 KiB + 22 bytes.
        guard bytes.count >= 22 else { throw DataError("\(source): not a zip archive (too short)") }
        var eocd = -1
        var i = bytes.count - 22
        while i >= max(0, bytes.count - 22 - 65_535) {
            if u32(i) == 0x0605_4b50 { eocd = i; break }
            i -= 1
        }
        guard eocd >= 0 else { throw DataError("\(source): not a zip archive (no end of central directory)") }
        let count = u16(eocd + 10), cdOffset = u32(eocd + 16)
        var p = cdOffset
        for _ in 0..<count {
            guard p + 46 <= bytes.count, u32(p) == 0x0201_4b50 else { throw DataError("\(source): corrupt zip central directory") }
            let method = u16(p + 10), size = u32(p + 20), nameLength = u16(p + 28), extra = u16(p + 30), comment = u16(p + 32)
            let local = u32(p + 42)
            guard p + 46 + nameLength <= bytes.count else { throw DataError("\(source): corrupt zip entry name") }
            let name = String(decoding: bytes[(p + 46)..<(p + 46 + nameLength)], as: UTF8.self)
            guard local + 30 <= bytes.count, u32(local) == 0x0403_4b50 else { throw DataError("\(source): corrupt zip local header for \(name)") }
            let dataStart = local + 30 + u16(local + 26) + u16(local + 28)
            guard dataStart + size <= bytes.count else { throw DataError("\(source): zip member \(name) runs past the end (truncated?)") }
            entries[name] = (dataStart, size, method)
            p += 46 + nameLength + extra + comment
        }
    }

    func contents(of name: String) throws -> [UInt8] {
        guard let e = entries[name] else { throw DataError("\(source): no member \(name)") }
        guard e.method == 0 else { throw DataError("\(source): member \(name) is compressed (method \(e.method)); torch.save stores members uncompressed") }
        return Array(bytes[e.offset..<(e.offset + e.size)])
    }
}

/// A pickle stack machine for dicts of NumPy arrays (protocol 2-4), executing no code.
struct Unpickler {
    indirect enum Value {
        case none, bool(Bool), int(Int), string(String), bytes([UInt8]), tuple([Value]), list([Value])
        case dict([(Value, Value)]), global(String), mark
        case dtype(String)                       // numpy dtype, e.g. "i8" (byte order set by BUILD)
        case array(shape: [Int], dtype: String, data: [UInt8])
    }

    let bytes: [UInt8]
    let source: String

    init(bytes: [UInt8], source: String) {
        self.bytes = bytes
        self.source = source
    }

    func fail(_ what: String) -> DataError { DataError("\(source): \(what)") }

    func run() throws -> Value {
        var stack: [Value] = [], memo: [Int: Value] = [:]
        var p = 0
        func need(_ n: Int) throws { guard p + n <= bytes.count else { throw fail("truncated pickle") } }
        func u8() throws -> Int { try need(1); defer { p += 1 }; return Int(bytes[p]) }
        func le(_ n: Int) throws -> Int {
            try need(n)
            var v = 0
            for k in 0..<n { v |= Int(bytes[p + k]) << (8 * k) }
            p += n
            return v
        }
        func pop() throws -> Value { guard let v = stack.popLast() else { throw fail("pickle stack underflow") }; return v }
        func popToMark() throws -> [Value] {
            guard let m = stack.lastIndex(where: { if case .mark = $0 { true } else { false } }) else { throw fail("pickle: no mark") }
            let items = Array(stack[(m + 1)...])
            stack.removeSubrange(m...)
            return items
        }
        func text(_ n: Int) throws -> String { try need(n); defer { p += n }; return String(decoding: bytes[p..<(p + n)], as: UTF8.self) }
        func line() throws -> String {
            guard let end = bytes[p...].firstIndex(of: 0x0A) else { throw fail("pickle: unterminated line") }
            defer { p = end + 1 }
            return String(decoding: bytes[p..<end], as: UTF8.self)
        }
        while true {
            let op = try u8()
            switch op {
            case 0x80: _ = try u8()                                   // PROTO
            case 0x95: _ = try le(8)                                  // FRAME
            case 0x7D: stack.append(.dict([]))                        // EMPTY_DICT
            case 0x5D: stack.append(.list([]))                        // EMPTY_LIST
            case 0x29: stack.append(.tuple([]))                       // EMPTY_TUPLE
            case 0x28: stack.append(.mark)                            // MARK
            case 0x71: memo[try u8()] = stack.last                    // BINPUT
            case 0x72: memo[try le(4)] = stack.last                   // LONG_BINPUT
            case 0x94: memo[memo.count] = stack.last                  // MEMOIZE
            case 0x68: guard let v = memo[try u8()] else { throw fail("pickle: bad memo") }; stack.append(v)      // BINGET
            case 0x6A: guard let v = memo[try le(4)] else { throw fail("pickle: bad memo") }; stack.append(v)     // LONG_BINGET
            case 0x4B: stack.append(.int(try u8()))                   // BININT1
            case 0x4D: stack.append(.int(try le(2)))                  // BININT2
            case 0x4A: stack.append(.int(Int(Int32(truncatingIfNeeded: try le(4)))))  // BININT
            case 0x4E: stack.append(.none)                            // NONE
            case 0x88: stack.append(.bool(true))                      // NEWTRUE
            case 0x89: stack.append(.bool(false))                     // NEWFALSE
            case 0x58: stack.append(.string(try text(try le(4))))     // BINUNICODE
            case 0x8C: stack.append(.string(try text(try u8())))      // SHORT_BINUNICODE
            case 0x42: let n = try le(4); try need(n); stack.append(.bytes(Array(bytes[p..<(p + n)]))); p += n   // BINBYTES
            case 0x43: let n = try u8(); try need(n); stack.append(.bytes(Array(bytes[p..<(p + n)]))); p += n    // SHORT_BINBYTES
            case 0x63: stack.append(.global("\(try line()).\(try line())"))                                      // GLOBAL
            case 0x93:                                                                                           // STACK_GLOBAL
                guard case let .string(name) = try pop(), case let .string(module) = try pop() else { throw fail("pickle: bad STACK_GLOBAL") }
                stack.append(.global("\(module).\(name)"))
            case 0x85: stack.append(.tuple([try pop()]))              // TUPLE1
            case 0x86: let b = try pop(), a = try pop(); stack.append(.tuple([a, b]))                 // TUPLE2
            case 0x87: let c = try pop(), b = try pop(), a = try pop(); stack.append(.tuple([a, b, c])) // TUPLE3
            case 0x74: stack.append(.tuple(try popToMark()))          // TUPLE
            case 0x52:                                                // REDUCE
                let args = try pop(), f = try pop()
                stack.append(try reduce(f, args))
            case 0x62:                                                // BUILD
                let state = try pop(), obj = try pop()
                stack.append(try build(obj, state))
            case 0x73:                                                // SETITEM
                let v = try pop(), k = try pop()
                guard case var .dict(items) = try pop() else { throw fail("pickle: SETITEM on a non-dict") }
                items.append((k, v)); stack.append(.dict(items))
            case 0x75:                                                // SETITEMS
                let kv = try popToMark()
                guard case var .dict(items) = try pop() else { throw fail("pickle: SETITEMS on a non-dict") }
                var i = 0
                while i + 1 < kv.count { items.append((kv[i], kv[i + 1])); i += 2 }
                stack.append(.dict(items))
            case 0x2E: return try pop()                               // STOP
            default: throw fail(String(format: "pickle opcode 0x%02x is not supported (only dicts of NumPy arrays are read)", op))
            }
        }
    }

    /// The four callables NumPy's array pickling uses, rebuilt as data; anything else refused.
    func reduce(_ f: Value, _ args: Value) throws -> Value {
        guard case let .global(name) = f, case let .tuple(a) = args else { throw fail("pickle: REDUCE of a non-global") }
        switch name {
        case "_codecs.encode":
            guard a.count == 2, case let .string(s) = a[0], case let .string(enc) = a[1], enc == "latin1" || enc == "latin-1" else {
                throw fail("pickle: unexpected _codecs.encode arguments")
            }
            return .bytes(try s.unicodeScalars.map { u in
                guard u.value < 256 else { throw fail("pickle: non-latin1 character in array data") }
                return UInt8(u.value)
            })
        case "numpy.dtype":
            guard let first = a.first, case let .string(d) = first else { throw fail("pickle: unexpected numpy.dtype arguments") }
            return .dtype(d)
        case "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct":
            return .array(shape: [], dtype: "", data: [])
        default:
            throw fail("pickle: refusing to call \(name) (only NumPy arrays are read)")
        }
    }

    func build(_ obj: Value, _ state: Value) throws -> Value {
        switch obj {
        case let .dtype(d):
            // (version, byteorder, ...): keep the byte order with the type code.
            if case let .tuple(s) = state, s.count > 1, case let .string(order) = s[1] { return .dtype(order == "|" ? d : order + d) }
            return .dtype(d)
        case .array:
            // (version, shape, dtype, is_fortran, raw bytes)
            guard case let .tuple(s) = state, s.count == 5, case let .tuple(shapeValues) = s[1], case let .dtype(d) = s[2],
                  case let .bool(fortran) = s[3], case let .bytes(raw) = s[4] else { throw fail("pickle: unexpected ndarray state") }
            guard !fortran else { throw fail("pickle: Fortran-ordered arrays are not supported") }
            let shape = try shapeValues.map { v -> Int in guard case let .int(i) = v else { throw fail("pickle: bad shape") }; return i }
            return .array(shape: shape, dtype: d, data: raw)
        default:
            throw fail("pickle: BUILD of an unsupported object")
        }
    }

    /// The pickled dict's int arrays, as Int32 labels.
    func labelArrays() throws -> [String: [Int32]] {
        guard case let .dict(items) = try run() else { throw fail("the pickle is not a dict") }
        var out: [String: [Int32]] = [:]
        for (k, v) in items {
            guard case let .string(key) = k, case let .array(shape, dtype, data) = v else { continue }
            let sizes = ["<i8": 8, "i8": 8, "<i4": 4, "i4": 4, "|u1": 1, "u1": 1, "|i1": 1, "<i2": 2]
            guard let size = sizes[dtype], shape.count == 1 else { continue }
            let (bytes, overflow) = shape[0].multipliedReportingOverflow(by: size)
            guard shape[0] >= 0, !overflow, data.count == bytes else { throw fail("array \(key): \(data.count) bytes for \(shape[0]) values of \(dtype)") }
            out[key] = try NPY.littleEndianIntegers(data[...], count: shape[0], size: size, signed: dtype.contains("i"), source: "\(source): array \(key)")
        }
        return out
    }
}
