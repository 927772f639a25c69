// The line of a key in a TOML text, for located suite errors.
import Foundation

/// Finds the line of a key in a TOML text, for error messages: TOMLKit reports positions for
/// syntax errors only, not for the values it parsed. The text is scanned line by line for
/// table headers (`[grid]`, `[[optimizer]]`, counted per name) and `key =` lines; a path such as
/// `optimizer[1].rho` maps to the line that sets it. Values of a multi-line array or string do
/// not start keys. Lookups fall back to the nearest enclosing table that has a line.
struct Locator {
    private var lines: [String: Int] = [:]

    init(text: String) {
        var prefix = ""
        var arrayCounts: [String: Int] = [:]
        var inMultilineString = false
        var bracketDepth = 0
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = n + 1
            let s = raw.trimmingCharacters(in: .whitespaces)
            let quotes = s.components(separatedBy: "\"\"\"").count - 1 + s.components(separatedBy: "'''").count - 1
            defer { if quotes % 2 == 1 { inMultilineString.toggle() } }
            if inMultilineString || s.isEmpty || s.hasPrefix("#") { continue }
            if bracketDepth > 0 {
                bracketDepth += Locator.depthChange(s)
                continue
            }
            if s.hasPrefix("[["), let end = s.range(of: "]]") {
                let name = Locator.normalise(String(s[s.index(s.startIndex, offsetBy: 2)..<end.lowerBound]))
                let i = arrayCounts[name, default: 0]
                arrayCounts[name] = i + 1
                prefix = "\(name)[\(i)]"
                lines[prefix] = lines[prefix] ?? line
                lines[name] = lines[name] ?? line
                continue
            }
            if s.hasPrefix("["), let end = s.firstIndex(of: "]") {
                prefix = Locator.normalise(String(s[s.index(after: s.startIndex)..<end]))
                lines[prefix] = lines[prefix] ?? line
                continue
            }
            guard let eq = s.firstIndex(of: "=") else { continue }
            let key = Locator.normalise(String(s[..<eq]))
            guard !key.isEmpty else { continue }
            let path = prefix.isEmpty ? key : "\(prefix).\(key)"
            lines[path] = lines[path] ?? line
            bracketDepth = max(0, Locator.depthChange(String(s[s.index(after: eq)...])))
        }
    }

    /// Whether the text sets `path` itself (no fallback to a table).
    func sets(_ path: String) -> Bool { lines[path] != nil }

    /// The line that sets `path` (e.g. `grid.lr`, `noise[0].rates`), or of its nearest table.
    func line(_ path: String) -> Int? {
        var p = path
        while true {
            if let l = lines[p] { return l }
            guard let cut = p.lastIndex(where: { $0 == "." || $0 == "[" }) else { return nil }
            p = String(p[..<cut])
        }
    }

    /// `a . "b"` -> `a.b`.
    private static func normalise(_ key: String) -> String {
        key.split(separator: ".").map { $0.trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "\"'")) }
            .joined(separator: ".")
    }

    /// Opened minus closed brackets and braces outside strings and comments.
    private static func depthChange(_ s: String) -> Int {
        var depth = 0, quote: Character?
        for c in s {
            if let q = quote { if c == q { quote = nil }; continue }
            switch c {
            case "\"", "'": quote = c
            case "#": return depth
            case "[", "{": depth += 1
            case "]", "}": depth -= 1
            default: break
            }
        }
        return depth
    }
}
