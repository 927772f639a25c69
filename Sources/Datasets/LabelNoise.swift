import Engine
import Foundation

/// Which label-noise model, named as sambench names it (see docs/NOISE.md).
public enum NoiseKind: String, Sendable, Codable, CaseIterable {
    case none
    /// Selected samples flip to a uniformly chosen *other* class (Co-teaching lineage).
    case symmetric
    /// Selected samples are relabelled uniformly over all C classes, the true one included
    /// (DivideMix lineage): the realised rate is about rate * (C-1)/C.
    case uniform
    /// CIFAR-10 (Patrini et al. 2017): truck->automobile, bird->airplane, deer->horse, cat<->dog.
    /// CIFAR-100: the next fine class within the sample's true superclass, circularly.
    case asymmetric
    /// CIFAR-100, the widespread variant: the next label within blocks of 5 consecutive fine labels.
    case asymmetricBlocks = "asymmetric-blocks"
    /// Han et al. 2018: class i -> (i + 1) mod C.
    case pairflip
    /// Instance-dependent noise, Xia et al. 2020 (`get_instance_noisy_label`).
    case instance
    /// Labels from a file (CIFAR-10N / CIFAR-100N).
    case human
}

extension NoiseKind {
    /// Noise models that take a rate (all but none and human).
    public var hasRate: Bool { self != .none && self != .human }
}

/// How the noisy samples are chosen (symmetric, uniform, asymmetric, pairflip).
public enum NoiseSelection: String, Sendable, Codable, CaseIterable {
    /// Exactly round(rate * N) samples, chosen uniformly without replacement.
    case exact
    /// Exactly round(rate * N_c) samples of each class c.
    case exactPerClass = "exact-per-class"
    /// Each sample independently with probability `rate`.
    case bernoulli
}

/// A fully specified noise model. `rate` is the target rate (for `asymmetric`, the flip
/// probability of each mapped class; for `instance`, the mean of the per-sample flip rates).
public struct NoiseSpec: Sendable, Codable, Hashable {
    public var kind: NoiseKind
    public var rate: Double
    public var selection: NoiseSelection
    public var seed: UInt64
    /// `instance`: standard deviation of the truncated normal of per-sample flip rates.
    public var instanceStd: Double
    /// `human`: the label file (`FILE.npy`, or `FILE.pt:KEY` for the official CIFAR-N files).
    public var labelsFile: LabelSpec?

    public init(kind: NoiseKind, rate: Double = 0, selection: NoiseSelection = .exact, seed: UInt64 = 0,
                instanceStd: Double = 0.1, labelsFile: LabelSpec? = nil) {
        self.kind = kind
        self.rate = rate
        self.selection = selection
        self.seed = seed
        self.instanceStd = instanceStd
        self.labelsFile = labelsFile
    }

    public func validate() throws {
        guard rate.isFinite, (0...1).contains(rate) else { throw ConfigurationError("rate", "noise rate must be in [0, 1], got \(rate)") }
        if kind == .human, labelsFile == nil { throw ConfigurationError("labels", "human noise needs a label file (--labels FILE.npy or FILE.pt:KEY)") }
        if kind != .human, labelsFile != nil { throw ConfigurationError("labels", "a label file is only used by human noise, not \(kind.rawValue)") }
        guard instanceStd > 0 else { throw ConfigurationError("std", "instance noise: std must be > 0, got \(instanceStd)") }
        guard instanceStd <= 1 else { throw ConfigurationError("std", "instance noise: std must be <= 1 (a spread of flip rates in [0, 1]), got \(instanceStd)") }
    }
}

/// What a noise model realised: the noisy labels and how they relate to the clean ones.
public struct NoiseRealisation: Sendable, Codable, Equatable {
    public var spec: NoiseSpec
    public var labels: [Int32]
    /// Fraction of samples whose noisy label differs from the clean one.
    public var realisedRate: Double
    /// transition[i][j]: samples of clean class i labelled j.
    public var transition: [[Int]]
    /// SHA-256 (hex) of the noisy labels as little-endian int64, i.e. of
    /// `np.asarray(labels, dtype='<i8').tobytes()`.
    public var labelsSHA256: String
}

/// Realises label-noise models exactly and reproducibly from a seed.
public enum LabelNoise {
    /// CIFAR-10 asymmetric map (Patrini et al. 2017): truck(9)->automobile(1), bird(2)->airplane(0),
    /// deer(4)->horse(7), cat(3)<->dog(5); other classes keep their labels.
    public static let cifar10Asymmetric: [Int32: Int32] = [9: 1, 2: 0, 4: 7, 3: 5, 5: 3]

    /// - Parameters:
    ///   - clean: the clean training labels, in dataset order.
    ///   - coarse: CIFAR-100 superclass labels (needed by `asymmetric` with 100 classes).
    ///   - features: per-sample feature vectors, flattened [N, dim] (needed by `instance`).
    ///   - humanLabels: the label vector for `human` (read by the caller from `labelsFile`).
    public static func apply(_ spec: NoiseSpec, clean: [Int32], classes: Int, coarse: [Int32]? = nil,
                             features: (values: [Float], dimension: Int)? = nil, humanLabels: [Int32]? = nil) throws -> NoiseRealisation {
        try spec.validate()
        let n = clean.count
        guard n > 0 else { throw DataError("no labels to corrupt") }
        var rng = Xoshiro256(seed: splitMix64(spec.seed ^ 0x4E01_5E00))
        var noisy = clean
        switch spec.kind {
        case .none:
            break
        case .symmetric, .uniform, .pairflip:
            for i in select(spec, labels: clean, eligible: { _ in true }, classes: classes, rng: &rng) {
                let y = Int(clean[i])
                switch spec.kind {
                case .symmetric:
                    let r = rng.nextInt(below: classes - 1)
                    noisy[i] = Int32(r >= y ? r + 1 : r)
                case .uniform:
                    noisy[i] = Int32(rng.nextInt(below: classes))
                default:
                    noisy[i] = Int32((y + 1) % classes)
                }
            }
        case .asymmetric, .asymmetricBlocks:
            let map = try asymmetricMap(spec.kind, classes: classes, clean: clean, coarse: coarse)
            // The rate of a class-conditional flip is per class: `exact` means exactly
            // round(rate * N_c) of each mapped class.
            var perClass = spec
            if perClass.selection == .exact { perClass.selection = .exactPerClass }
            for i in select(perClass, labels: clean, eligible: { map[Int($0)] != $0 }, classes: classes, rng: &rng) {
                noisy[i] = map[Int(clean[i])]
            }
        case .instance:
            guard let features, features.dimension > 0, features.values.count == n * features.dimension else {
                throw DataError("instance noise needs the images as features ([N, dim])")
            }
            noisy = instanceDependent(clean: clean, classes: classes, features: features.values, dimension: features.dimension,
                                      rate: spec.rate, std: spec.instanceStd, rng: &rng)
        case .human:
            guard let h = humanLabels else { throw DataError("human noise: no label vector given") }
            guard h.count == n else { throw DataError("\(spec.labelsFile?.description ?? "labels"): \(h.count) labels, the training set has \(n)") }
            if let bad = h.firstIndex(where: { $0 < 0 || Int($0) >= classes }) {
                throw DataError("\(spec.labelsFile?.description ?? "labels"): label \(h[bad]) at index \(bad) outside 0..<\(classes)")
            }
            noisy = h
        }
        return realisation(spec, clean: clean, noisy: noisy, classes: classes)
    }

    /// Counts, rate and hash of a noisy label vector against the clean one.
    public static func realisation(_ spec: NoiseSpec, clean: [Int32], noisy: [Int32], classes: Int) -> NoiseRealisation {
        var transition = [[Int]](repeating: [Int](repeating: 0, count: classes), count: classes)
        var changed = 0
        for (c, y) in zip(clean, noisy) {
            transition[Int(c)][Int(y)] += 1
            if c != y { changed += 1 }
        }
        var bytes = [UInt8]()
        bytes.reserveCapacity(noisy.count * 8)
        for y in noisy { withUnsafeBytes(of: Int64(y).littleEndian) { bytes += $0 } }
        return NoiseRealisation(spec: spec, labels: noisy, realisedRate: Double(changed) / Double(clean.count),
                                transition: transition, labelsSHA256: SHA256Hex.digest(bytes))
    }

    /// The samples to corrupt among those `eligible`, by the spec's selection rule.
    static func select(_ spec: NoiseSpec, labels: [Int32], eligible: (Int32) -> Bool, classes: Int, rng: inout Xoshiro256) -> [Int] {
        let candidates = labels.indices.filter { eligible(labels[$0]) }
        switch spec.selection {
        case .bernoulli:
            return candidates.filter { _ in rng.nextUniform() < spec.rate }
        case .exact:
            return sample(candidates, count: Int((spec.rate * Double(candidates.count)).rounded()), rng: &rng)
        case .exactPerClass:
            var out: [Int] = []
            for c in 0..<classes {
                let members = candidates.filter { labels[$0] == Int32(c) }
                out += sample(members, count: Int((spec.rate * Double(members.count)).rounded()), rng: &rng)
            }
            return out.sorted()
        }
    }

    /// `count` distinct elements chosen uniformly (a partial Fisher-Yates shuffle), in index order.
    static func sample(_ items: [Int], count: Int, rng: inout Xoshiro256) -> [Int] {
        var a = items
        let k = min(count, a.count)
        for i in 0..<k { a.swapAt(i, i + rng.nextInt(below: a.count - i)) }
        return a.prefix(k).sorted()
    }

    static func asymmetricMap(_ kind: NoiseKind, classes: Int, clean: [Int32], coarse: [Int32]?) throws -> [Int32] {
        var map = (0..<classes).map { Int32($0) }
        if kind == .asymmetricBlocks {
            guard classes % 5 == 0 else { throw DataError("asymmetric-blocks needs a class count divisible by 5, got \(classes)") }
            for f in 0..<classes { map[f] = Int32(f / 5 * 5 + (f % 5 + 1) % 5) }
            return map
        }
        if classes == 10 {
            for (a, b) in cifar10Asymmetric { map[Int(a)] = b }
            return map
        }
        guard let coarse, coarse.count == clean.count else {
            throw DataError("asymmetric noise on \(classes) classes needs the superclass (coarse) labels; use asymmetric-blocks otherwise")
        }
        // The fine classes of each superclass, ascending; each maps to the next one, circularly.
        var members: [Int32: Set<Int32>] = [:]
        for (f, c) in zip(clean, coarse) { members[c, default: []].insert(f) }
        for (_, fines) in members {
            let sorted = fines.sorted()
            for (k, f) in sorted.enumerated() { map[Int(f)] = sorted[(k + 1) % sorted.count] }
        }
        return map
    }

    /// Xia et al. 2020 (`get_instance_noisy_label`), step by step:
    /// 1. per-sample flip rates q_i ~ N(rate, std^2) truncated to [0, 1];
    /// 2. per-class random projections W_c ~ N(0, 1) of shape [dim, C] (seeded);
    /// 3. scores s_i = x_i W_{y_i}; the true class's score set to -inf;
    /// 4. p_i = q_i * softmax(s_i), then p_i[y_i] = 1 - q_i;
    /// 5. the noisy label is drawn from p_i.
    static func instanceDependent(clean: [Int32], classes c: Int, features: [Float], dimension d: Int,
                                  rate: Double, std: Double, rng: inout Xoshiro256) -> [Int32] {
        let n = clean.count
        var q = [Double](repeating: 0, count: n)
        for i in 0..<n {
            var v: Double
            repeat { v = rate + std * rng.nextNormal() } while v < 0 || v > 1
            q[i] = v
        }
        var w = [Float](repeating: 0, count: c * d * c)
        for i in w.indices { w[i] = Float(rng.nextNormal()) }
        var out = clean
        var scores = [Double](repeating: 0, count: c)
        for i in 0..<n {
            let y = Int(clean[i])
            let x = i * d, wy = y * d * c
            for k in 0..<c { scores[k] = 0 }
            for j in 0..<d {
                let xv = Double(features[x + j])
                if xv == 0 { continue }
                let row = wy + j * c
                for k in 0..<c { scores[k] += xv * Double(w[row + k]) }
            }
            var mx = -Double.infinity
            for k in 0..<c where k != y { mx = max(mx, scores[k]) }
            var total = 0.0
            for k in 0..<c { scores[k] = k == y ? 0 : Foundation.exp(scores[k] - mx); total += scores[k] }
            var u = rng.nextUniform(), chosen = y
            // p_k = q * e_k / total for k != y, p_y = 1 - q.
            for k in 0..<c {
                let p = k == y ? 1 - q[i] : q[i] * scores[k] / total
                if u < p { chosen = k; break }
                u -= p
            }
            out[i] = Int32(chosen)
        }
        return out
    }
}
