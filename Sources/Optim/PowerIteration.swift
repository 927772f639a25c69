import Engine

/// The largest-magnitude eigenvalue of a symmetric operator by power iteration, given only
/// operator-vector products (for a network: Hessian-vector products).
public enum PowerIteration {
    public struct Result: Sendable {
        public var eigenvalue: Double
        /// ||A v - lambda v|| / |lambda| at the last iterate: how far from an eigenpair it is.
        public var relativeResidual: Double
        public var iterations: Int
    }

    /// `apply(v, out)` writes A v. Starts from a seeded random unit vector; stops after
    /// `maxIterations` or when the Rayleigh quotient changes by less than `tolerance` (relative).
    public static func topEigenvalue(dimension n: Int, maxIterations: Int = 20, tolerance: Double = 1e-3, seed: UInt64 = 0,
                                     apply: (UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Void) -> Result {
        precondition(n > 0 && maxIterations > 0)
        let v = FloatBuffer(count: n), av = FloatBuffer(count: n)
        var rng = Xoshiro256(seed: seed)
        for i in 0..<n { v.pointer[i] = Float(rng.nextNormal()) }
        normalize(v)
        var lambda = 0.0, residual = Double.infinity, done = 0
        for it in 1...maxIterations {
            done = it
            apply(v.pointer, av.pointer)
            var rq = 0.0
            for i in 0..<n { rq += Double(v.pointer[i]) * Double(av.pointer[i]) }
            var r2 = 0.0
            for i in 0..<n { let d = Double(av.pointer[i]) - rq * Double(v.pointer[i]); r2 += d * d }
            residual = r2.squareRoot() / max(abs(rq), 1e-30)
            let previous = lambda
            lambda = rq
            v.copy(from: av)
            if normalize(v) == 0 { break }
            if it > 1 && abs(lambda - previous) <= tolerance * abs(lambda) { break }
        }
        return Result(eigenvalue: lambda, relativeResidual: residual, iterations: done)
    }

    @discardableResult
    static func normalize(_ v: FloatBuffer) -> Double {
        var s = 0.0
        for i in 0..<v.count { s += Double(v.pointer[i]) * Double(v.pointer[i]) }
        let norm = s.squareRoot()
        if norm > 0 { let inv = Float(1 / norm); for i in 0..<v.count { v.pointer[i] *= inv } }
        return norm
    }
}
