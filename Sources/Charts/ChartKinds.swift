// The five charts: accuracy against noise, the difference to the baseline, the rho heatmap, per-class accuracy, learning curves.
import Datasets
import Foundation
import Report
import Suites
import Training

extension Charts {
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
