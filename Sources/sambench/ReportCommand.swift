import ArgumentParser
import Charts
import Engine
import Foundation
import Report
import Runner
import Store
import Suites
import Training

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Tables with confidence intervals over seeds, SAM against SGD paired by seed, and charts.",
        discussion: """
        Runs that differ only in seed form a group: n, mean, standard deviation and the 95% \
        confidence interval of the mean (Student t). For every noise setting, each SAM-family \
        rho is compared with SGD on the same seeds and the same noisy labels: the mean paired \
        difference, its 95% interval and the paired t-test's p-value. Where a suite holds out a \
        validation split, the rho with the best mean validation accuracy is marked: chosen \
        without looking at the test set. Groups with failed, diverged or unfinished runs are \
        flagged, and so are groups whose seeds disagree far more than the others.

        --metric: last (the test accuracy at the last epoch, the default), best (at the best \
        epoch, chosen on the test set: optimistic, as many papers report), val (at the epoch \
        with the best validation accuracy).

        Charts (PNG, cairo + libpng, with the suite, run count, version and date in text \
        chunks): per noise family the headline, SAM minus SGD paired by seed with 95% CIs \
        against the noise rate (the rho chosen on validation ringed); accuracy against noise \
        rate with hatched 95% bands; a rho-by-noise heatmap; per setting, learning and \
        memorisation curves banded over seeds; for class-dependent noise (asymmetric, \
        pair flips, human labels), the test accuracy of each class.

        --format html writes one self-contained page (default results/report.html): the \
        answer first, the tables, every chart embedded, each run's configuration, noise \
        provenance, sharpness and timings, and the conventions; it loads nothing from the \
        network. --reference FILE adds published points \
        (CSV: label,noise_rate,accuracy in percent). docs/REPORT.md shows an example and \
        documents the JSON.
        """
    )

    @OptionGroup var database: DatabaseOption
    @Option(help: "Only the runs of the suites with this name (default: every run).") var suite: String?
    @Option(help: "Output format: text, markdown, csv, json, or html (one self-contained page, charts embedded).") var format: Format = .text
    @Option(help: "Write the report to this file instead of standard output (html: default results/report.html).") var out: String?
    @Option(help: "Which test accuracy of each run (see above).") var metric: Metric = .last
    @Option(help: "Where the charts go.") var charts: String = "results/charts"
    @Flag(help: "Do not draw charts.") var noCharts = false
    @Flag(help: "Also write each chart as SVG.") var svg = false
    @Option(parsing: .unconditional, help: "Chart scale: 1 gives 1600x1000 pixels.") var scale: Double = 1
    @Option(help: "Reference points for the accuracy chart: CSV label,noise_rate,accuracy (percent).") var reference: String?
    @Option(help: ArgumentHelp("The group every other group of a setting is compared with: method=NAME,optimizer=NAME[,PARAMETER=VALUE...] (default: the one the suites name, else method=ce,optimizer=sgd).", valueName: "baseline"))
    var baseline: String?

    enum Format: String, ExpressibleByArgument, CaseIterable { case text, markdown, csv, json, html }

    func validate() throws {
        guard scale > 0.1, scale <= 8 else { throw ValidationError("--scale must be in (0.1, 8]") }
    }

    func run() throws {
        let store = try usageFailure { try Store(path: database.db, readOnly: true) }
        let names = try store.suiteNames()
        if let suite, !names.contains(suite) {
            _ = try usageFailure { throw StoreError("no suite named '\(suite)' in \(database.db); it has: \(names.isEmpty ? "none" : names.joined(separator: ", "))") }
        }
        let destination = out ?? (format == .html ? "results/report.html" : nil)
        if let destination {
            // Checked before any work, so that a typo does not cost a whole report.
            try usageFailure { do { try OutputFile.check(destination) } catch { throw ChartError("\(error)") } }
            let dir = (destination as NSString).deletingLastPathComponent
            var isDir: ObjCBool = false
            if !dir.isEmpty && !(FileManager.default.fileExists(atPath: dir, isDirectory: &isDir) && isDir.boolValue) {
                if out == nil { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
                else { _ = try usageFailure { throw ChartError("--out \(destination): the folder \(dir) does not exist") } }
            }
        }
        let runs = try store.storedRuns(suite: suite)
        let base = try usageFailure { try baseline.map { try Baseline(parsing: $0) } ?? ReportBuilder.baseline(of: store, suites: suite.map { [$0] }) }
        let report = ReportBuilder.build(runs, suites: suite.map { [$0] } ?? names, metric: metric, baseline: base)
        var files: [ChartFile] = []
        if !noCharts {
            var options = ChartOptions(directory: charts)
            options.scale = scale
            options.svg = svg
            if let reference { options.reference = try usageFailure { try ReferencePoint.read(reference) } }
            files = try Charts.render(report, options: options)
        }
        let text: String
        if format == .html {
            text = try HTMLPage.render(report, runs: runs, charts: files,
                                       meta: HTMLPage.Meta(database: database.db, gitRevision: ThisExecutable.gitRevision()))
        } else {
            text = try ReportFormat(rawValue: format.rawValue)!.render(report)
        }
        if let destination {
            try usageFailure {
                do { try Data(text.utf8).write(to: URL(fileURLWithPath: destination), options: .atomic) }
                catch { throw ChartError("\(destination): cannot write the report: \(error.localizedDescription)") }
            }
        } else {
            // CSV keeps its values exact, but not on a terminal (text and markdown are escaped when rendered).
            let shown = format == .csv && isatty(STDOUT_FILENO) != 0 ? escapingControlCharacters(text) : text
            try FileHandle.standardOutput.write(contentsOf: Data(shown.utf8))
        }
        guard !noCharts else {
            if let destination { emit("report: \(destination)") }
            return
        }
        // Where the tables go to a pipe (json, csv), the chart list goes to stderr.
        var note = files.isEmpty ? "no charts: no finished runs yet" : "charts: " + files.flatMap(\.paths).joined(separator: ", ")
        if let destination { note = "report: \(destination)\n" + note }
        if format == .text || format == .markdown || destination != nil { emit((destination == nil ? "\n" : "") + note) }
        else { FileHandle.standardError.write(Data((note + "\n").utf8)) }
    }
}
