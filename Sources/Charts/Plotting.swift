// The plotting toolkit the charts share: axes, ticks, ranges, frames, legends and titles on a Canvas.
import Foundation

extension Charts {
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
}
