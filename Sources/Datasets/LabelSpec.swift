import Foundation

/// A human-noise label file as a suite or `--labels` names it: `FILE.npy` (one integer label per
/// training image), or `FILE.pt:KEY` for an array in the official CIFAR-N `.pt` files. Parsed
/// here only; it encodes as the string it was written as, so stored configurations and run keys
/// are unchanged by the type.
public struct LabelSpec: Sendable, Equatable, Hashable, Codable, CustomStringConvertible {
    /// The file, as given (absolute, or relative to the data directory).
    public var path: String
    /// The array inside a `.pt` file; nil for `.npy`.
    public var key: String?

    public init(path: String, key: String?) {
        self.path = path
        self.key = key
    }

    /// `FILE.pt:KEY` splits at the last `.pt:`; anything else is a `.npy`-style path. A `.pt`
    /// without a key is refused: the file holds several arrays.
    public init(parsing text: String) throws {
        if let r = text.range(of: ".pt:", options: .backwards) {
            path = String(text[..<r.lowerBound]) + ".pt"
            key = String(text[r.upperBound...])
            guard !key!.isEmpty else { throw DataError("\(text): name the array after the colon, e.g. \(path):worse_label") }
        } else {
            guard !text.isEmpty else { throw DataError("an empty label file name") }
            if text.hasSuffix(".pt") { throw DataError("\(text): name the array, e.g. \(text):worse_label") }
            path = text
            key = nil
        }
    }

    public var description: String { key.map { path + ":" + $0 } ?? path }

    /// The same array in another place (the runner resolves paths against the data directory).
    public func relocated(to path: String) -> LabelSpec { LabelSpec(path: path, key: key) }

    /// What of the spec belongs to a run's identity: the array's name (`pt:KEY`) or `npy`; the
    /// file's content is hashed into the data identity, so its path does not matter.
    public var identityPart: String { key.map { "pt:" + $0 } ?? "npy" }

    /// How a report names the labels: the array's name, or the file's name without `.npy`.
    public var shortName: String {
        if let key { return key }
        let name = (path as NSString).lastPathComponent
        return name.hasSuffix(".npy") ? String(name.dropLast(4)) : name
    }

    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do { try self.init(parsing: text) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "\(error)"))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// The datasets sambench reads. Raw values are what suites, the CLI and the store spell.
public enum Dataset: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    /// Built in: CIFAR-shaped images made from seeded class patterns (no download).
    case synthetic
    case cifar10
    case cifar100

    public var description: String { rawValue }

    /// Training images, where the dataset fixes it (synthetic data's size is a setting).
    public var trainImages: Int? { self == .synthetic ? nil : 50_000 }
    /// Test images, where the dataset fixes it.
    public var testImages: Int? { self == .synthetic ? nil : 10_000 }
}
