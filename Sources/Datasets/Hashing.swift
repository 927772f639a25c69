import Crypto
import Foundation

/// Hex digests (swift-crypto).
public enum SHA256Hex {
    public static func digest(_ bytes: [UInt8]) -> String {
        SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    }

    /// The digest of several byte strings one after the other, each preceded by its length (so
    /// that moving bytes from one part to the next changes it), without joining them.
    public static func digest(parts: [[UInt8]]) -> String {
        var h = SHA256()
        for part in parts {
            withUnsafeBytes(of: UInt64(part.count).littleEndian) { h.update(bufferPointer: $0) }
            h.update(data: part)
        }
        return h.finalize().map { String(format: "%02x", $0) }.joined()
    }
}
