// The report as one self-contained HTML page.
import Datasets
import Engine
import Foundation
import Report
import Store
import Suites

/// The report as one self-contained HTML page: the answer first (each group minus the baseline,
/// SAM minus SGD by default, per noise setting, with CIs), the tables, every chart embedded as a PNG data URI, each run's details,
/// the conventions, and where the numbers come from. Nothing is fetched: a Content-Security-
/// Policy forbids every load but `data:` images, and the page reads without its one script (which
/// only makes the tables sortable). Every string from the database or a suite is escaped.
public enum HTMLPage {
    public struct Meta: Sendable {
        public var database: String
        /// The git revision of the sambench that made the page (nil outside a checkout).
        public var gitRevision: String?
        public var date = ISO8601DateFormatter().string(from: Date())
        public init(database: String, gitRevision: String?) {
            self.database = database
            self.gitRevision = gitRevision
        }
    }

    public static func render(_ report: Report, runs: [StoredRun], charts: [ChartFile], meta: Meta) throws -> String {
        var h = Builder()
        let suites = report.suites.isEmpty ? "no suite" : report.suites.joined(separator: ", ")
        h.raw("""
            <!DOCTYPE html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
            <title>sambench report: \(esc(suites))</title>
            <style>\(style)</style>
            </head>
            <body>
            <main>

            """)
        h.element("h1", "sambench report: \(suites)")
        h.element("p", "\(report.runs) runs (\(statusText(report))); metric: \(report.metric.title).", class: "meta")
        if !report.complete && report.runs > 0 {
            h.element("p", "Partial results: some runs are not finished; the numbers are over the finished ones.", class: "warning")
        }

        h.element("h2", "The answer", id: "answer")
        for sentence in answer(report) { h.element("p", sentence, class: "answer") }
        let headline = headlineComparisons(report)
        if !headline.isEmpty {
            h.table(caption: "\(report.samAgainstSGD() ? "SAM-family" : "Each group") minus \(report.baselineName), paired by seed and noisy labels (accuracy points; ★ \(report.samAgainstSGD() ? "ρ " : "")chosen on validation)",
                    header: ["setting", "noise rate", report.samAgainstSGD() ? "optimizer" : "method and optimizer", "pairs", "difference", "95% CI", "p"],
                    numeric: [false, true, false, true, true, false, true],
                    rows: headline.map { c, g in
                        let d = c.difference
                        return [c.setting, g.noiseRate.map { String(format: "%g%%", 100 * $0) } ?? "clean", c.optimizerLabel + (c.selected ? " ★" : ""),
                                String(d?.pairs ?? 0), d.map { String(format: "%+.2f", 100 * $0.meanDifference) } ?? "–",
                                d.map { ci($0.meanDifference, $0.ci95, sign: true) } ?? "–", d?.pValue.map { String(format: "%.3g", $0) } ?? "–"]
                    })
        }

        h.element("h2", "Groups: runs that differ only in seed", id: "groups")
        h.table(caption: "Test accuracy (%): mean over seeds, standard deviation and 95% CI (Student t)",
                header: ["setting", "optimizer", "n", "mean", "std", "95% CI", "validation", "memorised", "detection AUROC", "flags"],
                numeric: [false, false, true, true, true, false, true, true, true, false],
                rows: report.groups.map { g in
                    let a = g.accuracy
                    return [g.setting, g.optimizerLabel, String(a?.n ?? 0), pct(a?.mean), pct(a?.std), a.map { ci($0.mean, $0.ci95) } ?? "–",
                            pct(g.validation?.mean), pct(g.memorised?.mean), g.detection.map { String(format: "%.3f", $0.mean) } ?? "–",
                            g.flags.joined(separator: "; ")]
                })

        h.element("h2", "Charts", id: "charts")
        if charts.isEmpty { h.element("p", "No charts: no finished runs yet, or the report was made with --no-charts.") }
        for chart in charts {
            let data: Data
            do { data = Data(try InputFile.contents(chart.png, what: "the chart", limit: 1 << 30)) } catch { throw ChartError("\(error)") }
            h.raw("<figure>\n")
            h.element("h3", chart.title)
            h.raw("<img src=\"data:image/png;base64,\(data.base64EncodedString())\" alt=\"\(esc(chart.title + ". " + chart.subtitle))\" width=\"1600\" height=\"1000\">\n")
            h.element("figcaption", chart.subtitle)
            h.raw("</figure>\n")
        }

        h.element("h2", "Runs", id: "runs")
        h.table(caption: "Every run: status, results, noise realisation, sharpness and timings",
                header: ["run", "status", "epochs", "last test %", "best test %", "memorised %", "detection AUROC", "noise realised", "corrupted",
                         "m-sharpness", "top Hessian eig.", "train time", "images/s", "host", "threads", "sambench"],
                numeric: [false, false, true, true, true, true, true, true, true, true, true, true, true, false, true, false],
                rows: runs.map { r in
                    let d = r.details
                    return [r.label, r.status.rawValue, "\(r.epochsDone)/\(r.spec.config.epochs)", pct(r.metrics?.lastTestAccuracy),
                            pct(r.metrics?.bestTestAccuracy), pct(r.metrics?.lastMemorised),
                            r.metrics?.detectionAUROC.map { String(format: "%.3f", $0) } ?? "–",
                            r.realisedRate.map { String(format: "%.4f", $0) } ?? "–", d.corrupted.map(String.init) ?? "–",
                            d.mSharpness.map { String(format: "%.4g", $0) } ?? "–", d.hessianTop.map { String(format: "%.4g", $0) } ?? "–",
                            d.trainSeconds.map { String(format: "%.0f s", $0) } ?? "–", d.imagesPerSecond.map { String(format: "%.0f", $0) } ?? "–",
                            d.host ?? "–", d.threads.map(String.init) ?? "–",
                            [d.sambenchVersion, d.gitRevision].compactMap { $0 }.joined(separator: " ")]
                })
        h.element("h3", "Configurations and noise provenance")
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        for r in runs {
            h.raw("<details>\n")
            h.element("summary", r.label)
            var provenance = ["key \(r.key)", "data \(r.identity)"]
            if r.spec.data.noise.kind != .none {
                let d = r.details
                provenance.append("noise \(r.spec.data.noise.kind.rawValue), selection \(d.noiseSelection ?? "–"), noise seed \(d.noiseSeed.map(String.init) ?? "–")")
                provenance.append("noisy labels SHA-256 \(r.noiseLabels ?? "– (not drawn yet)")")
            }
            if let e = r.error { provenance.append("error: \(e)") }
            h.element("p", provenance.joined(separator: "; "), class: "provenance")
            h.element("pre", String(decoding: try encoder.encode(r.spec), as: UTF8.self))
            h.raw("</details>\n")
        }

        h.element("h2", "Conventions", id: "conventions")
        h.raw("<ul>\n")
        for line in conventions(runs, report) { h.element("li", line) }
        h.raw("</ul>\n")

        h.element("h2", "Provenance", id: "provenance")
        let revisions = Set(runs.compactMap(\.details.gitRevision)).sorted()
        h.raw("<ul>\n")
        h.element("li", "Page made by sambench \(report.sambenchVersion)" + (meta.gitRevision.map { " (git \($0))" } ?? "") + " on \(meta.date).")
        h.element("li", "Database: \(meta.database).")
        h.element("li", "Runs trained by sambench revisions: " + (revisions.isEmpty ? "unknown" : revisions.joined(separator: ", ")) + ".")
        h.raw("</ul>\n")
        h.raw("</main>\n<script>\(script)</script>\n</body>\n</html>\n")
        return h.out
    }

    // MARK: content

    static func statusText(_ r: Report) -> String {
        let s = r.statuses.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.value) \($0.key.rawValue)" }
        return s.isEmpty ? "none" : s.joined(separator: ", ")
    }

    /// The comparisons that answer the question: per setting, the rho (or method parameters)
    /// chosen on validation where there was a choice, else every one; with the compared group
    /// (for its noise rate).
    static func headlineComparisons(_ r: Report) -> [(Comparison, Group)] {
        let groups = Dictionary(r.groups.map { ($0.group, $0) }, uniquingKeysWith: { a, _ in a })
        return r.comparisons.compactMap { c in
            guard let g = groups[c.group] else { return nil }
            // Where a choice was made among this group's peers, only the chosen one answers.
            let chosen = r.comparisons.contains { o in
                guard o.selected, let h = groups[o.group] else { return false }
                return h.settingIdentity == g.settingIdentity && ReportBuilder.tuningPeers(h, g)
            }
            return !chosen || c.selected ? (c, g) : nil
        }
    }

    /// The question answered in one sentence, then one per headline comparison.
    static func answer(_ r: Report) -> [String] {
        let rows = headlineComparisons(r).filter { $0.0.difference != nil }
        let baseline = r.baselineName
        guard !rows.isEmpty else {
            return [r.runs == 0 ? "No runs yet: `sambench run SUITE` trains and stores them."
                    : "No comparison with \(baseline) yet: the suite needs finished \(baseline) runs and other groups on the same seeds."]
        }
        let better = rows.filter { row in row.0.difference!.ci95.map { row.0.difference!.meanDifference - $0 > 0 } ?? false }.count
        let worse = rows.filter { row in row.0.difference!.ci95.map { row.0.difference!.meanDifference + $0 < 0 } ?? false }.count
        let diffs = rows.map { 100 * $0.0.difference!.meanDifference }
        let paper = r.samAgainstSGD()
        var first = paper ? "Does SAM make the network robust to label noise? Over \(rows.count) comparison\(rows.count == 1 ? "" : "s") with SGD"
            : "Which method is robust to label noise? Over \(rows.count) comparison\(rows.count == 1 ? "" : "s") with the baseline, \(baseline)"
        first += rows.contains { $0.0.selected } ? " (\(paper ? "ρ" : "ρ or the method's parameters") chosen on validation where several were tried)" : ""
        first += String(format: ", %@ minus %@ ranges from %+.1f to %+.1f points: ", paper ? "SAM" : "each", baseline, diffs.min()!, diffs.max()!)
        first += "its 95% interval is above zero in \(better), below zero in \(worse) and contains zero in \(rows.count - better - worse)."
        var out = [first]
        for (c, g) in rows {
            let d = c.difference!
            var s = "\(c.setting)\(g.noise == "clean" ? " (no noise)" : ""): \(c.optimizerLabel)\(c.selected ? " (\(paper ? "ρ" : "parameters") chosen on validation)" : "")"
            s += String(format: " minus %@ %+.2f points", paper ? "SGD" : c.baselineLabel ?? baseline, 100 * d.meanDifference)
            s += d.ci95.map { String(format: ", 95%% CI [%+.2f, %+.2f]", 100 * (d.meanDifference - $0), 100 * (d.meanDifference + $0)) } ?? " (\(d.noIntervalReason))"
            s += ", \(d.pairs) pair\(d.pairs == 1 ? "" : "s")" + (d.pValue.map { String(format: ", p = %.3g", $0) } ?? "") + "."
            out.append(s)
        }
        return out
    }

    /// The conventions the runs were trained under, each value with the count of runs.
    static func conventions(_ runs: [StoredRun], _ r: Report) -> [String] {
        func tally(_ name: String, _ values: [String]) -> String? {
            guard !values.isEmpty else { return nil }
            var counts: [String: Int] = [:]
            for v in values { counts[v, default: 0] += 1 }
            return "\(name): " + counts.sorted { $0.key < $1.key }.map { "\($0.key) (\($0.value) runs)" }.joined(separator: ", ")
        }
        let sam = runs.compactMap(\.spec.config.optimizer.sam)
        return [
            "Metric: \(r.metric.title). Intervals: 95%, Student t over seeds; \(r.samAgainstSGD() ? "SAM" : "each group") minus \(r.baselineName) paired by seed and identical noisy labels.",
            tally("Label noise", runs.map { $0.spec.data.noise.kind.rawValue + ($0.spec.data.noise.kind.hasRate ? " (selection \($0.details.noiseSelection ?? $0.spec.data.noise.selection.rawValue))" : "") }),
            "Memorised: accuracy on the corrupted training samples against their noisy labels. Detection AUROC: how well the final model's per-sample loss separates the corrupted training samples from the clean ones (0.5: chance; `sambench runs --samples KEY` exports the losses).",
            tally("SAM variant", sam.map(\.variant.rawValue)),
            tally("Gradient in the perturbation (weight decay in it or not)", sam.map(\.perturbationGradient.rawValue)),
            tally("BN running statistics updated by", sam.map(\.bnPolicy.rawValue)),
            tally("Learning-rate schedule", runs.map(\.spec.config.schedule.rawValue)),
            tally("Validation split", runs.map { d in
                d.spec.data.validationFraction > 0 ? String(format: "%g%% held out", 100 * d.spec.data.validationFraction) + (d.spec.data.validationNoisy ? ", noisy labels" : ", clean labels") : "none"
            }),
        ].compactMap { $0 }
    }

    static func pct(_ v: Double?) -> String { v.map { String(format: "%.2f", 100 * $0) } ?? "–" }

    static func ci(_ mean: Double, _ half: Double?, sign: Bool = false) -> String {
        guard let half else { return "–" }
        let f = sign ? "%+.2f" : "%.2f"
        return "[" + String(format: f, 100 * (mean - half)) + ", " + String(format: f, 100 * (mean + half)) + "]"
    }

    // MARK: markup

    /// Escapes text for HTML content and attribute values.
    public static func esc(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.count)
        for ch in s.unicodeScalars {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out
    }

    struct Builder {
        var out = ""
        mutating func raw(_ s: String) { out += s }
        mutating func element(_ tag: String, _ text: String, id: String? = nil, class cls: String? = nil) {
            out += "<\(tag)" + (id.map { " id=\"\($0)\"" } ?? "") + (cls.map { " class=\"\($0)\"" } ?? "") + ">\(esc(text))</\(tag)>\n"
        }
        mutating func table(caption: String, header: [String], numeric: [Bool], rows: [[String]]) {
            out += "<table class=\"sortable\">\n"
            element("caption", caption)
            out += "<thead><tr>" + zip(header, numeric).map { "<th scope=\"col\"\($1 ? " class=\"num\"" : "")>\(esc($0))</th>" }.joined() + "</tr></thead>\n<tbody>\n"
            for row in rows {
                out += "<tr>" + zip(row, numeric).map { "<td\($1 ? " class=\"num\"" : "")>\(esc($0))</td>" }.joined() + "</tr>\n"
            }
            out += "</tbody>\n</table>\n"
        }
    }

    static let style = """
        body{font-family:"DejaVu Sans",system-ui,sans-serif;margin:0;color:#111;background:#fff;line-height:1.45}
        main{max-width:1200px;margin:0 auto;padding:1.5rem}
        h1{font-size:1.7rem}h2{margin-top:2.2rem;border-bottom:2px solid #333}
        .answer{font-size:1.08rem}.answer:first-of-type{font-weight:bold}
        .meta,.provenance{color:#444}.warning{border-left:4px solid #333;padding-left:.6rem;font-weight:bold}
        table{border-collapse:collapse;margin:1rem 0;font-size:.9rem;display:block;overflow-x:auto}
        caption{text-align:left;font-weight:bold;padding:.3rem 0}
        th,td{border:1px solid #999;padding:.25rem .5rem;vertical-align:top}
        th{background:#eee;text-align:left}th.num,td.num{text-align:right;font-variant-numeric:tabular-nums}
        tbody tr:nth-child(even){background:#f6f6f6}
        th[aria-sort]{text-decoration:underline}
        figure{margin:1.5rem 0}img{max-width:100%;height:auto;border:1px solid #ccc}
        pre{background:#f4f4f4;padding:.6rem;overflow-x:auto;font-size:.8rem}
        details{margin:.3rem 0}summary{cursor:pointer}
        """

    /// Progressive enhancement: a click on a column header sorts the table by it.
    static let script = """
        document.querySelectorAll('table.sortable').forEach(function(t){
          t.querySelectorAll('th').forEach(function(th,i){
            th.tabIndex=0;th.title='sort by this column';
            var sort=function(){
              var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
              var up=th.getAttribute('aria-sort')!=='ascending';
              t.querySelectorAll('th').forEach(function(o){o.removeAttribute('aria-sort');});
              th.setAttribute('aria-sort',up?'ascending':'descending');
              var key=function(r){var s=r.cells[i].textContent,n=parseFloat(s.replace(/[^0-9eE+.-]/g,''));return isNaN(n)?s:n;};
              rows.sort(function(a,b){var x=key(a),y=key(b);var c=(typeof x==='number'&&typeof y==='number')?x-y:String(x).localeCompare(String(y));return up?c:-c;});
              rows.forEach(function(r){body.appendChild(r);});
            };
            th.addEventListener('click',sort);
            th.addEventListener('keydown',function(e){if(e.key==='Enter'){sort();}});
          });
        });
        """
}
