// The baseline group every other group of a setting is compared with, and how a suite names it.
import Foundation
import TOMLKit
import Training

/// The group every other group of a setting is compared with, paired by seed and noise
/// realisation: a method and an optimizer, and optionally their parameters (`rho`, `alpha`, ...),
/// each as the text a suite writes. A suite names it as `baseline = { method = "mixup",
/// optimizer = "sgd", alpha = 1 }`; what it leaves out of `method` and `optimizer` is the default
/// (`ce`, `sgd`), a parameter left out matches any value. The default baseline, cross-entropy
/// with SGD, makes "SAM minus SGD".
public struct Baseline: Sendable, Codable, Equatable, CustomStringConvertible {
    /// Axis name (`method`, `optimizer`, or one of their parameters) to value.
    public private(set) var values: [String: String]

    public static let standard = Baseline(values: ["method": "ce", "optimizer": "sgd"])

    /// The axes a baseline may name: the method and the optimizer with their parameters.
    public static var fields: [String] { Axes.all.filter { $0.part == .method || $0.part == .optimizer }.map(\.name) }

    public var isStandard: Bool { self == .standard }
    public var method: String { values["method"] ?? "ce" }
    public var optimizer: String { values["optimizer"] ?? "sgd" }

    /// `method=ce, optimizer=sgd`, then the parameters in `Axes.all`'s order.
    public var description: String {
        Baseline.fields.compactMap { f in values[f].map { "\(f)=\($0)" } }.joined(separator: ", ")
    }

    /// A baseline from named values, checked: known fields, a known method and optimizer, and
    /// parameters that belong to them and are numbers. Errors say which value is wrong.
    public init(_ given: [String: String]) throws {
        var v = given
        v["method"] = v["method"] ?? "ce"
        v["optimizer"] = v["optimizer"] ?? "sgd"
        for key in v.keys.sorted() where !Baseline.fields.contains(key) {
            throw BaselineError(key, "`\(key)` is not a method or optimizer setting (a baseline names: \(Baseline.fields.joined(separator: ", ")))")
        }
        guard let method = Methods.named(v["method"]!) else {
            throw BaselineError("method", "unknown method \"\(v["method"]!)\" (\(Methods.all.map(\.name).joined(separator: ", ")))")
        }
        guard let optimizer = OptimizerFamily(rawValue: v["optimizer"]!) else {
            throw BaselineError("optimizer", "unknown optimizer \"\(v["optimizer"]!)\" (\(OptimizerFamily.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        let methodAxes = Set(Methods.parameterNames)
        for (key, value) in v where key != "method" && key != "optimizer" {
            if methodAxes.contains(key) {
                guard method.parameters.contains(where: { $0.name == key }) else { throw BaselineError(key, "`\(key)` is not a parameter of \(method.name)") }
                guard Double(value) != nil else { throw BaselineError(key, "`\(key)`: expected a number, got \"\(value)\"") }
            } else if optimizer == .sgd {
                throw BaselineError(key, "`\(key)` is not used by sgd")
            }
        }
        values = v
    }

    private init(values: [String: String]) { self.values = values }

    /// `method=mixup,optimizer=sgd,alpha=1`, as `sambench report --baseline` takes it.
    public init(parsing text: String) throws {
        var v: [String: String] = [:]
        for part in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !part.isEmpty {
            let kv = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard kv.count == 2, !kv[0].isEmpty, !kv[1].isEmpty else { throw BaselineError(nil, "'\(part)' is not NAME=VALUE") }
            guard v[kv[0]] == nil else { throw BaselineError(kv[0], "`\(kv[0])` given twice") }
            v[kv[0]] = kv[1]
        }
        try self.init(v)
    }

    /// Whether a group with these axis values (`Axes.values`) is the baseline. A run without a
    /// method is cross-entropy; numbers compare to Float precision, as rho does everywhere.
    public func matches(_ axes: [String: String]) -> Bool {
        values.allSatisfy { key, want in
            guard let have = axes[key] ?? (key == "method" ? "ce" : nil) else { return false }
            if let a = Double(have), let b = Double(want) { return Float(a) == Float(b) }
            return have == want
        }
    }
}

public struct BaselineError: Error, CustomStringConvertible, Sendable {
    /// The key whose value is wrong (nil: the whole text).
    public let key: String?
    public let description: String
    public init(_ key: String?, _ description: String) { (self.key, self.description) = (key, description) }
}

extension SuiteParser {
    /// `baseline = { method = "ce", optimizer = "sgd", rho = 0.1 }` (or a `[baseline]` table):
    /// strings for the method and optimizer, numbers for their parameters.
    func baseline(_ root: TOMLTable) throws -> Baseline {
        guard let v = root["baseline"] else { return .standard }
        guard let t = v.table else { throw fail("baseline", "expected a table (baseline = { method = \"ce\", optimizer = \"sgd\" }), got \(kind(v))") }
        var values: [String: String] = [:]
        for key in t.keys.sorted() {
            let path = "baseline.\(key)"
            guard Baseline.fields.contains(key) else {
                throw fail(path, "unknown key `\(key)`" + (suggestion(for: key, among: Baseline.fields).map { "; did you mean `\($0)`?" } ?? "")
                           + " (a baseline names: \(Baseline.fields.joined(separator: ", ")))")
            }
            if key == "method" || key == "optimizer" || t[key]!.type == .string {
                values[key] = try string(t, key, path: path)
            } else {
                values[key] = SettingValue.format(try number(t[key]!, path: path))
            }
        }
        do { return try Baseline(values) } catch let e as BaselineError {
            throw fail(e.key.flatMap { t[$0] != nil ? "baseline.\($0)" : nil } ?? "baseline", e.description)
        }
    }
}
