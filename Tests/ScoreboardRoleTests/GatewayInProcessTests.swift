import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import ScoreboardCore
import ScoreboardGateway
import ScoreboardHTTP
import Synchronization
import Testing

/// The gateway's logic against its memory ports: no servers, no sleeps; time moves only when a test moves it.
@Suite(.timeLimit(.minutes(1)))
struct GatewayInProcessTests {
    static func key() -> String { UUID().uuidString.lowercased() }

    // MARK: - Accepted, and only once

    @Test func aValidScoreIsAcceptedWithTheCatalogsPointsAndTheTokensRegion() async throws {
        let harness = try GatewayHarness()
        let user = harness.user("alice")
        let player = try await harness.token(user, region: "eu", guild: "dragons")
        let body = harness.scoreBody(user: user, action: "pvp-win")
        let answer = try await harness.withClient { client in try await client.post("/v1/scores", token: player, json: body) }
        #expect(answer.status == .accepted)
        let published = try #require(harness.publisher.published.first)
        #expect(harness.publisher.published.count == 1)
        #expect(published.userID == user && published.action == "pvp-win" && published.region == "eu" && published.guild == "dragons")
        #expect(published.points == harness.configuration.actions.actions["pvp-win"]?.points)
        #expect(published.occurredAt == harness.clock.now() && published.source == .player)
        #expect(answer.json["eventId"] as? String == published.eventID)
        #expect((answer.json["offset"] as? NSNumber)?.int64Value == 0)
        // The answer is stored under the key once the broker acknowledged.
        #expect(harness.memoryState?.record(userID: user, idempotencyKey: published.idempotencyKey)?.answer?.eventID == published.eventID)
    }

    @Test func aRepeatedKeyGetsTheFirstAnswerAndAnotherRequestUnderItIsRefused() async throws {
        let harness = try GatewayHarness()
        let user = harness.user("bob")
        let player = try await harness.token(user)
        let key = Self.key()
        let body = harness.scoreBody(user: user, key: key)
        try await harness.withClient { client in
            let first = try await client.post("/v1/scores", token: player, json: body)
            // Bad input: the same request again (a client retry), and the same key for another request (a new token).
            let repeated = try await client.post("/v1/scores", token: player, json: body)
            let other = try await client.post("/v1/scores", token: player, json: harness.scoreBody(user: user, key: key))
            #expect(first.status == .accepted && repeated.status == .accepted)
            #expect(String(buffer: first.body) == String(buffer: repeated.body), "byte for byte")
            #expect(other.status == .unprocessableContent && other.problemType == "idempotency-key-reused" && other.isProblem)
        }
        #expect(harness.publisher.published.count == 1)
    }

    /// Bad input from the store: storing the 202's answer fails twice (a timeout under load). The answer is stored
    /// anyway (the settle tries again), so once the key's pending claim has expired a repeat still gets the first
    /// answer, not a second event with another occurredAt (a fault run saw exactly that before).
    @Test func anAnswerWhoseFirstStoresFailIsStillTheOneARepeatGets() async throws {
        let harness = try GatewayHarness()
        let state = try #require(harness.memoryState)
        let user = harness.user("erin")
        let player = try await harness.token(user)
        let body = harness.scoreBody(user: user, key: Self.key())
        state.failNextCompletes(2)
        try await harness.withClient { client in
            let first = try await client.post("/v1/scores", token: player, json: body)
            #expect(first.status == .accepted)
            // Past the pending claim's lifetime: without a stored answer the key would be free again.
            harness.clock.advance(harness.configuration.options.pendingClaimLifetime + .seconds(1))
            let repeated = try await client.post("/v1/scores", token: player, json: body)
            #expect(repeated.status == .accepted)
            #expect(String(buffer: first.body) == String(buffer: repeated.body), "byte for byte")
        }
        #expect(harness.publisher.published.count == 1)
    }

    @Test func aSpentActionTokenIsRefusedUnderAnyKey() async throws {
        let harness = try GatewayHarness()
        let user = harness.user("carol")
        let player = try await harness.token(user)
        let token = ActionToken.mint(userID: user, action: "pvp-win", now: harness.clock.now(), keys: harness.actionKeys)
        @Sendable func body(_ key: String) -> String { #"{"action":"pvp-win","actionToken":"\#(token)","idempotencyKey":"\#(key)"}"# }
        try await harness.withClient { client in
            #expect(try await client.post("/v1/scores", token: player, json: body(Self.key())).status == .accepted)
            // Bad input: the spent token under a fresh key.
            let replayed = try await client.post("/v1/scores", token: player, json: body(Self.key()))
            #expect(replayed.status == .conflict && replayed.problemType == "action-token-replayed")
        }
        #expect(harness.publisher.published.count == 1)
    }

    @Test func anExpiredActionTokenIsRefused() async throws {
        let harness = try GatewayHarness()
        let user = harness.user("dave")
        let player = try await harness.token(user)
        let body = harness.scoreBody(user: user)
        // Bad input: a token used 61 s after it was minted (it lives 60 s).
        harness.clock.advance(.seconds(61))
        let answer = try await harness.withClient { client in try await client.post("/v1/scores", token: player, json: body) }
        #expect(answer.status == .forbidden && answer.problemType == "action-token-expired")
        #expect(harness.publisher.published.isEmpty)
    }

    @Test func aBannedUserIsRefusedUntilUnbanned() async throws {
        let harness = try GatewayHarness()
        let user = harness.user("erin")
        let player = try await harness.token(user)
        let admin = try await harness.token(harness.user("ops"), role: .admin)
        try await harness.withClient { client in
            #expect(try await client.send(.put, "/v1/admin/bans/\(user)", token: admin).status == .noContent)
            let refused = try await client.post("/v1/scores", token: player, json: harness.scoreBody(user: user))
            #expect(refused.status == .forbidden && refused.problemType == "banned")
            #expect(try await client.send(.delete, "/v1/admin/bans/\(user)", token: admin).status == .noContent)
            #expect(try await client.post("/v1/scores", token: player, json: harness.scoreBody(user: user)).status == .accepted)
        }
    }

    // MARK: - Rate limits

    @Test func thePerUserLimitRefusesWithRetryAfterUntilTheWindowSlides() async throws {
        let harness = try GatewayHarness { $0.options.perUserPerMinute = 2 }
        let user = harness.user("frank")
        let player = try await harness.token(user)
        try await harness.withClient { client in
            for _ in 0..<2 { #expect(try await client.post("/v1/scores", token: player, json: harness.scoreBody(user: user)).status == .accepted) }
            // Bad input: a third score within the minute.
            let limited = try await client.post("/v1/scores", token: player, json: harness.scoreBody(user: user))
            #expect(limited.status == .tooManyRequests && limited.problemType == "rate-limited" && limited.headers[.retryAfter] == "60")
            #expect(limited.json["detail"] as? String == "limit user")
            harness.clock.advance(.seconds(60))
            #expect(try await client.post("/v1/scores", token: player, json: harness.scoreBody(user: user)).status == .accepted)
        }
        #expect(harness.publisher.published.count == 3)
    }

    @Test func aRefusedScoreSpendsNeitherItsTokenNorItsKey() async throws {
        let harness = try GatewayHarness { $0.options.perUserPerMinute = 1 }
        let user = harness.user("gina")
        let player = try await harness.token(user)
        try await harness.withClient { client async throws -> Void in
            #expect(try await client.post("/v1/scores", token: player, json: harness.scoreBody(user: user)).status == .accepted)
            harness.clock.advance(.seconds(30))
            let retried = harness.scoreBody(user: user)
            #expect(try await client.post("/v1/scores", token: player, json: retried).status == .tooManyRequests)
            // 60 s after the first score, and 30 s into the token's life.
            harness.clock.advance(.seconds(30))
            // The same request, once the window slid: its token and key were not spent by the refusal.
            #expect(try await client.post("/v1/scores", token: player, json: retried).status == .accepted)
        }
    }

    // MARK: - Dependencies down: 503 problem+json with Retry-After, and nothing accepted

    @Test func theIngestStateDownIsA503OnEveryRouteAndNotReady() async throws {
        let harness = try GatewayHarness(checksRevocations: false)
        let user = harness.user("hank")
        let player = try await harness.token(user)
        let server = try await harness.token(harness.user("gs"), role: .gameServer)
        let admin = try await harness.token(harness.user("ops"), role: .admin)
        let body = harness.scoreBody(user: user)
        try await harness.withClient { client in
            harness.memoryState?.fail(with: GatewayHarness.redisDown)
            let answers = [
                try await client.post("/v1/actions/pvp-win/token", token: player, json: "{}"),
                try await client.post("/v1/scores", token: player, json: body),
                try await client.post("/v1/events:batch", token: server, json: GatewayIngestTests.batch([GatewayIngestTests.item(user: user)])),
                try await client.send(.put, "/v1/admin/bans/\(user)", token: admin),
            ]
            for (index, answer) in answers.enumerated() {
                #expect(answer.status == .serviceUnavailable && answer.problemType == "dependency-unavailable" && answer.isProblem, "route \(index)")
                #expect(answer.headers[.retryAfter] == "2", "route \(index)")
            }
            let ready = try await client.send(.get, "/health/ready", token: nil)
            #expect(ready.status == .serviceUnavailable && ready.json["redis"] as? String == "unreachable")
            #expect(try await client.send(.get, "/health/live", token: nil).status == .ok)

            // Back: the same request goes through, nothing of the outage left behind.
            harness.memoryState?.fail(with: nil)
            #expect(try await client.post("/v1/scores", token: player, json: body).status == .accepted)
            #expect(try await client.send(.get, "/health/ready", token: nil).status == .ok)
        }
        #expect(harness.publisher.published.count == 1)
    }

    @Test func theRevocationListDownIsA503NotAPass() async throws {
        let harness = try GatewayHarness()
        let user = harness.user("ivy")
        let player = try await harness.token(user)
        let body = harness.scoreBody(user: user)
        harness.memoryRevocations?.fail(with: GatewayHarness.redisDown)
        let answer = try await harness.withClient { client in try await client.post("/v1/scores", token: player, json: body) }
        #expect(answer.status == .serviceUnavailable && answer.problemType == "dependency-unavailable" && answer.headers[.retryAfter] == "2")
        #expect(harness.publisher.published.isEmpty)
    }

    @Test func aRevokedBearerTokenIsRefused() async throws {
        let harness = try GatewayHarness()
        let user = harness.user("jack")
        let admin = try await harness.token(harness.user("ops"), role: .admin)
        let player = try await harness.token(user)
        let jti = try #require(try await harness.identity(player)?.tokenID)
        let now = harness.clock.now().millisecondsSinceEpoch / 1000
        try await harness.withClient { client in
            #expect(try await client.post("/v1/admin/revocations", token: admin, json: #"{"jti":"\#(jti)","expiresAt":\#(now + 600)}"#).status == .noContent)
            let refused = try await client.post("/v1/scores", token: player, json: harness.scoreBody(user: user))
            #expect(refused.status == .unauthorized && refused.problemType == "token-revoked")
        }
        #expect(harness.memoryRevocations?.revoked[jti] == Timestamp(millisecondsSinceEpoch: (now + 600) * 1000))
        // The entry lives until the token's own expiry, then is forgotten.
        harness.clock.advance(.seconds(601))
        #expect(harness.memoryRevocations?.revoked[jti] == nil)
    }

    @Test func aBrokerThatDoesNotAcknowledgeIsA503AndTheKeyWaitsForTheRealOutcome() async throws {
        // Short, so that the held publish times out quickly; long enough that an acknowledging one answers within it
        // on a loaded box (20 ms was not, in a full parallel run).
        let harness = try GatewayHarness {
            $0.options.publishDeadline = .milliseconds(300)
            $0.options.maxUnacknowledgedEvents = 0
        }
        let user = harness.user("kate")
        let player = try await harness.token(user)
        let key = Self.key()
        let body = harness.scoreBody(user: user, key: key)
        try await harness.withClient { client in
            harness.publisher.mode = .hold
            let unanswered = try await client.post("/v1/scores", token: player, json: body)
            #expect(unanswered.status == .serviceUnavailable && unanswered.problemType == "broker-unavailable" && unanswered.isProblem)
            #expect(unanswered.headers[.retryAfter] == "2")
            let ready = try await client.send(.get, "/health/ready", token: nil)
            #expect(ready.status == .serviceUnavailable && ready.json["kafka"] != nil)
            // A retry while the first publish may still land is told to wait, never given a second event.
            let retry = try await client.post("/v1/scores", token: player, json: body)
            #expect(retry.status == .conflict && retry.problemType == "idempotency-key-in-use")

            // The broker takes it late: the key gets the real answer, and the retry gets it.
            harness.publisher.mode = .acknowledge
            harness.publisher.settleHeld(acknowledging: true)
            try await eventually { harness.memoryState?.record(userID: user, idempotencyKey: key)?.answer != nil }
            let answered = try await client.post("/v1/scores", token: player, json: body)
            #expect(answered.status == .accepted)
        }
        #expect(harness.publisher.published.count == 1)
    }

    @Test func anEventTheBrokerRefusedAfterTheDeadlineFreesItsKeyAndToken() async throws {
        // See aBrokerThatDoesNotAcknowledgeIsA503AndTheKeyWaitsForTheRealOutcome for the deadline.
        let harness = try GatewayHarness { $0.options.publishDeadline = .milliseconds(300) }
        let user = harness.user("liam")
        let player = try await harness.token(user)
        let key = Self.key()
        let body = harness.scoreBody(user: user, key: key)
        try await harness.withClient { client in
            harness.publisher.mode = .hold
            #expect(try await client.post("/v1/scores", token: player, json: body).status == .serviceUnavailable)
            harness.publisher.mode = .acknowledge
            harness.publisher.settleHeld(acknowledging: false)
            try await eventually { harness.memoryState?.record(userID: user, idempotencyKey: key) == nil }
            // The same request, token and key, accepted once the broker is back.
            #expect(try await client.post("/v1/scores", token: player, json: body).status == .accepted)
        }
        #expect(harness.publisher.published.count == 1)
    }

    // MARK: - Batches

    @Test func aBatchAnswersPerItemAndARepeatedItemGetsItsFirstAnswer() async throws {
        let harness = try GatewayHarness()
        let server = try await harness.token(harness.user("gs"), role: .gameServer)
        let good = GatewayIngestTests.item(user: harness.user("a"))
        try await harness.withClient { client in
            // Bad items: a user id with ':', an unknown action; and the good item twice in one batch.
            let answer = try await client.post("/v1/events:batch", token: server, json: GatewayIngestTests.batch([
                good, GatewayIngestTests.item(user: "x:\(harness.tag)"), GatewayIngestTests.item(user: harness.user("b"), action: "nope"),
            ]))
            #expect(answer.status == .ok)
            #expect(answer.batchResults.map(\.status) == [202, 400, 404])
            let again = try await client.post("/v1/events:batch", token: server, json: GatewayIngestTests.batch([good]))
            #expect(again.batchResults.map(\.eventID) == [answer.batchResults[0].eventID])
            // Each refused item is recorded for the fraud rules (sent in the background).
            try await eventually { harness.rejections.rejections.count >= 2 }
        }
        #expect(harness.publisher.published.count == 1)
        #expect(Set(harness.rejections.rejections.map(\.reason)).isSuperset(of: ["invalid-body", "unknown-action"]))
    }

    @Test func aHundredItemBatchAsksTheStateStoreOnceForEachStepNotOncePerItem() async throws {
        let calls = IngestStateCalls()
        let harness = try GatewayHarness(wrapState: { CountingIngestState(base: $0, calls: calls) })
        let server = try await harness.token(harness.user("gs"), role: .gameServer)
        // 100 items, not 1,000: the calls do not grow with the batch either way, and a debug build validating 1,000
        // items hogs the cooperative pool long enough for tests running beside it to miss their publish deadline.
        let items = (0..<100).map { GatewayIngestTests.item(user: harness.user("u\($0)")) }
        let answer = try await harness.withClient { client in
            try await client.post("/v1/events:batch", token: server, json: GatewayIngestTests.batch(items))
        }
        #expect(answer.batchResults.count == 100 && answer.batchResults.allSatisfy { $0.status == 202 })
        // Before the batch port, each item made its own calls: 100 prechecks, admissions and completions.
        #expect(calls.counts == ["precheck": 1, "admit": 1, "complete": 1])
        #expect(calls.items == ["precheck": 100, "admit": 100, "complete": 100])
    }

    @Test func aBatchWhoseEveryItemMetABrokerOutageIsA503() async throws {
        let harness = try GatewayHarness()
        let server = try await harness.token(harness.user("gs"), role: .gameServer)
        harness.publisher.mode = .refuse(MemoryBrokerRefusal())
        let answer = try await harness.withClient { client in
            try await client.post("/v1/events:batch", token: server, json: GatewayIngestTests.batch([
                GatewayIngestTests.item(user: harness.user("a")), GatewayIngestTests.item(user: harness.user("b")),
            ]))
        }
        #expect(answer.status == .serviceUnavailable && answer.problemType == "broker-unavailable" && answer.headers[.retryAfter] == "2")
    }
}

extension GatewayHarness {
    /// The identity a bearer token carries (its `jti`, for revocations).
    func identity(_ token: String) async throws -> Identity? {
        let authenticator = try await JWTAuthenticator(jwks: jwks, configuration: .init(), revocations: nil)
        return try await authenticator.authenticate(token: token, roles: Set(Role.allCases))
    }
}

/// Waits for work the gateway finishes after answering (settling a publish, sending a rejection), yielding between
/// looks instead of sleeping; the suite's time limit bounds it.
func eventually(_ condition: @escaping @Sendable () -> Bool) async throws {
    while !condition() {
        try Task.checkCancellation()
        await Task.yield()
    }
}

/// What a request asked of the ingest state: calls, and items over all calls, per operation.
final class IngestStateCalls: Sendable {
    private let tally = Mutex<(calls: [String: Int], items: [String: Int])>(([:], [:]))

    func record(_ operation: String, items: Int) {
        tally.withLock { tally in
            tally.calls[operation, default: 0] += 1
            tally.items[operation, default: 0] += items
        }
    }

    var counts: [String: Int] { tally.withLock { $0.calls } }
    var items: [String: Int] { tally.withLock { $0.items } }
}

/// An ingest state that records each call in ``IngestStateCalls`` and passes it on.
struct CountingIngestState: IngestState {
    let base: any IngestState
    let calls: IngestStateCalls

    func precheck(_ keys: [IngestKey]) async throws -> [IngestPrecheck] {
        calls.record("precheck", items: keys.count)
        return try await base.precheck(keys)
    }

    func admit(_ claims: [IngestClaim]) async throws -> [Result<IngestAdmission, any Error>] {
        calls.record("admit", items: claims.count)
        return try await base.admit(claims)
    }

    func checkMint(userID: String, limit: RateLimit, requestID: String, now: Timestamp) async throws -> MintAdmission {
        calls.record("checkMint", items: 1)
        return try await base.checkMint(userID: userID, limit: limit, requestID: requestID, now: now)
    }

    func complete(_ completions: [IngestCompletion]) async throws {
        calls.record("complete", items: completions.count)
        try await base.complete(completions)
    }

    func release(_ releases: [IngestRelease]) async throws {
        calls.record("release", items: releases.count)
        try await base.release(releases)
    }

    func setBan(userID: String, banned: Bool) async throws { try await base.setBan(userID: userID, banned: banned) }
    func liftBan(userID: String) async throws -> Bool { try await base.liftBan(userID: userID) }

    func probe() async throws { try await base.probe() }
}
