import Foundation
import Engine

/// Learning-rate schedules, stepped per iteration (not per epoch), with optional linear warmup.
public enum LRScheduleKind: Sendable, Equatable, Codable {
    case constant
    /// Multiply by `gamma` at each milestone (given in iterations).
    case multiStep(milestones: [Int], gamma: Float)
    /// Cosine from the base rate down to `floor` at the last iteration.
    case cosine(floor: Float)
}

public struct LRSchedule: Sendable, Equatable, Codable {
    public var base: Float
    public var kind: LRScheduleKind
    /// Iterations of linear warmup: lr = base * (i + 1) / warmup for i < warmup.
    public var warmupIterations: Int
    public var totalIterations: Int

    public init(base: Float, kind: LRScheduleKind = .constant, warmupIterations: Int = 0, totalIterations: Int) {
        self.base = base
        self.kind = kind
        self.warmupIterations = warmupIterations
        self.totalIterations = totalIterations
    }

    public func validate() throws {
        guard base > 0, base.isFinite else { throw ConfigurationError("lr", "learning rate must be > 0, got \(base)") }
        guard warmupIterations >= 0, totalIterations >= 1 else { throw ConfigurationError("warmup_epochs", "schedule: warmup must be >= 0 and the run at least 1 iteration") }
        if case let .multiStep(m, gamma) = kind {
            guard gamma > 0, m.allSatisfy({ $0 >= 0 }) else { throw ConfigurationError("milestones", "multi-step schedule: milestones >= 0 and gamma > 0 needed") }
        }
        if case let .cosine(floor) = kind { guard floor >= 0, floor <= base else { throw ConfigurationError("lr", "cosine floor must be in [0, lr], got \(floor)") } }
    }

    /// The learning rate used for iteration `i` (0-based).
    public func lr(at i: Int) -> Float {
        if i < warmupIterations { return base * Float(i + 1) / Float(warmupIterations) }
        switch kind {
        case .constant:
            return base
        case let .multiStep(milestones, gamma):
            let passed = milestones.filter { i >= $0 }.count
            return base * Foundation.pow(gamma, Float(passed))
        case let .cosine(floor):
            let span = max(totalIterations - warmupIterations, 1)
            let t = Double(min(i - warmupIterations, span)) / Double(span)
            return floor + (base - floor) * Float(0.5 * (1 + Foundation.cos(Double.pi * t)))
        }
    }
}
