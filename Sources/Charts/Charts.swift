import Datasets
import Foundation
import Report
import Suites
import Training

/// A published number to draw beside the measured ones (e.g. a paper's table), from
/// `--reference FILE` (CSV: label,noise_rate,accuracy with accuracy in percent).
public struct ReferencePoint: Sendable, Equatable {
    public var label: String
    public var noiseRate: Double
    public var accuracy: Double

    public init(label: String, noiseRate: Double, accuracy: Double) {
        self.label = label
        self.noiseRate = noiseRate
        self.accuracy = accuracy
    }

    /// Reads `label,noise_rate,accuracy` lines (a header line and `#` comments are skipped).
    public static func read(_ path: String) throws -> [ReferencePoint] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw ChartError("\(path): cannot read the reference file") }
        var out: [ReferencePoint] = []
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || (i == 0 && line.lowercased().hasPrefix("label")) { continue }
            let f = line.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard f.count == 3, let rate = Double(f[1]), let acc = Double(f[2]), (0...1).contains(rate), (0...100).contains(acc) else {
                throw ChartError("\(path):\(i + 1): expected label,noise_rate,accuracy with a rate in [0, 1] and an accuracy in percent; got '\(line)'")
            }
            out.append(ReferencePoint(label: f[0], noiseRate: rate, accuracy: acc))
        }
        return out
    }
}

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
        let parameters = tuned ? Methods.parameterNames.compactMap { p in g.axes?[p].map { "\(symbol(p))=\($0)" } } : []
        return ([method] + parameters).joined(separator: " ") + " + " + optimizer
    }

    /// What is tuned on validation, as a chart writes it beside a point: `ρ=0.1`, `α=1`.
    static func tunedNote(_ g: Group) -> String {
        ReportBuilder.tunedAxes.sorted().compactMap { a in g.axes?[a].map { "\(symbol(a))=\($0)" } ?? (a == "rho" ? g.rho.map { "ρ=\(Float($0))" } : nil) }
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

    // MARK: plotting helpers

    struct Axis {
        var lo: Double, hi: Double, p0: Double, p1: Double
        func at(_ v: Double) -> Double { p0 + (v - lo) / (hi - lo) * (p1 - p0) }
    }

    /// About `count` round tick values covering [lo, hi].
    static func ticks(_ lo: Double, _ hi: Double, count: Int = 6) -> [Double] {
        let span = max(hi - lo, 1e-9)
        let raw = span / Double(count)
        let mag = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 2.5, 5, 10].map { $0 * mag }.first { $0 >= raw }!
        var out: [Double] = []
        var v = ceil(lo / step - 1e-9) * step
        while v <= hi + 1e-9 * step { out.append(abs(v) < 1e-12 ? 0 : v); v += step }
        return out
    }

    /// Rounds the data range out to whole ticks.
    static func range(_ values: [Double], pad: Double = 0.05) -> (Double, Double) {
        guard let lo = values.min(), let hi = values.max() else { return (0, 1) }
        let p = max((hi - lo) * pad, 0.5)
        let t = ticks(lo - p, hi + p)
        let step = t.count > 1 ? t[1] - t[0] : 1
        return (floor((lo - p) / step) * step, ceil((hi + p) / step) * step)
    }

    static func frame(_ c: Canvas, x: Axis, y: Axis, xTicks: [Double], yTicks: [Double], xFormat: (Double) -> String,
                      yFormat: (Double) -> String, xLabel: String, yLabel: String) {
        for t in yTicks {
            c.line([(x.p0, y.at(t)), (x.p1, y.at(t))], .lightGrey, width: 1.5)
            c.text(yFormat(t), x: x.p0 - 14, y: y.at(t), size: 22, .grey, anchor: .right, middle: true)
        }
        for t in xTicks {
            c.line([(x.at(t), y.p0), (x.at(t), y.p0 + 8)], .grey, width: 2)
            c.text(xFormat(t), x: x.at(t), y: y.p0 + 36, size: 22, .grey, anchor: .centre)
        }
        c.line([(x.p0, y.p1), (x.p0, y.p0), (x.p1, y.p0)], .grey, width: 2)
        c.text(xLabel, x: (x.p0 + x.p1) / 2, y: y.p0 + 80, size: 26, anchor: .centre)
        c.text(yLabel, x: x.p0 - 95, y: (y.p0 + y.p1) / 2, size: 26, anchor: .centre, rotated: true)
    }

    /// How a series looks: colour, and for reading without colour a marker shape, a dash
    /// pattern and a hatching angle, each taken in turn.
    struct Style {
        var colour: Colour
        var shape: Canvas.Shape
        var dash: [Double]
        var hatch: Double
        static let dashes: [[Double]] = [[], [16, 8], [4, 7], [20, 6, 4, 6]]
        static let hatches: [Double] = [45, -45, 0, 90]

        static func at(_ i: Int) -> Style {
            Style(colour: Colour.series[i % Colour.series.count], shape: Canvas.Shape.allCases[i % Canvas.Shape.allCases.count],
                  dash: dashes[i % dashes.count], hatch: hatches[i % hatches.count])
        }
    }

    struct LegendItem {
        var name: String
        var style: Style
        var line = true
        var marker = true
        var filled = true
        /// A bar swatch instead: true for a hatched one (as the bars of odd series are).
        var swatch: Bool? = nil
    }

    /// The legend, in a column right of the plot: never over the data. Each entry shows its
    /// line's dash pattern and its marker.
    static func legend(_ c: Canvas, _ items: [LegendItem], x: Double, y: Double) {
        for (i, item) in items.enumerated() {
            let yy = y + Double(i) * 44
            if let hatched = item.swatch {
                c.fill(x: x + 10, y: yy - 13, w: 36, h: 26, item.style.colour, alpha: 0.85)
                if hatched { c.hatch([(x + 10, yy - 13), (x + 46, yy - 13), (x + 46, yy + 13), (x + 10, yy + 13)], .white, angle: item.style.hatch, spacing: 8, alpha: 0.8) }
            }
            if item.line { c.line([(x, yy), (x + 56, yy)], item.style.colour, width: 4, dash: item.style.dash) }
            if item.marker { c.marker(item.style.shape, x + 28, yy, radius: 9, item.style.colour, filled: item.filled) }
            // A long name is set smaller rather than cut at the canvas's edge.
            let room = c.width - (x + 70) - 12, wide = c.textWidth(item.name, size: 22)
            c.text(item.name, x: x + 70, y: yy, size: wide > room ? max(12, 22 * room / wide) : 22, middle: true)
        }
    }

    /// Places short labels beside points without covering any marker or another label: tries
    /// right-above, right-below, left-above, left-below, and keeps the first free place.
    struct LabelPlacer {
        var taken: [(x0: Double, y0: Double, x1: Double, y1: Double)] = []

        mutating func avoid(x: Double, y: Double, radius: Double) { taken.append((x - radius, y - radius, x + radius, y + radius)) }

        mutating func place(_ text: String, x: Double, y: Double, size: Double, width: Double, limit: (Double, Double)) -> (x: Double, y: Double, anchor: Canvas.Anchor) {
            let h = size * 1.1
            let candidates: [(Double, Double, Canvas.Anchor)] = [(x + 14, y - 14, .left), (x + 14, y + 14 + h, .left), (x - 14, y - 14, .right), (x - 14, y + 14 + h, .right)]
            func box(_ c: (Double, Double, Canvas.Anchor)) -> (x0: Double, y0: Double, x1: Double, y1: Double) {
                c.2 == .left ? (c.0, c.1 - h, c.0 + width, c.1 + 4) : (c.0 - width, c.1 - h, c.0, c.1 + 4)
            }
            func free(_ b: (x0: Double, y0: Double, x1: Double, y1: Double)) -> Bool {
                b.x0 >= limit.0 && b.x1 <= limit.1 && !taken.contains { $0.x0 < b.x1 && b.x0 < $0.x1 && $0.y0 < b.y1 && b.y0 < $0.y1 }
            }
            let chosen = candidates.first { free(box($0)) } ?? candidates[0]
            taken.append(box(chosen))
            return (chosen.0, chosen.1, chosen.2)
        }
    }

    static func titles(_ c: Canvas, _ title: String, _ subtitle: String) {
        c.text(title, x: 60, y: 62, size: 34, bold: true)
        c.text(subtitle, x: 60, y: 102, size: 22, .grey)
        c.subtitle = subtitle
    }

    // MARK: charts

    static func accuracyVsNoise(_ c: Canvas, _ groups: [Group], _ report: Report, _ family: String, _ options: ChartOptions) throws -> String {
        struct Series { var name: String; var style: Style; var points: [(rate: Double, mean: Double, ci: Double?, note: String?)] }
        var series: [Series] = []
        // One series per configuration; where every setting chose among a configuration's rhos (or
        // method parameters) on validation, one series of the chosen ones, each point annotated.
        var done = Set<String>()
        for configuration in ordered(groups, report) where !done.contains(configuration) {
            let g0 = groups.first { configurationTitle($0) == configuration }!
            let family = groups.filter { configurationTitle($0, tuned: false) == configurationTitle(g0, tuned: false) }
            let settings = Set(family.map(\.settingIdentity))
            let selected = report.comparisons.filter { c in c.selected && family.contains { $0.group == c.group } }
            let titles = Set(family.map { configurationTitle($0) })
            if titles.count > 1 && selected.count == settings.count {
                let points = selected.compactMap { s in family.first { $0.group == s.group } }.sorted { rate($0) < rate($1) }
                series.append(Series(name: "\(configurationTitle(g0, tuned: false)), chosen on validation", style: .at(series.count),
                                     points: points.map { (rate($0), $0.accuracy!.mean, $0.accuracy!.ci95, tunedNote($0)) }))
                done.formUnion(titles)
            } else {
                let points = groups.filter { configurationTitle($0) == configuration }.sorted { rate($0) < rate($1) }
                series.append(Series(name: configuration, style: .at(series.count), points: points.map { (rate($0), $0.accuracy!.mean, $0.accuracy!.ci95, nil) }))
                done.insert(configuration)
            }
        }
        let refs = options.reference
        let values = series.flatMap { $0.points.flatMap { [100 * ($0.mean - ($0.ci ?? 0)), 100 * ($0.mean + ($0.ci ?? 0))] } } + refs.map(\.accuracy)
        let (ylo, yhi) = range(values)
        let rates = Set(series.flatMap { $0.points.map(\.rate) } + refs.map(\.noiseRate)).sorted()
        // From 0 when a clean run is there, else around the rates measured.
        let first = rates.first ?? 0, last = rates.last ?? 1
        let margin = max((last - first) * 0.08, 0.04)
        let x = Axis(lo: first == 0 ? 0 : first - margin, hi: last + margin, p0: 170, p1: 1130), y = Axis(lo: ylo, hi: yhi, p0: 860, p1: 150)
        let title = "Test accuracy against label noise: \(family)"
        titles(c, title, "\(report.metric.title); mean over seeds; hatched band (or bar, for a single point): 95% CI")
        frame(c, x: x, y: y, xTicks: rates, yTicks: ticks(ylo, yhi), xFormat: { String(format: "%g%%", 100 * $0) },
              yFormat: { String(format: "%g", $0) }, xLabel: "noise rate", yLabel: "test accuracy (%)")
        c.clip(x: x.p0, y: y.p1, w: x.p1 - x.p0, h: y.p0 - y.p1)
        // Bands: hatched, each series at its own angle, so that overlaps read in grey print.
        for s in series where s.points.count > 1 && s.points.allSatisfy({ $0.ci != nil }) {
            let upper = s.points.map { (x.at($0.rate), y.at(100 * ($0.mean + $0.ci!))) }
            let lower = s.points.reversed().map { (x.at($0.rate), y.at(100 * ($0.mean - $0.ci!))) }
            c.hatch(upper + lower, s.style.colour, angle: s.style.hatch)
            c.line(upper, s.style.colour, width: 1.2, alpha: 0.8)
            c.line(lower, s.style.colour, width: 1.2, alpha: 0.8)
        }
        var placer = LabelPlacer()
        // Each published series its own black marker (filled and open diamonds, then squares), so
        // that two of them (the paper's SGD and SAM) read apart; drawn first, the data on top.
        let refLabels = Set(refs.map(\.label)).sorted()
        let refShapes: [(shape: Canvas.Shape, filled: Bool)] = [(.diamond, true), (.diamond, false), (.square, true), (.square, false), (.circle, false)]
        func refMarker(_ label: String) -> (shape: Canvas.Shape, filled: Bool) { refShapes[refLabels.firstIndex(of: label)! % refShapes.count] }
        for r in refs {
            let m = refMarker(r.label)
            c.marker(m.shape, x.at(r.noiseRate), y.at(r.accuracy), radius: 10, .black, filled: m.filled)
            placer.avoid(x: x.at(r.noiseRate), y: y.at(r.accuracy), radius: 11)
        }
        for s in series {
            c.line(s.points.map { (x.at($0.rate), y.at(100 * $0.mean)) }, s.style.colour, width: 4, dash: s.style.dash)
            let banded = s.points.count > 1 && s.points.allSatisfy { $0.ci != nil }
            for p in s.points {
                // An error bar only where no band shows the interval.
                if let ci = p.ci, !banded {
                    c.line([(x.at(p.rate), y.at(100 * (p.mean - ci))), (x.at(p.rate), y.at(100 * (p.mean + ci)))], s.style.colour, width: 2)
                }
                c.marker(s.style.shape, x.at(p.rate), y.at(100 * p.mean), radius: 9, s.style.colour)
                placer.avoid(x: x.at(p.rate), y: y.at(100 * p.mean), radius: 11)
            }
        }
        c.unclip()
        // The chosen rho beside each point, outside the clip so that none is cut, never on a marker.
        for s in series {
            for p in s.points {
                guard let note = p.note else { continue }
                let at = placer.place(note, x: x.at(p.rate), y: y.at(100 * p.mean), size: 19, width: c.textWidth(note, size: 19), limit: (x.p0, x.p1 + 40))
                c.text(note, x: at.x, y: at.y, size: 19, s.style.colour, anchor: at.anchor)
            }
        }
        var items = series.map { LegendItem(name: $0.name, style: $0.style) }
        for label in refLabels {
            let m = refMarker(label)
            items.append(LegendItem(name: "\(label) (reference)", style: Style(colour: .black, shape: m.shape, dash: [], hatch: 0), line: false, filled: m.filled))
        }
        legend(c, items, x: 1175, y: 170)
        return title
    }

    /// The headline: each group minus the baseline (SAM minus SGD by default), paired by seed (mean
    /// and 95% CI) against the noise rate, one series per configuration, the rho (or method
    /// parameter) chosen on validation filled and ringed, zero marked.
    static func difference(_ c: Canvas, _ groups: [Group], _ report: Report, _ family: String) throws -> String {
        let members = Dictionary(groups.map { ($0.group, $0) }, uniquingKeysWith: { a, _ in a })
        let comparisons = report.comparisons.filter { members[$0.group] != nil && $0.difference != nil }
        // One series per configuration (its title), ordered by method, optimizer, rho, title.
        let configurations = ordered(comparisons.map { members[$0.group]! }, report)
        let rates = Set(comparisons.map { rate(members[$0.group]!) }).sorted()
        let ends = comparisons.flatMap { cmp -> [Double] in
            let d = cmp.difference!
            return [100 * (d.meanDifference - (d.ci95 ?? 0)), 100 * (d.meanDifference + (d.ci95 ?? 0))]
        }
        let (ylo, yhi) = range(ends + [0])
        let first = rates.first ?? 0, last = rates.last ?? 1
        let margin = max((last - first) * 0.1, 0.05)
        let x = Axis(lo: first - margin, hi: last + margin, p0: 170, p1: 1130), y = Axis(lo: ylo, hi: yhi, p0: 860, p1: 150)
        let paper = report.samAgainstSGD(comparisons)
        let title = paper ? "SAM minus SGD: \(family)" : "Minus \(report.baselineName): \(family)"
        let anySelected = comparisons.contains(where: \.selected)
        titles(c, title, "\(report.metric.title), in points; paired by seed and noisy labels: mean and 95% CI" +
               (anySelected ? "; filled and ringed: chosen on validation" : ""))
        frame(c, x: x, y: y, xTicks: rates, yTicks: ticks(ylo, yhi), xFormat: { String(format: "%g%%", 100 * $0) },
              yFormat: { String(format: "%+g", $0).replacingOccurrences(of: "+0", with: "0") }, xLabel: "noise rate",
              yLabel: paper ? "SAM − SGD (accuracy points)" : "minus \(report.baselineName) (accuracy points)")
        c.line([(x.p0, y.at(0)), (x.p1, y.at(0))], .black, width: 2.5, dash: [12, 6])
        c.text("no difference", x: x.p1 - 8, y: y.at(0) - 10, size: 19, .grey, anchor: .right)
        // Configurations side by side at each rate, so that their intervals never overlap.
        let step = min(0.7 * (x.at(rates.count > 1 ? rates[1] : first + 0.1) - x.at(first)) / Double(max(configurations.count, 1)), 40)
        var placer = LabelPlacer()
        var items: [LegendItem] = []
        for (i, name) in configurations.enumerated() {
            let style = Style.at(i + 1)   // the baseline's style (0) is not drawn
            let offset = (Double(i) - Double(configurations.count - 1) / 2) * step
            let mine = comparisons.filter { configurationTitle(members[$0.group]!) == name }.sorted { rate(members[$0.group]!) < rate(members[$1.group]!) }
            let points = mine.map { (x.at(rate(members[$0.group]!)) + offset, y.at(100 * $0.difference!.meanDifference)) }
            if points.count > 1 { c.line(points, style.colour, width: 2.5, dash: style.dash, alpha: 0.7) }
            for (cmp, p) in zip(mine, points) {
                let d = cmp.difference!
                if let ci = d.ci95 {
                    let top = y.at(100 * (d.meanDifference + ci)), bottom = y.at(100 * (d.meanDifference - ci))
                    c.line([(p.0, top), (p.0, bottom)], style.colour, width: 3)
                    c.line([(p.0 - 8, top), (p.0 + 8, top)], style.colour, width: 3)
                    c.line([(p.0 - 8, bottom), (p.0 + 8, bottom)], style.colour, width: 3)
                }
                if cmp.selected { c.circle(p.0, p.1, radius: 16, .black, filled: false) }
                c.marker(style.shape, p.0, p.1, radius: 10, style.colour, filled: cmp.selected || !anySelected)
                placer.avoid(x: p.0, y: p.1, radius: 17)
            }
            items.append(LegendItem(name: name, style: style))
        }
        // The chosen comparisons' means, written beside them.
        for cmp in comparisons where cmp.selected || !anySelected {
            let i = configurations.firstIndex(of: configurationTitle(members[cmp.group]!))!
            let offset = (Double(i) - Double(configurations.count - 1) / 2) * step
            let px = x.at(rate(members[cmp.group]!)) + offset, py = y.at(100 * cmp.difference!.meanDifference)
            let note = String(format: "%+.1f", 100 * cmp.difference!.meanDifference)
            let at = placer.place(note, x: px, y: py, size: 20, width: c.textWidth(note, size: 20), limit: (x.p0, x.p1 + 40))
            c.text(note, x: at.x, y: at.y, size: 20, Style.at(i + 1).colour, anchor: at.anchor, bold: true)
        }
        if anySelected { items.append(LegendItem(name: "chosen on validation", style: Style(colour: .black, shape: .circle, dash: [], hatch: 0), line: false, filled: false)) }
        legend(c, items, x: 1175, y: 170)
        return title
    }

    static func heatmap(_ c: Canvas, _ groups: [Group], _ report: Report, _ family: String) throws -> String {
        let rates = Set(groups.map(rate)).sorted()
        let columns: [(String, (Group) -> Bool)] = ordered(groups, report).map { title in (title, { configurationTitle($0) == title }) }
        let means = groups.map { 100 * $0.accuracy!.mean }
        let lo = means.min()!, hi = means.max()!
        let title = "Test accuracy (%) by noise rate and \(groups.contains { ($0.axes?["method"] ?? "ce") != "ce" } ? "configuration" : "ρ"): \(family)"
        titles(c, title, "mean over seeds; colour: viridis from \(String(format: "%.1f", lo)) to \(String(format: "%.1f", hi))")
        let x0 = 230.0, y0 = 150.0, w = 1000.0, h = 700.0
        let cw = w / Double(columns.count), ch = h / Double(rates.count)
        for (j, col) in columns.enumerated() {
            c.text(col.0, x: x0 + (Double(j) + 0.5) * cw, y: y0 + h + 44, size: 22, anchor: .centre)
            for (i, r) in rates.enumerated() {
                let cx = x0 + Double(j) * cw, cy = y0 + Double(i) * ch
                guard let g = groups.first(where: { rate($0) == r && col.1($0) }) else {
                    c.fill(x: cx + 2, y: cy + 2, w: cw - 4, h: ch - 4, .lightGrey)
                    c.text("no runs", x: cx + cw / 2, y: cy + ch / 2, size: 20, .grey, anchor: .centre, middle: true)
                    continue
                }
                let v = 100 * g.accuracy!.mean
                let colour = Colour.viridis(hi > lo ? (v - lo) / (hi - lo) : 0.5)
                c.fill(x: cx + 2, y: cy + 2, w: cw - 4, h: ch - 4, colour)
                let ink: Colour = colour.luminance > 0.45 ? .black : .white
                c.text(String(format: "%.1f", v), x: cx + cw / 2, y: cy + ch / 2 - (g.accuracy!.ci95 == nil ? 0 : 12), size: min(34, ch / 3), ink,
                       anchor: .centre, bold: true, middle: true)
                if let ci = g.accuracy!.ci95 {
                    c.text(String(format: "±%.1f (n=%d)", 100 * ci, g.accuracy!.n), x: cx + cw / 2, y: cy + ch / 2 + 24, size: min(20, ch / 5), ink,
                           anchor: .centre, middle: true)
                }
            }
        }
        for (i, r) in rates.enumerated() {
            c.text(r == 0 && groups.contains(where: isClean) ? "clean" : String(format: "%g%%", 100 * r), x: x0 - 16,
                   y: y0 + (Double(i) + 0.5) * ch, size: 22, anchor: .right, middle: true)
        }
        c.text("noise rate", x: x0 - 130, y: y0 + h / 2, size: 26, anchor: .centre, rotated: true)
        c.text(groups.contains { ($0.axes?["method"] ?? "ce") != "ce" } ? "method + optimizer" : "optimizer", x: x0 + w / 2, y: y0 + h + 90, size: 26, anchor: .centre)
        // Colour bar.
        let bx = 1290.0
        for k in 0..<100 {
            let t = Double(k) / 99
            c.fill(x: bx, y: y0 + h - (t * h) - h / 100, w: 36, h: h / 100 + 1, Colour.viridis(t))
        }
        for t in ticks(lo, hi, count: 5) where t >= lo && t <= hi {
            let yy = y0 + h - (hi > lo ? (t - lo) / (hi - lo) : 0.5) * h
            c.text(String(format: "%g", t), x: bx + 50, y: yy, size: 20, .grey, middle: true)
        }
        c.text("accuracy (%)", x: bx, y: y0 - 16, size: 22)
        return title
    }

    /// Test accuracy per true class: SGD against the SAM family (the rho chosen on validation
    /// where there is one), mean over seeds with 95% CI bars.
    static func perClass(_ c: Canvas, _ groups: [Group], _ report: Report) throws -> String {
        // The baseline, then per configuration the groups chosen on validation where there was a choice.
        var shown = groups.filter { isBaseline($0, report) }
        var seen = Set<String>()
        for configuration in ordered(groups, report) {
            let untuned = configurationTitle(groups.first { configurationTitle($0) == configuration }!, tuned: false)
            guard seen.insert(untuned).inserted else { continue }
            let mine = groups.filter { !isBaseline($0, report) && configurationTitle($0, tuned: false) == untuned }
            let chosen = mine.filter { g in report.comparisons.contains { $0.group == g.group && $0.selected } }
            shown += chosen.isEmpty ? mine : chosen
        }
        shown = Array(shown.prefix(5))
        let classes = shown.map { $0.perClass!.count }.max() ?? 0
        let names: [String] = shown.first?.dataset == .cifar10 && classes == 10 ? CIFAR.cifar10ClassNames : (0..<classes).map(String.init)
        let setting = shown.first?.setting ?? ""
        let title = "Test accuracy by class: \(setting)"
        titles(c, title, "last epoch; mean over seeds, bar: 95% CI" + (shown.contains { g in report.comparisons.contains { $0.group == g.group && $0.selected } } ? "; ρ or parameters chosen on validation" : ""))
        let x = Axis(lo: 0, hi: Double(classes), p0: 170, p1: 1130), y = Axis(lo: 0, hi: 100, p0: 860, p1: 150)
        let bars = classes <= 20
        frame(c, x: x, y: y, xTicks: [], yTicks: ticks(0, 100), xFormat: { _ in "" }, yFormat: { String(format: "%g", $0) },
              xLabel: "true class", yLabel: "test accuracy (%)")
        let slot = (x.p1 - x.p0) / Double(max(classes, 1)), w = 0.8 * slot / Double(max(shown.count, 1))
        for k in 0..<classes where bars || k % 10 == 0 {
            c.text(names[k], x: x.at(Double(k) + 0.5), y: y.p0 + 30, size: classes > 10 ? 16 : 20, .grey, anchor: .centre)
        }
        for (i, g) in shown.enumerated() {
            let style = Style.at(i)
            for (k, s) in g.perClass!.enumerated() {
                guard let s else { continue }
                let cx = x.at(Double(k)) + 0.1 * slot + (Double(i) + 0.5) * w
                if bars {
                    c.fill(x: cx - w / 2, y: y.at(100 * s.mean), w: w * 0.92, h: y.p0 - y.at(100 * s.mean), style.colour, alpha: 0.85)
                    if i % 2 == 1 { c.hatch([(cx - w / 2, y.at(100 * s.mean)), (cx + w * 0.42, y.at(100 * s.mean)), (cx + w * 0.42, y.p0), (cx - w / 2, y.p0)], .white, angle: style.hatch, spacing: 8, alpha: 0.8) }
                } else {
                    c.marker(style.shape, cx, y.at(100 * s.mean), radius: 5, style.colour)
                }
                if let ci = s.ci95 {
                    c.line([(cx, y.at(100 * max(s.mean - ci, 0))), (cx, y.at(100 * min(s.mean + ci, 1)))], .black, width: 1.5)
                }
            }
        }
        legend(c, shown.enumerated().map { i, g in
            LegendItem(name: configurationTitle(g) + " (n=\(g.done))", style: .at(i), line: false, marker: !bars, swatch: bars ? i % 2 == 1 : nil)
        }, x: 1175, y: 170)
        return title
    }

    static func curves(_ c: Canvas, _ groups: [Group], _ setting: String) throws -> String {
        let hasMemorised = groups.contains { $0.curve.contains { $0.memorised != nil } }
        let banded = groups.contains { $0.curve.contains { $0.testStd != nil } }
        let title = "Learning curves: \(setting)"
        titles(c, title, "mean over seeds per epoch" + (banded ? ", hatched: ± 1 std" : "") +
               (hasMemorised ? "; memorised: accuracy of the corrupted training samples on their noisy labels" : ""))
        let epochs = groups.flatMap { $0.curve.map(\.epoch) }
        let x0 = 1.0, x1 = Double(epochs.max() ?? 1)
        typealias Panel = (label: String, mean: (CurvePoint) -> Double?, std: (CurvePoint) -> Double?)
        let panels: [Panel] = hasMemorised
            ? [("test accuracy (%)", { $0.testAccuracy }, { $0.testStd }), ("memorised (%)", { $0.memorised }, { $0.memorisedStd })]
            : [("test accuracy (%)", { $0.testAccuracy }, { $0.testStd })]
        let width = hasMemorised ? 480.0 : 960.0
        for (k, panel) in panels.enumerated() {
            let left = 150 + Double(k) * (width + 140)
            let values = groups.flatMap { $0.curve.flatMap { p -> [Double] in
                guard let m = panel.mean(p) else { return [] }
                let s = panel.std(p) ?? 0
                return [100 * (m - s), 100 * (m + s)]
            } }
            let (lo, hi) = range(values + (k == 1 ? [0] : []))
            let x = Axis(lo: x0, hi: max(x1, x0 + 1), p0: left, p1: left + width), y = Axis(lo: max(lo, 0), hi: min(hi, 100), p0: 860, p1: 150)
            frame(c, x: x, y: y, xTicks: ticks(x0, x1, count: 5).filter { $0 >= x0 }, yTicks: ticks(y.lo, y.hi),
                  xFormat: { String(format: "%g", $0) }, yFormat: { String(format: "%g", $0) }, xLabel: "epoch", yLabel: panel.label)
            c.clip(x: x.p0, y: y.p1, w: x.p1 - x.p0, h: y.p0 - y.p1)
            for (i, g) in groups.enumerated() {
                let style = Style.at(i)
                let rows = g.curve.compactMap { p in panel.mean(p).map { (epoch: Double(p.epoch), mean: $0, std: panel.std(p)) } }
                if rows.count > 1, rows.allSatisfy({ $0.std != nil }) {
                    let upper = rows.map { (x.at($0.epoch), y.at(100 * ($0.mean + $0.std!))) }
                    let lower = rows.reversed().map { (x.at($0.epoch), y.at(100 * ($0.mean - $0.std!))) }
                    c.hatch(upper + lower, style.colour, angle: style.hatch, spacing: 16, alpha: 0.4)
                }
                c.line(rows.map { (x.at($0.epoch), y.at(100 * $0.mean)) }, style.colour, width: 4, dash: style.dash)
            }
            c.unclip()
        }
        legend(c, groups.enumerated().map { i, g in LegendItem(name: configurationTitle(g) + " (n=\(g.done))", style: .at(i), marker: false) }, x: 1290, y: 170)
        return title
    }
}
