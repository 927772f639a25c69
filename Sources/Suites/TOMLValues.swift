// TOML values read for a suite: numbers, integers, strings, enum choices, unknown keys, each error located.
import Datasets
import Engine
import Foundation
import Optim
import TOMLKit
import Training

extension SuiteParser {
    var inUnit: (Double) -> String? { { (0...1).contains($0) ? nil : "a rate must be in [0, 1], got \(SettingValue.format($0))" } }

    func value(_ v: TOMLValueConvertible, _ setting: Setting, path: String) throws -> SettingValue {
        let result: SettingValue
        switch setting.type {
        case .int: result = .int(try integer(v, path: path))
        case .double: result = .double(try number(v, path: path))
        case .bool:
            guard v.type == .bool, let b = v.bool else { throw fail(path, "expected true or false, got \(describe(v))") }
            result = .bool(b)
        case .ints:
            guard let a = v.array else { throw fail(path, "expected a list of integers, got \(describe(v))") }
            result = .ints(try a.map { try integer($0, path: path) })
        case .strings:
            guard let a = v.array else { throw fail(path, "expected a list of strings, got \(describe(v))") }
            result = .strings(try a.map { e in
                guard e.type == .string, let s = e.string else { throw fail(path, "expected a list of strings, got \(describe(e)) in it") }
                return s
            })
        case let .string(choices):
            guard v.type == .string, let s = v.string else { throw fail(path, "expected \(setting.type.name), got \(describe(v))") }
            if !choices.isEmpty && !choices.contains(s) {
                throw fail(path, "expected \(setting.type.name), got \"\(s)\"" + (suggestion(for: s, among: choices).map { "; did you mean \"\($0)\"?" } ?? ""))
            }
            result = .string(s)
        }
        if let problem = setting.check(result) { throw fail(path, problem) }
        return result
    }

    /// The case of `T` a string at `t[key]` names (nil when absent). An unknown name is refused
    /// with the nearest valid one suggested, or the valid choices (`among`, by default every case
    /// of the type) listed: `what` is how the error names the value ("noise kind", "optimizer").
    func choice<T: RawRepresentable & CaseIterable>(_ t: TOMLTable, _ key: String, path: String, what: String,
                                                    among cases: [T] = Array(T.allCases)) throws -> T? where T.RawValue == String {
        guard let text = try string(t, key, path: path) else { return nil }
        return try choice(text, path: path, what: what, among: cases)
    }

    func choice<T: RawRepresentable & CaseIterable>(_ text: String, path: String, what: String,
                                                    among cases: [T] = Array(T.allCases)) throws -> T where T.RawValue == String {
        if let value = T(rawValue: text), cases.contains(where: { $0.rawValue == text }) { return value }
        let names = cases.map(\.rawValue)
        throw fail(path, "unknown \(what) \"\(text)\"" + (suggestion(for: text, among: names).map { "; did you mean \"\($0)\"?" }
                                                          ?? " (\(names.joined(separator: ", ")))"))
    }

    /// A float; integers are accepted (`lr = 1`).
    func number(_ v: TOMLValueConvertible, path: String, check: (Double) -> String? = { _ in nil }) throws -> Double {
        let x: Double
        switch v.type {
        case .double: x = v.double!
        case .int: x = Double(v.int!)
        default: throw fail(path, "expected a number, got \(describe(v))")
        }
        guard x.isFinite else { throw fail(path, "expected a finite number, got \(x)") }
        if let problem = check(x) { throw fail(path, problem) }
        return x
    }

    func integer(_ v: TOMLValueConvertible, path: String, min: Int? = nil) throws -> Int {
        guard v.type == .int, let i = v.int else { throw fail(path, "expected an integer, got \(describe(v))") }
        if let min, i < min { throw fail(path, "must be >= \(min), got \(i)") }
        return i
    }

    func string(_ t: TOMLTable, _ key: String, path: String) throws -> String? {
        guard let v = t[key] else { return nil }
        guard v.type == .string, let s = v.string else { throw fail(path, "expected a string, got \(describe(v))") }
        return s
    }

    func describe(_ v: TOMLValueConvertible) -> String {
        switch v.type {
        case .string: return "the string \"\(v.string ?? "")\""
        case .table: return "a table"
        case .array: return "a list"
        default: return "\(kind(v)) \(v.debugDescription)"
        }
    }

    func kind(_ v: TOMLValueConvertible) -> String {
        switch v.type {
        case .int: return "an integer"
        case .double: return "a float"
        case .bool: return "a boolean"
        case .string: return "a string"
        case .table: return "a table"
        case .array: return "a list"
        default: return "a date or time"
        }
    }

    /// The first value given twice, nil when none (linear: an axis may be long).
    func duplicate(_ values: [SettingValue]) -> String? {
        var seen = Set<String>()
        for v in values where !seen.insert(v.description).inserted { return v.description }
        return nil
    }

    var settingHint: (String) -> String? {
        { key in
            if Settings.noiseKeys.contains(key) && key != "seed" { return "`\(key)` belongs in a [[noise]] entry" }
            if Settings.optimizerKeys.contains(key) { return "`\(key)` belongs in an [[optimizer]] entry" }
            return nil
        }
    }

    /// Unknown keys are errors, with the closest known key as a suggestion.
    func rejectUnknown(_ t: TOMLTable, allowed: [String], path: String?, hint: (String) -> String? = { _ in nil }) throws {
        for key in t.keys.sorted() where !allowed.contains(key) {
            let p = path.map { "\($0).\(key)" } ?? key
            if let h = hint(key) { throw fail(p, "unknown key here: \(h)") }
            if let s = suggestion(for: key, among: allowed) { throw fail(p, "unknown key; did you mean `\(s)`?") }
            throw fail(p, "unknown key; expected one of \(allowed.map { "`\($0)`" }.joined(separator: ", "))")
        }
    }
}
