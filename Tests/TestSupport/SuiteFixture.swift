import Foundation

/// The suite most tests need, written once: a small grid on synthetic data with one symmetric
/// noise entry, SGD against SAM. Each test names what it varies; the TOML comes from here.
public enum SuiteFixture {
    /// `top`: lines after the name (a description, a baseline); `defaults`: the [defaults]
    /// settings in order (values as TOML); `seeds`: the grid's seed list; `grid`: further axes;
    /// `noise`: the [[noise]] entry's rate line (`rate = 0.4`, `rates = [0.2, 0.6]`); `methods`:
    /// [[method]] entries, each its lines; `rho`: SAM's; `extra`: appended ([[expect]] entries).
    public static func sgdVersusSAM(name: String, top: [String] = [], defaults: [(String, String)], seeds: String = "[0, 1]",
                                    grid: [(String, String)] = [], noise: String, methods: [[String]] = [], rho: String,
                                    extra: String = "") -> String {
        var lines = ["name = \"\(name)\""] + top + ["", "[defaults]"]
        lines += defaults.map { "\($0.0) = \($0.1)" }
        lines += ["", "[grid]", "seed = \(seeds)"] + grid.map { "\($0.0) = \($0.1)" }
        lines += ["", "[[noise]]", "kind = \"symmetric\"", noise]
        for m in methods { lines += ["", "[[method]]"] + m }
        lines += ["", "[[optimizer]]", "name = \"sgd\"", "", "[[optimizer]]", "name = \"sam\"", "rho = \(rho)", extra]
        return lines.joined(separator: "\n") + "\n"
    }

    /// A tiny net on synthetic data: the [defaults] every fixture starts from.
    public static let tinySynthetic: [(String, String)] = [("dataset", "\"synthetic\""), ("model", "\"tiny\"")]
}
