import Foundation
import ScoreboardCore
import ScoreboardHTTP
import ScoreboardRedis
import Testing

/// Fraud detection's live path (docs/fraud.md): traffic sent through the public API to real gateway, worker and push
/// processes, read back through `GET /v1/admin/fraud-flags`, then reviewed.
extension ScorePath {
@Suite(.serialized, .timeLimit(.minutes(4)))
struct FraudLivePathTests {
    @Test func aBurstAndReplayedTokensAreFlaggedLimitedAndAConfirmedFlagBans() async throws {
        try await withScorePathWorld(redisDatabase: 26) { world in
            // Held to the end: a role process is stopped when its handle goes.
            let worker = try await world.start("worker")
            defer { withExtendedLifetime(worker) {} }
            let push = try await world.start("push")
            // The adaptive limit as deployed (one score a minute for a flagged user), unlike `world.gateway()`.
            let gateway = try await world.start("gateway", arguments: ["--per-ip-per-minute", "1000000", "--per-user-per-minute", "1000"])
            try await ScorePathTests().waitUntilReady(port: push.port)
            let tag = world.namespace.dropLast()
            let (mallory, ann) = ("mallory-\(tag)", "ann-\(tag)")
            let malloryToken = try await world.token(mallory, region: "eu"), annToken = try await world.token(ann, region: "eu")
            let admin = try await world.token("root-\(tag)", role: .admin), player = try await world.token(ann)

            @Sendable func score(_ token: String, _ action: String = "complete-quest") async throws -> (answer: HTTPAnswer, body: [String: String]) {
                try await HTTPConnection.with(port: gateway.port) { connection in
                    let issued = try await connection.postJSON("/v1/actions/\(action)/token", token: token, json: [:] as [String: String])
                    let body: [String: String] = [
                        "action": action, "actionToken": issued.json["actionToken"] as? String ?? "", "idempotencyKey": UUID().uuidString.lowercased(),
                    ]
                    return (try await connection.postJSON("/v1/scores", token: token, json: body), body)
                }
            }
            @Sendable func flags(_ query: String, token: String? = nil) async throws -> HTTPAnswer {
                try await HTTPConnection.with(port: push.port) { connection in
                    try await connection.send(.GET, "/v1/admin/fraud-flags?\(query)", headers: ["Authorization": "Bearer \(token ?? admin)"])
                }
            }
            /// Waits until the listing holds a flag of `rule` for `user` (the worker has processed the traffic).
            func flag(_ rule: String, of user: String) async throws -> [String: String] {
                try await within(.seconds(90)) {
                    while true {
                        let answer = try await flags("userId=\(user)&rule=\(rule)")
                        if let found = (answer.json["flags"] as? [[String: Any]])?.first { return found.mapValues { "\($0)" } }
                        try await Task.sleep(for: .milliseconds(200))
                    }
                }
            }

            // Nine actions at once (each stamped when the gateway takes it, so well within 10 s even on a loaded machine):
            // more than 8 in 10 s. Ann plays once.
            #expect(try await score(annToken).answer.status == 202)
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<9 { group.addTask { try await score(malloryToken).answer.status } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(statuses == Array(repeating: 202, count: 9))
            let rapid = try await flag("rapid-actions", of: mallory)
            #expect(rapid["status"] == "open" && rapid["severity"] == "high")
            #expect((try await flags("userId=\(mallory)", token: player)).status == 403, "a player may not list flags")

            // While the flag is open: one score a minute (once the worker's outputs, after its commit, marked it in Redis).
            let marks = RedisFraudMarks(redis: world.redis)
            try await within(.seconds(30)) {
                while try await !marks.isFlagged(userID: mallory) { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(try await score(malloryToken, "pvp-match").answer.status == 202)
            let limited = try await score(malloryToken, "pvp-match").answer
            #expect(limited.status == 429 && limited.problemType == "rate-limited" && (limited.json["detail"] as? String)?.contains("fraud-review") == true)

            // Three replayed tokens: the rejections reach the worker's fraud stage; a critical flag.
            let accepted = try await score(annToken, "pvp-match")
            #expect(accepted.answer.status == 202)
            for _ in 0..<3 {
                var body = accepted.body
                body["idempotencyKey"] = UUID().uuidString.lowercased()
                let replay = try await HTTPConnection.with(port: gateway.port) { try await $0.postJSON("/v1/scores", token: annToken, json: body) }
                #expect(replay.problemType == "action-token-replayed")
            }
            let manipulation = try await flag("token-manipulation", of: ann)
            #expect(manipulation["severity"] == "critical")

            // Confirm mallory's flag: banned (403, even with a token minted before), off the board in the query API.
            let minted = try await HTTPConnection.with(port: gateway.port) { connection in
                try await connection.postJSON("/v1/actions/pvp-win/token", token: malloryToken, json: [:] as [String: String]).json["actionToken"] as? String
            }
            let flagID = try #require(rapid["flagId"])
            let reviewed = try await HTTPConnection.with(port: push.port) { connection in
                try await connection.postJSON("/v1/admin/fraud-flags/\(flagID)/review", token: admin, json: ["decision": "confirm", "note": "a bot"])
            }
            #expect(reviewed.status == 200 && reviewed.json["status"] as? String == "confirmed")
            let refused = try await HTTPConnection.with(port: gateway.port) { connection in
                try await connection.postJSON(
                    "/v1/scores", token: malloryToken,
                    json: ["action": "pvp-win", "actionToken": minted ?? "", "idempotencyKey": UUID().uuidString.lowercased()])
            }
            #expect(refused.status == 403 && refused.problemType == "banned")
            // Off the board once the worker has applied the ban the review published (BanPathTests follows it closely).
            let members = try await within(.seconds(30)) {
                while true {
                    let board = try await HTTPConnection.with(port: push.port) { try await $0.send(.GET, "/v1/leaderboards/all-time/global?limit=100") }
                    let members = (board.json["entries"] as? [[String: Any]] ?? []).compactMap { $0["userId"] as? String }
                    if !members.contains(mallory) { return members }
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            #expect(members.contains(ann))
            #expect(try await world.redisBoard(BoardKey(window: .allTime, period: "all", dimension: .global, value: nil))[mallory] == nil)
            let audit = try await HTTPConnection.with(port: push.port) { connection in
                try await connection.send(.GET, "/v1/admin/audit?userId=\(mallory)", headers: ["Authorization": "Bearer \(admin)"])
            }
            #expect((audit.json["entries"] as? [[String: Any]])?.count == 1)
        }
    }
}
}
