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

/// The report's charts: accuracy against noise rate (one line per optimizer, 95% bands),
/// a rho-by-noise heatmap, and learning curves with memorisation.
public enum Charts {
    static let size = (w: 1600.0, h: 1000.0)

    /// Draws every chart the report has data for; returns the files written. Groups are put
    /// together by their keys: a chart of accuracy against noise per family (the setting but for
    /// its noise rate; a clean group joins the families of its base setting at rate 0), curves
    /// per setting. File names come from the (unique) labels, made unique again if two slugs meet.
    public static func render(_ report: Report, options: ChartOptions) throws -> [String] {
        try FileManager.default.createDirectory(atPath: options.directory, withIntermediateDirectories: true)
        let finished = report.groups.filter { $0.accuracy != nil }
        var written: [String] = []
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
            written += try draw(name("accuracy-vs-noise", label, f), report, options) { try accuracyVsNoise($0, groups, report, label, options) }
            if groups.contains(where: { $0.optimizer != .sgd }) {
                written += try draw(name("rho-heatmap", label, f), report, options) { try heatmap($0, groups, label) }
            }
        }
        var settings: [String] = []
        for g in finished where !settings.contains(g.settingIdentity) { settings.append(g.settingIdentity) }
        for s in settings {
            let groups = finished.filter { $0.settingIdentity == s && !$0.curve.isEmpty }
            guard let label = groups.first?.setting else { continue }
            written += try draw(name("curves", label, s), report, options) { try curves($0, groups, label) }
        }
        return written
    }

    /// Runs `body` on a PNG canvas (and an SVG one when asked) and writes the files.
    static func draw(_ name: String, _ report: Report, _ options: ChartOptions, _ body: (Canvas) throws -> String) throws -> [String] {
        let png = (options.directory as NSString).appendingPathComponent(name + ".png")
        let canvas = try Canvas(width: size.w, height: size.h, scale: options.scale)
        let title = try body(canvas)
        let text = [("Title", title), ("Software", "sambench \(report.sambenchVersion)"),
                    ("Suite", report.suites.joined(separator: ", ")), ("Runs", String(report.runs)),
                    ("Metric", report.metric.title), ("Creation Time", options.date)]
        try canvas.finish(pngPath: png, text: text)
        var out = [png]
        if options.svg {
            let svg = (options.directory as NSString).appendingPathComponent(name + ".svg")
            let c = try Canvas(width: size.w, height: size.h, scale: options.scale, svgPath: svg)
            _ = try body(c)
            try c.finish(pngPath: nil, text: [])
            out.append(svg)
        }
        return out
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

    /// `SGD`, `SAM ρ=0.05`, `ASAM ρ=0.5 m=32`, `SAM ρ=0.05 k=5`.
    static func optimizerTitle(_ g: Group) -> String {
        var parts = [g.optimizer.title]
        if let rho = g.rho { parts.append("ρ=\(Float(rho))") }
        if let m = g.axes?["micro_batch"] { parts.append("m=\(m)") }
        if let k = g.axes?["look_interval"], k != "1" { parts.append("k=\(k)") }
        return parts.joined(separator: " ")
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

    enum Mark { case line, dashed, diamond }

    /// The legend, in a column right of the plot: never over the data.
    static func legend(_ c: Canvas, _ items: [(String, Colour, Mark)], x: Double, y: Double) {
        for (i, item) in items.enumerated() {
            let yy = y + Double(i) * 44
            switch item.2 {
            case .line: c.line([(x, yy), (x + 44, yy)], item.1, width: 5)
            case .dashed: c.line([(x, yy), (x + 44, yy)], item.1, width: 5, dash: [10, 6])
            case .diamond: c.diamond(x + 22, yy, radius: 10, item.1)
            }
            c.text(item.0, x: x + 58, y: yy, size: 22, middle: true)
        }
    }

    static func titles(_ c: Canvas, _ title: String, _ subtitle: String) {
        c.text(title, x: 60, y: 62, size: 34, bold: true)
        c.text(subtitle, x: 60, y: 102, size: 22, .grey)
    }

    // MARK: charts

    static func accuracyVsNoise(_ c: Canvas, _ groups: [Group], _ report: Report, _ family: String, _ options: ChartOptions) throws -> String {
        struct Series { var name: String; var colour: Colour; var points: [(rate: Double, mean: Double, ci: Double?, note: String?)] }
        var series: [Series] = []
        let sgd = groups.filter { $0.optimizer == .sgd }.sorted { rate($0) < rate($1) }
        if !sgd.isEmpty {
            series.append(Series(name: "SGD", colour: Colour.series[0], points: sgd.map { (rate($0), $0.accuracy!.mean, $0.accuracy!.ci95, nil) }))
        }
        for optimizer in OptimizerFamily.sharpnessAware {
            let mine = groups.filter { $0.optimizer == optimizer }
            guard !mine.isEmpty else { continue }
            let configurations = Set(mine.map(optimizerTitle))
            let settings = Set(mine.map(\.settingIdentity))
            let selected = report.comparisons.filter { c in c.selected && settings.contains(c.settingKey ?? c.setting) && mine.contains { $0.group == c.samGroup } }
            if configurations.count > 1 && selected.count == settings.count {
                let points = selected.compactMap { s in mine.first { $0.group == s.samGroup } }.sorted { rate($0) < rate($1) }
                series.append(Series(name: "\(optimizer.title), ρ chosen on validation", colour: Colour.series[series.count % Colour.series.count],
                                     points: points.map { (rate($0), $0.accuracy!.mean, $0.accuracy!.ci95, "ρ=\($0.rho.map { "\(Float($0))" } ?? "")") }))
            } else {
                for configuration in configurations.sorted() {
                    let points = mine.filter { optimizerTitle($0) == configuration }.sorted { rate($0) < rate($1) }
                    series.append(Series(name: configuration, colour: Colour.series[series.count % Colour.series.count],
                                         points: points.map { (rate($0), $0.accuracy!.mean, $0.accuracy!.ci95, nil) }))
                }
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
        titles(c, title, "\(report.metric.title); mean over seeds, band: 95% CI")
        frame(c, x: x, y: y, xTicks: rates, yTicks: ticks(ylo, yhi), xFormat: { String(format: "%g%%", 100 * $0) },
              yFormat: { String(format: "%g", $0) }, xLabel: "noise rate", yLabel: "test accuracy (%)")
        c.clip(x: x.p0, y: y.p1, w: x.p1 - x.p0, h: y.p0 - y.p1)
        for s in series where s.points.count > 1 {
            let upper = s.points.map { (x.at($0.rate), y.at(100 * ($0.mean + ($0.ci ?? 0)))) }
            let lower = s.points.reversed().map { (x.at($0.rate), y.at(100 * ($0.mean - ($0.ci ?? 0)))) }
            c.polygon(upper + lower, s.colour, alpha: 0.18)
        }
        for s in series {
            c.line(s.points.map { (x.at($0.rate), y.at(100 * $0.mean)) }, s.colour, width: 4)
            for p in s.points {
                c.circle(x.at(p.rate), y.at(100 * p.mean), radius: 7, s.colour)
                if let ci = p.ci {   // error bar, also visible for a single point
                    c.line([(x.at(p.rate), y.at(100 * (p.mean - ci))), (x.at(p.rate), y.at(100 * (p.mean + ci)))], s.colour, width: 2)
                }
            }
        }
        for r in refs { c.diamond(x.at(r.noiseRate), y.at(r.accuracy), radius: 10, .black) }
        c.unclip()
        // The chosen rho beside each point, outside the clip so that none is cut.
        for s in series {
            for p in s.points {
                guard let note = p.note else { continue }
                let right = x.at(p.rate) + 14 + c.textWidth(note, size: 19) < x.p1 + 40
                c.text(note, x: x.at(p.rate) + (right ? 14 : -14), y: y.at(100 * p.mean) - 16, size: 19, s.colour, anchor: right ? .left : .right)
            }
        }
        var items = series.map { ($0.name, $0.colour, Mark.line) }
        for label in Set(refs.map(\.label)).sorted() { items.append(("\(label) (reference)", .black, .diamond)) }
        legend(c, items, x: 1175, y: 170)
        return title
    }

    static func heatmap(_ c: Canvas, _ groups: [Group], _ family: String) throws -> String {
        let rates = Set(groups.map(rate)).sorted()
        var columns: [(String, (Group) -> Bool)] = []
        if groups.contains(where: { $0.optimizer == .sgd }) { columns.append(("SGD", { $0.optimizer == .sgd })) }
        for optimizer in OptimizerFamily.sharpnessAware {
            let configurations = Set(groups.filter { $0.optimizer == optimizer }.map(optimizerTitle))
            // In rho order, then by the rest of the title.
            let ordered = configurations.sorted { a, b in
                let ra = groups.first { optimizerTitle($0) == a }?.rho ?? 0, rb = groups.first { optimizerTitle($0) == b }?.rho ?? 0
                return ra != rb ? ra < rb : a < b
            }
            for title in ordered { columns.append((title, { optimizerTitle($0) == title })) }
        }
        let means = groups.map { 100 * $0.accuracy!.mean }
        let lo = means.min()!, hi = means.max()!
        let title = "Test accuracy (%) by noise rate and ρ: \(family)"
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
        c.text("optimizer", x: x0 + w / 2, y: y0 + h + 90, size: 26, anchor: .centre)
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

    static func curves(_ c: Canvas, _ groups: [Group], _ setting: String) throws -> String {
        let hasMemorised = groups.contains { $0.curve.contains { $0.memorised != nil } }
        let title = "Learning curves: \(setting)"
        titles(c, title, "mean over seeds, per epoch" + (hasMemorised ? "; memorised: accuracy on the corrupted training samples against their noisy labels" : ""))
        let epochs = groups.flatMap { $0.curve.map(\.epoch) }
        let x0 = 1.0, x1 = Double(epochs.max() ?? 1)
        let panels: [(String, (CurvePoint) -> Double?)] = hasMemorised
            ? [("test accuracy (%)", { $0.testAccuracy }), ("memorised (%)", { $0.memorised })]
            : [("test accuracy (%)", { $0.testAccuracy })]
        let width = hasMemorised ? 480.0 : 960.0
        for (k, panel) in panels.enumerated() {
            let left = 150 + Double(k) * (width + 140)
            let values = groups.flatMap { $0.curve.compactMap(panel.1) }.map { 100 * $0 }
            let (lo, hi) = range(values + (k == 1 ? [0] : []))
            let x = Axis(lo: x0, hi: max(x1, x0 + 1), p0: left, p1: left + width), y = Axis(lo: max(lo, 0), hi: min(hi, 100), p0: 860, p1: 150)
            frame(c, x: x, y: y, xTicks: ticks(x0, x1, count: 5).filter { $0 >= x0 }, yTicks: ticks(y.lo, y.hi),
                  xFormat: { String(format: "%g", $0) }, yFormat: { String(format: "%g", $0) }, xLabel: "epoch", yLabel: panel.0)
            c.clip(x: x.p0, y: y.p1, w: x.p1 - x.p0, h: y.p0 - y.p1)
            for (i, g) in groups.enumerated() {
                let pts = g.curve.compactMap { p in panel.1(p).map { (x.at(Double(p.epoch)), y.at(100 * $0)) } }
                c.line(pts, Colour.series[i % Colour.series.count], width: 4, dash: g.optimizer == .sgd ? [] : (i % 2 == 0 ? [] : [14, 7]))
            }
            c.unclip()
        }
        legend(c, groups.enumerated().map { i, g in
            (optimizerTitle(g) + " (n=\(g.done))", Colour.series[i % Colour.series.count],
             g.optimizer == .sgd || i % 2 == 0 ? Mark.line : Mark.dashed)
        }, x: 1290, y: 170)
        return title
    }
}
