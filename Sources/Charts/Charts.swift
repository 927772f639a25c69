// The report's charts: which are drawn for which groups, their files, and the helpers that order and title groups.
import Datasets
import Foundation
import Report
import Suites
import Training

public struct ChartOptions: Sendable {
    public var directory: String
    public var scale: Double = 1
    public var svg = false
    public var reference: [ReferencePoint] = []
    public var date = ISO8601DateFormatter().string(from: Date())

    public init(directory: String) { self.directory = directory }
}

/// A chart as written: its PNG (and SVG when asked), its title and subtitle (the alt text of
/// an HTML page).
public struct ChartFile: Sendable, Equatable {
    public var png: String
    public var svg: String?
    public var title: String
    public var subtitle: String
    public var paths: [String] { [png] + (svg.map { [$0] } ?? []) }
}

/// The report's charts: the headline (SAM minus SGD, paired by seed, against the noise rate),
/// accuracy against noise rate (one line per optimizer, hatched 95% bands), a rho-by-noise
/// heatmap, and learning curves with memorisation, banded over seeds.
public enum Charts {
    static let size = (w: 1600.0, h: 1000.0)

    /// Draws every chart the report has data for; returns the files written. Groups are put
    /// together by their keys: a chart of accuracy against noise per family (the setting but for
    /// its noise rate; a clean group joins the families of its base setting at rate 0), curves
    /// per setting. File names come from the (unique) labels, made unique again if two slugs meet.
    public static func render(_ report: Report, options: ChartOptions) throws -> [ChartFile] {
        try naming(report.groups) { try renderCharts(report, options: options) }
    }

    /// Each group's name in the charts' legends and columns (`mixup α=8 + SAM ρ=0.1`), by group.
    public static func legendNames(_ report: Report) -> [String: String] {
        naming(report.groups) { Dictionary(report.groups.map { ($0.group, configurationTitle($0)) }, uniquingKeysWith: { a, _ in a }) }
    }

    private static func renderCharts(_ report: Report, options: ChartOptions) throws -> [ChartFile] {
        try FileManager.default.createDirectory(atPath: options.directory, withIntermediateDirectories: true)
        let finished = report.groups.filter { $0.accuracy != nil }
        var written: [ChartFile] = []
        var names = Set<String>()
        func name(_ prefix: String, _ label: String, _ key: String) -> String {
            var n = "\(prefix)_\(slug(label))"
            if !names.insert(n).inserted { n += "_\(key.prefix(8))"; names.insert(n) }
            return n
        }
        var families: [String] = []
        for g in finished where g.noiseRate != nil && !families.contains(familyKey(g)) { families.append(familyKey(g)) }
        for f in families {
            let members = finished.filter { $0.noiseRate != nil && familyKey($0) == f }
            let base = members[0].baseKey
            let groups = members + finished.filter { $0.noiseKind == .none && base != nil && $0.baseKey == base }
            let label = members[0].family ?? members[0].setting
            let compared = Set(groups.map(\.group))
            let headline = report.comparisons.filter { compared.contains($0.group) && $0.difference != nil }
            if !headline.isEmpty {
                written += try draw(name(report.samAgainstSGD(headline) ? "sam-minus-sgd" : "minus-baseline", label, f), report, options) {
                    try difference($0, groups, report, label)
                }
            }
            written += try draw(name("accuracy-vs-noise", label, f), report, options) { try accuracyVsNoise($0, groups, report, label, options) }
            if groups.contains(where: { !isBaseline($0, report) }) {
                written += try draw(name("rho-heatmap", label, f), report, options) { try heatmap($0, groups, report, label) }
            }
        }
        var settings: [String] = []
        for g in finished where !settings.contains(g.settingIdentity) { settings.append(g.settingIdentity) }
        // Per-class accuracy where the noise is class-dependent (asymmetric, pair flips, human labels).
        for s in settings {
            let groups = finished.filter { $0.settingIdentity == s && $0.perClass != nil }
            guard let g = groups.first, [.asymmetric, .asymmetricBlocks, .pairflip, .human].contains(g.noiseKind) else { continue }
            written += try draw(name("per-class", g.setting, s), report, options) { try perClass($0, groups, report) }
        }
        for s in settings {
            let groups = finished.filter { $0.settingIdentity == s && !$0.curve.isEmpty }
            guard let label = groups.first?.setting else { continue }
            written += try draw(name("curves", label, s), report, options) { try curves($0, groups, label) }
        }
        return written
    }

    /// Runs `body` on a PNG canvas (and an SVG one when asked) and writes the files.
    static func draw(_ name: String, _ report: Report, _ options: ChartOptions, _ body: (Canvas) throws -> String) throws -> [ChartFile] {
        let png = (options.directory as NSString).appendingPathComponent(name + ".png")
        let canvas = try Canvas(width: size.w, height: size.h, scale: options.scale)
        let title = try body(canvas)
        let text = [("Title", title), ("Software", "sambench \(report.sambenchVersion)"),
                    ("Suite", report.suites.joined(separator: ", ")), ("Runs", String(report.runs)),
                    ("Metric", report.metric.title), ("Creation Time", options.date)]
        try canvas.finish(pngPath: png, text: text)
        var out = ChartFile(png: png, title: title, subtitle: canvas.subtitle)
        if options.svg {
            let svg = (options.directory as NSString).appendingPathComponent(name + ".svg")
            let c = try Canvas(width: size.w, height: size.h, scale: options.scale, svgPath: svg)
            _ = try body(c)
            try c.finish(pngPath: nil, text: [])
            out.svg = svg
        }
        return [out]
    }

    // MARK: grouping

    /// The family's identity: its key, or (reports made before family keys) its label.
    static func familyKey(_ g: Group) -> String { g.familyKey ?? g.family ?? g.setting }

    static func isClean(_ g: Group) -> Bool { g.noiseKind == .none }

    static func slug(_ s: String) -> String {
        let mapped = s.lowercased().map { $0.isLetter || $0.isNumber || $0 == "." ? $0 : "-" }
        return String(mapped).split(separator: "-").joined(separator: "-")
    }

    static func rate(_ g: Group) -> Double { isClean(g) ? 0 : g.noiseRate ?? 0 }

    /// `SGD`, `SAM ρ=0.05`, `ASAM ρ=0.5 m=32`, `SAM ρ=0.05 k=5`; a method other than
    /// cross-entropy first: `mixup α=1 + SGD`. With `tuned: false`, without what is chosen on
    /// validation (rho, the method's parameters): `SAM`, `mixup + SGD`.
    static func configurationTitle(_ g: Group, tuned: Bool = true) -> String {
        var parts = [g.optimizer.title]
        if tuned, let rho = g.rho { parts.append("ρ=\(Float(rho))") }
        if let m = g.axes?["micro_batch"] { parts.append("m=\(m)") }
        if let k = g.axes?["look_interval"], k != "1" { parts.append("k=\(k)") }
        let optimizer = parts.joined(separator: " ")
        guard let method = g.axes?["method"], method != "ce" else { return optimizer }
        let parameters = tuned ? (Methods.named(method)?.parameters ?? []).compactMap { p -> String? in
            guard let text = g.axes?[p.name] else { return nil }
            let atDefault = Double(text).map { Float($0) == Float(p.defaultValue) } ?? false
            return atDefault && !varyingParameters.contains("\(method).\(p.name)") ? nil : "\(symbol(p.name))=\(short(text))"
        } : []
        return ([method] + parameters).joined(separator: " ") + " + " + optimizer
    }

    /// The method parameters that take several values among the groups being drawn, as
    /// "method.parameter". A chart names a method's parameter only where it is away from the
    /// method's default (`mixup α=8 + SGD`, but `gce + SGD` at its q = 0.7 and `coteaching + SGD`
    /// at its defaults: a legend of every parameter did not fit) or is one of these (`mixup α=1`
    /// beside `mixup α=8`, never a bare `mixup`).
    @TaskLocal static var varyingParameters: Set<String> = []

    /// Runs `body` with the varying parameters of `groups` in force.
    static func naming<T>(_ groups: [Group], _ body: () throws -> T) rethrows -> T {
        var values: [String: Set<String>] = [:]
        for g in groups {
            guard let method = g.axes?["method"], let d = Methods.named(method) else { continue }
            for p in d.parameters { if let v = g.axes?[p.name] { values["\(method).\(p.name)", default: []].insert(short(v)) } }
        }
        return try $varyingParameters.withValue(Set(values.filter { $0.value.count > 1 }.keys), operation: body)
    }

    /// A stored axis value as a chart writes it: `8` for "8.0", `0.7`.
    static func short(_ text: String) -> String { Double(text).map(MethodConfig.format) ?? text }

    /// What is tuned on validation, as a chart writes it beside a point: `ρ=0.1`, `α=1`.
    static func tunedNote(_ g: Group) -> String {
        ReportBuilder.tunedAxes.sorted().compactMap { a in g.axes?[a].map { "\(symbol(a))=\(short($0))" } ?? (a == "rho" ? g.rho.map { "ρ=\(Float($0))" } : nil) }
            .joined(separator: " ")
    }

    static func symbol(_ axis: String) -> String { ["rho": "ρ", "alpha": "α", "beta": "β"][axis] ?? axis }

    /// Whether a group is the report's baseline (SGD with cross-entropy unless the suite named
    /// another; by the optimizer alone in reports made before axes).
    static func isBaseline(_ g: Group, _ report: Report) -> Bool {
        guard let axes = g.axes else { return g.optimizer == .sgd }
        return (report.baseline ?? .standard).matches(axes)
    }

    /// The order of configurations in legends and columns: the baseline first, then by method,
    /// optimizer family, rho, title.
    static func ordered(_ groups: [Group], _ report: Report) -> [String] {
        var first: [String: Group] = [:]
        for g in groups where first[configurationTitle(g)] == nil { first[configurationTitle(g)] = g }
        func rank(_ g: Group) -> (Int, String, Int, Double) {
            (isBaseline(g, report) ? 0 : 1, g.axes?["method"] ?? "ce", OptimizerFamily.allCases.firstIndex(of: g.optimizer) ?? 0, g.rho ?? 0)
        }
        return first.keys.sorted { a, b in
            let (ra, rb) = (rank(first[a]!), rank(first[b]!))
            if ra.0 != rb.0 { return ra.0 < rb.0 }
            if ra.1 != rb.1 { return ra.1 == "ce" || (rb.1 != "ce" && ra.1 < rb.1) }
            if ra.2 != rb.2 { return ra.2 < rb.2 }
            return ra.3 != rb.3 ? ra.3 < rb.3 : a < b
        }
    }
}
