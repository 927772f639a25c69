// The settings [defaults] and [grid] accept: names, types, checks and how each applies to a run.
import Datasets
import Engine
import Foundation
import Optim
import Training

/// A value of a suite setting, after type checking.
enum SettingValue: Equatable, Sendable, CustomStringConvertible {
    case int(Int)
    case double(Double)
    case bool(Bool)
    case string(String)
    case ints([Int])
    case strings([String])

    var description: String {
        switch self {
        case let .int(v): return String(v)
        case let .double(v): return Self.format(v)
        case let .bool(v): return String(v)
        case let .string(v): return v
        case let .ints(v): return "[" + v.map(String.init).joined(separator: ",") + "]"
        case let .strings(v): return "[" + v.joined(separator: ",") + "]"
        }
    }

    /// The shortest decimal that reads back to the same Float (what the run sees).
    /// As the engine holds it (Float), unless beyond Float's range, where that would print inf.
    static func format(_ v: Double) -> String { v.isFinite && abs(v) > Double(Float.greatestFiniteMagnitude) ? "\(v)" : "\(Float(v))" }

    var int: Int { if case let .int(v) = self { v } else { 0 } }
    var double: Double { if case let .double(v) = self { v } else if case let .int(v) = self { Double(v) } else { 0 } }
    var bool: Bool { if case let .bool(v) = self { v } else { false } }
    var string: String { if case let .string(v) = self { v } else { "" } }
    var ints: [Int] { if case let .ints(v) = self { v } else { [] } }
    var strings: [String] { if case let .strings(v) = self { v } else { [] } }
}

enum SettingType: Sendable {
    case int, double, bool, ints, strings
    case string([String])

    /// A list-valued setting: one value is a list, and [grid] takes a list of lists.
    var isList: Bool {
        switch self {
        case .ints, .strings: true
        default: false
        }
    }

    var name: String {
        switch self {
        case .int: return "an integer"
        case .double: return "a number"
        case .bool: return "true or false"
        case .ints: return "a list of integers"
        case .strings: return "a list of strings"
        case let .string(choices): return choices.isEmpty ? "a string" : "one of " + choices.map { "\"\($0)\"" }.joined(separator: ", ")
        }
    }
}

/// One setting of a run, as written in `[defaults]` and `[grid]`: its type, its range, and
/// where it goes in the resolved configuration.
struct Setting: Sendable {
    let name: String
    let type: SettingType
    let help: String
    /// nil when the value is acceptable, else what is wrong with it.
    let check: @Sendable (SettingValue) -> String?
    /// The setting's value in a resolved run (nil: not set, e.g. no subset, or a seed that
    /// follows the run's seed).
    let read: @Sendable (RunSpec) -> SettingValue?
    let apply: @Sendable (inout RunSpec, SettingValue) -> Void

    init(_ name: String, _ type: SettingType, _ help: String, check: @escaping @Sendable (SettingValue) -> String? = { _ in nil },
         read: @escaping @Sendable (RunSpec) -> SettingValue?, apply: @escaping @Sendable (inout RunSpec, SettingValue) -> Void) {
        self.name = name
        self.type = type
        self.help = help
        self.check = check
        self.read = read
        self.apply = apply
    }
}

private func atLeast(_ low: Int) -> @Sendable (SettingValue) -> String? { { $0.int >= low ? nil : "must be >= \(low), got \($0.int)" } }
private func inRange(_ r: ClosedRange<Double>, openTop: Bool = false, openBottom: Bool = false) -> @Sendable (SettingValue) -> String? {
    { v in
        let x = v.double
        let ok = x.isFinite && (openBottom ? x > r.lowerBound : x >= r.lowerBound) && (openTop ? x < r.upperBound : x <= r.upperBound)
        return ok ? nil : "must be in \(openBottom ? "(" : "[")\(r.lowerBound.formatted()), \(r.upperBound == .infinity ? "inf" : r.upperBound.formatted())\(openTop ? ")" : "]"), got \(SettingValue.format(x))"
    }
}

/// The largest value a setting the engine holds as Float can take (1e308 would become inf there).
private let floatMax = Double(Float.greatestFiniteMagnitude)

private extension Double {
    func formatted() -> String { self == rounded() && abs(self) < 1e15 ? String(Int(self)) : String(self) }
}

enum Settings {
    static let modelCheck: @Sendable (SettingValue) -> String? = { v in
        do { _ = try Architectures.make(v.string, numClasses: 10); return nil } catch { return "\(error)" }
    }

    /// Every setting, in the order docs/SUITES.md lists them.
    static let all: [Setting] = [
        Setting("dataset", .string(Dataset.allCases.map(\.rawValue)), "synthetic (built in), cifar10 or cifar100", read: { .string($0.data.dataset.rawValue) }) { $0.data.dataset = Dataset(rawValue: $1.string)! },
        Setting("model", .string([]), "resnet8/20/32/44/56/110, wrnD_K, tv_resnet18/34/50[_cifar], tiny", check: modelCheck, read: { .string($0.config.model) }) { $0.config.model = $1.string },
        Setting("seed", .int, "initialisation, shuffling, augmentation and dropout; also the noise and split seeds unless set",
                check: atLeast(0), read: { .int(Int($0.config.seed)) }) { $0.config.seed = UInt64($1.int) },
        Setting("epochs", .int, "training epochs", check: atLeast(1), read: { .int($0.config.epochs) }) { $0.config.epochs = $1.int },
        Setting("batch_size", .int, "batch size", check: atLeast(1), read: { .int($0.config.batchSize) }) { $0.config.batchSize = $1.int },
        Setting("lr", .double, "base learning rate", check: inRange(0...floatMax, openBottom: true), read: { .double(Double($0.config.lr)) }) { $0.config.lr = Float($1.double) },
        Setting("schedule", .string(Schedule.allCases.map(\.rawValue)), "learning-rate schedule, stepped per iteration", read: { .string($0.config.schedule.rawValue) }) { $0.config.schedule = Schedule(rawValue: $1.string)! },
        Setting("milestones", .ints, "epochs at which multistep multiplies the rate by gamma",
                check: { $0.ints.allSatisfy { $0 >= 0 } ? nil : "epochs must be >= 0" }, read: { .ints($0.config.milestones) }) { $0.config.milestones = $1.ints },
        Setting("gamma", .double, "multistep factor", check: inRange(0...floatMax, openBottom: true), read: { .double(Double($0.config.gamma)) }) { $0.config.gamma = Float($1.double) },
        Setting("warmup_epochs", .int, "epochs of linear warmup", check: atLeast(0), read: { .int($0.config.warmupEpochs) }) { $0.config.warmupEpochs = $1.int },
        Setting("momentum", .double, "SGD momentum", check: inRange(0...1, openTop: true), read: { .double(Double($0.config.sgd.momentum)) }) { $0.config.sgd.momentum = Float($1.double) },
        Setting("weight_decay", .double, "weight decay (added to the gradient, as PyTorch)", check: inRange(0...Double.infinity, openTop: true), read: { .double(Double($0.config.sgd.weightDecay)) }) {
            $0.config.sgd.weightDecay = Float($1.double)
        },
        Setting("nesterov", .bool, "Nesterov momentum", read: { .bool($0.config.sgd.nesterov) }) { $0.config.sgd.nesterov = $1.bool },
        Setting("label_smoothing", .double, "label smoothing of the cross-entropy", check: inRange(0...1, openTop: true), read: { .double(Double($0.config.labelSmoothing)) }) { $0.config.labelSmoothing = Float($1.double) },
        Setting("dropout", .double, "dropout inside Wide-ResNet blocks", check: inRange(0...1, openTop: true), read: { .double(Double($0.config.dropout)) }) { $0.config.dropout = Float($1.double) },
        Setting("crop_padding", .int, "random-crop padding (0: no crop)", check: atLeast(0), read: { .int($0.config.augmentation.cropPadding) }) { $0.config.augmentation.cropPadding = $1.int },
        Setting("flip", .bool, "random horizontal flip", read: { .bool($0.config.augmentation.flip) }) { $0.config.augmentation.flip = $1.bool },
        Setting("cutout", .int, "cutout square size (0: none)", check: atLeast(0), read: { .int($0.config.augmentation.cutout) }) { $0.config.augmentation.cutout = $1.int },
        Setting("validation", .double, "fraction of the training set held out (stratified) for validation", check: inRange(0...1, openTop: true), read: { .double($0.data.validationFraction) }) {
            $0.data.validationFraction = $1.double
        },
        Setting("validation_labels", .string(["noisy", "clean"]), "score validation against the noisy labels or the clean ones", read: { .string($0.data.validationNoisy ? "noisy" : "clean") }) {
            $0.data.validationNoisy = $1.string == "noisy"
        },
        Setting("subset", .int, "train on this many images only (after the validation split)", check: atLeast(1), read: { $0.data.trainSubset.map { .int($0) } }) { $0.data.trainSubset = $1.int },
        Setting("subset_mode", .string(["stratified", "first"]), "a stratified subset or the first N images", read: { .string($0.data.subsetStratified ? "stratified" : "first") }) { $0.data.subsetStratified = $1.string == "stratified" },
        Setting("test_subset", .int, "evaluate on a fixed stratified subset of this many test images", check: atLeast(1), read: { $0.data.testSubset.map { .int($0) } }) { $0.data.testSubset = $1.int },
        Setting("split_seed", .int, "seed of the validation split and subset (default: the run's seed)", check: atLeast(0), read: { $0.splitSeedFollowsRun ? nil : .int(Int($0.data.splitSeed)) }) {
            $0.data.splitSeed = UInt64($1.int)
            $0.splitSeedFollowsRun = false
        },
        Setting("bootstrap", .bool, "after training, relabel with the model's predictions and train again", read: { .bool($0.config.bootstrap) }) { $0.config.bootstrap = $1.bool },
        Setting("divergence_factor", .double, "a loss above this multiple of the first one ends the run as diverged",
                check: inRange(1...Double.infinity, openTop: true, openBottom: true), read: { .double($0.config.divergenceFactor) }) { $0.config.divergenceFactor = $1.double },
        Setting("sharpness", .bool, "measure m-sharpness and the top Hessian eigenvalue at the end", read: { .bool($0.config.sharpness != nil) }) {
            $0.config.sharpness = $1.bool ? SharpnessConfig() : nil
        },
        Setting("classes", .ints, "train and test on these classes only, relabelled 0..k-1 in this order (e.g. [5, 6, 7, 8, 9])",
                check: { $0.ints.allSatisfy { $0 >= 0 } ? (Set($0.ints).count == $0.ints.count && $0.ints.count >= 2 ? nil : "at least 2 classes, each once") : "class indices are >= 0" },
                read: { $0.data.classes.map { .ints($0) } }) { $0.data.classes = $1.ints },
        Setting("pretrain", .string([]), "finetune: the [[pretrain]] entry whose weights a run starts from (\"none\": from scratch)",
                read: { s in s.pretrain.map { .string($0.name) } ?? (s.task == .finetune && s.config.initialWeights == nil ? .string("none") : nil) }) {
            $0.pretrain = $1.string == "none" ? nil : PretrainRef(name: $1.string)
        },
        Setting("checkpoint", .string([]), "finetune: a state dict to start from (.safetensors, relative to the suite file; its SHA-256 is in the run's key)",
                read: { $0.config.initialWeights.map { .string("sha256:" + $0.sha256.prefix(12)) } }) {
            $0.config.initialWeights = $1.string == "none" ? nil : InitialWeights(path: $1.string, sha256: "")
        },
        Setting("reinit_head", .bool, "finetune: the classifier starts freshly initialised (automatic when the class count differs)",
                read: { $0.task == .finetune ? .bool($0.reinitHead ?? false) : nil }) { $0.reinitHead = $1.bool ? true : nil },
        Setting("freeze_bn", .bool, "BN in eval mode while training: the running statistics (a pretrained model's) frozen, its weights still trained",
                read: { $0.config.freezeBN == true ? .bool(true) : ($0.task == .finetune ? .bool(false) : nil) }) { $0.config.freezeBN = $1.bool ? true : nil },
        Setting("freeze", .strings, "module prefixes whose parameters keep their starting values (e.g. [\"conv1\", \"bn1\", \"layer1\"])",
                check: { $0.strings.allSatisfy { !$0.isEmpty } ? nil : "empty module prefix" },
                read: { $0.config.freeze.map { .strings($0) } }) { $0.config.freeze = $1.strings.isEmpty ? nil : $1.strings },
        Setting("image_size", .int, "inputs bilinearly resized from 32x32 to this size (for weights trained on larger images)",
                check: { (8...512).contains($0.int) ? nil : "must be in [8, 512], got \($0.int)" },
                read: { $0.config.imageSize.map { .int($0) } }) { $0.config.imageSize = $1.int == 32 ? nil : $1.int },
        Setting("synthetic_classes", .int, "classes of the synthetic dataset", check: atLeast(2), read: { .int($0.data.syntheticClasses) }) { $0.data.syntheticClasses = $1.int },
        Setting("synthetic_train", .int, "training images of the synthetic dataset", check: atLeast(1), read: { .int($0.data.syntheticTrain) }) { $0.data.syntheticTrain = $1.int },
        Setting("synthetic_test", .int, "test images of the synthetic dataset", check: atLeast(1), read: { .int($0.data.syntheticTest) }) { $0.data.syntheticTest = $1.int },
        Setting("synthetic_seed", .int, "seed of the synthetic dataset", check: atLeast(0), read: { .int(Int($0.data.syntheticSeed)) }) { $0.data.syntheticSeed = UInt64($1.int) },
    ]

    static let byName: [String: Setting] = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })

    /// Keys of a `[[noise]]` entry.
    static let noiseKeys = ["kind", "rate", "rates", "selection", "seed", "std", "labels"]
    /// Keys of an `[[optimizer]]` entry.
    static let optimizerKeys = ["name", "rho", "eta", "gradient", "bn_policy", "micro_batch", "look_interval", "look_alpha"]
    static let topLevelKeys = ["name", "description", "task", "defaults", "grid", "noise", "method", "optimizer", "expect", "pretrain", "baseline"]
    /// The settings that say where a finetune run starts (not for a pretrain itself).
    static let startKeys = ["pretrain", "checkpoint", "reinit_head"]
}

/// The closest candidate within a small edit distance, for "did you mean" hints.
func suggestion(for word: String, among candidates: [String]) -> String? {
    func distance(_ a: [Character], _ b: [Character]) -> Int {
        var row = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in 1...max(b.count, 1) where !b.isEmpty {
                let old = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = old
            }
        }
        return row[b.count]
    }
    // `weight-decay` and `weight_decay` are the same word here.
    func normal(_ s: String) -> [Character] { Array(s.lowercased().replacingOccurrences(of: "-", with: "_")) }
    let w = normal(word)
    let scored = candidates.map { ($0, distance(w, normal($0))) }.sorted { $0.1 < $1.1 }
    guard let best = scored.first, best.1 <= max(2, w.count / 3) else { return nil }
    return best.0
}
