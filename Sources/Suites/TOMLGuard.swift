/// What the TOML library must not be handed. toml++ (inside TOMLKit, whose assertions are live in
/// every build) aborts the process when a table header's name starts with anything but a bare-key
/// character or a quote (`[égrid]`, `[=x]`, `[` at the end of a line), found by fuzzing
/// (Tests/Fuzz/regressions/suite/). Such a header, and any non-ASCII character outside strings and
/// comments (TOML 1.0 allows none), is a syntax error found here first, with its line.
enum TOMLGuard {
    /// The first such mistake: its line and what is wrong.
    static func firstUnsafe(_ text: String) -> (line: Int, message: String)? {
        enum State { case plain, comment, basic, literal, multiBasic, multiLiteral }
        let s = Array(text.unicodeScalars)
        var state = State.plain, line = 1, i = 0
        var depth = 0, lineStart = true    // brackets open in a value; nothing but blanks yet on the line
        func isBlank(_ k: Int) -> Bool { at(k, " ") || at(k, "\t") }
        func startsName(_ c: Unicode.Scalar) -> Bool {
            c.isASCII && (c.properties.isAlphabetic || ("0"..."9").contains(c) || c == "_" || c == "-" || c == "\"" || c == "'" || c == "]")
        }
        func at(_ k: Int, _ c: Unicode.Scalar) -> Bool { k < s.count && s[k] == c }
        func triple(_ c: Unicode.Scalar) -> Bool { at(i, c) && at(i + 1, c) && at(i + 2, c) }
        while i < s.count {
            let c = s[i]
            if c == "\n" {
                line += 1
                lineStart = true
                if state == .comment || state == .basic || state == .literal { state = .plain }   // single-line forms end
                i += 1
                continue
            }
            let wasLineStart = lineStart
            if !isBlank(i) { lineStart = false }
            switch state {
            case .plain:
                if c == "[", depth == 0, wasLineStart {
                    var j = i + 1
                    while isBlank(j) { j += 1 }
                    if j == i + 1, at(j, "[") { j += 1; while isBlank(j) { j += 1 } }
                    if j < s.count, !startsName(s[j]) {
                        let what = s[j] == "\n" || s[j] == "\r" ? "the end of the line" : "'\(Character(s[j]))'"
                        return (line, "a table header needs a name (letters, digits, _ or -, or a quoted name), found \(what)")
                    }
                }
                if c == "[" || c == "{" { depth += 1 } else if c == "]" || c == "}" { depth = max(0, depth - 1) }
                if c == "#" { state = .comment }
                else if triple("\"") { state = .multiBasic; i += 2 }
                else if triple("'") { state = .multiLiteral; i += 2 }
                else if c == "\"" { state = .basic }
                else if c == "'" { state = .literal }
                else if !c.isASCII {
                    return (line, "'\(Character(c))' outside a string or comment (keys and table names are ASCII; quote a key to use other characters)")
                }
            case .comment:
                break
            case .basic:
                if c == "\\", !at(i + 1, "\n") { i += 1 } else if c == "\"" { state = .plain }
            case .literal:
                if c == "'" { state = .plain }
            case .multiBasic:
                if c == "\\", !at(i + 1, "\n") { i += 1 } else if triple("\"") { state = .plain; i += 2 }
            case .multiLiteral:
                if triple("'") { state = .plain; i += 2 }
            }
            i += 1
        }
        return nil
    }
}
