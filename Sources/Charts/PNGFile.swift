// PNG files through libpng, with text chunks, and the charts' error type.
import CPNG
import CZlib
import Engine
import Foundation

public struct ChartError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// PNG files through libpng's simplified API, with text chunks (suite, runs, version, date)
/// spliced in before `IEND`, which the simplified API cannot write itself: `tEXt` for ASCII
/// values, `iTXt` (UTF-8, uncompressed) for the others, since `tEXt` is Latin-1 only.
public enum PNGFile {
    /// Writes 8-bit RGB pixels (row-major, no padding) and the text chunks.
    public static func write(rgb: [UInt8], width: Int, height: Int, text: [(String, String)], to path: String) throws {
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        image.width = UInt32(width)
        image.height = UInt32(height)
        image.format = UInt32(PNG_FORMAT_RGB)
        var size = 0
        let stride = Int32(width * 3)
        guard rgb.withUnsafeBytes({ png_image_write_to_memory(&image, nil, &size, 0, $0.baseAddress, stride, nil) }) != 0 else {
            throw ChartError("\(path): libpng: \(message(&image))")
        }
        var encoded = [UInt8](repeating: 0, count: size)
        guard rgb.withUnsafeBytes({ px in encoded.withUnsafeMutableBytes { png_image_write_to_memory(&image, $0.baseAddress, &size, 0, px.baseAddress, stride, nil) } }) != 0 else {
            throw ChartError("\(path): libpng: \(message(&image))")
        }
        encoded.removeSubrange(size...)
        // IEND is the last 12 bytes (length 0, type, CRC).
        var chunks: [UInt8] = []
        for (keyword, value) in text {
            let k = Array(keyword.utf8), v = Array(value.utf8)
            precondition(!k.isEmpty && k.count < 80 && k.allSatisfy { $0 >= 32 && $0 < 127 }, "PNG keywords are 1-79 printable ASCII bytes")
            // iTXt: keyword, 0, compression flag and method (0, 0), empty language tag and translated keyword.
            chunks += v.allSatisfy({ $0 < 128 && $0 != 0 }) ? chunk("tEXt", k + [0] + v) : chunk("iTXt", k + [0, 0, 0, 0, 0] + v)
        }
        encoded.insert(contentsOf: chunks, at: encoded.count - 12)
        guard FileManager.default.createFile(atPath: path, contents: Data(encoded)) else {
            throw ChartError("\(path): cannot write the file")
        }
    }

    /// Decodes a PNG to 8-bit RGBA and reads its `tEXt` and uncompressed `iTXt` chunks (whose
    /// text must be valid UTF-8), checking every chunk's CRC.
    public static func read(_ path: String) throws -> (width: Int, height: Int, rgba: [UInt8], text: [String: String]) {
        let bytes: [UInt8]
        do { bytes = try InputFile.contents(path, what: "the PNG", limit: 1 << 30) } catch { throw ChartError("\(error)") }
        guard bytes.count > 8, bytes.prefix(8) == [137, 80, 78, 71, 13, 10, 26, 10] else { throw ChartError("\(path): not a PNG file") }
        var text: [String: String] = [:]
        var offset = 8
        while offset + 12 <= bytes.count {
            let length = bytes[offset..<offset + 4].reduce(0) { $0 << 8 | Int($1) }
            guard offset + 12 + length <= bytes.count else { throw ChartError("\(path): truncated chunk at byte \(offset)") }
            let type = Array(bytes[offset + 4..<offset + 8]), body = Array(bytes[offset + 8..<offset + 8 + length])
            let stored = bytes[offset + 8 + length..<offset + 12 + length].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            guard crc(type + body) == stored else { throw ChartError("\(path): bad CRC in chunk \(String(decoding: type, as: UTF8.self))") }
            if type == Array("tEXt".utf8), let zero = body.firstIndex(of: 0) {
                text[String(decoding: body[..<zero], as: UTF8.self)] = String(decoding: body[(zero + 1)...], as: UTF8.self)
            }
            if type == Array("iTXt".utf8), let zero = body.firstIndex(of: 0), zero + 2 < body.count, body[zero + 1] == 0,
               let language = body[(zero + 3)...].firstIndex(of: 0), let translated = body[(language + 1)...].firstIndex(of: 0) {
                guard let value = String(validating: body[(translated + 1)...], as: UTF8.self) else {
                    throw ChartError("\(path): iTXt chunk '\(String(decoding: body[..<zero], as: UTF8.self))' is not valid UTF-8")
                }
                text[String(decoding: body[..<zero], as: UTF8.self)] = value
            }
            offset += 12 + length
        }
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        var rgba: [UInt8] = []
        // libpng reads from the memory until png_image_finish_read: both calls in one closure.
        let ok = bytes.withUnsafeBytes { raw -> Bool in
            guard png_image_begin_read_from_memory(&image, raw.baseAddress, raw.count) != 0 else { return false }
            image.format = UInt32(PNG_FORMAT_FLAG_COLOR | PNG_FORMAT_FLAG_ALPHA)  // PNG_FORMAT_RGBA
            rgba = [UInt8](repeating: 0, count: Int(image.width) * Int(image.height) * 4)
            return rgba.withUnsafeMutableBytes { png_image_finish_read(&image, nil, $0.baseAddress, 0, nil) } != 0
        }
        guard ok else { throw ChartError("\(path): libpng: \(message(&image))") }
        return (Int(image.width), Int(image.height), rgba, text)
    }

    static func chunk(_ type: String, _ body: [UInt8]) -> [UInt8] {
        let t = Array(type.utf8)
        let n = UInt32(body.count), c = crc(t + body)
        return [UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)] + t + body
            + [UInt8(c >> 24), UInt8(c >> 16 & 0xFF), UInt8(c >> 8 & 0xFF), UInt8(c & 0xFF)]
    }

    /// CRC-32 of the chunk type and data (zlib's).
    static func crc(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBufferPointer { UInt32(crc32(0, $0.baseAddress, uInt($0.count))) }
    }

    private static func message(_ image: inout png_image) -> String {
        withUnsafeBytes(of: &image.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }
}
