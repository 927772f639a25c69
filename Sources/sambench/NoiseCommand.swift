import ArgumentParser
import Datasets
import Foundation

struct NoiseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "noise",
        abstract: "Realise a label-noise model on a training set and export the noisy labels.",
        discussion: """
        Writes the noisy training labels, in the dataset's original order, as a 1-D int64 .npy \
        (np.load gives the vector any trainer can use), and prints the realised rate and the \
        clean x noisy transition counts. Kinds: symmetric (flip to another class), uniform \
        (relabel over all classes), asymmetric (CIFAR-10 class map; CIFAR-100 next class in the \
        true superclass), asymmetric-blocks (CIFAR-100 blocks of 5), pairflip, instance (Xia et \
        al. 2020), human (--labels FILE.npy or FILE.pt:KEY). docs/NOISE.md defines each.
        """
    )

    @Option(help: "Dataset.") var dataset: Dataset = .cifar10
    @Option(name: [.customLong("kind"), .customLong("noise")], help: "Noise kind (docs/NOISE.md; train: --noise, suites: kind).") var kind: NoiseKind
    @Option(name: [.customLong("rate"), .customLong("noise-rate")], parsing: .unconditional, help: "Target noise rate in [0, 1] (train: --noise-rate, suites: rate).") var rate: Double = 0
    @Option(name: [.customLong("seed"), .customLong("noise-seed")], parsing: .unconditional, help: "Seed of the noise realisation (train: --noise-seed, suites: the noise entry's seed).") var seed: UInt64 = 0
    @Option(name: [.customLong("selection"), .customLong("noise-selection")], help: "Which samples are corrupted (train: --noise-selection, suites: selection).") var selection: NoiseSelection = .exact
    @Option(parsing: .unconditional, help: "Instance noise: std of the truncated normal of per-sample flip rates.") var instanceStd: Double = 0.1
    @Option(help: "Human noise: FILE.npy or FILE.pt:KEY (e.g. CIFAR-10_human.pt:worse_label).") var labels: LabelSpec?
    @OptionGroup var dataDirectory: DataDirOption
    var dataDir: String? { dataDirectory.dataDir }
    @Option(help: "Write the noisy labels here (.npy, int64).") var out: String
    @Option(help: "Output format of the summary.") var format: TextOrJSON = .text

    func spec() throws -> NoiseSpec {
        let spec = NoiseSpec(kind: kind, rate: rate, selection: selection, seed: seed, instanceStd: instanceStd, labelsFile: labels)
        do { try spec.validate() } catch { throw ValidationError("\(error)") }
        return spec
    }

    func validate() throws {
        _ = try spec()
    }

    func run() throws {
        var data = DataSpec()
        data.dataset = dataset
        data.noise = try spec()
        let prepared = try DataPreparation.prepare(data, dataDir: dataDir)
        guard let r = prepared.noise else { throw ValidationError("noise kind none: nothing to write") }
        try NPY.writeLabels(r.labels, to: out)
        if format == .json {
            struct Summary: Encodable {
                let dataset: String, kind: String, selection: String, seed: UInt64, target_rate: Double
                let realised_rate: Double, transition: [[Int]], labels_sha256: String, count: Int, out: String
            }
            let s = Summary(dataset: dataset.rawValue, kind: r.spec.kind.rawValue, selection: r.spec.selection.rawValue, seed: r.spec.seed,
                            target_rate: r.spec.rate, realised_rate: r.realisedRate, transition: r.transition,
                            labels_sha256: r.labelsSHA256, count: r.labels.count, out: out)
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try enc.encode(s), as: UTF8.self))
        } else {
            emit("\(dataset) \(r.spec.kind.rawValue) noise, target rate \(r.spec.rate), selection \(r.spec.selection.rawValue), seed \(r.spec.seed)")
            emit(String(format: "realised rate %.4f (%d of %d labels changed)", r.realisedRate,
                        Int((r.realisedRate * Double(r.labels.count)).rounded()), r.labels.count))
            emit("labels sha256 \(r.labelsSHA256)  (of the int64 little-endian vector)")
            emit("transition counts (rows: clean class, columns: noisy label):")
            for (i, row) in r.transition.enumerated() where r.transition.count <= 20 {
                emit(String(format: "%4d ", i) + row.map { String(format: "%6d", $0) }.joined())
            }
            emit("wrote \(out)")
        }
    }
}
