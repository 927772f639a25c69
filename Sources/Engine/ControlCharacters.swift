// Control characters in text that reaches a terminal, a file name or a shell script.
import Foundation

/// Whether a scalar is a control character: C0 (NUL, a line break, an escape...), DEL, C1 (the
/// Unicode category Cc, by its ranges: the property lookup made a 100,000-line dry run 0.5 s
/// slower), or a Unicode line or paragraph separator.
@inline(__always) func isControl(_ u: Unicode.Scalar) -> Bool {
    let v = u.value
    return v < 0x20 || (0x7F...0x9F).contains(v) || v == 0x2028 || v == 0x2029
}

/// The first control character of `s` not in `allowing`, written as U+XXXX; nil when there is
/// none. For text that must stay one line and inert: suite names, descriptions, Slurm paths.
public func firstControlCharacter(_ s: String, allowing: Set<Unicode.Scalar> = []) -> String? {
    s.unicodeScalars.first { isControl($0) && !allowing.contains($0) }.map { "U+" + String(format: "%04X", $0.value) }
}

/// `s` with every control character not in `allowing` written out as `\u{XX}`, so that text
/// read from a file or a database (a run's label, an error) cannot move the cursor, clear the
/// screen or retitle the terminal it is printed to.
public func escapingControlCharacters(_ s: String, allowing: Set<Unicode.Scalar> = ["\n", "\t"]) -> String {
    guard s.unicodeScalars.contains(where: { isControl($0) && !allowing.contains($0) }) else { return s }
    var out = String.UnicodeScalarView()
    for u in s.unicodeScalars {
        if isControl(u) && !allowing.contains(u) { out.append(contentsOf: "\\u{\(String(u.value, radix: 16, uppercase: true))}".unicodeScalars) }
        else { out.append(u) }
    }
    return String(out)
}
