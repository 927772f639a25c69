// What a saved model's safetensors metadata holds beside its state dict.
import Datasets
import Engine
import Foundation

/// What sambench writes into a saved model's safetensors metadata beside the state dict (all
/// strings, as the format requires): `model` and `num_classes` (Checkpoint.save), the run's
/// configuration as JSON, the normalization it trained with as JSON, and the dataset's name.
public enum WeightsMetadata {
    public static let config = "sambench.config"
    public static let normalization = "sambench.normalization"
    public static let dataset = "dataset"
}

extension Checkpoint {
    /// The normalization a sambench-saved file recorded, nil when it has none (a PyTorch file).
    public static func recordedNormalization(in file: SafetensorsFile, source: String) throws -> Normalization? {
        guard let json = file.metadata[WeightsMetadata.normalization] else { return nil }
        guard let n = try? JSONDecoder().decode(Normalization.self, from: Data(json.utf8)),
              n.isUsable else {
            throw EngineError("\(source): metadata \(WeightsMetadata.normalization) is not {\"mean\": [3 finite numbers], \"std\": [3 numbers in [1e-6, 1000]]}: \(json)")
        }
        return n
    }
}

extension Trainer {
    /// Writes the current model as a state dict with the run's configuration and normalization
    /// in the metadata (plus `extra`), loadable by PyTorch's `load_state_dict` and by `--init`.
    public func saveWeights(to path: String, extra: [String: String] = [:]) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        var meta = extra
        meta[WeightsMetadata.config] = String(decoding: try enc.encode(config), as: UTF8.self)
        meta[WeightsMetadata.normalization] = String(decoding: try enc.encode(data.normalization), as: UTF8.self)
        meta[WeightsMetadata.dataset] = data.name
        try Checkpoint.save(state, to: path, metadata: meta)
    }
}
