import CZlib
import Foundation

/// gzip decompression (zlib) and a tar reader that extracts only expected regular files.
public enum Archive {
    /// What a download may decompress to: CIFAR's archives hold under 200 MB, so anything past
    /// this is a corrupt or hostile archive (a gzip bomb), refused before it fills the disk.
    public static let defaultMaxOutput = 1 << 30

    /// A gzip stream decompressed as it is read: `input(count)` gives the next compressed bytes
    /// (fewer only at the end of the file), `read(count)` the next decompressed ones, so that an
    /// archive is never held whole in memory, compressed or not.
    public final class Gunzip {
        private var stream = z_stream()
        private let input: (Int) throws -> [UInt8]
        private var pending: [UInt8] = [], used = 0
        private let source: String, maxOutput: Int
        private var ended = false
        /// Decompressed bytes produced so far.
        public private(set) var produced = 0

        public init(source: String, maxOutput: Int = defaultMaxOutput, input: @escaping (Int) throws -> [UInt8]) throws {
            (self.source, self.maxOutput, self.input) = (source, maxOutput, input)
            // 16 + MAX_WBITS: expect a gzip header.
            guard inflateInit2_(&stream, 16 + MAX_WBITS, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
                throw DataError("\(source): zlib initialisation failed")
            }
        }

        deinit { inflateEnd(&stream) }

        /// Up to `count` decompressed bytes; fewer only where the gzip stream ends.
        public func read(_ count: Int) throws -> [UInt8] {
            var out = [UInt8](repeating: 0, count: count)
            var filled = 0
            while filled < count && !ended {
                if used == pending.count {
                    pending = try input(1 << 20)
                    used = 0
                    guard !pending.isEmpty else { throw DataError("\(source): gzip stream ends early (truncated file)") }
                }
                let status = pending.withUnsafeBufferPointer { inp in
                    out.withUnsafeMutableBufferPointer { o in
                        stream.next_in = UnsafeMutablePointer(mutating: inp.baseAddress! + used)
                        stream.avail_in = uInt(inp.count - used)
                        stream.next_out = o.baseAddress! + filled
                        stream.avail_out = uInt(count - filled)
                        let status = inflate(&stream, Z_NO_FLUSH)
                        used = inp.count - Int(stream.avail_in)
                        filled = count - Int(stream.avail_out)
                        return status
                    }
                }
                guard status == Z_OK || status == Z_STREAM_END else {
                    throw DataError("\(source): not a valid gzip stream (zlib status \(status)); truncated or corrupt download?")
                }
                guard produced + filled <= maxOutput else {
                    throw DataError("\(source): decompresses to more than \(maxOutput >> 20) MiB, more than any CIFAR archive holds; refusing it (corrupt or hostile archive?)")
                }
                ended = status == Z_STREAM_END
            }
            produced += filled
            out.removeLast(count - filled)
            return out
        }

        /// Reads what is left, so that a stream cut short or damaged after the part that was used
        /// (zlib checks the CRC and the length at the end) is still an error.
        public func finish() throws {
            while try read(1 << 20).count == 1 << 20 {}
        }
    }

    /// Decompresses a whole .gz held in memory, refusing one that would decompress past `maxOutput` bytes.
    public static func gunzip(_ input: [UInt8], source: String, maxOutput: Int = defaultMaxOutput) throws -> [UInt8] {
        var given = false
        let stream = try Gunzip(source: source, maxOutput: maxOutput) { _ in
            defer { given = true }
            return given ? [] : input
        }
        var output: [UInt8] = []
        while true {
            let chunk = try stream.read(1 << 20)
            output += chunk
            if chunk.count < 1 << 20 { return output }
        }
    }

    public struct Member: Sendable { public var name: String; public var data: [UInt8] }

    /// The longest GNU long name read (a path; Linux allows 4096 bytes).
    public static let maxLongName = 1 << 16

    /// Reads a tar stream (`read(count)` gives fewer bytes only at its end) and passes the regular
    /// files whose names are in `wanted` to `write(name, chunk, first)` a megabyte at a time (the
    /// rest are read and dropped); returns the names written. Refuses an archive with an
    /// absolute name or a `..` component anywhere, and any link, device or other special member
    /// under a wanted name, before anything of that member is written.
    @discardableResult
    public static func untar(read: (Int) throws -> [UInt8], wanted: Set<String>, source: String,
                             write: (_ name: String, _ chunk: [UInt8], _ first: Bool) throws -> Void) throws -> Set<String> {
        var written = Set<String>()
        var longName: String?
        func field(_ header: [UInt8], _ o: Int, _ n: Int) -> String {
            let s = header[o..<(o + n)]
            let end = s.firstIndex(of: 0) ?? s.endIndex
            return String(decoding: s[s.startIndex..<end], as: UTF8.self)
        }
        while true {
            let header = try read(512)
            guard header.count == 512, !header.allSatisfy({ $0 == 0 }) else { break }   // end of archive
            var name = field(header, 0, 100)
            let prefix = field(header, 345, 155)
            if !prefix.isEmpty { name = prefix + "/" + name }
            if let l = longName { name = l; longName = nil }
            let sizeText = field(header, 124, 12).trimmingCharacters(in: .whitespaces)
            // The size is the file's word: only plain octal digits, checked as the data is read.
            guard sizeText.allSatisfy({ ("0"..."7").contains($0) }), let size = Int(sizeText.isEmpty ? "0" : sizeText, radix: 8) else {
                throw DataError("\(source): bad tar header for \(name) (size field '\(sizeText)')")
            }
            let type = header[156]
            let components = name.split(separator: "/", omittingEmptySubsequences: false)
            if name.hasPrefix("/") || components.contains("..") {
                throw DataError("\(source): refusing archive: member '\(name)' would be written outside the data directory")
            }
            let clean = components.filter { !$0.isEmpty && $0 != "." }.joined(separator: "/")
            /// The member's bytes, a megabyte at a time.
            func data(_ each: ([UInt8], Bool) throws -> Void) throws {
                var left = size, first = true
                repeat {
                    let chunk = try read(min(left, 1 << 20))
                    guard chunk.count == min(left, 1 << 20) else { throw DataError("\(source): tar member \(name) runs past the end (truncated)") }
                    try each(chunk, first)
                    left -= chunk.count
                    first = false
                } while left > 0
            }
            switch type {
            case UInt8(ascii: "L"):                                    // GNU long name for the next member
                guard size <= maxLongName else { throw DataError("\(source): bad tar header: a long name of \(size) bytes") }
                var bytes: [UInt8] = []
                try data { chunk, _ in bytes += chunk }
                longName = String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
            case UInt8(ascii: "0"), 0:
                guard wanted.contains(clean) else { try data { _, _ in }; break }
                try data { chunk, first in try write(clean, chunk, first) }
                written.insert(clean)
            case UInt8(ascii: "5"), UInt8(ascii: "x"), UInt8(ascii: "g"):
                try data { _, _ in }                                   // directories and pax headers
            default:
                if wanted.contains(clean) {
                    throw DataError("\(source): refusing archive: '\(name)' is a link or special file, expected a regular file")
                }
                try data { _, _ in }
            }
            _ = try read((512 - size % 512) % 512)                     // padding; a short one ends the archive
        }
        return written
    }

    /// The wanted regular files of a tar archive held in memory (see the streaming `untar`).
    public static func untar(_ tar: [UInt8], wanted: Set<String>, source: String) throws -> [Member] {
        var at = 0
        var out: [Member] = []
        try untar(read: { count in
            defer { at = min(tar.count, at + count) }
            return Array(tar[at..<min(tar.count, at + count)])
        }, wanted: wanted, source: source) { name, chunk, first in
            if first { out.append(Member(name: name, data: [])) }
            out[out.count - 1].data += chunk
        }
        return out
    }
}
