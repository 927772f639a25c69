import CZlib
import Foundation

/// gzip decompression (zlib) and a tar reader that extracts only expected regular files.
public enum Archive {
    /// What a download may decompress to: CIFAR's archives hold under 200 MB, so anything past
    /// this is a corrupt or hostile archive (a gzip bomb), refused before it takes the memory.
    public static let defaultMaxOutput = 1 << 30

    /// Decompresses a whole .gz file, refusing one that would decompress past `maxOutput` bytes.
    public static func gunzip(_ input: [UInt8], source: String, maxOutput: Int = defaultMaxOutput) throws -> [UInt8] {
        var stream = z_stream()
        // 16 + MAX_WBITS: expect a gzip header.
        guard inflateInit2_(&stream, 16 + MAX_WBITS, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw DataError("\(source): zlib initialisation failed")
        }
        defer { inflateEnd(&stream) }
        var output = [UInt8]()
        output.reserveCapacity(min(input.count * 2, maxOutput))
        let chunk = 1 << 20
        var buffer = [UInt8](repeating: 0, count: chunk)
        var status: Int32 = Z_OK
        try input.withUnsafeBufferPointer { inp in
            stream.next_in = UnsafeMutablePointer(mutating: inp.baseAddress)
            stream.avail_in = uInt(inp.count)
            repeat {
                try buffer.withUnsafeMutableBufferPointer { out in
                    stream.next_out = out.baseAddress
                    stream.avail_out = uInt(chunk)
                    status = inflate(&stream, Z_NO_FLUSH)
                    guard status == Z_OK || status == Z_STREAM_END else {
                        throw DataError("\(source): not a valid gzip stream (zlib status \(status)); truncated or corrupt download?")
                    }
                    let produced = chunk - Int(stream.avail_out)
                    guard output.count + produced <= maxOutput else {
                        throw DataError("\(source): decompresses to more than \(maxOutput >> 20) MiB, more than any CIFAR archive holds; refusing it (corrupt or hostile archive?)")
                    }
                    output.append(contentsOf: out.prefix(produced))
                }
                if status == Z_OK && stream.avail_in == 0 && stream.avail_out != 0 {
                    throw DataError("\(source): gzip stream ends early (truncated file)")
                }
            } while status != Z_STREAM_END
        }
        return output
    }

    public struct Member: Sendable { public var name: String; public var data: [UInt8] }

    /// The regular files of a tar archive whose names are in `wanted`. Refuses an archive with
    /// an absolute name or a `..` component anywhere, and any link, device or other special
    /// member under a wanted name.
    public static func untar(_ tar: [UInt8], wanted: Set<String>, source: String) throws -> [Member] {
        var out: [Member] = []
        var p = 0
        var longName: String?
        func field(_ o: Int, _ n: Int) -> String {
            let s = tar[(p + o)..<(p + o + n)]
            let end = s.firstIndex(of: 0) ?? s.endIndex
            return String(decoding: s[s.startIndex..<end], as: UTF8.self)
        }
        while p + 512 <= tar.count {
            if tar[p..<(p + 512)].allSatisfy({ $0 == 0 }) { break }   // end of archive
            var name = field(0, 100)
            let prefix = field(345, 155)
            if !prefix.isEmpty { name = prefix + "/" + name }
            if let l = longName { name = l; longName = nil }
            let sizeText = field(124, 12).trimmingCharacters(in: .whitespaces)
            // The size is the file's word: only plain octal digits, checked against the archive.
            guard sizeText.allSatisfy({ ("0"..."7").contains($0) }), let size = Int(sizeText.isEmpty ? "0" : sizeText, radix: 8) else {
                throw DataError("\(source): bad tar header for \(name) (size field '\(sizeText)')")
            }
            let type = tar[p + 156]
            let dataStart = p + 512
            guard size <= tar.count - dataStart else { throw DataError("\(source): tar member \(name) runs past the end (truncated)") }
            let components = name.split(separator: "/", omittingEmptySubsequences: false)
            if name.hasPrefix("/") || components.contains("..") {
                throw DataError("\(source): refusing archive: member '\(name)' would be written outside the data directory")
            }
            let clean = components.filter { !$0.isEmpty && $0 != "." }.joined(separator: "/")
            switch type {
            case UInt8(ascii: "L"):                                    // GNU long name for the next member
                longName = String(decoding: tar[dataStart..<(dataStart + size)].prefix { $0 != 0 }, as: UTF8.self)
            case UInt8(ascii: "0"), 0:
                if wanted.contains(clean) { out.append(Member(name: clean, data: Array(tar[dataStart..<(dataStart + size)]))) }
            case UInt8(ascii: "5"), UInt8(ascii: "x"), UInt8(ascii: "g"):
                break                                                  // directories and pax headers
            default:
                if wanted.contains(clean) {
                    throw DataError("\(source): refusing archive: '\(name)' is a link or special file, expected a regular file")
                }
            }
            p = dataStart + (size + 511) / 512 * 512
        }
        return out
    }
}
