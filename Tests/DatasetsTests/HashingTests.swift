import Datasets
import Foundation
import XCTest

/// The digests behind run keys, dataset identities, label hashes and download checks, against
/// known values (FIPS 180-2 and RFC 1321 test vectors, and Python's hashlib for the rest), so that
/// a change of implementation cannot change a key or an identity unnoticed.
final class HashingTests: XCTestCase {
    func testSHA256KnownVectors() {
        XCTAssertEqual(SHA256Hex.digest([]), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(SHA256Hex.digest(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256Hex.digest(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    func testMD5KnownVectors() {
        func md5(_ s: String) -> String { let h = ByteDigest(.md5); h.update(Array(s.utf8)); return ByteDigest.hex(h.finalize()) }
        XCTAssertEqual(md5(""), "d41d8cd98f00b204e9800998ecf8427e")
        XCTAssertEqual(md5("abc"), "900150983cd24fb0d6963f7d28e17f72")
    }

    /// Fed in uneven pieces (as files are read in chunks) a digest is the digest of the whole.
    func testStreamingEqualsWhole() throws {
        let bytes = [UInt8]((0..<300).flatMap { _ in (0..<256).map { UInt8($0) } })
        for (algorithm, expected) in [(ByteDigest.Algorithm.sha256, "f8b0585eb91f58c007a5634362c9f90d8543822c113f702523bc7b73408a9392"),
                                      (.md5, "97ab7d414a0df5138afc887ee74a0aff")] {
            let h = ByteDigest(algorithm)
            var at = 0
            for size in [0, 1, 63, 64, 65, 4097, 30_000] { h.update(Data(bytes[at..<at + size])); at += size }
            h.update(Data(bytes[at...]))
            XCTAssertEqual(ByteDigest.hex(h.finalize()), expected, "\(algorithm)")
        }
        let dir = NSTemporaryDirectory() + "sambench-hashing-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        FileManager.default.createFile(atPath: dir + "/f", contents: Data(bytes))
        XCTAssertEqual(try Download.md5Hex(of: dir + "/f"), "97ab7d414a0df5138afc887ee74a0aff")
    }

    /// The length-prefixed digest of parts (the training checkpoint's identity), as Python computes
    /// it: sha256 over, per part, its length as a little-endian uint64 and then its bytes.
    func testPartsDigest() {
        XCTAssertEqual(SHA256Hex.digest(parts: [Array("sam".utf8), Array("bench".utf8), []]),
                       "96d5f65719cd8962b937b1be763eb943d0f355a853d7109b9827321a64a9835d")
    }
}
