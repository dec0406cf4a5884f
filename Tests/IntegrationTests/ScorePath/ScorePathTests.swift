import Foundation
import HummingbirdWSClient
import Logging
import ScoreboardCore
import ScoreboardDefinitions
import ScoreboardHTTP
import Synchronization
import Testing

/// Issue 3's end-to-end tests: real gateway, worker and push processes on the real broker, PostgreSQL and Redis.
extension ScorePath {
@Suite(.serialized, .timeLimit(.minutes(6)))
struct ScorePathTests {
    static let regions = ["r0", "r1", "r2"]
    static let guilds = ["g0", "g1", "g2", "g3", "g4"]

    /// 1. 200 users in 3 regions and 5 guilds send 5,000 score requests, with repeated idempotency keys, replayed and
    /// forged action tokens, and malformed bodies; a WebSocket and an SSE client follow two boards.
    @Test func endToEndStandingsEqualARecountOfTheAcceptedRequests() async throws {
        try await runScenario(redisDatabase: 11, workers: 1, workerKills: 0)
    }

    /// 2. The same, with the worker killed (SIGKILL) twice mid-run and restarted: exactly the same standings.
    @Test func aWorkerKilledTwiceChangesNothing() async throws {
        try await runScenario(redisDatabase: 12, workers: 1, workerKills: 2)
    }

    /// 3. The same, with two workers sharing the partitions.
    @Test func twoWorkersGiveTheSameStandings() async throws {
        try await runScenario(redisDatabase: 13, workers: 2, workerKills: 0)
    }

    // MARK: - The scenario

    struct User: Sendable {
        var id: String
        var region: String
        var guild: String
        var token: String
    }

    struct Accepted: Sendable {
        var user: User
        var points: Int64
        var occurredAt: Int64
    }

    enum Kind: Sendable { case normal, repeatKey, replayToken, forgedToken, malformed(Int) }

    func runScenario(redisDatabase: Int, workers workerCount: Int, workerKills: Int) async throws {
        try await withScorePathWorld(redisDatabase: redisDatabase) { world in
            let workers = RoleList()
            for _ in 0..<workerCount { workers.append(try await world.start("worker")) }
            let push = try await world.start("push")
            let gateway = try await world.gateway()
            try await waitUntilReady(port: push.port)

            let runTag = world.namespace.dropLast()
            var users: [User] = []
            for index in 0..<200 {
                let id = "u\(index)-\(runTag)"
                let region = Self.regions[index % 3], guild = Self.guilds[index % 5]
                users.append(User(id: id, region: region, guild: guild, token: try await world.token(id, region: region, guild: guild)))
            }

            // Followers: a WebSocket client on today's daily board of region r0, an SSE client on the all-time global board.
            let now = Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000))
            let dailyR0 = BoardStream(window: .daily, dimension: .region, value: "r0")
            let allTime = BoardStream(window: .allTime, dimension: .global, value: nil)
            let wsView = BoardView(period: LeaderboardWindow.daily.period(containing: now).key)
            let sseView = BoardView(period: "all")
            let followers = Task {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await followWebSocket(port: push.port, stream: dailyR0, view: wsView) }
                    group.addTask { try await followSSE(port: push.port, stream: allTime, view: sseView) }
                    try await group.waitForAll()
                }
            }
            try await within(.seconds(30)) {
                while !(wsView.hasSnapshot && sseView.hasSnapshot) { try await Task.sleep(for: .milliseconds(50)) }
            }

            // Traffic: 25 requests per user, 16 users at a time, each lane on its own keep-alive connection.
            let log = TrafficLog()
            let lanes = 16
            let killer = Task {
                for kill in 0..<workerKills {
                    let threshold = (kill + 1) * 5000 / (workerKills + 1)
                    while log.requests.load(ordering: .relaxed) < threshold { try await Task.sleep(for: .milliseconds(20)) }
                    workers.first.kill()
                    workers.replaceFirst(with: try await world.start("worker"))
                }
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for lane in 0..<lanes {
                    let laneUsers = stride(from: lane, to: users.count, by: lanes).map { users[$0] }
                    group.addTask {
                        try await HTTPConnection.with(port: gateway.port) { connection in
                            for (position, user) in laneUsers.enumerated() {
                                try await sendUserRequests(
                                    user: user, seed: lane * 1000 + position, connection: &connection, log: log)
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            try await killer.value
            #expect(log.requests.load(ordering: .relaxed) == 5000)
            #expect(log.mismatches.withLock { $0 } == [])

            // The recount: every board's standings from the accepted requests alone.
            let events = log.accepted.withLock { Array($0.values) }
            #expect(events.count > 3000)
            var expected: [BoardKey: [String: Int64]] = [:]
            for event in events {
                let scoreEvent = ScoreEvent(
                    eventID: UUID().uuidString, userID: event.user.id, action: "x", points: event.points,
                    occurredAt: Timestamp(millisecondsSinceEpoch: event.occurredAt), region: event.user.region, guild: event.user.guild,
                    idempotencyKey: UUID().uuidString, source: .player)
                for board in world.catalog.leaderboards.boards(for: scoreEvent) { expected[board, default: [:]][event.user.id, default: 0] += event.points }
            }
            #expect(expected.count >= 12)
            let recount = expected

            // Straight from Redis, once the workers caught up.
            let boards = recount.keys.sorted { $0.id < $1.id }
            try await within(.seconds(120)) {
                while true {
                    var converged = true
                    for board in boards where try await world.redisBoard(board) != recount[board]! { converged = false; break }
                    if converged { return }
                    try await Task.sleep(for: .milliseconds(200))
                }
            }
            // Through the query API, with competition ranks.
            try await HTTPConnection.with(port: push.port) { connection in
                for board in boards {
                    let path = "/v1/leaderboards/\(board.window.rawValue)/\(board.dimension.rawValue)" + (board.value.map { "/\($0)" } ?? "")
                        + "?period=\(board.period)&limit=1000"
                    let answer = try await connection.send(.GET, path)
                    #expect(answer.status == 200)
                    let entries = answer.json["entries"] as? [[String: Any]] ?? []
                    var seen: [String: Int64] = [:]
                    for entry in entries {
                        let user = entry["userId"] as! String, score = (entry["score"] as! NSNumber).int64Value
                        seen[user] = score
                        let higher = expected[board]!.values.filter { $0 > score }.count
                        #expect((entry["rank"] as! NSNumber).intValue == higher + 1, "rank of \(user) on \(board)")
                    }
                    #expect(seen == expected[board]!, "query API standings of \(board)")
                }
            }
            // The followers saw the same final standings.
            let wsBoard = dailyR0.board(period: wsView.period)
            let sseBoard = allTime.board(period: "all")
            try await within(.seconds(30)) {
                while wsView.scores != recount[wsBoard] ?? [:] || sseView.scores != recount[sseBoard] ?? [:] {
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            #expect(wsView.updateCount > 0 && sseView.updateCount > 0)
            followers.cancel()
            _ = gateway
        }
    }

    func waitUntilReady(port: Int) async throws {
        try await within(.seconds(60)) {
            while true {
                let status = try? await HTTPConnection.with(port: port) { try await $0.send(.GET, "/health/ready").status }
                if status == 200 { return }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }
}
}

/// A client's view of one board period: the snapshot, then the updates applied (absolute totals).
final class BoardView: Sendable {
    let period: String
    private let state = Mutex<(snapshot: Bool, scores: [String: Int64], updates: Int, lastSequence: Int64)>((false, [:], 0, -1))

    init(period: String) { self.period = period }

    var hasSnapshot: Bool { state.withLock { $0.snapshot } }
    var scores: [String: Int64] { state.withLock { $0.scores } }
    var updateCount: Int { state.withLock { $0.updates } }
    var lastSequence: Int64 { state.withLock { $0.lastSequence } }

    /// Applies one message as a client would.
    func apply(_ message: [String: Any]) {
        state.withLock { state in
            if let sequence = (message["sequence"] as? NSNumber)?.int64Value { state.lastSequence = max(state.lastSequence, sequence) }
            switch message["type"] as? String {
            case "snapshot":
                state.snapshot = true
                guard let page = message["page"] as? [String: Any], page["period"] as? String == period else { return }
                state.scores = [:]
                for entry in page["entries"] as? [[String: Any]] ?? [] {
                    state.scores[entry["userId"] as! String] = (entry["score"] as! NSNumber).int64Value
                }
            case "update":
                guard let update = message["update"] as? [String: Any], update["period"] as? String == period else { return }
                // An update frame carries the board's changed members, applied in order.
                for member in update["members"] as? [[String: Any]] ?? [] {
                    state.updates += 1
                    // A member marked removed left the board (a ban).
                    if member["removed"] as? Bool == true {
                        state.scores[member["userId"] as! String] = nil
                    } else {
                        state.scores[member["userId"] as! String] = (member["total"] as! NSNumber).int64Value
                    }
                }
            default: break
            }
        }
    }
}

/// The WebSocket command that subscribes to `stream`, resuming after `since` when given.
func subscribeCommand(_ stream: BoardStream, since: Int64?) -> String {
    since.map { #"{"type":"subscribe","board":"\#(stream.id)","since":\#($0)}"# } ?? #"{"type":"subscribe","board":"\#(stream.id)"}"#
}

func followWebSocket(port: Int, stream: BoardStream, view: BoardView, since: Int64? = nil) async throws {
    var logger = Logger(label: "test.ws")
    logger.logLevel = .error
    try await WebSocketClient.connect(url: "ws://127.0.0.1:\(port)/v1/streams/ws", logger: logger) { inbound, outbound, _ in
        let subscribe = subscribeCommand(stream, since: since)
        try await outbound.write(.text(subscribe))
        for try await message in inbound.messages(maxSize: 1 << 24) {
            guard case .text(let text) = message, let json = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else { continue }
            view.apply(json)
        }
    }
}

func followSSE(port: Int, stream: BoardStream, view: BoardView) async throws {
    let path = "/v1/streams/sse/\(stream.window.rawValue)/\(stream.dimension.rawValue)" + (stream.value.map { "/\($0)" } ?? "")
    try await readServerSentEvents(port: port, path: path) { event in
        view.apply(event.json)
        return !Task.isCancelled
    }
}

/// One user's 25 requests: mostly normal scores, and the bad inputs the issue lists, each checked for its answer.
/// The worker processes of a scenario (one may be replaced after a kill).
final class RoleList: Sendable {
    private let items = Mutex<[RoleProcess]>([])
    func append(_ process: RoleProcess) { items.withLock { $0.append(process) } }
    var first: RoleProcess { items.withLock { $0[0] } }
    func replaceFirst(with process: RoleProcess) { items.withLock { $0[0] = process } }
}

/// What the traffic produced: the accepted events by id, every unexpected answer, and the request count.
final class TrafficLog: Sendable {
    let accepted = Mutex<[String: ScorePath.ScorePathTests.Accepted]>([:])
    let mismatches = Mutex<[String]>([])
    let requests = Atomic<Int>(0)
}

/// A careful client's score: a 503 (the broker did not acknowledge within the gateway's second, which a loaded
/// two-core box sees) or a 409 `idempotency-key-in-use` (the first attempt is still being settled) is sent again with
/// the same key, so that an event that landed anyway is answered by its stored 202 and counted once, as the recount
/// assumes.
func postUntilSettled(_ connection: inout HTTPConnection, token: String, body: [String: Any]) async throws -> HTTPAnswer {
    var backoff = RetryBackoff(initial: .milliseconds(100), maximum: .seconds(2))
    let deadline = ContinuousClock.now + .seconds(60)
    while true {
        let answer = try await connection.postJSON("/v1/scores", token: token, json: body)
        let unsettled = answer.status == 503 || (answer.status == 409 && answer.problemType == "idempotency-key-in-use")
        guard unsettled, ContinuousClock.now < deadline else { return answer }
        try await Task.sleep(for: backoff.nextDelay())
    }
}

func sendUserRequests(user: ScorePath.ScorePathTests.User, seed: Int, connection: inout HTTPConnection, log: TrafficLog) async throws {
    // The catalog's limits make some of these 429s: complete-quest allows 10 a minute, the PvP actions 5 an hour,
    // the daily bonus once a day.
    let actions = Array(repeating: "complete-quest", count: 11) + Array(repeating: "pvp-match", count: 5) + Array(repeating: "pvp-win", count: 5)
        + ["daily-bonus", "daily-bonus"]
    let points = ["complete-quest": Int64(10), "pvp-match": 25, "pvp-win": 40, "daily-bonus": 50]
    var lastAccepted: (body: [String: Any], answer: Data)?
    var actionIndex = 0
    func problem(_ what: String, _ answer: HTTPAnswer, expected: String) {
        if answer.problemType != expected || answer.headers["content-type"] != "application/problem+json" {
            log.mismatches.withLock { $0.append("\(user.id) \(what): expected \(expected), got \(answer.status) \(answer.problemType ?? "-")") }
        }
    }
    for request in 0..<25 {
        log.requests.add(1, ordering: .relaxed)
        // Deterministic mix per user: ~5% repeats, 1% replays, 1% forgeries, ~3% malformed.
        let roll = (seed * 31 + request * 17) % 100
        var kind: ScorePath.ScorePathTests.Kind = .normal
        if lastAccepted != nil {
            if roll < 5 { kind = .repeatKey } else if roll < 6 { kind = .replayToken } else if roll < 7 { kind = .forgedToken }
        }
        if (7..<10).contains(roll) { kind = .malformed(roll) }
        switch kind {
        case .repeatKey:
            let answer = try await connection.postJSON("/v1/scores", token: user.token, json: lastAccepted!.body)
            if answer.status != 202 || answer.body != lastAccepted!.answer {
                log.mismatches.withLock { $0.append("\(user.id) repeat: expected the same 202, got \(answer.status)") }
            }
        case .replayToken:
            var body = lastAccepted!.body
            body["idempotencyKey"] = UUID().uuidString.lowercased()
            problem("replay", try await connection.postJSON("/v1/scores", token: user.token, json: body), expected: "action-token-replayed")
        case .forgedToken:
            let action = "complete-quest"
            let issued = try await connection.postJSON("/v1/actions/\(action)/token", token: user.token, json: [:] as [String: String])
            // A forger who changes one character of the signature.
            var characters = Array(issued.json["actionToken"] as! String)
            let index = characters.count - 10
            characters[index] = characters[index] == "A" ? "B" : "A"
            let token = String(characters)
            let body: [String: Any] = ["action": action, "actionToken": token, "idempotencyKey": UUID().uuidString.lowercased()]
            problem("forged", try await connection.postJSON("/v1/scores", token: user.token, json: body), expected: "invalid-action-token")
        case .malformed(let variant):
            switch variant % 3 {
            case 0:
                let answer = try await connection.send(
                    .POST, "/v1/scores", headers: ["Authorization": "Bearer \(user.token)", "Content-Type": "application/json"],
                    body: Data(#"{"action":"complete-quest","#.utf8))
                problem("truncated JSON", answer, expected: "invalid-body")
            case 1:
                let body: [String: Any] = ["action": "complete-quest", "actionToken": "x", "idempotencyKey": "not-a-uuid", "points": 1000]
                problem("bad fields and client points", try await connection.postJSON("/v1/scores", token: user.token, json: body), expected: "invalid-body")
            default:
                let body: [String: Any] = ["action": "complete-quest", "actionToken": "x", "idempotencyKey": UUID().uuidString]
                problem("wrong media type", try await connection.postJSON("/v1/scores", token: user.token, json: body, contentType: "text/plain"),
                        expected: "unsupported-media-type")
            }
        case .normal:
            let action = actions[actionIndex % actions.count]
            actionIndex += 1
            let issued = try await connection.postJSON("/v1/actions/\(action)/token", token: user.token, json: [:] as [String: String])
            guard issued.status == 201, let token = issued.json["actionToken"] as? String else {
                log.mismatches.withLock { $0.append("\(user.id) token: \(issued.status)") }
                continue
            }
            let body: [String: Any] = ["action": action, "actionToken": token, "idempotencyKey": UUID().uuidString.lowercased()]
            let answer = try await postUntilSettled(&connection, token: user.token, body: body)
            if answer.status == 202 {
                let json = answer.json
                guard (json["points"] as? NSNumber)?.int64Value == points[action], json["userId"] as? String == user.id,
                      let eventID = json["eventId"] as? String, let occurredAt = (json["occurredAt"] as? NSNumber)?.int64Value,
                      json["partition"] != nil, json["offset"] != nil
                else {
                    log.mismatches.withLock { $0.append("\(user.id) 202 body: \(String(decoding: answer.body, as: UTF8.self))") }
                    continue
                }
                log.accepted.withLock { $0[eventID] = ScorePath.ScorePathTests.Accepted(user: user, points: points[action]!, occurredAt: occurredAt) }
                lastAccepted = (body, answer.body)
            } else {
                problem("\(action) #\(actionIndex)", answer, expected: "rate-limited")
                if answer.headers["retry-after"] == nil { log.mismatches.withLock { $0.append("\(user.id) 429 without Retry-After") } }
            }
        }
    }
}
