import Foundation

/// Writes a line to standard output immediately (unbuffered), so progress shows in pipes too.
func emit(_ line: String) {
    // A closed pipe (`| head`) must not end a long job: the write's error is ignored.
    try? FileHandle.standardOutput.write(contentsOf: Data((line + "\n").utf8))
}

/// `s` padded with spaces to `width` columns (on the left when `left`).
func pad(_ s: String, _ width: Int, left: Bool = false) -> String {
    let fill = String(repeating: " ", count: max(0, width - s.count))
    return left ? fill + s : s + fill
}
