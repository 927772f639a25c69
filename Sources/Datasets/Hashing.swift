import CLibCrypto
import Foundation

/// A streaming digest (SHA-256 or MD5) from the system's libcrypto, fed in pieces and read once.
public final class ByteDigest {
    public enum Algorithm: Sendable { case sha256, md5 }
    private let ctx: OpaquePointer

    public init(_ algorithm: Algorithm) {
        // Both digests are in OpenSSL's default provider; failing here means a broken libcrypto.
        guard let ctx = EVP_MD_CTX_new(),
              EVP_DigestInit_ex(ctx, algorithm == .sha256 ? EVP_sha256() : EVP_md5(), nil) == 1 else {
            fatalError("libcrypto: cannot start a \(algorithm) digest")
        }
        self.ctx = ctx
    }

    deinit { EVP_MD_CTX_free(ctx) }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        guard EVP_DigestUpdate(ctx, base, bytes.count) == 1 else { fatalError("libcrypto: digest update failed") }
    }

    public func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }
    public func update(_ data: Data) { data.withUnsafeBytes { update($0) } }

    /// The digest's bytes; the digest cannot be fed after this.
    public func finalize() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        guard EVP_DigestFinal_ex(ctx, &out, &length) == 1 else { fatalError("libcrypto: digest final failed") }
        return Array(out.prefix(Int(length)))
    }

    /// Lower-case hex of `bytes`.
    public static func hex<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var s = [UInt8]()
        s.reserveCapacity(bytes.count * 2)
        for b in bytes { s.append(digits[Int(b >> 4)]); s.append(digits[Int(b & 15)]) }
        return String(decoding: s, as: UTF8.self)
    }
}

/// Hex SHA-256 digests.
public enum SHA256Hex {
    public static func digest(_ bytes: [UInt8]) -> String {
        let h = ByteDigest(.sha256)
        h.update(bytes)
        return ByteDigest.hex(h.finalize())
    }

    /// The digest of several byte strings one after the other, each preceded by its length (so
    /// that moving bytes from one part to the next changes it), without joining them.
    public static func digest(parts: [[UInt8]]) -> String {
        let h = ByteDigest(.sha256)
        for part in parts {
            withUnsafeBytes(of: UInt64(part.count).littleEndian) { h.update($0) }
            h.update(part)
        }
        return ByteDigest.hex(h.finalize())
    }
}
