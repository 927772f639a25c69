import Crypto
import Foundation

/// Hex digests (swift-crypto).
public enum SHA256Hex {
    public static func digest(_ bytes: [UInt8]) -> String {
        SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    }
}
