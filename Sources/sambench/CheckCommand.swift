import ArgumentParser
import Engine
import Foundation
import Report
import Store
import Suites

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "A regression gate: compare results with a baseline, and check a suite's expectations.",
        discussion: """
        --baseline FILE is the JSON of `sambench report` (commit it). Groups (runs that differ \
        only in seed) are matched by their group key (docs/CI.md); a group regresses when its mean test accuracy drops \
        by more than max(floor, k x the standard error of the difference), the standard error \
        taken from the seed variance measured (never below the pooled spread of all groups), or \
        when it has more diverged or failed runs. Defaults: floor 1 point, k 3 (--tolerance \
        floor=1,k=3). Groups missing from the current results fail the check; new groups and \
        groups whose configuration changed (other run keys) are listed apart.

        --suite FILE also checks the suite's [[expect]] assertions (docs/SUITES.md); --suite \
        NAME only restricts the results to that suite's runs.

        A check that would compare nothing is refused, never a PASS: a baseline with no groups, \
        or with a group that has no finished run or numbers no accuracies can have (n = 0, a \
        negative or impossible standard deviation); no --baseline and no [[expect]] to check.

        Exit status: 0 pass, 1 regression (or missing groups, or a failed expectation), 2 usage \
        or data error. docs/CI.md shows how to use it in CI.
        """
    )

    @OptionGroup var database: DatabaseOption
    @Option(help: "The baseline: a `sambench report --format json` file.") var baseline: String?
    @Option(help: "A suite file (its results and its [[expect]] assertions) or a suite name.") var suite: String?
    @Option(help: "floor=POINTS,k=NUMBER (default floor=1,k=3).") var tolerance: String?
    @Option(help: "Output format.") var format: TextOrJSON = .text

    func validate() throws {
        guard baseline != nil || suite != nil else { throw ValidationError("give --baseline FILE, --suite FILE, or both") }
    }

    func run() throws {
        let tol = try usageFailure { try tolerance.map(Tolerance.init) ?? Tolerance() }
        var name = suite
        var expectations: [Expectation] = []
        var comparedWith: Baseline?
        if let suite, suite.hasSuffix(".toml") || FileManager.default.fileExists(atPath: suite) {
            let s = try usageFailure { try Suite.load(suite) }
            name = s.name
            expectations = s.expectations
            comparedWith = s.baseline
        }
        let base: Report? = try baseline.map { path in
            try usageFailure {
                let data = Data(try InputFile.contents(path, what: "the baseline", limit: 256 << 20))
                let report: Report
                do { report = try JSONDecoder().decode(Report.self, from: data) } catch {
                    throw CheckError("\(path): not the JSON of `sambench report --format json` (\(error))")
                }
                let problems = report.baselineProblems
                guard problems.isEmpty else {
                    throw CheckError("\(path): not a baseline anything can be checked against:\n  " + problems.joined(separator: "\n  "))
                }
                return report
            }
        }
        // A gate that compared nothing must not say PASS.
        if base == nil && expectations.isEmpty, let suite {
            let why = name == suite ? "--suite \(suite) names results, not assertions" : "the suite \(suite) has no [[expect]] entries"
            try usageFailure { throw CheckError("nothing to check: \(why), and no --baseline was given") }
        }
        let store = try usageFailure { try Store(path: database.db, readOnly: true) }
        let runs = try store.storedRuns(suite: name)
        let suites = try name.map { [$0] } ?? store.suiteNames()
        let metric = base?.metric ?? .last
        let against = try comparedWith ?? usageFailure { try ReportBuilder.baseline(of: store, suites: name.map { [$0] }) }
        let current = ReportBuilder.build(runs, suites: suites, metric: metric, baseline: against)
        let groups = base.map { Checker.compare(current: current, baseline: $0, tolerance: tol) } ?? []
        let verdicts = Checker.evaluate(expectations) { m in m == metric ? current : ReportBuilder.build(runs, suites: suites, metric: m, baseline: against) }
        let outcome = CheckOutcome(tolerance: tol, groups: groups, expectations: verdicts)
        if format == .json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            emit(String(decoding: try encoder.encode(outcome), as: UTF8.self))
        } else {
            emit("sambench check: \(database.db)\(name.map { ", suite " + $0 } ?? ""): \(runs.count) runs, metric: \(metric.title)")
            emit(outcome.text(baseline: baseline, suite: suite))
        }
        if !outcome.passed { throw ExitCode(1) }
    }
}
