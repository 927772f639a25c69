// What the TOML library must not be handed: inputs that would abort toml++, refused first.
/// What the TOML library must not be handed. toml++ (inside TOMLKit, whose assertions are live in
/// every build) aborts the process when a table header's name starts with anything but a bare-key
/// character or a quote (`[égrid]`, `[=x]`, `[` at the end of a line), and when an array's next
/// value starts with `}` (`[1, }]`, `[}]`), and when a date-like value of ten characters is
/// followed by a space and a lone digit (`2000-01-01 1`, `2000-i0-g= 1`: it takes them for a date
/// and a time and asserts on the digit's end), found by fuzzing (Tests/Fuzz/regressions/suite/).
/// Those, and any non-ASCII character outside strings and comments (TOML 1.0 allows none), are
/// syntax errors found here first, with their line.
enum TOMLGuard {
    /// The first such mistake: its line and what is wrong.
    static func firstUnsafe(_ text: String) -> (line: Int, message: String)? {
        enum State { case plain, comment, basic, literal, multiBasic, multiLiteral }
        let s = Array(text.unicodeScalars)
        var state = State.plain, line = 1, i = 0
        var lineStart = true                // nothing but blanks yet on the line
        var header = false                  // inside a table header (up to the end of its line)
        var open: [Unicode.Scalar] = []     // the arrays and inline tables open in a value
        var expectValue = false             // in an array, after '[' or ',': a value or ']' comes next
        func isBlank(_ k: Int) -> Bool { at(k, " ") || at(k, "\t") }
        func startsName(_ c: Unicode.Scalar) -> Bool {
            c.isASCII && (c.properties.isAlphabetic || ("0"..."9").contains(c) || c == "_" || c == "-" || c == "\"" || c == "'" || c == "]")
        }
        func at(_ k: Int, _ c: Unicode.Scalar) -> Bool { k < s.count && s[k] == c }
        func isDigit(_ k: Int) -> Bool { k < s.count && ("0"..."9").contains(s[k]) }
        /// Where toml++ stops reading a value.
        func ends(_ k: Int) -> Bool { k < s.count && [" ", "\t", "\n", "\r", ",", "]", "}", "#"].contains(s[k]) }
        /// At a space: whether the value before it reads, to toml++, as a date (ten characters, a
        /// digit first, '-' fifth and eighth; '_' not counted) and a lone digit and the value's end follow.
        func dateThenLoneDigit() -> Bool {
            guard at(i, " "), isDigit(i + 1), ends(i + 2) else { return false }
            var token: [Unicode.Scalar] = []
            var j = i - 1
            while j >= 0, ![" ", "\t", "\n", "\r", ",", "[", "{"].contains(s[j]) {
                if s[j] != "_" { token.insert(s[j], at: 0) }
                j -= 1
            }
            return token.count == 10 && ("0"..."9").contains(token[0]) && token[4] == "-" && token[7] == "-"
        }
        func triple(_ c: Unicode.Scalar) -> Bool { at(i, c) && at(i + 1, c) && at(i + 2, c) }
        while i < s.count {
            let c = s[i]
            if c == "\n" {
                line += 1
                lineStart = true
                header = false
                if state == .comment || state == .basic || state == .literal { state = .plain }   // single-line forms end
                i += 1
                continue
            }
            let wasLineStart = lineStart
            if !isBlank(i) { lineStart = false }
            switch state {
            case .plain:
                if header {
                    // The rest of a header: its name, its closing brackets, a comment.
                } else if c == "[", open.isEmpty, wasLineStart {
                    header = true
                    var j = i + 1
                    while isBlank(j) { j += 1 }
                    if j == i + 1, at(j, "[") { j += 1; while isBlank(j) { j += 1 } }
                    if j < s.count, !startsName(s[j]) {
                        let what = s[j] == "\n" || s[j] == "\r" ? "the end of the line" : "'\(Character(s[j]))'"
                        return (line, "a table header needs a name (letters, digits, _ or -, or a quoted name), found \(what)")
                    }
                } else {
                    if expectValue, !isBlank(i), c != "\r", c != "#" {
                        if c == "}" { return (line, "'}' where an array's next value should be (an array ends with ']')") }
                        expectValue = false
                    }
                    if dateThenLoneDigit() {
                        return (line, "a value followed by a lone digit ('\(Character(s[i + 1]))'): a date with a time is written 1979-05-27T07:32:00 or 1979-05-27 07:32:00")
                    }
                    if c == "[" { open.append(c); expectValue = true }
                    else if c == "{" { open.append(c) }
                    else if c == "]" || c == "}" { _ = open.popLast() }
                    else if c == ",", open.last == "[" { expectValue = true }
                }
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
