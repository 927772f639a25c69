import Engine
import Foundation

/// Where CIFAR data lives: `--data-dir`, else $SAMBENCH_DATA, else $XDG_DATA_HOME/sambench,
/// else ~/.local/share/sambench.
public enum DataDirectory {
    public static func resolve(_ flag: String?) -> String {
        if let flag, !flag.isEmpty { return flag }
        let env = ProcessInfo.processInfo.environment
        if let d = env["SAMBENCH_DATA"], !d.isEmpty { return d }
        if let x = env["XDG_DATA_HOME"], !x.isEmpty { return (x as NSString).appendingPathComponent("sambench") }
        return (NSHomeDirectory() as NSString).appendingPathComponent(".local/share/sambench")
    }
}

/// What data a run trains on: the dataset, its noise, validation split and training subset.
public struct DataSpec: Sendable, Codable, Hashable {
    public var dataset: Dataset = .synthetic
    public var syntheticClasses: Int = 10
    public var syntheticTrain: Int = 5000
    public var syntheticTest: Int = 1000
    public var syntheticSeed: UInt64 = 1
    public var noise = NoiseSpec(kind: .none)
    /// Fraction of the training set held out (stratified) for validation; 0: none.
    public var validationFraction: Double = 0
    /// Validation scored against the noisy labels (what a practitioner has) or the clean ones.
    public var validationNoisy: Bool = true
    /// Train on this many images only (after the validation split); nil: all.
    public var trainSubset: Int?
    /// The subset is stratified (true) or the first N (false).
    public var subsetStratified: Bool = true
    /// Seed of the split and subset choices.
    public var splitSeed: UInt64 = 0
    /// Evaluate on a stratified subset of this many test images (the same for every seed:
    /// cheaper evaluation each epoch, at the cost of a noisier estimate); nil: the whole test set.
    public var testSubset: Int?
    /// Train and test on these classes only, relabelled 0..<k in the order given (e.g. pretrain
    /// on CIFAR-10's classes 0-4, finetune on 5-9); nil: every class. Applied before the noise.
    public var classes: [Int]?

    public init() {}

    /// Classes of the dataset before any `classes` selection.
    public var datasetClasses: Int {
        switch dataset {
        case .cifar10: 10
        case .cifar100: 100
        case .synthetic: syntheticClasses
        }
    }

    /// Classes a run sees.
    public var runClasses: Int { classes?.count ?? datasetClasses }

    public func validate() throws {
        guard (0..<1).contains(validationFraction) else { throw ConfigurationError("validation", "validation fraction must be in [0, 1), got \(validationFraction)") }
        if let n = trainSubset, n < 1 { throw ConfigurationError("subset", "training subset must be >= 1, got \(n)") }
        if let n = testSubset, n < 1 { throw ConfigurationError("test_subset", "test subset must be >= 1, got \(n)") }
        if dataset == .synthetic {
            guard syntheticClasses >= 2, syntheticTrain >= 1, syntheticTest >= 1 else { throw ConfigurationError("synthetic_classes", "synthetic data: classes >= 2 and sizes >= 1") }
        }
        if let c = classes {
            guard c.count >= 2 else { throw ConfigurationError("classes", "classes: at least 2 classes, got \(c)") }
            guard Set(c).count == c.count else { throw ConfigurationError("classes", "classes: each class once, got \(c)") }
            guard c.allSatisfy({ (0..<datasetClasses).contains($0) }) else {
                throw ConfigurationError("classes", "classes: \(dataset) has classes 0...\(datasetClasses - 1), got \(c)")
            }
            // These noise models are defined on the dataset's own classes (maps, superclasses, files by index).
            guard ![.asymmetric, .asymmetricBlocks, .human].contains(noise.kind) else {
                throw ConfigurationError("classes", "classes: \(noise.kind.rawValue) noise is defined on all of \(dataset)'s classes; use symmetric, uniform, pairflip or instance noise with a class selection")
            }
        }
        // Upper bounds: nothing is allocated from a crafted size, and a subset no smaller than
        // the data (a new key for the same run) is refused.
        if dataset == .synthetic {
            guard syntheticClasses <= 1000 else { throw ConfigurationError("synthetic_classes", "synthetic data: at most 1000 classes, got \(syntheticClasses)") }
            guard syntheticTrain <= 1_000_000 else { throw ConfigurationError("synthetic_train", "synthetic data: at most 1000000 training images, got \(syntheticTrain)") }
            guard syntheticTest <= 1_000_000 else { throw ConfigurationError("synthetic_test", "synthetic data: at most 1000000 test images, got \(syntheticTest)") }
        }
        let train = (dataset.trainImages ?? syntheticTrain) * runClasses / datasetClasses
        let test = (dataset.testImages ?? syntheticTest) * runClasses / datasetClasses
        if let n = trainSubset, n >= train {
            throw ConfigurationError("subset", "training subset of \(n) images: the data has \(train) training images; leave `subset` out to train on all")
        }
        if let n = testSubset, n >= test {
            throw ConfigurationError("test_subset", "test subset of \(n) images: the data has \(test) test images; leave `test_subset` out to test on all")
        }
        try noise.validate()
    }
}

extension RawImages {
    /// The images of the given classes, in their order, relabelled by position in `classes`
    /// (superclass labels dropped).
    func selecting(classes: [Int]) -> RawImages {
        var newLabel = [Int32](repeating: -1, count: (classes.max() ?? 0) + 1)
        for (k, c) in classes.enumerated() { newLabel[c] = Int32(k) }
        var pixels: [UInt8] = [], labels: [Int32] = []
        for i in 0..<count where Int(self.labels[i]) < newLabel.count && newLabel[Int(self.labels[i])] >= 0 {
            pixels += self.pixels[(i * RawImages.imageBytes)..<((i + 1) * RawImages.imageBytes)]
            labels.append(newLabel[Int(self.labels[i])])
        }
        return RawImages(pixels: pixels, labels: labels)
    }
}

public enum DataPreparation {
    /// Loads the dataset, applies the label noise to the whole training set (so label files
    /// line up by index), then splits off validation and takes the training subset.
    public static func prepare(_ spec: DataSpec, dataDir: String?) throws -> PreparedData {
        try spec.validate()
        var train: RawImages, classes: Int
        let normalization: Normalization
        var test: RawImages
        switch spec.dataset {
        case .cifar10:
            let d = try CIFAR.loadCIFAR10(root: DataDirectory.resolve(dataDir))
            (train, test, classes, normalization) = (d.train, d.test, 10, .cifar10)
        case .cifar100:
            let d = try CIFAR.loadCIFAR100(root: DataDirectory.resolve(dataDir))
            (train, test, classes, normalization) = (d.train, d.test, 100, .cifar100)
        case .synthetic:
            train = SyntheticData.make(count: spec.syntheticTrain, classes: spec.syntheticClasses, seed: spec.syntheticSeed, stream: 0)
            test = SyntheticData.make(count: spec.syntheticTest, classes: spec.syntheticClasses, seed: spec.syntheticSeed, stream: 1)
            (classes, normalization) = (spec.syntheticClasses, .synthetic)
        }
        if let selected = spec.classes {
            train = train.selecting(classes: selected)
            test = test.selecting(classes: selected)
            classes = selected.count
        }
        if let n = spec.testSubset, n < test.count {
            let keep = Splits.subset(labels: test.labels, among: Array(0..<test.count), count: n, stratified: true, classes: classes, seed: 0).sorted()
            var pixels = [UInt8]()
            pixels.reserveCapacity(keep.count * RawImages.imageBytes)
            for i in keep { pixels += test.pixels[(i * RawImages.imageBytes)..<((i + 1) * RawImages.imageBytes)] }
            test = RawImages(pixels: pixels, labels: keep.map { test.labels[$0] })
        }
        let noise = try applyNoise(spec.noise, to: train, classes: classes, normalization: normalization)
        let all = Array(0..<train.count)
        var trainIndices = all, validation: [Int] = []
        if spec.validationFraction > 0 {
            (trainIndices, validation) = Splits.stratified(labels: train.labels, among: all, fraction: spec.validationFraction,
                                                           classes: classes, seed: spec.splitSeed)
        }
        if let n = spec.trainSubset {
            trainIndices = Splits.subset(labels: train.labels, among: trainIndices, count: n, stratified: spec.subsetStratified,
                                         classes: classes, seed: spec.splitSeed)
        }
        return PreparedData(name: spec.dataset.rawValue, classes: classes, normalization: normalization, trainImages: train.pixels,
                            trainLabels: noise?.labels ?? train.labels, cleanTrainLabels: train.labels,
                            testImages: test.pixels, testLabels: test.labels, trainIndices: trainIndices,
                            validationIndices: validation, validationUsesNoisyLabels: spec.validationNoisy, noise: noise)
    }

    /// The noise realisation on a training set (nil for `none`).
    public static func applyNoise(_ spec: NoiseSpec, to train: RawImages, classes: Int, normalization: Normalization) throws -> NoiseRealisation? {
        guard spec.kind != .none else { return nil }
        var human: [Int32]?
        if spec.kind == .human, let file = spec.labelsFile { human = try readLabelFile(file) }
        var features: (values: [Float], dimension: Int)?
        if spec.kind == .instance {
            var v = [Float](repeating: 0, count: train.pixels.count)
            let plane = 1024
            for i in 0..<train.count { for c in 0..<3 { for p in 0..<plane {
                let k = (i * 3 + c) * plane + p
                v[k] = (Float(train.pixels[k]) / 255 - normalization.mean[c]) / normalization.std[c]
            } } }
            features = (v, RawImages.imageBytes)
        }
        return try LabelNoise.apply(spec, clean: train.labels, classes: classes, coarse: train.coarseLabels,
                                    features: features, humanLabels: human)
    }

    /// `FILE.npy`, or `FILE.pt:KEY` for the official CIFAR-N files.
    public static func readLabelFile(_ spec: LabelSpec) throws -> [Int32] {
        if let key = spec.key { return try TorchLabels.read(spec.path, key: key) }
        return try NPY.readLabels(spec.path)
    }
}
