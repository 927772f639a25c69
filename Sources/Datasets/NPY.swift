import Engine
import Foundation

/// NumPy `.npy` files: 1-D integer arrays (labels), read and written.
public enum NPY {
    /// Reads a 1-D array of uint8, int8, int16, int32 or int64 (either byte order marker for
    /// little-endian data) as Int32 labels.
    public static func readLabels(_ path: String) throws -> [Int32] {
        let data: [UInt8]
        do { data = try InputFile.contents(path, what: "the label file", limit: 256 << 20) } catch { throw DataError("\(error)") }
        return try parseLabels(data, source: path)
    }

    /// The labels of a `.npy` file's bytes already read (errors name `source`).
    public static func parseLabels(_ b: [UInt8], source: String) throws -> [Int32] {
        guard b.count >= 10, b[0] == 0x93, Array(b[1..<6]) == Array("NUMPY".utf8) else { throw DataError("\(source): not a .npy file") }
        let major = b[6]
        let headerLength: Int, start: Int
        if major == 1 {
            headerLength = Int(b[8]) | Int(b[9]) << 8; start = 10
        } else if major == 2 || major == 3 {
            guard b.count >= 12 else { throw DataError("\(source): truncated header") }
            headerLength = Int(b[8]) | Int(b[9]) << 8 | Int(b[10]) << 16 | Int(b[11]) << 24; start = 12
        } else {
            throw DataError("\(source): unsupported .npy version \(major)")
        }
        guard start + headerLength <= b.count else { throw DataError("\(source): truncated header") }
        let header = String(decoding: b[start..<(start + headerLength)], as: UTF8.self)
        func field(_ key: String) -> String? {
            guard let r = header.range(of: "'\(key)':") else { return nil }
            return String(header[r.upperBound...]).trimmingCharacters(in: .whitespaces)
        }
        guard let descrField = field("descr"), let q1 = descrField.firstIndex(of: "'"),
              let q2 = descrField[descrField.index(after: q1)...].firstIndex(of: "'") else { throw DataError("\(source): no dtype in header") }
        let descr = String(descrField[descrField.index(after: q1)..<q2])
        if let f = field("fortran_order"), f.hasPrefix("True") { throw DataError("\(source): Fortran-ordered arrays are not supported") }
        guard let shapeField = field("shape"), let open = shapeField.firstIndex(of: "("),
              let close = shapeField[open...].firstIndex(of: ")") else {
            throw DataError("\(source): no shape in header")
        }
        let dims = shapeField[shapeField.index(after: open)..<close].split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard dims.count == 1 else { throw DataError("\(source): expected a 1-D label array, got shape \(dims)") }
        let n = dims[0]
        let sizes: [String: Int] = ["|u1": 1, "|i1": 1, "u1": 1, "i1": 1, "<i2": 2, "<i4": 4, "<i8": 8, "<u2": 2, "<u4": 4, "<u8": 8]
        guard let size = sizes[descr] else { throw DataError("\(source): dtype \(descr) is not a little-endian integer type") }
        // The header's count is the file's word, not a fact: checked before any arithmetic on it.
        let (bytes, overflow) = n.multipliedReportingOverflow(by: size)
        guard n >= 0, !overflow else { throw DataError("\(source): shape (\(n),) of \(descr) is not a possible array size") }
        let dataStart = start + headerLength
        guard b.count - dataStart == bytes else {
            throw DataError("\(source): \(b.count - dataStart) data bytes, expected \(bytes) for \(n) values of \(descr) (truncated?)")
        }
        return try littleEndianIntegers(b[dataStart...], count: n, size: size, signed: descr.contains("i"), source: source)
    }

    /// `count` little-endian integers of `size` bytes each, sign-extended when `signed`; a value
    /// that does not fit in Int32 is an error (narrowing it would turn 2^32 + 3 into a valid 3).
    static func littleEndianIntegers(_ bytes: ArraySlice<UInt8>, count: Int, size: Int, signed: Bool, source: String) throws -> [Int32] {
        let base = bytes.startIndex
        return try (0..<count).map { i in
            var v: UInt64 = 0
            for k in 0..<size { v |= UInt64(bytes[base + i * size + k]) << (8 * UInt64(k)) }
            if signed && size < 8 && v & (1 << (UInt64(size) * 8 - 1)) != 0 { v |= ~((1 << (UInt64(size) * 8)) - 1) }
            let value: Int32? = signed ? Int32(exactly: Int64(bitPattern: v)) : Int32(exactly: v)
            guard let value else {
                throw DataError("\(source): value \(signed ? String(Int64(bitPattern: v)) : String(v)) at index \(i) does not fit a label (32-bit integer)")
            }
            return value
        }
    }

    /// Writes labels as a 1-D little-endian int64 array (what PyTorch's cross-entropy takes).
    public static func writeLabels(_ labels: [Int32], to path: String) throws {
        var header = "{'descr': '<i8', 'fortran_order': False, 'shape': (\(labels.count),), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var out: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0]
        let hl = header.utf8.count
        out += [UInt8(hl & 0xff), UInt8(hl >> 8)]
        out += Array(header.utf8)
        out.reserveCapacity(out.count + labels.count * 8)
        for y in labels { withUnsafeBytes(of: Int64(y).littleEndian) { out += $0 } }
        do { try OutputFile.check(path) } catch { throw DataError("\(error)") }
        do { try Data(out).write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw DataError("\(path): cannot write: \(error.localizedDescription)")
        }
    }
}
