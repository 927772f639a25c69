// The training methods as plug-ins: their registry, parameters, configuration and resolution.
import Engine
import Foundation

/// The training method of a run: which loss it trains with and what it does to a batch before
/// the step (Mixup). `nil` in `TrainConfig.method` is `ce`, so configurations made before
/// methods existed encode, and hash, as before. Every parameter is filled in (its default when
/// not given), so two spellings of one run have one key.
public struct MethodConfig: Sendable, Codable, Hashable {
    public var name: String
    public var parameters: [String: Double]

    public init(name: String, parameters: [String: Double] = [:]) {
        self.name = name
        self.parameters = parameters
    }

    /// The method's parameter (its default where the configuration does not have it).
    public subscript(_ parameter: String) -> Double {
        parameters[parameter] ?? Methods.named(name)?.parameters.first { $0.name == parameter }?.defaultValue ?? .nan
    }

    /// "gce(q=0.7)", "mixup(alpha=1)": the method as labels and tables name it.
    public var label: String {
        guard let d = Methods.named(name), !d.parameters.isEmpty else { return name }
        return name + "(" + d.parameters.map { "\($0.name)=\(Self.format(self[$0.name]))" }.joined(separator: ",") + ")"
    }

    /// A parameter's value as labels write it: `8`, `0.7`.
    public static func format(_ v: Double) -> String { v == v.rounded() && abs(v) < 1e9 ? String(Int(v)) : String(format: "%g", v) }
}

/// A parameter of a training method: its name (the suite key, the CLI flag, the column of the
/// `settings` view), default, valid range and meaning.
public struct MethodParameter: Sendable {
    public let name: String
    public let defaultValue: Double
    public let range: ClosedRange<Double>
    /// The bounds themselves excluded (a q of 0 would divide by zero).
    public let open: Bool
    /// Whole numbers only (an epoch count).
    public let integer: Bool
    /// Values outside the range with a meaning of their own (Co-teaching's forget rate -1: the run's noise rate).
    public let special: [Double]
    public let help: String

    public init(_ name: String, default value: Double, range: ClosedRange<Double>, open: Bool = false, integer: Bool = false,
                special: [Double] = [], help: String) {
        (self.name, defaultValue, self.range, self.open, self.help) = (name, value, range, open, help)
        (self.integer, self.special) = (integer, special)
    }

    /// nil when `value` is acceptable, else what is wrong.
    public func check(_ value: Double) -> String? {
        if special.contains(value) { return nil }
        if integer, value.isFinite, value != value.rounded() { return "must be a whole number, got \(value)" }
        let inside = value.isFinite && (open ? value > range.lowerBound && value < range.upperBound : range.contains(value))
        if inside { return nil }
        let top = range.upperBound == .infinity ? "inf" : MethodConfig.format(range.upperBound)
        return "must be in \(open ? "(" : "[")\(MethodConfig.format(range.lowerBound)), \(top)\(open || range.upperBound == .infinity ? ")" : "]"), got \(value)"
    }
}

/// What a run's method needs to know to be built.
public struct MethodContext: Sendable {
    public var batchSize: Int
    public var classes: Int
    /// Floats per input image (the model's input, after any resize).
    public var imageSize: Int
    /// The run's label smoothing (cross-entropy methods apply it to their targets).
    public var labelSmoothing: Float
    public var seed: UInt64
    /// Training images the batches' sample indices range over (ELR keeps a row for each).
    public var samples: Int

    public init(batchSize: Int, classes: Int, imageSize: Int, labelSmoothing: Float = 0, seed: UInt64 = 0, samples: Int = 0) {
        (self.batchSize, self.classes, self.imageSize, self.labelSmoothing, self.seed) = (batchSize, classes, imageSize, labelSmoothing, seed)
        self.samples = samples
    }
}

/// A batch as the step trains on it: the input, the targets, and the labels its training
/// accuracy is counted against (with Mixup, lambda on `labels` and 1 - lambda on `mixed`, as
/// facebookresearch/mixup-cifar10 counts it).
public struct PreparedBatch {
    public var input: UnsafePointer<Float>
    public var targets: Targets
    public var labels: UnsafePointer<Int32>
    public var mixed: UnsafePointer<Int32>?
    public var lambda: Double
    /// Per-sample weights of the loss (Co-teaching's selection: 1 kept, 0 left out); nil: all 1.
    public var weights: UnsafePointer<Float>?

    public init(input: UnsafePointer<Float>, targets: Targets, labels: UnsafePointer<Int32>, mixed: UnsafePointer<Int32>? = nil, lambda: Double = 1,
                weights: UnsafePointer<Float>? = nil) {
        (self.input, self.targets, self.labels, self.mixed, self.lambda, self.weights) = (input, targets, labels, mixed, lambda, weights)
    }

    /// Training accuracy credit of `n` rows of logits from sample `offset` on (a whole batch, or a micro-batch).
    public func correct(logits: UnsafePointer<Float>, offset: Int, count n: Int, classes c: Int) -> Double {
        var credit = 0.0
        for r in 0..<n {
            let best = CrossEntropy.argmax(logits + r * c, c)
            if best == Int(labels[offset + r]) { credit += lambda }
            if let m = mixed, best == Int(m[offset + r]) { credit += 1 - lambda }
        }
        return credit
    }
}

/// A method as built for one run: its loss and what it does to each batch. `prepare` allocates
/// nothing (its buffers are made with it) and depends only on the run's seed, the iteration,
/// the batch and (ELR) the state the method keeps, so a resumed run trains on the same batches.
/// `indices` are the batch's sample indices in the training images (nil: none known).
/// A method that keeps state across steps gives it to the checkpoint (`stateTensors`) and
/// takes it back on resume (`restoreState`).
public protocol TrainingMethod: AnyObject {
    var loss: Loss { get }
    func prepare(input: UnsafePointer<Float>, labels: UnsafePointer<Int32>, indices: UnsafePointer<Int32>?, iteration: Int) -> PreparedBatch
    func stateTensors() -> [String: SafetensorsTensor]
    func restoreState(from file: SafetensorsFile, source: String) throws
}

public extension TrainingMethod {
    func prepare(input: UnsafePointer<Float>, labels: UnsafePointer<Int32>, iteration: Int) -> PreparedBatch {
        prepare(input: input, labels: labels, indices: nil, iteration: iteration)
    }
    func stateTensors() -> [String: SafetensorsTensor] { [:] }
    func restoreState(from file: SafetensorsFile, source: String) throws {}
}

/// A method that trains every batch as it comes with its loss.
public final class LossMethod: TrainingMethod {
    public let loss: Loss
    public init(_ loss: Loss) { self.loss = loss }
    public func prepare(input: UnsafePointer<Float>, labels: UnsafePointer<Int32>, indices: UnsafePointer<Int32>?, iteration: Int) -> PreparedBatch {
        PreparedBatch(input: input, targets: .hard(labels), labels: labels)
    }
}

/// One method as a plug-in: its name, parameters, cost and how it is built for a run.
public struct MethodDescriptor: Sendable {
    public let name: String
    /// One line for `--help`, docs and errors.
    public let summary: String
    public let parameters: [MethodParameter]
    /// Forward and backward passes of one step relative to plain training (1: the same cost);
    /// what cost estimates, the runner's ETA and `bench` multiply by.
    public let passesPerStep: Double
    public let make: @Sendable (_ config: MethodConfig, _ context: MethodContext) -> TrainingMethod

    public init(_ name: String, _ summary: String, parameters: [MethodParameter] = [], passesPerStep: Double = 1,
                make: @escaping @Sendable (MethodConfig, MethodContext) -> TrainingMethod) {
        (self.name, self.summary, self.parameters, self.passesPerStep, self.make) = (name, summary, parameters, passesPerStep, make)
    }

    /// A method that is a loss alone: each batch as it comes.
    public static func loss(_ name: String, _ summary: String, parameters: [MethodParameter] = [],
                            _ loss: @escaping @Sendable (MethodConfig, MethodContext) -> Loss) -> MethodDescriptor {
        MethodDescriptor(name, summary, parameters: parameters) { LossMethod(loss($0, $1)) }
    }
}

/// Every training method. Adding one: its loss in Sources/Engine/Losses/ (the fast path and
/// its float64 twin), and one line here; suites, the CLI, the store's `settings` view, the
/// report and docs/METHODS.md's check pick it up from this list.
public enum Methods {
    public static let all: [MethodDescriptor] = [
        .loss("ce", "cross-entropy (the run's label_smoothing applies)") { SoftCrossEntropy(smoothing: $1.labelSmoothing) },
        .loss("ls", "label smoothing, Szegedy et al. 2016: cross-entropy against (1 - epsilon) onehot(y) + epsilon / C, as a method of its own (compared with ce)",
              parameters: [MethodParameter("epsilon", default: 0.1, range: 0...1, open: true, help: "the smoothing: the share of each target spread over all classes")]) { c, _ in
            SoftCrossEntropy(smoothing: Float(c["epsilon"]))
        },
        .loss("gce", "generalized cross-entropy (1 - p_y^q) / q, Zhang and Sabuncu 2018",
              parameters: [MethodParameter("q", default: 0.7, range: 0...1, open: true, help: "the exponent: CE as q -> 0, MAE at 1")]) { c, _ in
            GeneralizedCrossEntropy(q: c["q"])
        },
        .loss("sce", "symmetric cross-entropy alpha CE + beta RCE, Wang et al. 2019",
              parameters: [MethodParameter("alpha", default: 0.1, range: 0...1000, help: "weight of the cross-entropy"),
                           MethodParameter("beta", default: 1, range: 0...1000, help: "weight of the reverse cross-entropy"),
                           MethodParameter("log_zero", default: SymmetricCrossEntropy.codeLogZero, range: -1000...0, open: true,
                                           help: "the value of log 0 in RCE (ln 1e-4 as the authors' code; -4 as the paper)")]) { c, _ in
            SymmetricCrossEntropy(alpha: c["alpha"], beta: c["beta"], logZero: c["log_zero"])
        },
        .loss("bootstrap_soft", "Reed et al. 2015's soft bootstrapping: CE against beta y + (1 - beta) p, p detached",
              parameters: [MethodParameter("beta", default: 0.95, range: 0...1, help: "weight of the given label")]) { c, _ in
            BootstrapLoss(.soft, beta: c["beta"])
        },
        .loss("bootstrap_hard", "Reed et al. 2015's hard bootstrapping: CE against beta y + (1 - beta) onehot(argmax p)",
              parameters: [MethodParameter("beta", default: 0.8, range: 0...1, help: "weight of the given label")]) { c, _ in
            BootstrapLoss(.hard, beta: c["beta"])
        },
        MethodDescriptor("mixup", "Mixup, Zhang et al. 2018: inputs and labels mixed with lambda ~ Beta(alpha, alpha)",
                         parameters: [MethodParameter("alpha", default: 1, range: 0...1000, open: true, help: "lambda ~ Beta(alpha, alpha)")]) {
            Mixup(alpha: $0["alpha"], context: $1)
        },
        MethodDescriptor("coteaching", "Co-teaching, Han et al. 2018: two networks, each trained on the samples of smallest loss by the other",
                         parameters: [MethodParameter("forget_rate", default: -1, range: 0...0.99, special: [-1],
                                                      help: "the share of each batch left out once the ramp is over; -1: the run's noise rate (the reference's default)"),
                                      MethodParameter("num_gradual", default: 10, range: 1...100_000, integer: true,
                                                      help: "epochs over which the share left out rises linearly from 0"),
                                      MethodParameter("exponent", default: 1, range: 0...100, open: true,
                                                      help: "the ramp ends at forget_rate ** exponent")],
                         passesPerStep: 2) { LossMethod(SoftCrossEntropy(smoothing: $1.labelSmoothing)) },
        MethodDescriptor("elr", "early-learning regularization, Liu et al. 2020: CE + lambda log(1 - <t, p>), t a running average of each sample's prediction",
                         parameters: [MethodParameter("beta", default: 0.7, range: 0...1, help: "momentum of the running targets (shengliu66/ELR's CIFAR-10 value)"),
                                      MethodParameter("lambda", default: 3, range: 0...1000, help: "weight of the regulariser")]) {
            ELR(beta: $0["beta"], lambda: $0["lambda"], context: $1)
        },
    ]

    public static func named(_ name: String) -> MethodDescriptor? { all.first { $0.name == name } }

    /// Every parameter name any method has, once each, in order (the CLI's flags, the view's columns).
    public static var parameterNames: [String] {
        var seen: [String] = []
        for d in all { for p in d.parameters where !seen.contains(p.name) { seen.append(p.name) } }
        return seen
    }

    /// What a parameter means in each method that has it, with its default: the help of its CLI flag.
    public static func parameterHelp(_ name: String) -> String {
        let uses = all.compactMap { d in d.parameters.first { $0.name == name }.map { "\(d.name): \($0.help) (default \(MethodConfig.format($0.defaultValue)))" } }
        return "Method parameter. " + uses.joined(separator: "; ") + "."
    }

    /// The configuration of `name` with `given` parameters: checked, defaults filled in; nil
    /// for plain `ce` (the configuration's default).
    public static func resolve(_ name: String, _ given: [String: Double] = [:]) throws -> MethodConfig? {
        guard let d = named(name) else {
            throw ConfigurationError("method", "unknown method '\(name)'; the methods are \(all.map(\.name).joined(separator: ", "))")
        }
        var parameters: [String: Double] = [:]
        for (k, v) in given {
            guard let p = d.parameters.first(where: { $0.name == k }) else {
                let known = d.parameters.map(\.name)
                throw ConfigurationError(k, "method \(name) has no parameter '\(k)'\(known.isEmpty ? "" : "; its parameters are \(known.joined(separator: ", "))")")
            }
            if let problem = p.check(v) { throw ConfigurationError(k, "\(name): \(k) \(problem)") }
            parameters[k] = v
        }
        for p in d.parameters where parameters[p.name] == nil { parameters[p.name] = p.defaultValue }
        return name == "ce" ? nil : MethodConfig(name: name, parameters: parameters)
    }

    /// Checks a configuration read back (a checkpoint, a job): a known method, its own parameters, each in range.
    public static func validate(_ config: MethodConfig) throws {
        let resolved = try resolve(config.name, config.parameters)
        guard resolved?.parameters.count ?? 0 == config.parameters.count else {
            let own = named(config.name)!.parameters.map(\.name).sorted()
            throw ConfigurationError("method", "method \(config.name) takes exactly the parameters \(own), got \(config.parameters.keys.sorted())")
        }
    }

    /// The method of a configuration, built for a run.
    /// Forward and backward passes of one step of `config` relative to plain training: the one
    /// number cost estimates, the runner's ETA and `bench` take a method's cost from.
    public static func passesPerStep(_ config: MethodConfig?) -> Double {
        config.flatMap { named($0.name)?.passesPerStep } ?? 1
    }

    public static func make(_ config: MethodConfig?, _ context: MethodContext) -> TrainingMethod {
        let c = config ?? MethodConfig(name: "ce")
        return named(c.name)!.make(c, context)
    }
}
