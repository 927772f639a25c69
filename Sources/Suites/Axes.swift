// The axes of a run (task, noise, method, optimizer and their parameters) and the group labels made from them.
import Datasets
import Foundation
import Optim
import Training

/// What a run does: train from scratch (finetuning from a checkpoint is reserved).
public enum RunTask: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    case train, finetune
    public var description: String { rawValue }
}

/// Which test accuracy of a run a report compares.
public enum Metric: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    /// At the last epoch: what training to the end gives (the default).
    case last
    /// At the best epoch, chosen on the test set: optimistic, as many papers report.
    case best
    /// At the epoch with the best validation accuracy: chosen without the test set.
    case val

    public var description: String { rawValue }

    public var title: String {
        switch self {
        case .last: "test accuracy at the last epoch"
        case .best: "test accuracy at the best epoch (chosen on the test set: optimistic)"
        case .val: "test accuracy at the epoch chosen on validation"
        }
    }
}

/// The axes of a run: every setting a suite can sweep, read from the resolved run (never from
/// its label), each as the text a suite would write. The report, its CSV, `sambench runs`, the
/// labels and the store's `settings` view all take their fields from here.
public enum Axes {
    /// Where an axis is set in a suite.
    public enum Part: String, Sendable, Codable { case setting, noise, method, optimizer }

    public struct Axis: Sendable {
        public let name: String
        public let part: Part
        let read: @Sendable (RunSpec) -> String?
    }

    /// Every axis, in the order docs/SUITES.md lists the settings, then the noise entry's keys,
    /// the method entry's (`method`, then every method parameter, set where the run's method has
    /// it), then the optimizer entry's. The run's seed is not an axis: a group is its runs over seeds.
    public static let all: [Axis] = {
        var out = Settings.all.filter { $0.name != "seed" }.map { s in
            Axis(name: s.name, part: .setting) { spec in s.read(spec).map(\.description) }
        }
        func noise(_ name: String, _ read: @escaping @Sendable (NoiseSpec, RunSpec) -> String?) {
            out.append(Axis(name: name, part: .noise) { read($0.data.noise, $0) })
        }
        noise("noise") { n, _ in n.kind.rawValue }
        noise("noise_rate") { n, _ in n.kind.hasRate ? SettingValue.format(n.rate) : nil }
        noise("noise_selection") { n, _ in n.kind.hasRate ? n.selection.rawValue : nil }
        noise("noise_seed") { n, s in n.kind == .none || s.noiseSeedFollowsRun ? nil : String(n.seed) }
        noise("noise_std") { n, _ in n.kind == .instance ? SettingValue.format(n.instanceStd) : nil }
        noise("noise_labels") { n, _ in n.labelsFile?.description }
        out.append(Axis(name: "method", part: .method) { $0.config.method?.name ?? "ce" })
        for p in Methods.parameterNames {
            out.append(Axis(name: p, part: .method) { s in s.config.method?.parameters[p].map(SettingValue.format) })
        }
        func optimizer(_ name: String, _ read: @escaping @Sendable (SAMConfig) -> String?) {
            out.append(Axis(name: name, part: .optimizer) { $0.config.optimizer.sam.flatMap(read) })
        }
        out.append(Axis(name: "optimizer", part: .optimizer) { $0.optimizer.rawValue })
        optimizer("rho") { "\($0.rho)" }
        optimizer("eta") { $0.variant == .asam ? "\($0.eta)" : nil }
        optimizer("gradient") { $0.perturbationGradient.rawValue }
        optimizer("bn_policy") { $0.bnPolicy.rawValue }
        optimizer("micro_batch") { $0.microBatch.map(String.init) }
        optimizer("look_interval") { String($0.lookInterval) }
        optimizer("look_alpha") { $0.lookInterval > 1 ? "\($0.lookAlpha)" : nil }
        return out
    }()

    public static let names: [String] = all.map(\.name)

    /// The run's value on every axis, in `all`'s order (nil: not set, or not used by the run).
    public static func values(_ spec: RunSpec) -> [String: String] {
        var out: [String: String] = [:]
        for a in all { if let v = a.read(spec) { out[a.name] = v } }
        return out
    }
}

/// The display names of groups (runs that differ only in seed), made from their typed fields
/// and keys, never parsed back. A setting's label is `dataset model noise`, followed by
/// `name=value` for every setting that varies among the groups of the same dataset and model
/// (so two suites that differ only in `epochs` give `... epochs=3` and `... epochs=6`); an
/// optimizer's is `sam(rho=0.05)` with m and k when set, and any other optimizer setting that
/// varies within its setting. Where two different keys would still print the same text, the
/// key's first characters are added: labels are unique per key among the groups labelled.
public struct GroupLabels: Sendable, Equatable, Codable {
    /// The setting: what SAM and SGD are paired on.
    public var setting: String
    /// The setting without its noise rate: what an accuracy-against-noise chart draws.
    public var family: String
    /// The method (when not cross-entropy) and the optimizer: `sam(rho=0.05)`, `mixup(alpha=1) sgd`.
    public var optimizer: String
    /// `setting optimizer`.
    public var group: String

    public struct Item: Sendable {
        public var spec: RunSpec
        public var group: String
        public var setting: String
        public var family: String
        public init(spec: RunSpec, group: String, setting: String, family: String) {
            (self.spec, self.group, self.setting, self.family) = (spec, group, setting, family)
        }
    }

    /// Labels for every group among `items` (one item per run is fine), by group key.
    public static func make(_ items: [Item]) -> [String: GroupLabels] {
        var seen = Set<String>()
        let groups = items.filter { seen.insert($0.group).inserted }
        let values = groups.map { Axes.values($0.spec) }
        let shownInBase: Set = ["dataset", "model", "noise", "noise_rate", "noise_labels"]
        let settingAxes = Axes.all.filter { $0.part != .optimizer && $0.part != .method && !shownInBase.contains($0.name) }.map(\.name)
        let extraOptimizerAxes = Axes.all.filter { $0.part == .optimizer && !["optimizer", "rho", "micro_batch", "look_interval"].contains($0.name) }.map(\.name)

        func varying(_ axes: [String], among members: [Int]) -> [String] {
            axes.filter { a in Set(members.map { values[$0][a] ?? "none" }).count > 1 }
        }
        func suffix(_ axes: [String], _ i: Int) -> [String] { axes.map { "\($0)=\(values[i][$0] ?? "none")" } }
        /// Adds a key's first characters to each text that two different keys share.
        func unique(_ texts: [String], keys: [String]) -> [String] {
            var keysOf: [String: Set<String>] = [:]
            for (t, k) in zip(texts, keys) { keysOf[t, default: []].insert(k) }
            return zip(texts, keys).map { t, k in keysOf[t]!.count > 1 ? "\(t) [\(k.prefix(8))]" : t }
        }

        // Settings: the axes that vary among the groups of the same dataset and model.
        var universes: [String: [Int]] = [:]
        for (i, g) in groups.enumerated() { universes["\(g.spec.data.dataset) \(g.spec.config.model)", default: []].append(i) }
        var settingText = [String](repeating: "", count: groups.count), familyText = settingText
        for members in universes.values {
            let shown = varying(settingAxes, among: members)
            for i in members {
                let s = groups[i].spec, n = s.data.noise
                let head = "\(s.data.dataset) \(s.config.model)"
                let extra = suffix(shown, i)
                settingText[i] = ([head, noiseLabel(n)] + extra).joined(separator: " ")
                familyText[i] = ([head, n.kind.rawValue] + extra).joined(separator: " ")
            }
        }
        settingText = unique(settingText, keys: groups.map(\.setting))
        familyText = unique(familyText, keys: groups.map(\.family))

        // Optimizers: their other settings where they vary within a setting and family.
        var optimizerText = [String](repeating: "", count: groups.count)
        var peers: [String: [Int]] = [:]
        for (i, g) in groups.enumerated() { peers["\(g.setting) \(g.spec.config.method?.name ?? "ce") \(g.spec.optimizer)", default: []].append(i) }
        for members in peers.values {
            let shown = varying(extraOptimizerAxes, among: members)
            for i in members {
                // A method other than cross-entropy goes first: `gce(q=0.7) sam(rho=0.05)`.
                let method = groups[i].spec.config.method.map { $0.label + " " } ?? ""
                optimizerText[i] = method + optimizerLabel(groups[i].spec.config.optimizer, extra: suffix(shown, i))
            }
        }
        let groupText = unique(zip(settingText, optimizerText).map { "\($0) \($1)" }, keys: groups.map(\.group))
        var out: [String: GroupLabels] = [:]
        for (i, g) in groups.enumerated() {
            out[g.group] = GroupLabels(setting: settingText[i], family: familyText[i], optimizer: optimizerText[i], group: groupText[i])
        }
        return out
    }

    /// `clean`, `symmetric-0.4`, `human:worse_label`.
    public static func noiseLabel(_ n: NoiseSpec) -> String {
        switch n.kind {
        case .none: "clean"
        case .human: "human:" + (n.labelsFile?.shortName ?? "")
        default: "\(n.kind.rawValue)-\(SettingValue.format(n.rate))"
        }
    }

    /// `sgd`, `sam(rho=0.05)`, `asam(rho=0.5,m=32)`, `sam(rho=0.05,k=5)`, then `extra` settings.
    public static func optimizerLabel(_ o: OptimizerConfig, extra: [String] = []) -> String {
        guard let c = o.sam else { return o.family.rawValue }
        var parts = ["rho=\(c.rho)"]
        if let m = c.microBatch { parts.append("m=\(m)") }
        if c.lookInterval > 1 { parts.append("k=\(c.lookInterval)") }
        return "\(o.family.rawValue)(" + (parts + extra).joined(separator: ",") + ")"
    }
}
