import Foundation
import HTTPTypes
import ScoreboardCore
import ScoreboardGateway
import ScoreboardRedis
import Testing

/// The gateway's side of fraud review: the adaptive limit (one score a minute while the user has an open flag) and
/// its end when the flag is closed, in memory and against the real Redis keys the fraud stage and the review write.
@Suite(.timeLimit(.minutes(1)))
struct FraudGatewayTests {
    /// Bad input: a flagged user sends a second score within the minute. It is refused with 429 naming the limit and
    /// nothing is published; an unflagged user at the same pace is not limited; once the flag is closed, the user is free.
    @Test func aFlaggedUserGetsOneScoreAMinuteUntilTheFlagIsClosed() async throws {
        let harness = try GatewayHarness()
        let state = try #require(harness.memoryState)
        let mallory = harness.user("mallory"), ann = harness.user("ann")
        state.setFlagged(userID: mallory, flagged: true)
        let malloryToken = try await harness.token(mallory), annToken = try await harness.token(ann)
        try await harness.withClient { client in
            #expect(try await client.post("/v1/scores", token: malloryToken, json: harness.scoreBody(user: mallory)).status == .accepted)
            let limited = try await client.post("/v1/scores", token: malloryToken, json: harness.scoreBody(user: mallory))
            #expect(limited.status == .tooManyRequests && limited.problemType == "rate-limited" && limited.isProblem)
            #expect((limited.json["detail"] as? String)?.contains("fraud-review") == true)
            #expect(limited.headers[.retryAfter] == "60")
            for _ in 0..<3 { #expect(try await client.post("/v1/scores", token: annToken, json: harness.scoreBody(user: ann)).status == .accepted) }
            harness.clock.advance(.seconds(61))
            #expect(try await client.post("/v1/scores", token: malloryToken, json: harness.scoreBody(user: mallory)).status == .accepted)
            state.setFlagged(userID: mallory, flagged: false)
            #expect(try await client.post("/v1/scores", token: malloryToken, json: harness.scoreBody(user: mallory)).status == .accepted)
        }
        #expect(harness.publisher.published.filter { $0.userID == mallory }.count == 3)
    }

    /// The same against Redis: the worker's open mark limits the user, the review's close lifts it, and a worker that
    /// marks the same flag again afterwards (its outbox after a crash) does not reopen it.
    @Test func theRedisMarksLimitAndAReviewedFlagStaysClosed() async throws {
        let harness = try GatewayHarness(.redis(try GatewayHarness.localRedis()))
        defer { harness.close() }
        let marks = RedisFraudMarks(redis: harness.redis)
        let mallory = harness.user("mallory")
        let flag = FraudFlagMessage(
            userID: mallory, ruleID: "rapid-actions", severity: .high, outcome: .flag, detectedAt: harness.clock.now().millisecondsSinceEpoch,
            triggeredBy: "e-\(harness.tag)", evidence: ["actions": 9], detail: "9 actions in 8 s")
        try await marks.markOpen([flag])
        #expect(try await marks.isFlagged(userID: mallory))
        let token = try await harness.token(mallory)
        try await harness.withClient { client in
            #expect(try await client.post("/v1/scores", token: token, json: harness.scoreBody(user: mallory)).status == .accepted)
            #expect(try await client.post("/v1/scores", token: token, json: harness.scoreBody(user: mallory)).status == .tooManyRequests)
            try await marks.close(flagID: flag.flagID, userID: mallory)
            try await marks.markOpen([flag])
            #expect(try await marks.isFlagged(userID: mallory) == false, "a closed flag is not reopened by a repeated publish")
            #expect(try await client.post("/v1/scores", token: token, json: harness.scoreBody(user: mallory)).status == .accepted)
        }
    }
}
