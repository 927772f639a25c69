/// A failure of the engine or of a file it reads: the message says what and where.
public struct EngineError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A configuration value a run cannot use, with the setting it concerns, named as a suite names
/// it ("epochs", "rho", "classes"): a suite blames the key that set it from `setting`, never by
/// reading the message.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public let setting: String
    public let message: String
    public init(_ setting: String, _ message: String) { (self.setting, self.message) = (setting, message) }
    public var description: String { message }
}
