import Foundation
import GRDB
import TestSupport
import XCTest

/// What `report` and `runs` print of a database they did not write themselves (one edited by
/// hand, or made by a crafted tool): a label or an error holding terminal codes (clear the
/// screen, retitle the window, colour everything after) is printed with those codes written
/// out, never sent to the terminal.
final class PrintedTextTests: XCTestCase {
    func testTerminalCodesFromTheDatabaseArePrintedEscaped() throws {
        let binary = try sambenchExecutable()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("printed-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let suite = dir.appendingPathComponent("s.toml").path, db = dir.appendingPathComponent("r.sqlite").path
        try RunnerTests.suite.write(toFile: suite, atomically: true, encoding: .utf8)
        let trained = try runSeparated(binary, ["run", suite, "--db", db, "--checkpoints", dir.appendingPathComponent("ck").path, "--threads", "1", "--quiet"])
        XCTAssertEqual(trained.status, 0, trained.err)
        let codes = "\u{1B}[2J\u{1B}]0;owned\u{07}\u{9B}31m\r"
        try DatabaseQueue(path: db).write { db in
            let keys = try String.fetchAll(db, sql: "SELECT key FROM runs ORDER BY key")
            try db.execute(sql: "UPDATE runs SET label = label || ? WHERE key = ?", arguments: [codes, keys[0]])
            try db.execute(sql: "UPDATE runs SET status = 'failed', error = ? WHERE key = ?", arguments: ["boom" + codes, keys[1]])
            try db.execute(sql: "UPDATE suites SET name = name || ?", arguments: [codes])
        }
        for args in [["report", "--no-charts"], ["report", "--no-charts", "--format", "markdown"], ["runs"]] {
            let r = try runSeparated(binary, args + ["--db", db])
            XCTAssertEqual(r.status, 0, "\(args): \(r.err)")
            for code in ["\u{1B}", "\u{07}", "\u{9B}", "\r"] {
                XCTAssertFalse(r.out.unicodeScalars.contains(code.unicodeScalars.first!) || r.err.unicodeScalars.contains(code.unicodeScalars.first!),
                               "\(args): U+\(String(code.unicodeScalars.first!.value, radix: 16)) printed raw:\n\(r.out)\(r.err)")
            }
            XCTAssertTrue(r.out.contains("\\u{1B}[2J\\u{1B}]0;owned\\u{7}\\u{9B}31m\\u{D}"), "\(args): \(r.out)")
        }
    }
}
