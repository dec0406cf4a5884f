import Foundation
import HummingbirdWSClient
import Logging
import ScoreboardCore
import Synchronization
import Testing

/// What reaches a user's personal channel and an admin's review feed through real gateway, worker and push processes:
/// an achievement unlocked by scores sent through the public API arrives on the open personal stream as one
/// `achievement` frame per unlock; the fraud review feed over WebSocket refuses a player and a game server and shows
/// an admin the flag those scores raised, resumable from the id it gave.
extension ScorePath {
@Suite(.serialized, .timeLimit(.minutes(4)))
struct NotificationPathTests {
    /// Every text message of a WebSocket, as JSON, and how it closed.
    final class WebSocketLog: Sendable {
        let texts = Mutex<[String]>([])
        var all: [[String: Any]] {
            texts.withLock { $0 }.map { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] ?? [:] }
        }
        func first(type: String) -> [String: Any]? { all.first { $0["type"] as? String == type } }
    }

    /// Follows a WebSocket, sending `commands` first.
    static func followWebSocket(_ url: String, sending commands: [String] = [], into log: WebSocketLog) async throws -> WebSocketCloseFrame? {
        var logger = Logger(label: "test.ws")
        logger.logLevel = .error
        return try await WebSocketClient.connect(url: url, logger: logger) { inbound, outbound, _ in
            for command in commands { try await outbound.write(.text(command)) }
            for try await message in inbound.messages(maxSize: 1 << 22) {
                guard case .text(let text) = message else { continue }
                log.texts.withLock { $0.append(text) }
            }
        }
    }

    @Test func unlocksReachThePersonalStreamOnceAndTheReviewFeedOverWebSocketIsForAdmins() async throws {
        try await withScorePathWorld(redisDatabase: 29) { world in
            let worker = try await world.start("worker")
            defer { withExtendedLifetime(worker) {} }
            let push = try await world.start("push")
            let gateway = try await world.gateway()
            // Ready: its consumers of leaderboard-updates, notifications and fraud-flags hold their partitions.
            try await ScorePathTests().waitUntilReady(port: push.port)
            let tag = world.namespace.dropLast()
            let user = "nia-\(tag)"
            let token = try await world.token(user, region: "eu")
            let admin = try await world.token("root-\(tag)", role: .admin)
            let player = try await world.token(user), server = try await world.token("match-server-\(tag)", role: .gameServer)
            let feedURL = "ws://127.0.0.1:\(push.port)/v1/admin/fraud-flags/ws"

            // Bad input: a player's, a game server's and no token on the review feed's WebSocket. Each is told why
            // (an `error` message with the problem) and closed with 1008; none sees a flag.
            let refusals: [(String, String?, String)] = [
                ("player", player, "forbidden-role"), ("game server", server, "forbidden-role"), ("nobody", nil, "unauthenticated"),
            ]
            for (who, bearer, problem) in refusals {
                let log = WebSocketLog()
                let close = try await within(.seconds(30)) {
                    try await Self.followWebSocket(bearer.map { "\(feedURL)?access_token=\($0)" } ?? feedURL, into: log)
                }
                #expect(close?.closeCode == .policyViolation && close?.reason == problem, "\(who)")
                let error = log.all.first
                #expect(log.all.count == 1 && error?["type"] as? String == "error", "\(who)")
                #expect((error?["problem"] as? String)?.hasSuffix("/\(problem)") == true, "\(who)")
                #expect((error?["status"] as? NSNumber)?.intValue == (problem == "forbidden-role" ? 403 : 401), "\(who)")
            }

            // The personal stream (SSE, and the WebSocket's personal channel) and the admin's feed, open before the scores.
            let personal = PushLimitsTests.EventLog()
            let personalStream = Task { try await PushLimitsTests().follow(port: push.port, path: "/v1/streams/me", token: token, into: personal) }
            let personalSocket = WebSocketLog()
            let personalSocketTask = Task {
                // Commands are applied in order: the board's snapshot says the personal subscription is registered.
                let commands = [#"{"type":"subscribe","personal":true}"#, #"{"type":"subscribe","board":"all-time:global"}"#]
                return try await Self.followWebSocket(
                    "ws://127.0.0.1:\(push.port)/v1/streams/ws?access_token=\(token)", sending: commands, into: personalSocket)
            }
            let feed = WebSocketLog()
            let feedSocket = Task { try await Self.followWebSocket("\(feedURL)?access_token=\(admin)", into: feed) }
            try await within(.seconds(30)) {
                while personal.count < 1 || feed.first(type: "snapshot") == nil || personalSocket.first(type: "snapshot") == nil {
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
            #expect((feed.first(type: "snapshot")?["flags"] as? [Any])?.isEmpty == true)

            // Ten quests in a few seconds: 100 points unlock beginner; rank 1 unlocks the two ranking achievements;
            // more than 8 actions in 10 s raise a rapid-actions flag.
            var last: [String: String] = [:]
            for _ in 0..<10 {
                let answer = try await HTTPConnection.with(port: gateway.port) { connection in
                    let issued = try await connection.postJSON("/v1/actions/complete-quest/token", token: token, json: [:] as [String: String])
                    last = [
                        "action": "complete-quest", "actionToken": issued.json["actionToken"] as? String ?? "",
                        "idempotencyKey": UUID().uuidString.lowercased(),
                    ]
                    return try await connection.postJSON("/v1/scores", token: token, json: last)
                }
                #expect(answer.status == 202)
            }
            let expected: Set<String> = ["beginner", "daily-top-10", "all-time-top-10"].reduce(into: []) { $0.insert("\(user):\($1)") }
            @Sendable func achievementIDs() -> [String] {
                personal.events.withLock { $0.filter { $0.event == "achievement" }.compactMap { $0.json["id"] as? String } }
            }
            try await within(.seconds(90)) { while Set(achievementIDs()) != expected { try await Task.sleep(for: .milliseconds(50)) } }
            let beginner = try #require(personal.events.withLock { events in
                events.first { $0.event == "achievement" && $0.json["id"] as? String == "\(user):beginner" }
            })
            #expect(beginner.id == nil, "no SSE id: a board stream's Last-Event-ID stays a board sequence")
            let unlock = beginner.json["unlock"] as? [String: Any]
            #expect(unlock?["achievement"] as? String == "beginner" && unlock?["kind"] as? String == "score" && unlock?["userId"] as? String == user)

            // Once: one more score; its update reaches the stream after the worker announced this batch's unlocks
            // (the outputs of one batch finish before the next one's start), and by then no id came twice.
            let more = try await HTTPConnection.with(port: gateway.port) { connection in
                let issued = try await connection.postJSON("/v1/actions/pvp-match/token", token: token, json: [:] as [String: String])
                return try await connection.postJSON(
                    "/v1/scores", token: token,
                    json: [
                        "action": "pvp-match", "actionToken": issued.json["actionToken"] as? String ?? "",
                        "idempotencyKey": UUID().uuidString.lowercased(),
                    ])
            }
            #expect(more.status == 202)
            try await within(.seconds(60)) {
                while !personal.events.withLock({ $0.contains { event in
                    event.event == "update" && ((event.json["update"] as? [String: Any])?["members"] as? [[String: Any]])?.contains {
                        ($0["total"] as? NSNumber)?.int64Value == 125 } == true
                } }) { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(achievementIDs().sorted() == expected.sorted(), "each unlock once")
            // The same frames on the WebSocket's personal channel.
            @Sendable func socketAchievementIDs() -> [String] {
                personalSocket.all.filter { $0["type"] as? String == "achievement" }.compactMap { $0["id"] as? String }
            }
            try await within(.seconds(30)) { while Set(socketAchievementIDs()) != expected { try await Task.sleep(for: .milliseconds(50)) } }
            #expect(socketAchievementIDs().sorted() == expected.sorted(), "each unlock once")
            #expect(personalSocket.all.allSatisfy { $0["type"] as? String != "error" })
            personalSocketTask.cancel()
            // A client that was away lists the same ids.
            let listed = try await HTTPConnection.with(port: push.port) { try await $0.send(.GET, "/v1/users/\(user)/achievements") }
            #expect(Set((listed.json["unlocked"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }) == expected)
            personalStream.cancel()

            // The admin's feed showed the flag live, with its position as `id`.
            try await within(.seconds(90)) { while feed.first(type: "flag") == nil { try await Task.sleep(for: .milliseconds(50)) } }
            let rapid = try #require(feed.first(type: "flag"))
            let rapidFlag = rapid["flag"] as? [String: Any]
            #expect(rapidFlag?["userId"] as? String == user && rapidFlag?["rule"] as? String == "rapid-actions")
            let position = try #require(rapid["id"] as? String)

            // Three replayed tokens: a token-manipulation flag. A feed resumed from the first flag's id gets only the
            // flags after it, without a snapshot.
            for _ in 0..<3 {
                var replay = last
                replay["idempotencyKey"] = UUID().uuidString.lowercased()
                let answer = try await HTTPConnection.with(port: gateway.port) { try await $0.postJSON("/v1/scores", token: token, json: replay) }
                #expect(answer.problemType == "action-token-replayed")
            }
            let resumed = WebSocketLog()
            let resumedSocket = Task { try await Self.followWebSocket("\(feedURL)?since=\(position)&access_token=\(admin)", into: resumed) }
            try await within(.seconds(90)) { while resumed.first(type: "flag") == nil { try await Task.sleep(for: .milliseconds(50)) } }
            #expect(resumed.first(type: "snapshot") == nil)
            let rules = resumed.all.filter { $0["type"] as? String == "flag" }.compactMap { ($0["flag"] as? [String: Any])?["rule"] as? String }
            #expect(rules == ["token-manipulation"])
            resumedSocket.cancel()
            feedSocket.cancel()
        }
    }
}
}
