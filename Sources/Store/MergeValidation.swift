// What merge checks of every run of a source before it copies anything: the values a run of sambench can store.
import Engine
import Foundation
import GRDB
import Suites
import Training

extension Store {
    /// The first value of run `key` in `db` (a merge source) that no run of sambench stores, nil
    /// when there is none: a status outside `RunStatus`, a text or a number of the wrong type, a
    /// count out of range, a configuration that does not decode or no longer hashes to the key, a
    /// finished run without its metrics, an accuracy or rate outside [0, 1], a loss or time that
    /// is not finite. Read through `DatabaseValue`s, so a crafted file cannot trap a decode.
    static func implausibility(ofRun key: String, in db: Database) throws -> String? {
        guard let run = try Row.fetchOne(db, sql: "SELECT * FROM runs WHERE key = ?", arguments: [key]) else { return "no row" }
        func text(_ row: Row, _ column: String) -> String? {
            if case let .string(s) = (row[column] as DatabaseValue).storage { return s }
            return nil
        }
        func number(_ row: Row, _ column: String) -> Double? {
            switch (row[column] as DatabaseValue).storage {
            case let .int64(i): return Double(i)
            case let .double(d): return d
            default: return nil
            }
        }
        func integer(_ row: Row, _ column: String) -> Int64? {
            if case let .int64(i) = (row[column] as DatabaseValue).storage { return i }
            return nil
        }
        func isNull(_ row: Row, _ column: String) -> Bool { (row[column] as DatabaseValue).isNull }
        func describe(_ row: Row, _ column: String) -> String { "\(column) = \(row[column] as DatabaseValue)" }

        guard let statusText = text(run, "status"), let status = RunStatus(rawValue: statusText) else {
            return "\(describe(run, "status")), not one of \(RunStatus.allCases.map(\.rawValue).joined(separator: ", "))"
        }
        for column in ["label", "config", "data_identity", "group_key", "created_at"] where text(run, column) == nil { return "\(describe(run, column)), expected text" }
        // A label is printed by `runs`, `report` and the runner: one line of text, no terminal codes.
        if let c = firstControlCharacter(text(run, "label")!) { return "a control character (\(c)) in its label" }
        for column in ["error", "host", "sambench_version", "git_revision", "started_at", "finished_at", "noise_labels"]
        where run.hasColumn(column) && !isNull(run, column) && text(run, column) == nil {
            return "\(describe(run, column)), expected text or NULL"
        }
        for column in ["threads", "train_subset", "diverged_step", "diverged_epoch"]
        where run.hasColumn(column) && !isNull(run, column) && integer(run, column) == nil {
            return "\(describe(run, column)), expected an integer or NULL"
        }
        guard let epochs = integer(run, "epochs"), (1...Int64(TrainConfig.bounds.epochs)).contains(epochs) else {
            return "\(describe(run, "epochs")), expected 1 to \(TrainConfig.bounds.epochs)"
        }
        guard let done = integer(run, "epochs_done"), (0...2 * epochs).contains(done) else { return "\(describe(run, "epochs_done")), expected 0 to \(2 * epochs)" }
        guard let attempts = integer(run, "attempts"), attempts >= 0 else { return "\(describe(run, "attempts")), expected a count >= 0" }
        if !isNull(run, "train_seconds"), !(number(run, "train_seconds").map { $0.isFinite && $0 >= 0 } ?? false) {
            return "\(describe(run, "train_seconds")), expected seconds >= 0"
        }
        guard let spec = try? JSONDecoder().decode(RunSpec.self, from: Data(text(run, "config")!.utf8)) else {
            return "a configuration this sambench cannot read"
        }
        let computed = RunKey.key(spec, identity: text(run, "data_identity")!)
        guard computed == key else { return "its configuration hashes to the key \(computed), not to its own (edited after it ran?)" }
        guard spec.config.epochs == Int(epochs) else { return "\(describe(run, "epochs")), but its configuration has \(spec.config.epochs)" }
        if status == .diverged {
            for column in ["diverged_step", "diverged_epoch"] where !(integer(run, column).map { $0 >= 0 } ?? false) {
                return "diverged, with \(describe(run, column))"
            }
        }

        let shares = ["train_accuracy", "corrupted_noisy_accuracy", "corrupted_clean_accuracy", "validation_accuracy", "test_accuracy",
                      "forget_rate", "selection_precision", "peer_selection_precision", "peer_test_accuracy",
                      "last_test_accuracy", "last_train_accuracy", "last_memorised", "last_corrupted_clean", "best_test_accuracy",
                      "val_accuracy", "val_test_accuracy", "detection_auroc", "detection_precision", "target_rate", "realised_rate"]
        let finite = ["lr", "train_loss", "perturbed_loss", "validation_loss", "test_loss", "seconds", "images_per_second", "last_test_loss",
                      "m_sharpness", "hessian_top"]
        let epochNumbers = ["epoch", "last_epoch", "best_epoch", "val_epoch"]
        /// Every column of `row` the lists above name: NULL where the schema allows it, else in range.
        func values(_ row: Row, _ table: String) -> String? {
            for column in row.columnNames where !isNull(row, column) {
                if shares.contains(column), !(number(row, column).map { (0...1).contains($0) } ?? false) {
                    return "\(table) \(describe(row, column)), outside [0, 1]"
                }
                if finite.contains(column), !(number(row, column).map(\.isFinite) ?? false) { return "\(table) \(describe(row, column)), not a finite number" }
                if epochNumbers.contains(column), !(integer(row, column).map { (1...epochs).contains($0) } ?? false) {
                    return "\(table) \(describe(row, column)), not an epoch of its \(epochs)"
                }
            }
            if row.hasColumn("stage"), !(text(row, "stage").map { Stage(rawValue: $0) != nil } ?? false) {
                return "\(table) \(describe(row, "stage")), not one of \(Stage.allCases.map(\.rawValue).joined(separator: ", "))"
            }
            return nil
        }
        for row in try Row.fetchAll(db, sql: "SELECT * FROM epochs WHERE run_key = ?", arguments: [key]) {
            if let why = values(row, "epochs:") { return why }
        }
        let metrics = try Row.fetchOne(db, sql: "SELECT * FROM metrics WHERE run_key = ?", arguments: [key])
        if let metrics, let why = values(metrics, "metrics:") { return why }
        if status == .done, metrics == nil { return "done, without its metrics" }
        if let noise = try Row.fetchOne(db, sql: "SELECT * FROM noise WHERE run_key = ?", arguments: [key]) {
            if let why = values(noise, "noise:") { return why }
            if !(integer(noise, "corrupted").map { $0 >= 0 } ?? false) { return "noise: \(describe(noise, "corrupted")), expected a count >= 0" }
        }
        return nil
    }

    /// The first row of `db` (a merge source) that refers to a row it does not have (a suite's
    /// link to a missing run, an epoch of a missing run), nil when there is none: copied, it
    /// would fail the target's foreign keys at commit, which SQLite reports naming no row.
    static func danglingReference(in db: Database) throws -> String? {
        let broken = try Row.fetchAll(db, sql: "PRAGMA foreign_key_check")
        guard let first = broken.first else { return nil }
        let table: String = first["table"], parent: String = first["parent"]
        var which = ""
        if let rowid: Int64 = first["rowid"],
           let row = try Row.fetchOne(db, sql: "SELECT * FROM \"\(table.replacingOccurrences(of: "\"", with: "\"\""))\" WHERE rowid = ?", arguments: [rowid]) {
            which = " (" + row.columnNames.filter { $0.hasSuffix("_key") || $0.hasSuffix("_id") }
                .map { "\($0) \(row[$0] as DatabaseValue)" }.joined(separator: ", ") + ")"
        }
        return "\(broken.count) rows refer to rows that are not there; the first, in \(table)\(which), to a missing row of \(parent)"
    }
}
