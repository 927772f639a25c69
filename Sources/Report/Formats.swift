import Engine
import Foundation
import Suites

/// The report as text (fits 100 columns), markdown, CSV or JSON. Text and markdown show
/// percentages; CSV and JSON carry accuracies as fractions in [0, 1].
public enum ReportFormat: String, Sendable, CaseIterable {
    case text, markdown, csv, json

    public func render(_ r: Report) throws -> String {
        switch self {
        // The tables for people carry labels and notes from the database: their control
        // characters are written out, so that a crafted label cannot drive a terminal.
        case .text: return escapingControlCharacters(ReportText.text(r))
        case .markdown: return escapingControlCharacters(ReportText.markdown(r))
        case .csv: return ReportText.csv(r)
        case .json:
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            return String(decoding: try encoder.encode(r), as: UTF8.self) + "\n"
        }
    }
}

enum ReportText {
    static func pct(_ v: Double?, _ width: Int = 6, sign: Bool = false) -> String {
        guard let v else { return String(repeating: " ", count: width - 1) + "-" }
        return String(format: sign ? "%+\(width).2f" : "%\(width).2f", 100 * v)
    }

    static func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s : s + String(repeating: " ", count: width - s.count) }

    static func interval(_ mean: Double, _ half: Double?, sign: Bool = false) -> String {
        guard let half else { return "-" }
        let f = sign ? "%+.1f" : "%.1f"
        return "[" + String(format: f, 100 * (mean - half)) + ", " + String(format: f, 100 * (mean + half)) + "]"
    }

    static func header(_ r: Report) -> [String] {
        let statuses = r.statuses.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        var lines = ["sambench report: \(r.suites.isEmpty ? "no suite" : "suite " + r.suites.joined(separator: ", ")); \(r.runs) runs (\(statuses.isEmpty ? "none" : statuses))"]
        if r.runs == 0 {
            lines.append("The database has no runs yet: `sambench run SUITE` trains and stores them.")
        } else if !r.complete {
            lines.append("Partial results: \(r.statuses.filter { !$0.key.finished }.values.reduce(0, +)) runs are not finished; the numbers below are over the finished ones.")
        }
        lines.append("metric: \(r.metric.title), % (mean over seeds, 95% CI by Student t)")
        if let b = r.baseline, !b.isStandard { lines.append("baseline: \(b) (every other group of a setting is compared with it)") }
        for note in r.notes ?? [] { lines.append("note: " + note) }
        return lines
    }

    /// The settings of the report, by identity (key), in the order of their first group, with
    /// their labels.
    static func settings(_ r: Report) -> [(identity: String, label: String)] {
        var seen: [(identity: String, label: String)] = []
        for g in r.groups where !seen.contains(where: { $0.identity == g.settingIdentity }) { seen.append((g.settingIdentity, g.setting)) }
        return seen
    }

    static func text(_ r: Report) -> String {
        var lines = header(r)
        for setting in settings(r) {
            lines.append("")
            lines.append(setting.label)
            let groups = r.groups.filter { $0.settingIdentity == setting.identity }
            let comparisons = r.comparisons.filter { ($0.settingKey ?? $0.setting) == setting.identity }
            // The label column as wide as the longest label ("mixup(alpha=1) sam(rho=0.05) *"), at least 20.
            let width = max(20, groups.map(\.optimizerLabel.count).max() ?? 0, comparisons.map { $0.optimizerLabel.count + ($0.selected ? 2 : 0) }.max() ?? 0)
            lines.append("  " + pad("optimizer", width) + "  n    mean    std  95% CI          valid.  memorised  detect.  flags")
            for g in groups {
                let a = g.accuracy
                var line = "  " + pad(g.optimizerLabel, width) + String(format: "%3d  ", a?.n ?? 0) + pct(a?.mean) + " " + pct(a?.std, 6) + "  "
                line += pad(a.map { interval($0.mean, $0.ci95) } ?? "-", 14) + "  " + pct(g.validation?.mean) + "     " + pct(g.memorised?.mean)
                line += "    " + (g.detection.map { String(format: "%.3f", $0.mean) } ?? "    -")
                if !g.flags.isEmpty { line += "  " + g.flags.joined(separator: "; ") }
                lines.append(line)
            }
            if !comparisons.isEmpty {
                let baseline = r.baseline?.isStandard ?? true ? "SGD" : comparisons[0].baselineLabel ?? r.baselineName
                lines.append("  minus \(baseline), paired by seed and noise realisation:")
                for c in comparisons {
                    let d = c.difference
                    var line = "  " + pad(c.optimizerLabel + (c.selected ? " *" : ""), width) + String(format: "%3d  ", d?.pairs ?? 0)
                    line += pct(d?.meanDifference, sign: true) + "         " + pad(d.map { interval($0.meanDifference, $0.ci95, sign: true) } ?? "-", 14)
                    line += "  " + (d?.pValue.map { String(format: "p %.3g", $0) } ?? "p -")
                    if d?.noSpread == true { line += "  (\(d!.noIntervalReason))" }
                    if c.unpaired > 0 { line += "  (\(c.unpaired) unpaired)" }
                    lines.append(line)
                }
            }
        }
        if r.comparisons.contains(where: \.selected) {
            lines.append("")
            lines.append("* chosen on the validation split (the best mean validation accuracy), not on the test set.")
        }
        if r.groups.contains(where: { $0.detection != nil }) {
            lines.append("")
            lines.append("detect.: AUROC of the final model's per-sample loss for telling the corrupted training samples from the clean")
            lines.append("ones (0.5 is chance; `sambench runs --samples KEY` exports the losses, the labels and which were corrupted).")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func markdown(_ r: Report) -> String {
        var lines = header(r).map { $0 + "  " }
        lines.append("")
        lines.append("| setting | optimizer | n | accuracy (95% CI) | std | validation | memorised | detection AUROC | flags |")
        lines.append("|---|---|--:|---|--:|--:|--:|--:|---|")
        for g in r.groups {
            let a = g.accuracy
            let acc = a.map { plusMinus($0.mean, $0.ci95) } ?? "-"
            lines.append("| \(g.setting) | \(g.optimizerLabel) | \(a?.n ?? 0) | \(acc) | \(trim(pct(a?.std))) | \(trim(pct(g.validation?.mean))) | \(trim(pct(g.memorised?.mean))) | \(g.detection.map { String(format: "%.3f", $0.mean) } ?? "-") | \(g.flags.joined(separator: "; ")) |")
        }
        if !r.comparisons.isEmpty {
            lines.append("")
            lines.append("| setting | versus \(r.baselineName) | pairs | difference (95% CI) | p |")
            lines.append("|---|---|--:|---|--:|")
            for c in r.comparisons {
                let d = c.difference
                let diff = d.map { plusMinus($0.meanDifference, $0.ci95, sign: true) + ($0.noSpread ? " (\($0.noIntervalReason))" : "") } ?? "-"
                let name = c.optimizerLabel + (c.selected ? " (chosen on validation)" : "")
                lines.append("| \(c.setting) | \(name) | \(d?.pairs ?? 0) | \(diff) | \(d?.pValue.map { String(format: "%.3g", $0) } ?? "-") |")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// "72.31 ± 1.20" in percent.
    static func plusMinus(_ mean: Double, _ half: Double?, sign: Bool = false) -> String {
        String(format: sign ? "%+.2f" : "%.2f", 100 * mean) + (half.map { String(format: " ± %.2f", 100 * $0) } ?? "")
    }

    static func trim(_ s: String) -> String { s.trimmingCharacters(in: .whitespaces) }

    /// One row per group and per comparison, one column per axis: dataset, model, noise, noise
    /// rate, optimizer, rho, then every other axis whose value differs among the groups (the
    /// settings swept, in `Axes.all`'s order), named as in suites; then the numbers. A comparison row
    /// (kind `minus_baseline`) carries its group's axes and names its baseline group last.
    static func csv(_ r: Report) -> String {
        func field(_ s: String) -> String { s.contains(",") || s.contains("\"") || s.contains("\n") ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s }
        func num(_ v: Double?) -> String { v.map { String($0) } ?? "" }
        let fixed = ["dataset", "model", "noise", "noise_rate", "optimizer", "rho"]
        // An optimizer's setting is swept when its values differ among the groups that have it (SGD
        // has none); any other axis also when it is set in some groups and not in others.
        let swept = Axes.all.filter { axis in
            guard !fixed.contains(axis.name) else { return false }
            let values = r.groups.map { $0.axes?[axis.name] }
            return axis.part == .optimizer ? Set(values.compactMap { $0 }).count > 1 : Set(values).count > 1
        }.map(\.name)
        let axes = fixed + swept
        func axisFields(_ g: Group) -> [String] {
            axes.map { name in
                switch name {
                case "dataset": return g.dataset.rawValue
                case "model": return field(g.model)
                case "noise": return g.noiseKind.rawValue
                case "noise_rate": return num(g.noiseRate)
                case "optimizer": return g.optimizer.rawValue
                case "rho": return num(g.rho)
                default: return field(g.axes?[name] ?? "")
                }
            }
        }
        var lines = [(["kind", "group", "setting"] + axes + ["label", "selected", "n", "mean", "std", "ci95_low", "ci95_high", "p_value",
                                                              "validation", "memorised", "detection_auroc", "flags", "baseline_group"]).joined(separator: ",")]
        for g in r.groups {
            let a = g.accuracy
            lines.append((["group", g.group, g.settingKey ?? ""] + axisFields(g) + [field(g.label), "", String(a?.n ?? 0), num(a?.mean), num(a?.std),
                          num(a.flatMap { s in s.ci95.map { s.mean - $0 } }), num(a.flatMap { s in s.ci95.map { s.mean + $0 } }), "",
                          num(g.validation?.mean), num(g.memorised?.mean), num(g.detection?.mean), field(g.flags.joined(separator: "; ")), ""]).joined(separator: ","))
        }
        for c in r.comparisons {
            guard let g = r.groups.first(where: { $0.group == c.group }) else { continue }
            let d = c.difference
            lines.append((["minus_baseline", c.group, c.settingKey ?? ""] + axisFields(g) + [field(g.label), c.selected ? "true" : "false",
                          String(d?.pairs ?? 0), num(d?.meanDifference), "", num(d.flatMap { s in s.ci95.map { s.meanDifference - $0 } }),
                          num(d.flatMap { s in s.ci95.map { s.meanDifference + $0 } }), num(d?.pValue), "", "", "",
                          c.unpaired > 0 ? "\(c.unpaired) unpaired" : "", c.baselineGroup]).joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
