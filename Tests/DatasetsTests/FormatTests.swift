import Datasets
import Foundation
import TestSupport
import XCTest

final class FormatTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = (NSTemporaryDirectory() as NSString).appendingPathComponent("sambench-data-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    /// Writes `records` records in a CIFAR binary layout: label bytes, then 3072 pixel bytes
    /// whose first byte is the record index (mod 256) so order can be checked.
    func writeRecords(_ path: String, records: Int, labels: (Int) -> [UInt8]) {
        var out = [UInt8]()
        out.reserveCapacity(records * (3072 + 2))
        for r in 0..<records {
            out += labels(r)
            var px = [UInt8](repeating: 0, count: 3072)
            px[0] = UInt8(r % 256); px[1024] = 7; px[3071] = 9
            out += px
        }
        FileManager.default.createFile(atPath: path, contents: Data(out))
    }

    func writeCIFAR10(root: String) throws -> String {
        let d = (root as NSString).appendingPathComponent("cifar-10-batches-bin")
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        for f in 1...5 { writeRecords("\(d)/data_batch_\(f).bin", records: 10_000) { [UInt8(($0 + f) % 10)] } }
        writeRecords("\(d)/test_batch.bin", records: 10_000) { [UInt8($0 % 10)] }
        return d
    }

    func testCIFAR10LayoutReadsBack() throws {
        let d = try writeCIFAR10(root: dir)
        let data = try CIFAR.loadCIFAR10(root: dir)
        XCTAssertEqual(data.train.count, 50_000)
        XCTAssertEqual(data.test.count, 10_000)
        XCTAssertEqual(data.train.labels[0], 1)                 // record 0 of batch 1: (0 + 1) % 10
        XCTAssertEqual(data.train.labels[10_000], 2)            // record 0 of batch 2
        XCTAssertEqual(data.train.pixels[3072 * 3 + 0], 3)      // record 3's first pixel byte
        XCTAssertEqual(data.train.pixels[1024], 7)              // green plane starts at 1024
        XCTAssertNil(data.train.coarseLabels)
        XCTAssertEqual(data.classNames, CIFAR.cifar10ClassNames)

        // Truncated file: the error names the file and the sizes.
        let f = "\(d)/data_batch_3.bin"
        let h = FileHandle(forUpdatingAtPath: f)!
        try h.truncate(atOffset: 3073 * 10_000 - 100)
        try h.close()
        XCTAssertThrowsError(try CIFAR.loadCIFAR10(root: dir)) { XCTAssertTrue("\($0)".contains("data_batch_3.bin") && "\($0)".contains("expected 30730000"), "\($0)") }
        // Label out of range: names the file and the record.
        writeRecords(f, records: 10_000) { $0 == 1234 ? [10] : [0] }
        XCTAssertThrowsError(try CIFAR.loadCIFAR10(root: dir)) { XCTAssertTrue("\($0)".contains("data_batch_3.bin") && "\($0)".contains("record 1234"), "\($0)") }
        try FileManager.default.removeItem(atPath: f)
        XCTAssertThrowsError(try CIFAR.loadCIFAR10(root: dir)) { XCTAssertTrue("\($0)".contains("data_batch_3.bin") && "\($0)".contains("missing"), "\($0)") }
    }

    func testCIFAR100LayoutReadsBack() throws {
        let d = (dir as NSString).appendingPathComponent("cifar-100-binary")
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        writeRecords("\(d)/train.bin", records: 50_000) { [UInt8($0 % 20), UInt8($0 % 100)] }
        writeRecords("\(d)/test.bin", records: 10_000) { [UInt8($0 % 20), UInt8(($0 * 3) % 100)] }
        let data = try CIFAR.loadCIFAR100(root: dir)
        XCTAssertEqual(data.train.labels[123], 23)
        XCTAssertEqual(data.train.coarseLabels?[123], 3)
        XCTAssertEqual(data.test.labels[7], 21)
        writeRecords("\(d)/test.bin", records: 10_000) { $0 == 99 ? [25, 1] : [0, 1] }
        XCTAssertThrowsError(try CIFAR.loadCIFAR100(root: dir)) { XCTAssertTrue("\($0)".contains("test.bin") && "\($0)".contains("record 99"), "\($0)") }
    }

    func testNPYRoundTripAndDTypes() throws {
        let path = "\(dir!)/labels.npy"
        let labels: [Int32] = [0, 9, 3, 3, 7]
        try NPY.writeLabels(labels, to: path)
        XCTAssertEqual(try NPY.readLabels(path), labels)
        let bytes = [UInt8](FileManager.default.contents(atPath: path)!)
        XCTAssertEqual((bytes.count - 5 * 8) % 64, 0, "header padded to 64 bytes")
        // The shared CIFAR-N .npy files are uint8.
        let shared = sharedDir.appendingPathComponent("datasets/cifar-n/CIFAR-10_clean_label.npy").path
        if FileManager.default.fileExists(atPath: shared) {
            let clean = try NPY.readLabels(shared)
            XCTAssertEqual(clean.count, 50_000)
            XCTAssertEqual(Array(clean.prefix(10)), [6, 9, 9, 4, 1, 1, 2, 7, 8, 3])
        }
        FileManager.default.createFile(atPath: "\(dir!)/bad.npy", contents: Data(bytes.prefix(bytes.count - 3)))
        XCTAssertThrowsError(try NPY.readLabels("\(dir!)/bad.npy")) { XCTAssertTrue("\($0)".contains("bad.npy"), "\($0)") }
    }

    /// A header or a value the .npy file states is checked before it is used: a count whose byte
    /// size overflows or is negative, and values that do not fit a 32-bit label (which narrowing
    /// would turn into valid small labels: 2^32 + 3 into 3), are errors naming the file.
    func testNPYSizesAndValuesOutOfRangeAreErrors() throws {
        func npy(_ descr: String, shape: String, data: [UInt8]) -> [UInt8] {
            var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': (\(shape),), }"
            while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
            header += "\n"
            return [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(header.utf8.count & 0xff), UInt8(header.utf8.count >> 8)] + Array(header.utf8) + data
        }
        func le(_ v: UInt64, _ size: Int) -> [UInt8] { (0..<size).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }
        let cases: [(String, [UInt8], String)] = [
            ("i8-2^32+3", npy("<i8", shape: "2", data: le(1, 8) + le((1 << 32) + 3, 8)), "value 4294967299 at index 1"),
            ("i8-negative", npy("<i8", shape: "1", data: le(UInt64(bitPattern: -(1 << 40)), 8)), "value -1099511627776 at index 0"),
            ("u4-2^31", npy("<u4", shape: "1", data: le(1 << 31, 4)), "value 2147483648 at index 0"),
            ("u8-2^63", npy("<u8", shape: "1", data: le(1 << 63, 8)), "value 9223372036854775808 at index 0"),
            ("overflowing-shape", npy("<i8", shape: "\(Int.max / 4)", data: le(1, 8)), "not a possible array size"),
            ("negative-shape", npy("<i4", shape: "-2", data: []), "not a possible array size"),
        ]
        for (name, bytes, expected) in cases {
            let path = "\(dir!)/\(name).npy"
            FileManager.default.createFile(atPath: path, contents: Data(bytes))
            XCTAssertThrowsError(try NPY.readLabels(path), name) { XCTAssertTrue("\($0)".contains(path) && "\($0)".contains(expected), "\(name): \($0)") }
        }
        // The edges that do fit are read as they are.
        let edges = "\(dir!)/edges.npy"
        FileManager.default.createFile(atPath: edges, contents: Data(npy("<i8", shape: "2", data: le(UInt64(Int32.max), 8) + le(UInt64(bitPattern: Int64(Int32.min)), 8))))
        XCTAssertEqual(try NPY.readLabels(edges), [Int32.max, Int32.min])
    }

    /// Headers whose fields are out of order or cut short (the fuzzer's `'shape': ),(5` trapped).
    func testNPYMalformedHeadersAreErrors() {
        func npy(header: String) -> [UInt8] {
            let h = header + "\n"
            return [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(h.utf8.count), 0] + Array(h.utf8) + [3, 0, 0, 0, 0, 0, 0, 0]
        }
        for header in ["{'descr': '<i8', 'shape': ),(1, }", "{'descr': '<i8', 'shape': )1(, }", "{'descr': '<i8', 'shape': (1, }",
                       "{'descr': '<i8', 'shape': }", "{'descr': '<i8 'shape': (1,), }", "{'shape': (1,), 'descr': }", "{'descr': '<i8'"] {
            XCTAssertThrowsError(try NPY.parseLabels(npy(header: header), source: "h.npy"), header) {
                XCTAssertTrue("\($0)".hasPrefix("h.npy: "), "\(header): \($0)")
            }
        }
        XCTAssertEqual(try NPY.parseLabels(npy(header: "{'descr': '<i8', 'shape': (1,), }"), source: "h.npy"), [3])
    }

    /// Tar size fields are the file's word (negative, signed, non-octal, past the end: errors,
    /// never a trap), and decompression stops at its cap (a gzip bomb takes no more memory).
    func testArchiveSizesAndBombsAreErrors() throws {
        func tar(size: String, data: [UInt8] = []) -> [UInt8] {
            var h = [UInt8](repeating: 0, count: 512)
            for (i, b) in "cifar-10-batches-bin/test_batch.bin".utf8.enumerated() { h[i] = b }
            for (i, b) in size.utf8.enumerated() { h[124 + i] = b }
            h[156] = UInt8(ascii: "0")
            return h + data + [UInt8](repeating: 0, count: 1024)
        }
        let wanted: Set = ["cifar-10-batches-bin/test_batch.bin"]
        for size in ["-1", "-777", "+10", "99", "12 34", "77777777777", "00000004000"] {
            XCTAssertThrowsError(try Archive.untar(tar(size: size, data: [1, 2, 3]), wanted: wanted, source: "t.tar"), size) {
                XCTAssertTrue("\($0)".hasPrefix("t.tar: "), "\(size): \($0)")
            }
        }
        XCTAssertEqual(try Archive.untar(tar(size: "00000000003", data: [1, 2, 3]), wanted: wanted, source: "t.tar").first?.data, [1, 2, 3])

        let dir = NSTemporaryDirectory() + "sambench-bomb-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Zeros and a repeated pattern: each expands a hundred times and more.
        let make = """
            import gzip, sys
            d = sys.argv[1]
            open(d + "/zeros.gz", "wb").write(gzip.compress(bytes(8 << 20)))
            open(d + "/pattern.gz", "wb").write(gzip.compress(b"sambench" * (1 << 20)))
            """
        let r = try runCommand("/usr/bin/env", ["python3", "-c", make, dir])
        guard r.status == 0 else { throw XCTSkip("python3 not available: \(r.output)") }
        for name in ["zeros.gz", "pattern.gz"] {
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(dir)/\(name)")))
            XCTAssertLessThan(bytes.count, 100_000, name)
            XCTAssertThrowsError(try Archive.gunzip(bytes, source: name, maxOutput: 4 << 20), name) {
                XCTAssertTrue("\($0)".contains("more than 4 MiB"), "\(name): \($0)")
            }
            XCTAssertEqual(try Archive.gunzip(bytes, source: name, maxOutput: 8 << 20).count, 8 << 20, name)
        }
    }

    /// The official CIFAR-N files give the published noise rates against the clean labels.
    func testCIFARNFilesGiveThePublishedRates() throws {
        let base = sharedDir.appendingPathComponent("datasets/cifar-n").path
        guard FileManager.default.fileExists(atPath: base) else { throw XCTSkip("CIFAR-N files not found at \(base)") }
        let c10 = try TorchLabels.readArrays("\(base)/CIFAR-10_human.pt")
        func rate(_ a: [Int32], _ b: [Int32]) -> Double { Double(zip(a, b).filter { $0 != $1 }.count) / Double(a.count) }
        XCTAssertEqual(rate(c10["aggre_label"]!, c10["clean_label"]!), 0.0901, accuracy: 5e-5)
        XCTAssertEqual(rate(c10["worse_label"]!, c10["clean_label"]!), 0.4021, accuracy: 5e-5)
        let c100 = try TorchLabels.readArrays("\(base)/CIFAR-100_human.pt")
        XCTAssertEqual(rate(c100["noisy_label"]!, c100["clean_label"]!), 0.4020, accuracy: 5e-5)
        // The .pt and .npy copies agree, and FILE.pt:KEY names an array.
        XCTAssertEqual(try DataPreparation.readLabelFile(try LabelSpec(parsing: "\(base)/CIFAR-10_human.pt:worse_label")), try NPY.readLabels("\(base)/CIFAR-10_worse_label.npy"))
        XCTAssertThrowsError(try DataPreparation.readLabelFile(try LabelSpec(parsing: "\(base)/CIFAR-10_human.pt:nope"))) { XCTAssertTrue("\($0)".contains("worse_label"), "\($0)") }
        // Human noise as a noise model reports the same rate.
        let r = try LabelNoise.apply(NoiseSpec(kind: .human, labelsFile: try LabelSpec(parsing: "\(base)/CIFAR-10_human.pt:aggre_label")), clean: c10["clean_label"]!,
                                     classes: 10, humanLabels: c10["aggre_label"]!)
        XCTAssertEqual(r.realisedRate, 0.0901, accuracy: 5e-5)
    }

    /// `FILE.pt:KEY` and `FILE.npy` are parsed in one place, and a spec encodes as the text it
    /// was written as (stored configurations and run keys do not change with the type).
    func testLabelSpecParsesAndRoundTrips() throws {
        let pt = try LabelSpec(parsing: "cifar-n/CIFAR-10_human.pt:worse_label")
        XCTAssertEqual(pt.path, "cifar-n/CIFAR-10_human.pt")
        XCTAssertEqual(pt.key, "worse_label")
        XCTAssertEqual(pt.shortName, "worse_label")
        XCTAssertEqual(pt.identityPart, "pt:worse_label")
        // The last `.pt:` splits, so a directory named `x.pt:y` stays in the path.
        let odd = try LabelSpec(parsing: "/d/a.pt:b/labels.pt:aggre_label")
        XCTAssertEqual(odd.path, "/d/a.pt:b/labels.pt")
        XCTAssertEqual(odd.key, "aggre_label")
        let npy = try LabelSpec(parsing: "/data/worse.npy")
        XCTAssertNil(npy.key)
        XCTAssertEqual(npy.shortName, "worse")
        XCTAssertEqual(npy.identityPart, "npy")
        for spec in [pt, odd, npy] {
            let json = try JSONEncoder().encode([spec])
            XCTAssertEqual(String(decoding: json, as: UTF8.self), "[\"\(spec.description.replacingOccurrences(of: "/", with: "\\/"))\"]")
            XCTAssertEqual(try JSONDecoder().decode([LabelSpec].self, from: json), [spec])
        }
        XCTAssertEqual(pt.relocated(to: "/abs/CIFAR-10_human.pt").description, "/abs/CIFAR-10_human.pt:worse_label")
        XCTAssertThrowsError(try LabelSpec(parsing: "labels.pt")) { XCTAssertTrue("\($0)".contains("name the array"), "\($0)") }
        XCTAssertThrowsError(try LabelSpec(parsing: "labels.pt:")) { XCTAssertTrue("\($0)".contains("after the colon"), "\($0)") }
        XCTAssertThrowsError(try LabelSpec(parsing: ""))
        XCTAssertThrowsError(try JSONDecoder().decode([LabelSpec].self, from: Data("[\"x.pt\"]".utf8)))
    }

    func testPickleReaderRefusesCode() throws {
        // A pickle calling os.system: GLOBAL 'os system', a string argument, REDUCE.
        var p: [UInt8] = [0x80, 2]
        p += Array("cos\nsystem\n".utf8)
        p += [0x58] + [4, 0, 0, 0] + Array("true".utf8) + [0x85, 0x52, 0x2E]
        let zip = makeStoredZip(name: "archive/data.pkl", data: p)
        FileManager.default.createFile(atPath: "\(dir!)/evil.pt", contents: Data(zip))
        XCTAssertThrowsError(try TorchLabels.readArrays("\(dir!)/evil.pt")) { XCTAssertTrue("\($0)".contains("refusing to call os.system"), "\($0)") }
    }

    /// A minimal zip with one stored member.
    func makeStoredZip(name: String, data: [UInt8]) -> [UInt8] {
        func le16(_ v: Int) -> [UInt8] { [UInt8(v & 0xff), UInt8(v >> 8 & 0xff)] }
        func le32(_ v: Int) -> [UInt8] { le16(v & 0xffff) + le16(v >> 16 & 0xffff) }
        let n = Array(name.utf8)
        var out = le32(0x0403_4b50) + le16(20) + le16(0) + le16(0) + le16(0) + le16(0) + le32(0) + le32(data.count) + le32(data.count)
        out += le16(n.count) + le16(0) + n + data
        let cd = out.count
        out += le32(0x0201_4b50) + le16(20) + le16(20) + le16(0) + le16(0) + le16(0) + le16(0) + le32(0) + le32(data.count) + le32(data.count)
        out += le16(n.count) + le16(0) + le16(0) + le16(0) + le16(0) + le32(0) + le32(0) + n
        let cdSize = out.count - cd
        out += le32(0x0605_4b50) + le16(0) + le16(0) + le16(1) + le16(1) + le32(cdSize) + le32(cd) + le16(0)
        return out
    }

    /// The real CIFAR-10 from ../shared/datasets, built by its build.py into the directory
    /// named by $SAMBENCH_TEST_CIFAR10 (CI builds it there), or found in the data directory.
    func testRealCIFAR10Loads() throws {
        let root = ProcessInfo.processInfo.environment["SAMBENCH_TEST_CIFAR10"] ?? DataDirectory.resolve(nil)
        guard FileManager.default.fileExists(atPath: (root as NSString).appendingPathComponent("cifar-10-batches-bin/data_batch_1.bin")) else {
            throw XCTSkip("real CIFAR-10 not found under \(root) (build it with ../shared/datasets/cifar10/build.py and set SAMBENCH_TEST_CIFAR10)")
        }
        let d = try CIFAR.loadCIFAR10(root: root)
        XCTAssertEqual(d.train.count, 50_000)
        XCTAssertEqual(d.test.count, 10_000)
        XCTAssertEqual(Array(d.train.labels.prefix(10)), [6, 9, 9, 4, 1, 1, 2, 7, 8, 3])
        var counts = [Int](repeating: 0, count: 10)
        for y in d.train.labels { counts[Int(y)] += 1 }
        XCTAssertEqual(counts, [Int](repeating: 5000, count: 10))
        let cleanN = sharedDir.appendingPathComponent("datasets/cifar-n/CIFAR-10_clean_label.npy").path
        if FileManager.default.fileExists(atPath: cleanN) { XCTAssertEqual(try NPY.readLabels(cleanN), d.train.labels) }
    }
}
