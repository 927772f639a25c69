import Foundation

/// Writes a line to standard output immediately (unbuffered), so progress shows in pipes too.
func emit(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
