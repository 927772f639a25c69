import Engine
import TestSupport
import XCTest

/// sambench's own Winograd kernels (Winograd.swift) against their plain twin (ReferenceOps'
/// direct convolution, accumulated in Double) at the op-twin tolerance (`TwinTolerance`), for
/// each pass, across shapes: ragged tiles at the image's edge, blocks of 8 and 16 channels, one
/// thread and two, tile blocks that do not divide the tiles. F(2x2, 3x3) is held to it at every
/// width tried; F(4x4, 3x3) up to 64 input channels (beyond, it can exceed it on some elements,
/// which is why the kernel choice tries it before taking it).
final class WinogradTests: XCTestCase {
    /// (batch, in channels, out channels, spatial, block)
    let shapes = [(2, 8, 16, 8, 8), (3, 16, 8, 7, 8), (2, 16, 32, 12, 16), (1, 64, 64, 5, 8), (4, 32, 32, 10, 8), (2, 32, 16, 9, 16)]

    /// The worst of the three passes' errors (at most 1 passes). With `planted`, the twin gets
    /// output channel 1's kernel and output gradient 0.1% larger than the kernels do.
    func worstRatio(tile: Int, _ shape: (Int, Int, Int, Int, Int), threads: Int, tileBlock: Int?,
                    planted: Bool = false) -> (forward: Double, backwardData: Double, backwardWeights: Double) {
        let (n, c, k, size, block) = shape
        let x = randomArray(n * c * size * size, seed: 1), w = randomArray(k * c * 9, seed: 2, scale: 0.3), dy = randomArray(n * k * size * size, seed: 3)
        var tw = w, tdy = dy
        if planted {
            for e in (c * 9)..<(2 * c * 9) { tw[e] *= 1.001 }
            for image in 0..<n { for e in 0..<(size * size) { tdy[(image * k + 1) * size * size + e] *= 1.001 } }
        }
        let fwd = WinogradConvolution(tile: tile, batch: n, inChannels: c, outChannels: k, height: size, width: size, block: block,
                                      threads: threads, tileBlock: tileBlock)
        let bwd = WinogradConvolution(tile: tile, batch: n, inChannels: k, outChannels: c, height: size, width: size, block: block,
                                      backwardData: true, threads: threads, tileBlock: tileBlock)
        let y = fwd.trial([x, w], weightsPass: false, repeats: 0).output
        let dx = bwd.trial([dy, w], weightsPass: false, repeats: 0).output
        let dw = fwd.trial([x, dy], weightsPass: true, repeats: 0).output
        let ry = ReferenceOps.convForward(x: x, n: n, c: c, h: size, w: size, weight: tw, outChannels: k, kernel: 3, stride: 1, padding: 1).y
        var rdx: [Float]? = [Float](repeating: 0, count: x.count), rdw = [Float](repeating: 0, count: w.count)
        ReferenceOps.convBackward(x: x, n: n, c: c, h: size, w: size, weight: tw, outChannels: k, kernel: 3, stride: 1, padding: 1,
                                  dy: tdy, dx: &rdx, dw: &rdw)
        return (TwinTolerance.worstRatio(y, ry), TwinTolerance.worstRatio(dx, rdx!), TwinTolerance.worstRatio(dw, rdw))
    }

    func testPassesAgreeWithTheTwin() {
        for tile in [2, 4] {
            for shape in shapes where tile == 2 || shape.1 <= 64 {
                for (threads, tileBlock) in [(1, nil), (2, 5 as Int?)] {
                    let r = worstRatio(tile: tile, shape, threads: threads, tileBlock: tileBlock)
                    let what = "F(\(tile)x\(tile), 3x3) \(shape), \(threads) threads, tile block \(tileBlock.map(String.init) ?? "default")"
                    XCTAssertLessThanOrEqual(r.forward, 1, "\(what): forward")
                    XCTAssertLessThanOrEqual(r.backwardData, 1, "\(what): backward data")
                    XCTAssertLessThanOrEqual(r.backwardWeights, 1, "\(what): backward weights")
                }
            }
        }
    }

    /// F(2x2, 3x3) at the widths of WRN-16-4's last group, where F(4x4, 3x3) may not pass.
    func testSmallTilesAgreeWithTheTwinAtWidth() {
        let r = worstRatio(tile: 2, (1, 256, 256, 8, 8), threads: 2, tileBlock: nil)
        XCTAssertLessThanOrEqual(max(r.forward, r.backwardData, r.backwardWeights), 1, "F(2x2, 3x3) 256 -> 256 channels: \(r)")
    }

    /// The comparison catches an error of the size of a real bug: the twin run with one output
    /// channel off by 0.1% (a wrong channel, a wrong transform coefficient, a skipped epsilon are
    /// all larger) fails every pass.
    func testAPlantedErrorFails() {
        for tile in [2, 4] {
            let r = worstRatio(tile: tile, (2, 16, 16, 8, 8), threads: 2, tileBlock: nil, planted: true)
            XCTAssertGreaterThan(r.forward, 1, "F(\(tile)x\(tile)): a wrong output channel went unnoticed forward")
            XCTAssertGreaterThan(r.backwardData, 1, "F(\(tile)x\(tile)): a wrong output channel went unnoticed in backward data")
            XCTAssertGreaterThan(r.backwardWeights, 1, "F(\(tile)x\(tile)): a wrong weight gradient went unnoticed")
        }
    }
}
