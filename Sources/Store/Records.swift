// The rows code writes and reads one at a time, as GRDB records over the tables the migrations make.
import Foundation
import GRDB

/// Records name their columns as the tables do (snake_case): `groupKey` is `group_key`.
protocol StoreRecord: Codable, FetchableRecord, PersistableRecord {}

extension StoreRecord {
    static var databaseColumnDecodingStrategy: DatabaseColumnDecodingStrategy { .convertFromSnakeCase }
    static var databaseColumnEncodingStrategy: DatabaseColumnEncodingStrategy { .convertToSnakeCase }
}

/// A row of `suites`: a suite's text, stored once per distinct text.
struct SuiteRecord: StoreRecord {
    static let databaseTableName = "suites"
    var name: String
    var description: String
    var path: String
    var text: String
    var sha256: String
    var addedAt: String
}

/// A row of `runs` as `register` first writes it (status, attempts and results come later, by UPDATE).
struct RunRecord: StoreRecord {
    static let databaseTableName = "runs"
    var key: String
    var groupKey: String
    var settingKey: String
    var label: String
    var task: String
    var dataset: String
    var model: String
    var optimizer: String
    var rho: Double?
    var noiseKind: String
    var noiseRate: Double
    var noiseLabels: String?
    var seed: Int64
    var epochs: Int
    var batchSize: Int
    var lr: Double
    var weightDecay: Double
    var trainSubset: Int?
    var validation: Double
    var config: String
    var dataIdentity: String
    var createdAt: String
    var keyVersion: Int
}

/// A row of `noise`: a run's realised label noise.
struct NoiseRecord: StoreRecord {
    static let databaseTableName = "noise"
    var runKey: String
    var kind: String
    var selection: String
    var seed: Int64
    var targetRate: Double
    var realisedRate: Double
    var corrupted: Int
    var classes: Int
    var transition: String
    var labelsSha256: String
    var labels: Data
}

/// A row of `epochs`: one epoch of one stage of a run.
struct EpochRecord: StoreRecord {
    static let databaseTableName = "epochs"
    var runKey: String
    var stage: String
    var epoch: Int
    var lr: Double
    var trainLoss: Double
    var trainAccuracy: Double
    var perturbedLoss: Double?
    var corruptedNoisyAccuracy: Double?
    var corruptedCleanAccuracy: Double?
    var validationLoss: Double?
    var validationAccuracy: Double?
    var testLoss: Double
    var testAccuracy: Double
    var seconds: Double
    var imagesPerSecond: Double
    var forgetRate: Double?
    var selectionPrecision: Double?
    var peerSelectionPrecision: Double?
    var peerTestAccuracy: Double?
}

/// A row of `metrics`: a finished run's summary numbers (its last stage's).
struct MetricsRecord: StoreRecord {
    static let databaseTableName = "metrics"
    var runKey: String
    var stage: String
    var lastEpoch: Int
    var lastTestAccuracy: Double
    var lastTestLoss: Double
    var lastTrainAccuracy: Double
    var lastMemorised: Double?
    var lastCorruptedClean: Double?
    var bestEpoch: Int
    var bestTestAccuracy: Double
    var valEpoch: Int?
    var valAccuracy: Double?
    var valTestAccuracy: Double?
    var mSharpness: Double?
    var hessianTop: Double?
    var relabelled: Int?
    var testConfusion: String?
    var detectionSamples: Int?
    var detectionCorrupted: Int?
    var detectionAuroc: Double?
    var detectionPrecision: Double?
}

/// A row of `sample_losses`: one training sample as a run's final model scored it.
struct SampleLossRecord: StoreRecord {
    static let databaseTableName = "sample_losses"
    var runKey: String
    var sample: Int
    var given: Int
    var truth: Int
    var loss: Double
}

/// The columns of an `epochs` row a report's learning curve reads (present in every schema version).
struct CurvePointRecord: Decodable, FetchableRecord {
    static var databaseColumnDecodingStrategy: DatabaseColumnDecodingStrategy { .convertFromSnakeCase }
    var epoch: Int
    var testAccuracy: Double
    var corruptedNoisyAccuracy: Double?
    var validationAccuracy: Double?
    var imagesPerSecond: Double
}
