import Foundation
import ScoreboardCore
import NIOHTTP1
import Testing

extension ScorePath {
/// The live dashboard in a real browser: Debian's headless Chromium, driven through chromedriver's WebDriver API, on
/// real gateway, worker and push processes while scores flow. `scripts/stack.sh install` installs both (a missing
/// one fails this test, it does not skip). The screenshot is kept in `.local/artifacts/dashboard.png`.
@Suite(.serialized, .timeLimit(.minutes(4)))
struct DashboardBrowserTests {
    @Test func theLeaderboardFollowsTheTrafficMatchesTheQueryAPIAndResumesAfterTheGatewayDrops() async throws {
        try await withScorePathWorld(redisDatabase: 24) { world in
            // Kept to the end: a role process is stopped when its RoleProcess goes away.
            let worker = try await world.start("worker")
            defer { withExtendedLifetime(worker) {} }
            var push = try await world.start("push")
            let gateway = try await world.gateway()
            try await ScorePathTests().waitUntilReady(port: push.port)
            let server = try await world.token("match-server-1", role: .gameServer)
            let tag = world.namespace.dropLast()
            func scores(_ users: [Int], action: String) async throws {
                let events = users.map { ["userId": "p\($0)-\(tag)", "action": action, "idempotencyKey": UUID().uuidString.lowercased(), "region": "r1"] }
                let answer = try await HTTPConnection.with(port: gateway.port) { try await $0.postJSON("/v1/events:batch", token: server, json: ["events": events]) }
                #expect(answer.status == 200)
            }
            try await scores(Array(0..<8), action: "pvp-win")
            // The page may open before the worker projected them (it retries a refused stream by itself, tested
            // below by the drop); here the first check is about the snapshot, so wait for the board.
            let firstPort = push.port
            try await within(.seconds(60)) {
                while true {
                    let answer = try await HTTPConnection.with(port: firstPort) { try await $0.send(.GET, "/v1/leaderboards/all-time/global?limit=20") }
                    if (answer.json["entries"] as? [Any])?.count == 8 { return }
                    try await Task.sleep(for: .milliseconds(100))
                }
            }

            let browser = try await Browser.start()
            do {
                try await browser.open("http://127.0.0.1:\(push.port)/dashboard?window=all-time&dimension=global")
                // A mark that a reload would wipe: the page must resume by itself, not by being loaded again.
                _ = try await browser.run("window.loadedOnce = true; return true")

                // The snapshot: the eight players.
                var page = try await browser.waitFor("the first eight players") { $0.rows.count == 8 && $0.connection == "live" }
                let firstSequence = page.sequence

                // Traffic moves the board: new players, and old ones climbing.
                try await scores(Array(4..<14), action: "pvp-win")
                try await scores(Array(0..<3), action: "daily-bonus")
                page = try await browser.waitFor("the updates after the snapshot") { $0.rows.count == 14 && ($0.sequence ?? -1) > (firstSequence ?? -1) }
                #expect(page.changesSeen > 0, "the activity chart counts the changes it received")
                try await expectPageMatchesQueryAPI(browser: browser, push: push.port)

                // The whole-system charts follow the analytics summary stream: more traffic changes them, and once it
                // is committed they show what the analytics API answers.
                let shownBefore = try await browser.analytics()
                // Players already on the board, so that the board's own checks below keep their counts.
                try await scores(Array(0..<10), action: "pvp-match")
                // The ten were accepted (the batch answered 200), so the count reaches at least ten more once committed.
                let shown = try await expectAnalyticsMatchAPI(browser: browser, push: push.port, atLeast: shownBefore.eventsToday + 10)
                #expect(shown.changes > shownBefore.changes, "the events chart moved")
                #expect(shown.topActions.contains("pvp-match"))

                // The rejections chart reads the workers' count of the rejections topic: three requests without a
                // token, refused by the gateway, appear on the page as the summary API counts them.
                for _ in 0..<3 {
                    let refused = try await HTTPConnection.with(port: gateway.port) {
                        try await $0.postJSON("/v1/scores", token: nil, json: ["action": "pvp-win", "actionToken": "x", "idempotencyKey": "k"])
                    }
                    #expect(refused.status == 401)
                }
                let pushPort = push.port
                try await within(.seconds(60)) {
                    while true {
                        let onPage = try await browser.run("return document.getElementById('rejections-day').textContent") as? String
                        let answer = try await HTTPConnection.with(port: pushPort) { try await $0.send(.GET, "/v1/analytics/summary") }
                        let counted = ((answer.json["rejections"] as? [String: Any])?["day"] as? NSNumber)?.intValue
                        if onPage == "3" && counted == 3 { return }
                        try await Task.sleep(for: .milliseconds(200))
                    }
                }
                let byType = try await browser.run(
                    "return [...document.querySelectorAll('#rejections-chart-by-type .bar')].map(b => b.dataset.type + '=' + b.dataset.points)")
                #expect(byType as? [String] == ["unauthenticated=3"])

                // The fraud review feed: hidden for a player, shown for an admin (live, or "not available" where the
                // push gateway does not serve the feed).
                #expect(try await browser.run("return document.getElementById('fraud-panel').hidden") as? Bool == true)
                let admin = try await world.token("ops-\(tag)", role: .admin)
                _ = try await browser.run("signIn('\(admin)'); return true")
                try await within(.seconds(30)) {
                    while true {
                        let state = try await browser.run(
                            "return document.getElementById('fraud-panel').hidden ? 'hidden' : document.getElementById('fraud-state').dataset.state") as? String
                        if state == "live" || state == "not-available" { return }
                        try await Task.sleep(for: .milliseconds(100))
                    }
                }

                // The network drops: the push gateway dies and comes back on the same port. The page reconnects and
                // resumes (EventSource sends the last sequence) without a reload, and catches up with what happened
                // while it was away.
                let port = push.port
                push.kill()
                try await browser.waitFor("the drop to be noticed") { $0.connection != "live" }
                try await scores(Array(20..<25), action: "pvp-win")
                push = try await world.start("push", arguments: ["--port", String(port)])
                try await scores(Array(0..<2), action: "pvp-win")
                page = try await browser.waitFor("the players scored during and after the drop") { $0.rows.count == 19 && $0.connection == "live" }
                #expect(try await browser.run("return window.loadedOnce === true") as? Bool == true, "the page was not reloaded")
                try await expectPageMatchesQueryAPI(browser: browser, push: push.port)

                try await browser.screenshot(to: Repository.root.appendingPathComponent(".local/artifacts/dashboard.png"))
            } catch {
                await browser.quit()
                throw error
            }
            await browser.quit()
        }
    }

    /// The analytics panel shows the analytics API's figures (waits until the API counts at least `atLeast` events
    /// today and the page shows the same: the page follows a stream of the summary, once a second).
    @discardableResult
    func expectAnalyticsMatchAPI(browser: Browser, push: Int, atLeast: Int64) async throws -> AnalyticsShown {
        var api: Int64 = -1
        var shown = try await browser.analytics()
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            let answer = try await HTTPConnection.with(port: push) { try await $0.send(.GET, "/v1/analytics/summary") }
            api = ((answer.json["events"] as? [String: Any])?["day"] as? NSNumber)?.int64Value ?? -1
            shown = try await browser.analytics()
            if api >= atLeast && shown.eventsToday == api { return shown }
            try await Task.sleep(for: .milliseconds(200))
        }
        Issue.record("the page shows \(shown.eventsToday) events today, the analytics API answers \(api), expected at least \(atLeast)")
        return shown
    }

    /// The rows the page shows are the query API's top 20, rank for rank (waits until they agree: the page follows a
    /// stream, the API answers at once).
    func expectPageMatchesQueryAPI(browser: Browser, push: Int) async throws {
        var api: [[String]] = []
        var shown: [[String]] = []
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            let answer = try await HTTPConnection.with(port: push) { try await $0.send(.GET, "/v1/leaderboards/all-time/global?limit=20") }
            api = (answer.json["entries"] as? [[String: Any]] ?? []).map {
                ["\(($0["rank"] as? NSNumber)?.intValue ?? 0)", $0["userId"] as? String ?? "", "\(($0["score"] as? NSNumber)?.int64Value ?? 0)"]
            }
            shown = try await browser.state().rows
            if !api.isEmpty && api == shown { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        Issue.record("the page shows \(shown), the query API answers \(api)")
    }
}
}

/// What the dashboard shows, read from its DOM.
struct DashboardState: Sendable {
    var rows: [[String]]
    var sequence: Int64?
    var connection: String
    var changesSeen: Int
    /// What the page says went wrong, if anything.
    var problem: String

    static let script = """
        const rows = [...document.querySelectorAll('#leaderboard tbody tr')].map(r => [r.dataset.rank, r.dataset.userId, r.dataset.score]);
        const sequence = document.getElementById('leaderboard').dataset.sequence;
        return JSON.stringify({ rows, sequence: sequence === '' ? null : Number(sequence),
            connection: document.getElementById('connection').dataset.state,
            changes: Number(document.getElementById('activity-chart').dataset.total || 0),
            problem: document.getElementById('board-problem').textContent });
        """
}

/// What the dashboard's analytics panel shows, read from its DOM.
struct AnalyticsShown: Sendable {
    var eventsToday: Int64
    var received: Int
    var changes: Int
    var topActions: [String]

    static let script = """
        const panel = document.getElementById('analytics-panel');
        return JSON.stringify({ eventsDay: Number(panel.dataset.eventsDay || 0), received: Number(panel.dataset.received || 0),
            changes: Number(panel.dataset.changes || 0), actions: [...document.querySelectorAll('#top-actions tbody tr')].map(r => r.dataset.action) });
        """
}

extension Browser {
    func analytics() async throws -> AnalyticsShown {
        let text = try #require(try await run(AnalyticsShown.script) as? String)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        return AnalyticsShown(
            eventsToday: (json["eventsDay"] as? NSNumber)?.int64Value ?? 0, received: (json["received"] as? NSNumber)?.intValue ?? 0,
            changes: (json["changes"] as? NSNumber)?.intValue ?? 0, topActions: json["actions"] as? [String] ?? [])
    }
}

/// Headless Chromium through chromedriver's W3C WebDriver API, over the tests' own loopback HTTP client.
final class Browser: Sendable {
    let driver: ServerProcess
    let port: Int
    let session: String

    private init(driver: ServerProcess, port: Int, session: String) {
        self.driver = driver
        self.port = port
        self.session = session
    }

    static func start() async throws -> Browser {
        let chromedriver = "/usr/bin/chromedriver"
        try #require(FileManager.default.isExecutableFile(atPath: chromedriver), "chromedriver is missing: scripts/stack.sh install installs chromium-driver")
        let port = try freeLoopbackPort()
        let driver = ServerProcess()
        try driver.launch(chromedriver, ["--port=\(port)"])
        try await within(.seconds(30)) { while !acceptsConnections(port: port) { try await Task.sleep(for: .milliseconds(50)) } }
        let capabilities: [String: Any] = ["capabilities": ["alwaysMatch": [
            "browserName": "chrome",
            "goog:chromeOptions": ["binary": "/usr/bin/chromium", "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"]],
        ]]]
        let answer = try await HTTPConnection.with(port: port) { try await $0.postJSON("/session", token: nil, json: capabilities) }
        guard let session = (answer.json["value"] as? [String: Any])?["sessionId"] as? String else {
            driver.kill()
            throw BrowserError("chromedriver did not start a session: \(String(decoding: answer.body, as: UTF8.self))")
        }
        return Browser(driver: driver, port: port, session: session)
    }

    func open(_ url: String) async throws {
        _ = try await command(.POST, "url", ["url": url])
    }

    /// Runs `script` in the page and returns its value.
    func run(_ script: String) async throws -> Any? {
        try await command(.POST, "execute/sync", ["script": script, "args": []])
    }

    func state() async throws -> DashboardState {
        let text = try #require(try await run(DashboardState.script) as? String)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        return DashboardState(
            rows: (json["rows"] as? [[Any]] ?? []).map { $0.map { "\($0)" } }, sequence: (json["sequence"] as? NSNumber)?.int64Value,
            connection: json["connection"] as? String ?? "", changesSeen: (json["changes"] as? NSNumber)?.intValue ?? 0,
            problem: json["problem"] as? String ?? "")
    }

    /// Waits (30 s at most) until the page's state satisfies `condition`, and returns that state.
    @discardableResult
    func waitFor(_ what: String, _ condition: @escaping @Sendable (DashboardState) -> Bool) async throws -> DashboardState {
        var last: DashboardState?
        do {
            return try await within(.seconds(30)) {
                while true {
                    let state = try await self.state()
                    if condition(state) { return state }
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
        } catch is TimeoutError {
            last = try? await state()
            throw BrowserError("the page did not show \(what) within 30 s; it shows \(last.map { "\($0)" } ?? "nothing")")
        }
    }

    func screenshot(to file: URL) async throws {
        let base64 = try #require(try await command(.GET, "screenshot", nil) as? String)
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        try #require(Data(base64Encoded: base64)).write(to: file)
    }

    func quit() async {
        _ = try? await HTTPConnection.with(port: port) { try await $0.send(.DELETE, "/session/\(session)") }
        driver.kill()
    }

    private func command(_ method: HTTPMethod, _ path: String, _ body: [String: Any]?) async throws -> Any? {
        let answer = try await HTTPConnection.with(port: port) { connection in
            if let body {
                try await connection.postJSON("/session/\(session)/\(path)", token: nil, json: body)
            } else {
                try await connection.send(method, "/session/\(session)/\(path)")
            }
        }
        guard answer.status == 200 else { throw BrowserError("WebDriver \(path): \(answer.status) \(String(decoding: answer.body, as: UTF8.self).prefix(500))") }
        return answer.json["value"]
    }
}

struct BrowserError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
