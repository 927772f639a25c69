import ArgumentParser
import Charts
import Foundation
import Report
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
        chunks): accuracy against noise rate with 95% bands, a rho-by-noise heatmap and \
        learning curves with memorisation. --reference FILE adds published points \
        (CSV: label,noise_rate,accuracy in percent). docs/REPORT.md shows an example and \
        documents the JSON.
        """
    )

    @OptionGroup var database: DatabaseOption
    @Option(help: "Only the runs of the suites with this name (default: every run).") var suite: String?
    @Option(help: "Output format.") var format: ReportFormat = .text
    @Option(help: "Which test accuracy of each run (see above).") var metric: Metric = .last
    @Option(help: "Where the charts go.") var charts: String = "results/charts"
    @Flag(help: "Do not draw charts.") var noCharts = false
    @Flag(help: "Also write each chart as SVG.") var svg = false
    @Option(help: "Chart scale: 1 gives 1600x1000 pixels.") var scale: Double = 1
    @Option(help: "Reference points for the accuracy chart: CSV label,noise_rate,accuracy (percent).") var reference: String?

    func validate() throws {
        guard scale > 0.1, scale <= 8 else { throw ValidationError("--scale must be in (0.1, 8]") }
    }

    func run() throws {
        let store = try usageFailure { try Store(path: database.db, readOnly: true) }
        let names = try store.suiteNames()
        if let suite, !names.contains(suite) {
            _ = try usageFailure { throw StoreError("no suite named '\(suite)' in \(database.db); it has: \(names.isEmpty ? "none" : names.joined(separator: ", "))") }
        }
        let runs = try store.storedRuns(suite: suite)
        let report = ReportBuilder.build(runs, suites: suite.map { [$0] } ?? names, metric: metric)
        try FileHandle.standardOutput.write(contentsOf: Data(try format.render(report).utf8))
        guard !noCharts else { return }
        var options = ChartOptions(directory: charts)
        options.scale = scale
        options.svg = svg
        if let reference { options.reference = try usageFailure { try ReferencePoint.read(reference) } }
        let files = try Charts.render(report, options: options)
        // Where the tables go to a pipe (json, csv), the chart list goes to stderr.
        let note = files.isEmpty ? "no charts: no finished runs yet" : "charts: " + files.joined(separator: ", ")
        if format == .text || format == .markdown { emit("\n" + note) } else { FileHandle.standardError.write(Data((note + "\n").utf8)) }
    }
}
