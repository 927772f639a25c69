// Published numbers drawn beside the measured ones (`--reference FILE`): the CSV reader.
import Foundation

/// A published number to draw beside the measured ones (e.g. a paper's table), from
/// `--reference FILE` (CSV: label,noise_rate,accuracy with accuracy in percent).
public struct ReferencePoint: Sendable, Equatable {
    public var label: String
    public var noiseRate: Double
    public var accuracy: Double

    public init(label: String, noiseRate: Double, accuracy: Double) {
        self.label = label
        self.noiseRate = noiseRate
        self.accuracy = accuracy
    }

    /// Reads `label,noise_rate,accuracy` lines (a header line and `#` comments are skipped).
    public static func read(_ path: String) throws -> [ReferencePoint] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw ChartError("\(path): cannot read the reference file") }
        var out: [ReferencePoint] = []
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || (i == 0 && line.lowercased().hasPrefix("label")) { continue }
            let f = line.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard f.count == 3, let rate = Double(f[1]), let acc = Double(f[2]), (0...1).contains(rate), (0...100).contains(acc) else {
                throw ChartError("\(path):\(i + 1): expected label,noise_rate,accuracy with a rate in [0, 1] and an accuracy in percent; got '\(line)'")
            }
            out.append(ReferencePoint(label: f[0], noiseRate: rate, accuracy: acc))
        }
        return out
    }
}

