// A cairo canvas in logical units, rendered to PNG or SVG, and its colours.
import CCairo
import Foundation

/// An RGB colour, components in [0, 1].
struct Colour {
    var r, g, b: Double
    init(_ hex: UInt32) {
        r = Double(hex >> 16 & 0xFF) / 255
        g = Double(hex >> 8 & 0xFF) / 255
        b = Double(hex & 0xFF) / 255
    }
    init(r: Double, g: Double, b: Double) { (self.r, self.g, self.b) = (r, g, b) }

    static let black = Colour(0x000000), grey = Colour(0x666666), lightGrey = Colour(0xDDDDDD), white = Colour(0xFFFFFF)
    /// Okabe & Ito's colour-blind-safe palette, in the order series take it.
    static let series = [Colour(0x0072B2), Colour(0xD55E00), Colour(0x009E73), Colour(0xE69F00), Colour(0xCC79A7), Colour(0x56B4E9), Colour(0x000000)]

    /// viridis (perceptually uniform, colour-blind-safe), t in [0, 1].
    static func viridis(_ t: Double) -> Colour {
        let stops: [UInt32] = [0x440154, 0x3B528B, 0x21918C, 0x5EC962, 0xFDE725]
        let x = min(max(t, 0), 1) * Double(stops.count - 1)
        let i = min(Int(x), stops.count - 2), f = x - Double(i)
        let a = Colour(stops[i]), b = Colour(stops[i + 1])
        return Colour(r: a.r + (b.r - a.r) * f, g: a.g + (b.g - a.g) * f, b: a.b + (b.b - a.b) * f)
    }

    var luminance: Double { 0.2126 * r + 0.7152 * g + 0.0722 * b }
}

/// A cairo drawing in logical units (1600 x 1000 by default), rendered at `scale` to a PNG
/// (through libpng, with text chunks) or to an SVG.
final class Canvas {
    let width: Double, height: Double, scale: Double
    private let surface: OpaquePointer
    let cr: OpaquePointer
    private let svg: Bool
    /// The chart's subtitle, as drawn (what it shows, for alt text).
    var subtitle = ""

    init(width: Double, height: Double, scale: Double, svgPath: String? = nil) throws {
        self.width = width
        self.height = height
        self.scale = scale
        svg = svgPath != nil
        if let svgPath {
            surface = cairo_svg_surface_create(svgPath, width * scale, height * scale)
        } else {
            surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, Int32((width * scale).rounded()), Int32((height * scale).rounded()))
        }
        guard cairo_surface_status(surface) == CAIRO_STATUS_SUCCESS else {
            throw ChartError("cairo: \(String(cString: cairo_status_to_string(cairo_surface_status(surface))))")
        }
        cr = cairo_create(surface)
        cairo_scale(cr, scale, scale)
        fill(x: 0, y: 0, w: width, h: height, .white)
        cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL)
    }

    deinit {
        cairo_destroy(cr)
        cairo_surface_destroy(surface)
    }

    func colour(_ c: Colour, alpha: Double = 1) { cairo_set_source_rgba(cr, c.r, c.g, c.b, alpha) }

    func fill(x: Double, y: Double, w: Double, h: Double, _ c: Colour, alpha: Double = 1) {
        colour(c, alpha: alpha)
        cairo_rectangle(cr, x, y, w, h)
        cairo_fill(cr)
    }

    func line(_ points: [(Double, Double)], _ c: Colour, width: Double = 3, dash: [Double] = [], alpha: Double = 1) {
        guard let first = points.first else { return }
        colour(c, alpha: alpha)
        cairo_set_line_width(cr, width)
        cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND)
        dash.withUnsafeBufferPointer { cairo_set_dash(cr, $0.baseAddress, Int32(dash.count), 0) }
        cairo_move_to(cr, first.0, first.1)
        for p in points.dropFirst() { cairo_line_to(cr, p.0, p.1) }
        cairo_stroke(cr)
        cairo_set_dash(cr, nil, 0, 0)
    }

    /// A closed polygon, filled.
    func polygon(_ points: [(Double, Double)], _ c: Colour, alpha: Double) {
        guard let first = points.first else { return }
        colour(c, alpha: alpha)
        cairo_move_to(cr, first.0, first.1)
        for p in points.dropFirst() { cairo_line_to(cr, p.0, p.1) }
        cairo_close_path(cr)
        cairo_fill(cr)
    }

    func circle(_ x: Double, _ y: Double, radius: Double, _ c: Colour, filled: Bool = true) {
        colour(c)
        cairo_new_sub_path(cr)
        cairo_arc(cr, x, y, radius, 0, 2 * Double.pi)
        if filled { cairo_fill(cr) } else { cairo_set_line_width(cr, 2.5); cairo_stroke(cr) }
    }

    /// Marker shapes, so that series differ without colour.
    enum Shape: CaseIterable { case circle, square, triangle, invertedTriangle, diamond }

    /// A marker, filled or outlined (white inside).
    func marker(_ shape: Shape, _ x: Double, _ y: Double, radius r: Double, _ c: Colour, filled: Bool = true) {
        let points: [(Double, Double)]
        switch shape {
        case .circle:
            if !filled { circle(x, y, radius: r, .white) }
            circle(x, y, radius: r, c, filled: filled)
            return
        case .square: points = [(x - r * 0.85, y - r * 0.85), (x + r * 0.85, y - r * 0.85), (x + r * 0.85, y + r * 0.85), (x - r * 0.85, y + r * 0.85)]
        case .triangle: points = [(x, y - r * 1.1), (x + r, y + r * 0.7), (x - r, y + r * 0.7)]
        case .invertedTriangle: points = [(x, y + r * 1.1), (x + r, y - r * 0.7), (x - r, y - r * 0.7)]
        case .diamond: points = [(x, y - r * 1.15), (x + r, y), (x, y + r * 1.15), (x - r, y)]
        }
        if filled {
            polygon(points, c, alpha: 1)
        } else {
            polygon(points, .white, alpha: 1)
            line(points + [points[0]], c, width: 2.5)
        }
    }

    /// A polygon filled with parallel lines at `angle` degrees (hatching reads in print and
    /// without colour, and two overlapping bands stay apart instead of blending), edged with
    /// thin dashed lines.
    func hatch(_ points: [(Double, Double)], _ c: Colour, angle: Double, spacing: Double = 14, alpha: Double = 0.55) {
        guard let first = points.first else { return }
        cairo_save(cr)
        cairo_move_to(cr, first.0, first.1)
        for p in points.dropFirst() { cairo_line_to(cr, p.0, p.1) }
        cairo_close_path(cr)
        cairo_clip(cr)
        colour(c, alpha: 0.07)
        cairo_paint(cr)
        let xs = points.map(\.0), ys = points.map(\.1)
        let cx = (xs.min()! + xs.max()!) / 2, cy = (ys.min()! + ys.max()!) / 2
        let reach = hypot(xs.max()! - xs.min()!, ys.max()! - ys.min()!) / 2 + spacing
        let t = angle * Double.pi / 180, (dx, dy) = (cos(t), -sin(t)), (nx, ny) = (-sin(t), -cos(t))
        colour(c, alpha: alpha)
        cairo_set_line_width(cr, 1.6)
        var k = -reach
        while k <= reach {
            cairo_move_to(cr, cx + nx * k - dx * reach, cy + ny * k - dy * reach)
            cairo_line_to(cr, cx + nx * k + dx * reach, cy + ny * k + dy * reach)
            k += spacing
        }
        cairo_stroke(cr)
        cairo_restore(cr)
    }

    enum Anchor { case left, centre, right }

    /// Text with its baseline at y (or its middle at y when `middle`).
    func text(_ s: String, x: Double, y: Double, size: Double, _ c: Colour = .black, anchor: Anchor = .left, bold: Bool = false,
              middle: Bool = false, rotated: Bool = false) {
        cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL)
        cairo_set_font_size(cr, size)
        var e = cairo_text_extents_t()
        cairo_text_extents(cr, s, &e)
        let dx: Double
        switch anchor {
        case .left: dx = -e.x_bearing
        case .centre: dx = -e.x_bearing - e.width / 2
        case .right: dx = -e.x_bearing - e.width
        }
        let dy = middle ? -(e.y_bearing + e.height / 2) : 0
        colour(c)
        cairo_save(cr)
        cairo_translate(cr, x, y)
        if rotated { cairo_rotate(cr, -Double.pi / 2) }
        cairo_move_to(cr, dx, dy)
        cairo_show_text(cr, s)
        cairo_restore(cr)
    }

    func textWidth(_ s: String, size: Double) -> Double {
        cairo_set_font_size(cr, size)
        var e = cairo_text_extents_t()
        cairo_text_extents(cr, s, &e)
        return e.x_advance
    }

    /// Clips drawing to a rectangle until `unclip`.
    func clip(x: Double, y: Double, w: Double, h: Double) {
        cairo_save(cr)
        cairo_rectangle(cr, x, y, w, h)
        cairo_clip(cr)
    }

    func unclip() { cairo_restore(cr) }

    /// Ends the drawing: the SVG is complete, or the PNG is written with its text chunks.
    func finish(pngPath: String?, text: [(String, String)]) throws {
        cairo_surface_flush(surface)
        if svg {
            cairo_surface_finish(surface)
            return
        }
        guard let pngPath else { return }
        let w = Int(cairo_image_surface_get_width(surface)), h = Int(cairo_image_surface_get_height(surface))
        let stride = Int(cairo_image_surface_get_stride(surface))
        guard let data = cairo_image_surface_get_data(surface) else { throw ChartError("cairo: no image data") }
        // RGB24 is a native-endian 32-bit word per pixel, 0x00RRGGBB.
        var rgb = [UInt8](repeating: 0, count: w * h * 3)
        data.withMemoryRebound(to: UInt32.self, capacity: h * stride / 4) { words in
            for y in 0..<h {
                for x in 0..<w {
                    let p = words[y * stride / 4 + x]
                    let o = (y * w + x) * 3
                    rgb[o] = UInt8(p >> 16 & 0xFF)
                    rgb[o + 1] = UInt8(p >> 8 & 0xFF)
                    rgb[o + 2] = UInt8(p & 0xFF)
                }
            }
        }
        try PNGFile.write(rgb: rgb, width: w, height: h, text: text, to: pngPath)
    }
}
