import Charts
import Foundation
import Report
import Store
import TestSupport
import XCTest

/// `sambench report --format html` on a real small suite, rendered by headless Chromium.
final class HTMLReportTests: XCTestCase {
    /// A suite whose name is markup: the page must show it as text.
    static let suite = """
        name = "<script>alert(1)</script>"
        description = "a page test: SGD and SAM on synthetic data, symmetric and asymmetric noise"
        [defaults]
        dataset = "synthetic"
        synthetic_train = 640
        synthetic_test = 320
        model = "tiny"
        epochs = 2
        batch_size = 64
        lr = 0.05
        validation = 0.1
        sharpness = false
        [grid]
        seed = [0, 1]
        [[noise]]
        kind = "symmetric"
        rates = [0.4]
        [[noise]]
        kind = "asymmetric"
        rates = [0.4]
        [[optimizer]]
        name = "sgd"
        [[optimizer]]
        name = "sam"
        rho = [0.05, 0.1]
        """

    /// Chromium, or a skip; under CI (`CI=true`, where .ci/run installs it) its absence fails.
    func chromium() throws -> URL {
        for path in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] where FileManager.default.isExecutableFile(atPath: path) {
            return URL(fileURLWithPath: path)
        }
        if ProcessInfo.processInfo.environment["CI"] == "true" { XCTFail("chromium is not installed (.ci/run installs Debian's chromium)") }
        throw XCTSkip("chromium not installed (apt-get install chromium)")
    }

    /// Headless Chromium with networking disabled (every host name resolves to nothing) and
    /// its own background services off, logging every network event.
    func headless(_ browser: URL, _ page: String, in dir: URL, _ args: [String]) throws -> (status: Int32, out: String, netLog: URL) {
        let profile = dir.appendingPathComponent("profile-\(UUID().uuidString)")
        let netLog = dir.appendingPathComponent("net-\(UUID().uuidString).json")
        let r = try runSeparated(URL(fileURLWithPath: "/usr/bin/timeout"), ["300", browser.path, "--headless", "--no-sandbox", "--disable-gpu",
            "--user-data-dir=\(profile.path)", "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions", "--disable-domain-reliability",
            "--host-resolver-rules=MAP * ~NOTFOUND", "--log-net-log=\(netLog.path)"] + args + ["file://" + page],
            environment: ["HOME": dir.path])
        return (r.status, r.out, netLog)
    }

    /// The URLs the page itself asked the network for: requests whose network isolation key is
    /// the page's (file://), whatever Chromium's own services did.
    func pageRequests(_ netLog: URL) throws -> [String] {
        let data = try Data(contentsOf: netLog)
        let log = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let types = try XCTUnwrap((log["constants"] as? [String: Any])?["logEventTypes"] as? [String: Int])
        let start = try XCTUnwrap(types["URL_REQUEST_START_JOB"])
        let events = try XCTUnwrap(log["events"] as? [[String: Any]])
        return events.compactMap { e in
            guard e["type"] as? Int == start, let p = e["params"] as? [String: Any], let url = p["url"] as? String,
                  (p["network_isolation_key"] as? String ?? "").contains("file://") else { return nil }
            return url.hasPrefix("file:") || url.hasPrefix("data:") ? nil : url
        }
    }

    func testPageRendersInHeadlessChromiumWithoutNetworkAndEscapesNames() throws {
        let binary = try sambenchExecutable()
        let browser = try chromium()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("html-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let suite = dir.appendingPathComponent("page.toml"), db = dir.appendingPathComponent("r.sqlite").path
        try HTMLReportTests.suite.write(to: suite, atomically: true, encoding: .utf8)
        let run = try runSeparated(binary, ["run", suite.path, "--db", db, "--checkpoints", dir.appendingPathComponent("ck").path, "--jobs", "1", "--threads", "1"])
        XCTAssertEqual(run.status, 0, run.out + run.err)

        // Every finished run stored the test set's confusion matrix, and it agrees with the accuracy.
        let runs = try Store(path: db, readOnly: true).storedRuns()
        XCTAssertEqual(runs.count, 12)
        for r in runs {
            let m = try XCTUnwrap(r.confusion, r.label)
            XCTAssertEqual(m.count, 10)
            XCTAssertEqual(m.map { $0.reduce(0, +) }.reduce(0, +), 320, r.label)
            let trace = (0..<10).map { m[$0][$0] }.reduce(0, +)
            XCTAssertEqual(Double(trace) / 320, try XCTUnwrap(r.metrics).lastTestAccuracy, accuracy: 1e-12, r.label)
        }

        // A folder that does not exist is refused before any work, naming it.
        let nowhere = try runSeparated(binary, ["report", "--db", db, "--format", "html", "--out", dir.appendingPathComponent("no/such/r.html").path])
        XCTAssertEqual(nowhere.status, 2)
        XCTAssertTrue(nowhere.err.contains("the folder \(dir.appendingPathComponent("no/such").path) does not exist"), nowhere.err)

        let page = dir.appendingPathComponent("report.html").path
        let report = try runSeparated(binary, ["report", "--db", db, "--format", "html", "--out", page, "--charts", dir.appendingPathComponent("charts").path])
        XCTAssertEqual(report.status, 0, report.err)
        XCTAssertTrue(report.out.contains("report: \(page)"), report.out)
        let html = try String(contentsOfFile: page, encoding: .utf8)
        // The name is text, never markup; the only script is the page's own.
        XCTAssertTrue(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"))
        XCTAssertFalse(html.contains("<script>alert"))
        XCTAssertEqual(html.components(separatedBy: "<script").count - 1, 1)
        // Self-contained: every image a data URI, no link to anything outside.
        XCTAssertFalse(html.contains("src=\"http") || html.contains("href=\"http") || html.contains("url("))
        let images = html.components(separatedBy: "<img ").dropFirst()
        XCTAssertEqual(images.count, 9, "per family (two): the headline, accuracy against noise, the heatmap; per-class for the asymmetric setting; curves for both settings")
        for img in images {
            XCTAssertTrue(img.hasPrefix("src=\"data:image/png;base64,"))
            XCTAssertTrue(img.contains(" alt=\""), "every chart has alt text")
        }
        // Headings in order: one h1, then h2s, h3s only under an h2.
        let headings = html.components(separatedBy: "<h").dropFirst().compactMap { $0.first?.wholeNumberValue }
        XCTAssertEqual(headings.first, 1)
        XCTAssertEqual(headings.filter { $0 == 1 }.count, 1)
        XCTAssertTrue(zip(headings, headings.dropFirst()).allSatisfy { $1 <= $0 + 1 }, "\(headings)")
        for section in ["The answer", "Groups", "Charts", "Runs", "Conventions", "Provenance", "SAM minus SGD"] {
            XCTAssertTrue(html.contains(section), section)
        }
        XCTAssertTrue(html.contains("Does SAM make the network robust to label noise?"))

        // Rendered with networking disabled: not blank, and the page asked the network for nothing.
        let shot = dir.appendingPathComponent("shot.png").path
        let shown = try headless(browser, page, in: dir, ["--window-size=1280,2000", "--screenshot=\(shot)"])
        XCTAssertEqual(shown.status, 0)
        let png = try PNGFile.read(shot)
        XCTAssertEqual(png.width, 1280)
        let (ink, colours) = inkAndColours(png.rgba, below: 240)
        XCTAssertGreaterThan(ink, 0.02, "the screenshot is blank")
        XCTAssertGreaterThan(colours, 50, "the charts are drawn")
        XCTAssertEqual(try pageRequests(shown.netLog), [])

        // After the page's script ran, the suite's name is still text in the DOM.
        let dom = try headless(browser, page, in: dir, ["--dump-dom"])
        XCTAssertEqual(dom.status, 0)
        XCTAssertTrue(dom.out.contains("sambench report: &lt;script&gt;alert(1)&lt;/script&gt;"), String(dom.out.prefix(2000)))
        XCTAssertEqual(dom.out.components(separatedBy: "<script").count - 1, 1)
        XCTAssertTrue(dom.out.contains("tabindex=\"0\" title=\"sort by this column\""), "the sorting script ran")

        // The check can fail: a page that loads an image from the network is caught.
        let bad = dir.appendingPathComponent("bad.html").path
        try "<!DOCTYPE html><p>x</p><img src=\"http://example.invalid/x.png\" alt=\"\">".write(toFile: bad, atomically: true, encoding: .utf8)
        let loaded = try headless(browser, bad, in: dir, ["--screenshot=\(dir.appendingPathComponent("bad.png").path)"])
        XCTAssertEqual(try pageRequests(loaded.netLog), ["http://example.invalid/x.png"])
    }
}
