// Conditions `FIELD OP VALUE` over runs or groups, for --filter and [[expect]] `where`.
import Foundation

/// Comma-separated conditions `FIELD OP VALUE`, all of which must hold: `optimizer=sam,rho<=0.05`.
/// Operators: = != < <= > >= (numbers compare as numbers, to Float precision) and ~ (contains).
/// Used by `sambench run --filter` (over runs) and by suite expectations (over groups).
public struct Conditions: Sendable, Equatable, Codable {
    public struct Condition: Sendable, Equatable, Codable {
        public var field: String
        public var op: String
        public var value: String
    }
    public private(set) var conditions: [Condition] = []
    public let text: String

    /// Parses `text`, accepting only `fields`; errors say what is wrong (callers add where).
    public init(_ text: String, fields: [String]) throws {
        self.text = text
        for part in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !part.isEmpty {
            guard let op = ["<=", ">=", "!=", "=", "<", ">", "~"].first(where: { part.contains($0) }), let r = part.range(of: op) else {
                throw ConditionError("'\(part)' is not FIELD OP VALUE (operators = != < <= > >= ~)")
            }
            let field = part[..<r.lowerBound].trimmingCharacters(in: .whitespaces)
            let value = part[r.upperBound...].trimmingCharacters(in: .whitespaces)
            guard fields.contains(field) else {
                throw ConditionError("unknown field '\(field)'" + (suggestion(for: field, among: fields).map { "; did you mean '\($0)'?" } ?? "")
                                     + " (fields: \(fields.joined(separator: ", ")))")
            }
            conditions.append(Condition(field: field, op: op, value: value))
        }
        guard !conditions.isEmpty else { throw ConditionError("an empty expression") }
    }

    /// Whether every condition holds; `value(field)` gives a field's value (nil: absent, which
    /// only `!=` accepts).
    public func matches(_ value: (String) -> String?) -> Bool {
        conditions.allSatisfy { c in
            guard let v = value(c.field) else { return c.op == "!=" }
            if c.op == "~" { return v.contains(c.value) }
            if let a = Double(v), let b = Double(c.value) {
                let equal = Float(a) == Float(b)
                switch c.op {
                case "=": return equal
                case "!=": return !equal
                case "<": return a < b && !equal
                case "<=": return a < b || equal
                case ">": return a > b && !equal
                default: return a > b || equal
                }
            }
            switch c.op {
            case "=": return v == c.value
            case "!=": return v != c.value
            case "<": return v < c.value
            case "<=": return v <= c.value
            case ">": return v > c.value
            default: return v >= c.value
            }
        }
    }
}

public struct ConditionError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}
