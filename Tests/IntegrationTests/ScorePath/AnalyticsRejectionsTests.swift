import Foundation
import ScoreboardCore
import ScoreboardHTTP
import Testing

/// The rejection rate by problem type (issue 12), end to end: requests the real gateway refuses reach the rejections
/// topic, the worker's rejections consumer counts them in its transaction, and the push role's
/// `GET /v1/analytics/rejections?by=type` and summary answer exactly the refusals the test saw, by type.
extension ScorePath {
@Suite(.serialized, .timeLimit(.minutes(4)))
struct AnalyticsRejectionsTests {
    @Test func refusalsThroughTheGatewayAreCountedByProblemType() async throws {
        try await withScorePathWorld(redisDatabase: 31) { world in
            let worker = try await world.start("worker")
            defer { withExtendedLifetime(worker) {} }
            let push = try await world.start("push")
            let gateway = try await world.gateway()
            try await ScorePathTests().waitUntilReady(port: push.port)
            try await ScorePathTests().waitUntilReady(port: gateway.port)
            let tag = world.namespace.dropLast()
            let token = try await world.token("ann-\(tag)", region: "eu")

            // The bad requests tried: no bearer token, a forged one, bodies that break the schema, an action that does
            // not exist, a replayed action token; and accepted ones between them, which count nothing here.
            var answers: [HTTPAnswer] = []
            try await HTTPConnection.with(port: gateway.port) { connection in
                func issue(_ action: String) async throws -> String {
                    try await connection.postJSON("/v1/actions/\(action)/token", token: token, json: [:] as [String: String]).json["actionToken"] as? String ?? ""
                }
                func score(_ body: [String: Any], token: String?) async throws -> HTTPAnswer {
                    try await connection.postJSON("/v1/scores", token: token, json: body)
                }
                let key = { UUID().uuidString.lowercased() }
                for _ in 0..<2 { answers.append(try await score(["action": "complete-quest", "actionToken": "x", "idempotencyKey": key()], token: nil)) }
                answers.append(try await score(["action": "complete-quest", "actionToken": "x", "idempotencyKey": key()], token: "not-a-jwt"))
                for body: [String: Any] in [["action": 5], ["idempotencyKey": key()], ["action": "complete-quest", "points": "many"]] {
                    answers.append(try await score(body, token: token))
                }
                answers.append(try await connection.postJSON("/v1/actions/no-such-action/token", token: token, json: [:] as [String: String]))
                let accepted: [String: Any] = ["action": "complete-quest", "actionToken": try await issue("complete-quest"), "idempotencyKey": key()]
                answers.append(try await score(accepted, token: token))
                for _ in 0..<3 {
                    var replay = accepted
                    replay["idempotencyKey"] = key()
                    answers.append(try await score(replay, token: token))
                }
                answers.append(try await score(["action": "pvp-win", "actionToken": try await issue("pvp-win"), "idempotencyKey": key()], token: token))
            }
            var expected: [String: Int64] = [:]
            for answer in answers where answer.status >= 400 { expected[answer.problemType ?? "?", default: 0] += 1 }
            #expect(answers.filter { $0.status == 202 }.count == 2)
            #expect(expected.count >= 4, "refusals of several types: \(expected)")

            // The worker counts them after the gateway publishes them: read until the counts arrive, then compare.
            @Sendable func counted() async throws -> (byType: [String: Int64], total: Int64, summary: Int64?) {
                try await HTTPConnection.with(port: push.port) { connection in
                    let byType = try await connection.send(.GET, "/v1/analytics/rejections?step=day&by=type")
                    var counts: [String: Int64] = [:]
                    for line in byType.json["series"] as? [[String: Any]] ?? [] {
                        let points = line["points"] as? [[String: Any]] ?? []
                        counts[line["value"] as? String ?? "?"] = points.reduce(0) { $0 + (($1["value"] as? NSNumber)?.int64Value ?? 0) }
                    }
                    let total = try await connection.send(.GET, "/v1/analytics/rejections?step=day")
                    let points = (total.json["series"] as? [[String: Any]])?.first?["points"] as? [[String: Any]] ?? []
                    let summary = try await connection.send(.GET, "/v1/analytics/summary")
                    return (
                        counts, points.reduce(0) { $0 + (($1["value"] as? NSNumber)?.int64Value ?? 0) },
                        ((summary.json["rejections"] as? [String: Any])?["day"] as? NSNumber)?.int64Value
                    )
                }
            }
            let total = expected.values.reduce(0, +)
            let seen = try await within(.seconds(90)) {
                while true {
                    let seen = try await counted()
                    // All three answers complete (they are read one after the other, so the first may be read before
                    // the last refusal is counted and the later ones after).
                    if seen.byType.values.reduce(0, +) >= total && seen.total >= total && seen.summary.map({ $0 >= total }) == true {
                        return seen
                    }
                    try await Task.sleep(for: .milliseconds(200))
                }
            }
            #expect(seen.byType == expected)
            #expect(seen.total == total)
            #expect(seen.summary == total, "the summary's rejections today")
        }
    }
}
}
