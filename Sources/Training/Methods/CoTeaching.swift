// Co-teaching's sample selection and forget-rate schedule.
import Engine
import Foundation

/// Co-teaching's sample selection (Han et al., NeurIPS 2018; bhanML/Co-teaching): two networks
/// each rank the batch by their own per-sample cross-entropy, and each trains on the samples
/// the *other* ranked smallest, (1 - tau_e) of the batch, tau_e the epoch's forget rate.
///
/// Conventions, as the reference code (`loss_coteaching`, `rate_schedule`):
/// - tau over epochs: `np.linspace(0, forget_rate ** exponent, num_gradual)` for the first
///   `num_gradual` epochs, then `forget_rate`; sambench's epochs count from 1, so epoch e takes
///   entry e - 1.
/// - samples kept: `int((1 - tau) * n)` (truncated, in float64).
/// - ranking: ascending loss; ties (which `np.argsort`'s quicksort leaves in no set order) go
///   to the lower batch position.
/// - the loss each network trains with is the mean cross-entropy over the samples kept for it.
///   The reference divides that mean once more by the number kept (`torch.sum(loss) /
///   num_remember` of an already averaged loss), which with its Adam optimizer changes little;
///   with SGD it would divide the learning rate by ~50-128, so sambench does not.
public enum CoTeaching {
    /// tau for `epoch` (from 1).
    public static func forgetRate(epoch: Int, forgetRate: Double, numGradual: Int, exponent: Double) -> Double {
        let e = epoch - 1
        guard e < numGradual else { return forgetRate }
        let stop = Foundation.pow(forgetRate, exponent)
        // numpy's linspace: i * ((stop - start) / (num - 1)) + start, the last entry exactly stop.
        if e == numGradual - 1 { return stop }
        return Double(e) * (stop / Double(numGradual - 1))
    }

    /// How many of `n` samples are kept at forget rate `tau`.
    public static func kept(_ n: Int, forgetRate tau: Double) -> Int { Int((1 - tau) * Double(n)) }

    /// Writes into `order` the batch positions 0..<n sorted by ascending `losses` (ties: lower
    /// position first); an insertion sort over a batch, allocation-free.
    public static func rank(losses: UnsafePointer<Float>, count n: Int, into order: UnsafeMutablePointer<Int32>) {
        for i in 0..<n {
            var j = i
            let l = losses[i]
            while j > 0, losses[Int(order[j - 1])] > l { order[j] = order[j - 1]; j -= 1 }
            order[j] = Int32(i)
        }
    }

    /// 0/1 weights: 1 for the `kept` samples of smallest loss by `losses`.
    public static func select(losses: UnsafePointer<Float>, count n: Int, kept: Int,
                              order: UnsafeMutablePointer<Int32>, weights: UnsafeMutablePointer<Float>) {
        rank(losses: losses, count: n, into: order)
        weights.update(repeating: 0, count: n)
        for i in 0..<kept { weights[Int(order[i])] = 1 }
    }
}
