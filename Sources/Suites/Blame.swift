// The blame logic: what the engine would refuse in a run, found at parse time and located at the key that set it.
import Datasets
import Engine
import Foundation
import Optim
import TOMLKit
import Training

extension SuiteParser {
    /// Where a finetune run starts: the `[[pretrain]]` it names, filled in, or the checkpoint file
    /// it names, hashed (its path taken relative to the suite file's folder). Train suites name neither.
    func resolveStart(_ s: inout RunSpec, pretrains: [(ref: PretrainRef, path: String)]) throws {
        func where_(_ setting: String) -> String { locator.sets("grid.\(setting)") ? "grid.\(setting)" : "defaults.\(setting)" }
        if s.task == .train {
            for (name, set) in [("pretrain", s.pretrain != nil), ("checkpoint", s.config.initialWeights != nil), ("reinit_head", s.reinitHead != nil)] where set {
                throw fail(where_(name), "`\(name)` is for finetune suites: set task = \"finetune\"")
            }
            return
        }
        if s.pretrain != nil, s.config.initialWeights != nil {
            throw fail(where_("checkpoint"), "\(s.label): `pretrain` and `checkpoint` both set; a run starts from one of them")
        }
        if let name = s.pretrain?.name {
            guard let p = pretrains.first(where: { $0.ref.name == name }) else {
                let known = pretrains.map { "\"\($0.ref.name)\"" }.joined(separator: ", ")
                throw fail(where_("pretrain"), "no [[pretrain]] named \"\(name)\"" + (known.isEmpty ? "" : " (this suite has \(known))"))
            }
            s.pretrain = p.ref
            if p.ref.config.model != s.config.model {
                throw fail(where_("pretrain"), "\(s.label): pretrain \"\(name)\" trains \(p.ref.config.model), this run \(s.config.model); a finetune starts from the same model")
            }
        }
        if let w = s.config.initialWeights {
            let path = w.path.hasPrefix("/") ? w.path : ((file as NSString).deletingLastPathComponent as NSString).appendingPathComponent(w.path)
            do { s.config.initialWeights = try InitialWeights.reading(path, reinitHead: s.reinitHead ?? false) } catch {
                throw fail(where_("checkpoint"), "cannot read the checkpoint \(path) (relative paths are taken from the suite file's folder)")
            }
        }
    }

    /// What the engine would refuse, found now and located (a pretrain's at its entry).
    func check(_ s: RunSpec, optimizerPath: String?, noisePath: String? = nil, at entry: String? = nil) throws {
        // The key that sets `setting` (the entry's, the grid's or the defaults'), never one the
        // suite did not write: a value it left at its default is blamed on the entry or on nothing.
        func setBy(_ setting: String) -> String? {
            (entry.map { ["\($0).\(setting)"] } ?? ["grid.\(setting)", "defaults.\(setting)"]).first { locator.sets($0) }
        }
        func where_(_ setting: String) -> String? { setBy(setting) ?? entry }
        // The key an error concerns, from the setting it carries: an [[optimizer]] or [[noise]]
        // entry's own key (or the entry) for theirs, else the key that set it.
        func blame(_ error: Error, otherwise fallback: String) -> String? {
            let setting = (error as? ConfigurationError)?.setting ?? fallback
            for (keys, path) in [(Settings.optimizerKeys, optimizerPath), (Settings.noiseKeys, noisePath)] where keys.contains(setting) && setting != "seed" {
                guard let path else { return entry }
                return locator.sets("\(path).\(setting)") ? "\(path).\(setting)" : path
            }
            return where_(setting)
        }
        do { try s.data.validate() } catch { throw fail(blame(error, otherwise: "dataset"), "\(s.label): \(error)") }
        do { try s.config.validate() } catch { throw fail(blame(error, otherwise: "epochs"), "\(s.label): \(error)") }
        do { _ = try s.config.lrSchedule(iterationsPerEpoch: 1) } catch { throw fail(blame(error, otherwise: "lr"), "\(s.label): \(error)") }
        if let prefixes = s.config.freeze, let model = try? Architectures.make(s.config.model, numClasses: s.data.runClasses) {
            do { _ = try model.params(under: prefixes) } catch { throw fail(where_("freeze"), "\(s.label): \(error)") }
        }
        // The training images a run will have, where the dataset's size is known now.
        let total = (s.data.dataset.trainImages ?? s.data.syntheticTrain) * s.data.runClasses / s.data.datasetClasses
        let afterSplit = total - Int((Double(total) * s.data.validationFraction).rounded())
        let images = min(afterSplit, s.data.trainSubset ?? afterSplit)
        if images < s.config.batchSize {
            // Blamed on the first of the settings behind the count that the suite wrote.
            let culprit = ["subset", "validation", "synthetic_train", "batch_size"].lazy.compactMap(setBy).first ?? entry
            throw fail(culprit, "\(s.label): \(images) training images, fewer than one batch of \(s.config.batchSize)")
        }
    }
}
