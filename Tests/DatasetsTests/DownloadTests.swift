import AllocCounter
import Datasets
import Foundation
import TestSupport
import XCTest

/// Archives made by Python's tarfile in a temporary directory; downloads from file:// URLs and
/// from a loopback HTTP server (Python's http.server), never the internet.
final class DownloadTests: XCTestCase {
    var dir: String!
    let archive = CIFARArchive(name: "test", url: "http://127.0.0.1/test.tar.gz", size: 0, md5: "",
                               directory: "testset", files: ["a.bin", "b.bin"])

    override func setUpWithError() throws {
        dir = (NSTemporaryDirectory() as NSString).appendingPathComponent("sambench-dl-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let (status, out) = try python(makeArchives, [dir])
        guard status == 0 else { throw XCTSkip("python3 not available to build test archives: \(out)") }
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    let makeArchives = """
    import sys, tarfile, io, os, hashlib
    d = sys.argv[1]
    def add(t, name, data, kind=tarfile.REGTYPE, link=""):
        i = tarfile.TarInfo(name); i.size = len(data) if kind == tarfile.REGTYPE else 0; i.type = kind; i.linkname = link
        t.addfile(i, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    with tarfile.open(os.path.join(d, "good.tar.gz"), "w:gz") as t:
        add(t, "testset/a.bin", b"A" * 1000); add(t, "testset/b.bin", bytes(range(256)) * 10); add(t, "testset/other.txt", b"x")
    with tarfile.open(os.path.join(d, "evil.tar.gz"), "w:gz") as t:
        add(t, "testset/a.bin", b"A"); add(t, "../evil.bin", b"E")
    with tarfile.open(os.path.join(d, "link.tar.gz"), "w:gz") as t:
        add(t, "testset/a.bin", b"", tarfile.SYMTYPE, "/etc/passwd"); add(t, "testset/b.bin", b"B")
    print(hashlib.md5(open(os.path.join(d, "good.tar.gz"), "rb").read()).hexdigest())
    """

    func python(_ script: String, _ args: [String]) throws -> (Int32, String) {
        let r = try runCommand("/usr/bin/env", ["python3", "-c", script] + args)
        return (r.status, r.output.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    func goodMD5() throws -> String { try Download.md5Hex(of: "\(dir!)/good.tar.gz") }

    func testGoodArchiveDownloadsVerifiesAndExtractsOnlyExpectedFiles() throws {
        let dest = "\(dir!)/root/test.tar.gz"
        try FileManager.default.createDirectory(atPath: "\(dir!)/root", withIntermediateDirectories: true)
        let size = (try FileManager.default.attributesOfItem(atPath: "\(dir!)/good.tar.gz")[.size] as! NSNumber).intValue
        try Download.fetch(URL(fileURLWithPath: "\(dir!)/good.tar.gz"), to: dest, expectedSize: size, md5: try goodMD5()) { _, _ in }
        XCTAssertTrue(FileManager.default.fileExists(atPath: dest))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dest + ".partial"))
        try Download.extract(dest, archive, into: "\(dir!)/root")
        XCTAssertEqual(FileManager.default.contents(atPath: "\(dir!)/root/testset/a.bin"), Data(repeating: 65, count: 1000))
        XCTAssertEqual(FileManager.default.contents(atPath: "\(dir!)/root/testset/b.bin")?.count, 2560)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dir!)/root/testset/other.txt"), "an unexpected member was extracted")
    }

    func testChecksumMismatchIsRefusedAndLeavesNoFile() throws {
        let dest = "\(dir!)/test.tar.gz"
        XCTAssertThrowsError(try Download.fetch(URL(fileURLWithPath: "\(dir!)/good.tar.gz"), to: dest, expectedSize: nil,
                                                md5: "00000000000000000000000000000000") { _, _ in }) {
            XCTAssertTrue("\($0)".contains("MD5"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dest))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dest + ".partial"))
    }

    /// An archive already in place is replaced only by a download that passed: a missing source,
    /// a closed port (offline), a checksum mismatch, and a URL naming the archive itself leave it
    /// byte for byte as it was.
    func testFailedDownloadsLeaveTheExistingArchive() throws {
        let root = "\(dir!)/root"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let dest = "\(root)/test.tar.gz"
        try FileManager.default.copyItem(atPath: "\(dir!)/good.tar.gz", toPath: dest)
        let before = FileManager.default.contents(atPath: dest)
        let sources = [URL(fileURLWithPath: "\(dir!)/missing.tar.gz"), URL(string: "http://127.0.0.1:9/test.tar.gz")!,
                       URL(fileURLWithPath: "\(dir!)/evil.tar.gz"), URL(fileURLWithPath: dest)]
        for source in sources {
            XCTAssertThrowsError(try Download.fetch(source, to: dest, expectedSize: nil, md5: "00000000000000000000000000000000") { _, _ in },
                                 source.absoluteString)
            XCTAssertEqual(FileManager.default.contents(atPath: dest), before, "\(source): the archive in place changed")
            XCTAssertFalse(FileManager.default.fileExists(atPath: dest + ".partial"), source.absoluteString)
        }
        // A good download does replace it.
        try Download.fetch(URL(fileURLWithPath: "\(dir!)/evil.tar.gz"), to: dest, expectedSize: nil, md5: nil) { _, _ in }
        XCTAssertEqual(FileManager.default.contents(atPath: dest), FileManager.default.contents(atPath: "\(dir!)/evil.tar.gz"))
    }

    /// Extracted data is replaced only by an archive whose files were all extracted and read
    /// back: bad members, links, or a staged check that fails leave the old files, and no
    /// staging directory behind.
    func testBadArchivesNeverReplaceExtractedData() throws {
        let root = "\(dir!)/root"
        try Download.extract("\(dir!)/good.tar.gz", archive, into: root)
        let good = try FileManager.default.contentsOfDirectory(atPath: "\(root)/testset").sorted()
        let a = FileManager.default.contents(atPath: "\(root)/testset/a.bin")
        struct Unreadable: Error {}
        var checked: [String] = []
        let attempts: [(String, (String) throws -> Void)] = [
            ("evil.tar.gz", { _ in }), ("link.tar.gz", { _ in }),
            ("good.tar.gz", { staged in checked.append(staged); throw Unreadable() }),
        ]
        for (file, check) in attempts {
            XCTAssertThrowsError(try Download.extract("\(dir!)/\(file)", archive, into: root, check: check), file)
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: "\(root)/testset").sorted(), good, file)
            XCTAssertEqual(FileManager.default.contents(atPath: "\(root)/testset/a.bin"), a, file)
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: root), ["testset"], "\(file): something was left behind")
        }
        // The check read the staged files, not the ones in place.
        XCTAssertEqual(checked.count, 1)
        XCTAssertNotEqual(checked.first, root)
    }

    /// An archive is streamed from the file to the extracted files, a megabyte at a time: one whose
    /// members are tens of megabytes takes no buffer near their size (the extractor used to hold
    /// the archive and all it decompressed to, so its 1 GiB cap was reached in memory), and the
    /// files come out whole, a member given twice extracted as its last copy.
    func testArchivesAreExtractedWithoutHoldingThem() throws {
        let make = """
            import sys, tarfile, io, os
            d = sys.argv[1]
            def add(t, name, data):
                i = tarfile.TarInfo(name); i.size = len(data); t.addfile(i, io.BytesIO(data))
            with tarfile.open(os.path.join(d, "large.tar.gz"), "w:gz") as t:
                add(t, "testset/junk.txt", bytes(40 << 20))
                add(t, "testset/a.bin", b"old")
                add(t, "testset/a.bin", bytes(range(256)) * (48 << 12))
                add(t, "testset/b.bin", b"")
            """
        let r = try runCommand("/usr/bin/env", ["python3", "-c", make, dir!])
        guard r.status == 0 else { throw XCTSkip("python3 not available: \(r.output)") }
        alloc_counter_start()
        try Download.extract("\(dir!)/large.tar.gz", archive, into: "\(dir!)/root")
        _ = alloc_counter_stop()
        XCTAssertLessThan(alloc_counter_largest(), 4 << 20, "extracting took a buffer of \(alloc_counter_largest()) bytes")
        let a = try XCTUnwrap(FileManager.default.contents(atPath: "\(dir!)/root/testset/a.bin"))
        XCTAssertEqual(a.count, 48 << 20)
        XCTAssertEqual(Array(a.prefix(512)), Array(0...255).map(UInt8.init) + Array(0...255).map(UInt8.init))
        XCTAssertEqual(Array(a.suffix(256)), Array(0...255).map(UInt8.init))
        XCTAssertEqual(FileManager.default.contents(atPath: "\(dir!)/root/testset/b.bin"), Data())
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: "\(dir!)/root/testset").sorted(), ["a.bin", "b.bin"])

        // Cut short anywhere, it is an error that names the file, and leaves nothing.
        let whole = try Data(contentsOf: URL(fileURLWithPath: "\(dir!)/large.tar.gz"))
        for cut in [10, whole.count / 3, whole.count - 9] {
            let path = "\(dir!)/cut-\(cut).tar.gz"
            try whole.prefix(cut).write(to: URL(fileURLWithPath: path))
            XCTAssertThrowsError(try Download.extract(path, archive, into: "\(dir!)/cut")) {
                XCTAssertTrue("\($0)".hasPrefix(path) && ("\($0)".contains("truncated") || "\($0)".contains("gzip")), "\(cut): \($0)")
            }
            XCTAssertEqual((try? FileManager.default.contentsOfDirectory(atPath: "\(dir!)/cut")) ?? [], [], "\(cut)")
        }
        XCTAssertThrowsError(try Download.extract(dir!, archive, into: "\(dir!)/cut")) { XCTAssertTrue("\($0)".contains("it is a directory"), "\($0)") }
    }

    func testParentDirectoryMembersAndLinksAreRefused() throws {
        XCTAssertThrowsError(try Download.extract("\(dir!)/evil.tar.gz", archive, into: "\(dir!)/root")) {
            XCTAssertTrue("\($0)".contains("refusing") && "\($0)".contains("../evil.bin"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dir!)/evil.bin"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dir!)/root/testset"))
        XCTAssertThrowsError(try Download.extract("\(dir!)/link.tar.gz", archive, into: "\(dir!)/root")) {
            XCTAssertTrue("\($0)".contains("link"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dir!)/root/testset"))
    }

    /// A server that announces the whole archive but closes the connection half way: the
    /// download fails and leaves nothing that a later run could take for the archive.
    func testInterruptedHTTPDownloadLeavesNoFile() throws {
        let server = """
        import sys, socket, threading, os
        data = open(sys.argv[1], "rb").read()
        s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(4)
        print(s.getsockname()[1], flush=True)
        def serve(full):
            c, _ = s.accept(); c.recv(65536)
            body = data if full else data[: len(data) // 2]
            c.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\nConnection: close\\r\\n\\r\\n" % len(data) + body)
            c.close()
        serve(False); serve(True)
        """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", server, "\(dir!)/good.tar.gz"]
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        defer { p.terminate() }
        var bytes = Data()
        while !bytes.contains(UInt8(ascii: "\n")) {
            let chunk = pipe.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            bytes.append(chunk)
        }
        let line = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        let port = try XCTUnwrap(Int(line), "server did not start: \(line)")
        let url = URL(string: "http://127.0.0.1:\(port)/test.tar.gz")!
        let dest = "\(dir!)/test.tar.gz"
        let size = (try FileManager.default.attributesOfItem(atPath: "\(dir!)/good.tar.gz")[.size] as! NSNumber).intValue
        XCTAssertThrowsError(try Download.fetch(url, to: dest, expectedSize: size, md5: try goodMD5()) { _, _ in })
        XCTAssertFalse(FileManager.default.fileExists(atPath: dest), "a half download was left under the final name")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dest + ".partial"))
        // The retry gets the whole archive.
        try Download.fetch(url, to: dest, expectedSize: size, md5: try goodMD5()) { _, _ in }
        XCTAssertEqual(try Download.md5Hex(of: dest), try goodMD5())
    }
}
