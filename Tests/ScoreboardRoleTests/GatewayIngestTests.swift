import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import ScoreboardCore
import ScoreboardGateway
import ScoreboardHTTP
import ScoreboardRedis
import Testing

/// The gateway's answers to bad input, attacks and outages, in process: on memory ports, and on the real Redis
/// adapters (local or unreachable) where the test is about Redis itself.
@Suite(.timeLimit(.minutes(2)))
struct GatewayIngestTests {
    static func key() -> String { UUID().uuidString.lowercased() }

    static func batch(_ items: [String]) -> String { #"{"events":["# + items.joined(separator: ",") + "]}" }

    static func item(user: String, action: String = "pvp-win", key: String = key()) -> String {
        #"{"userId":"\#(user)","action":"\#(action)","idempotencyKey":"\#(key)"}"#
    }

    // MARK: - A Redis outage is a 503 to retry, never a 500

    @Test func everyRouteThatNeedsRedisAnswers503WithRetryAfterWhenRedisIsDown() async throws {
        // Bad input: none; Redis is a closed port. Authentication's revocation check is the first use.
        let harness = try GatewayHarness(.redis(GatewayHarness.closedRedis()))
        defer { harness.close() }
        let player = try await harness.token(harness.user("p"))
        let server = try await harness.token(harness.user("gs"), role: .gameServer)
        let admin = try await harness.token(harness.user("ops"), role: .admin)
        let now = Int(Date().timeIntervalSince1970)
        try await harness.withClient { client in
            let answers = [
                try await client.post("/v1/actions/pvp-win/token", token: player, json: "{}"),
                try await client.post("/v1/scores", token: player, json: #"{"action":"pvp-win","actionToken":"v1.a.b.c","idempotencyKey":"\#(Self.key())"}"#),
                try await client.post("/v1/events:batch", token: server, json: Self.batch([Self.item(user: "u1")])),
                try await client.send(.put, "/v1/admin/bans/someone", token: admin),
                try await client.send(.delete, "/v1/admin/bans/someone", token: admin),
                try await client.post("/v1/admin/revocations", token: admin, json: #"{"jti":"j1","expiresAt":\#(now + 60)}"#),
            ]
            for (index, answer) in answers.enumerated() {
                #expect(answer.status == .serviceUnavailable, "route \(index)")
                #expect(answer.problemType == "dependency-unavailable", "route \(index)")
                #expect(answer.headers[.retryAfter] != nil, "route \(index)")
                // The client learns what is down, not where it is.
                #expect(!String(buffer: answer.body).contains("127.0.0.1"), "route \(index)")
            }
        }
    }

    @Test func theRoutesOwnUseOfRedisAnswers503WhenAuthenticationDoesNotNeedIt() async throws {
        let harness = try GatewayHarness(.redis(GatewayHarness.closedRedis()), checksRevocations: false)
        defer { harness.close() }
        let player = try await harness.token(harness.user("p"))
        let server = try await harness.token(harness.user("gs"), role: .gameServer)
        let admin = try await harness.token(harness.user("ops"), role: .admin)
        try await harness.withClient { client in
            let token = ActionToken.mint(userID: harness.user("p"), action: "pvp-win", now: .now(), keys: harness.actionKeys)
            let answers = [
                try await client.post("/v1/actions/pvp-win/token", token: player, json: "{}"),
                try await client.post("/v1/scores", token: player, json: #"{"action":"pvp-win","actionToken":"\#(token)","idempotencyKey":"\#(Self.key())"}"#),
                // Every item failed for the outage: the batch as a whole is a 503.
                try await client.post("/v1/events:batch", token: server, json: Self.batch([Self.item(user: "u1"), Self.item(user: "u2")])),
                try await client.send(.put, "/v1/admin/bans/someone", token: admin),
            ]
            for (index, answer) in answers.enumerated() {
                #expect(answer.status == .serviceUnavailable && answer.problemType == "dependency-unavailable", "route \(index)")
                #expect(answer.headers[.retryAfter] == "2", "route \(index)")
            }
        }
        #expect(harness.publisher.published.isEmpty)
    }

    // MARK: - One bad item spoils nothing else

    @Test func aBatchAcceptsItsGoodItemsAndAnswersEachBadOneWithItsOwnProblem() async throws {
        let harness = try GatewayHarness()
        defer { harness.close() }
        let server = try await harness.token(harness.user("gs"), role: .gameServer)
        try await harness.withClient { client in
            // Bad items: a user id starting with ':', a key that is not a UUID, an unknown property, an item that is
            // not an object, an unknown action.
            let answer = try await client.post("/v1/events:batch", token: server, json: Self.batch([
                Self.item(user: harness.user("a")),
                Self.item(user: ":\(harness.user("b"))"),
                Self.item(user: harness.user("c"), key: "not-a-uuid"),
                #"{"userId":"\#(harness.user("d"))","action":"pvp-win","idempotencyKey":"\#(Self.key())","points":1000}"#,
                "42",
                Self.item(user: harness.user("e"), action: "no-such-action"),
                Self.item(user: harness.user("f")),
            ]))
            #expect(answer.status == .ok)
            let results = answer.batchResults
            #expect(results.map(\.status) == [202, 400, 400, 400, 400, 404, 202])
            #expect(results.map(\.problem) == [nil, "invalid-body", "invalid-body", "invalid-body", "invalid-body", "unknown-action", nil])
            let errors = ((answer.json["results"] as? [[String: Any]])?[1]["problem"] as? [String: Any])?["errors"] as? [String]
            #expect(errors?.contains { $0.hasPrefix("/events/1/userId") } == true)
        }
        #expect(harness.publisher.published.count == 2)

        // Only a body that is not a batch at all is a 400 for the whole request.
        try await harness.withClient { client in
            for body in [#"[1,2]"#, #"{"events":"x"}"#, #"{"events":[]}"#, #"{"events":[\#(Self.item(user: "z"))],"extra":1}"#, "not json"] {
                let answer = try await client.post("/v1/events:batch", token: server, json: body)
                #expect(answer.status == .badRequest && answer.problemType == "invalid-body" && answer.isProblem, "\(body)")
            }
        }
    }

    // MARK: - Bounded nesting

    @Test func aDeeplyNestedBodyIsRefusedAsInvalidBeforeAnyOtherWork() async throws {
        let harness = try GatewayHarness()
        defer { harness.close() }
        let player = try await harness.token(harness.user("p"))
        let server = try await harness.token(harness.user("gs"), role: .gameServer)
        // Bad input: 3 KB of nested arrays, as the security review sent.
        let nested = String(repeating: "[", count: 1_500) + String(repeating: "]", count: 1_500)
        try await harness.withClient { client in
            for (uri, token) in [("/v1/scores", player), ("/v1/events:batch", server)] {
                let answer = try await client.post(uri, token: token, json: nested)
                #expect(answer.status == .badRequest && answer.problemType == "invalid-body" && answer.isProblem, "\(uri)")
                #expect(String(buffer: answer.body).contains("nested deeper than 32"), "\(uri)")
            }
        }
    }

    // MARK: - One canonical idempotency key

    @Test func theSameKeyInAnotherCaseIsTheSameRequest() async throws {
        let harness = try GatewayHarness()
        defer { harness.close() }
        let server = try await harness.token(harness.user("gs"), role: .gameServer)
        let key = Self.key()
        let user = harness.user("k")
        try await harness.withClient { client in
            let first = try await client.post("/v1/events:batch", token: server, json: Self.batch([Self.item(user: user, key: key)]))
            // Bad input: the same key, upper-cased.
            let second = try await client.post("/v1/events:batch", token: server, json: Self.batch([Self.item(user: user, key: key.uppercased())]))
            #expect(first.batchResults.map(\.status) == [202] && second.batchResults.map(\.status) == [202])
            #expect(first.batchResults.first?.eventID == second.batchResults.first?.eventID)
            #expect(String(buffer: first.body) == String(buffer: second.body), "a repeat gets the first answer")
        }
        #expect(harness.publisher.published.count == 1, "one key, one event")
    }

    // MARK: - A batch failing midway keeps no claims

    @Test func anItemWhoseChecksFailLeavesTheOthersAcceptedAndNoKeyClaimed() async throws {
        let harness = try GatewayHarness(.redis(try GatewayHarness.localRedis()))
        defer { harness.close() }
        let server = try await harness.token(harness.user("gs"), role: .gameServer)
        let good = harness.user("good"), broken = harness.user("broken")
        // Bad state: the second user's rate-limit key holds a string, so Redis fails that item's script (WRONGTYPE).
        try await harness.redis.send(["SET", "sb:rl:user:\(broken)", "x", "EX", "60"])
        let goodItem = Self.item(user: good)
        try await harness.withClient { client in
            let answer = try await client.post("/v1/events:batch", token: server, json: Self.batch([goodItem, Self.item(user: broken)]))
            #expect(answer.status == .ok)
            #expect(answer.batchResults.map(\.status) == [202, 500])
            // A retry of the good item is answered at once, with the first answer: its key was not left claimed.
            let retry = try await client.post("/v1/events:batch", token: server, json: Self.batch([goodItem]))
            #expect(retry.batchResults.map(\.status) == [202])
            #expect(retry.batchResults.first?.eventID == answer.batchResults.first?.eventID)
        }
        #expect(harness.publisher.published.count == 1)
    }

    @Test(arguments: [false, true])
    func twoItemsOfOneBatchWithOneKeyBehaveAsTwoRequests(onRedis: Bool) async throws {
        let harness = try onRedis ? GatewayHarness(.redis(try GatewayHarness.localRedis())) : GatewayHarness()
        defer { harness.close() }
        let server = try await harness.token(harness.user("gs"), role: .gameServer)
        let user = harness.user("twice"), key = Self.key()
        try await harness.withClient { client in
            // Bad input: the same user and key twice in one batch, between two other users' items.
            let answer = try await client.post("/v1/events:batch", token: server, json: Self.batch([
                Self.item(user: harness.user("before")), Self.item(user: user, key: key), Self.item(user: user, key: key),
                Self.item(user: harness.user("after")),
            ]))
            #expect(answer.status == .ok)
            // The second sees the first's claim, as a second request would while the first is being published.
            #expect(answer.batchResults.map(\.status) == [202, 202, 409, 202])
            #expect(answer.batchResults.map(\.problem) == [nil, nil, "idempotency-key-in-use", nil])
            // Once published, the key answers a repeat with the first answer.
            let again = try await client.post("/v1/events:batch", token: server, json: Self.batch([Self.item(user: user, key: key)]))
            #expect(again.batchResults.map(\.eventID) == [answer.batchResults[1].eventID])
        }
        #expect(harness.publisher.published.count == 3)
    }

    @Test func anUnpublishedItemReleasesItsKeyForAnImmediateRetry() async throws {
        let harness = try GatewayHarness()
        defer { harness.close() }
        let server = try await harness.token(harness.user("gs"), role: .gameServer)
        let item = Self.item(user: harness.user("r"))
        try await harness.withClient { client in
            harness.publisher.mode = .refuse(MemoryBrokerRefusal())
            let refused = try await client.post("/v1/events:batch", token: server, json: Self.batch([item]))
            #expect(refused.status == .serviceUnavailable && refused.problemType == "broker-unavailable")
            harness.publisher.mode = .acknowledge
            let retry = try await client.post("/v1/events:batch", token: server, json: Self.batch([item]))
            #expect(retry.batchResults.map(\.status) == [202])
        }
    }

    // MARK: - Revocations

    @Test func revocationsCheckTheirExpiryRangeAndBody() async throws {
        let harness = try GatewayHarness(.redis(try GatewayHarness.localRedis()))
        defer { harness.close() }
        let admin = try await harness.token(harness.user("ops"), role: .admin)
        let now = Int64(Date().timeIntervalSince1970)
        let jti = "jti-\(harness.tag)"
        try await harness.withClient { client in
            // Bad input: Int64.min (crashed the gateway), a value past 2100 (gave 500), milliseconds for seconds, a
            // float, an empty jti, an unknown property, no JSON, a body over 1 KiB.
            for body in [
                #"{"jti":"j","expiresAt":\#(Int64.min)}"#, #"{"jti":"j","expiresAt":295159811261042816}"#,
                #"{"jti":"j","expiresAt":\#(now * 1000)}"#, #"{"jti":"j","expiresAt":1.5}"#,
                #"{"jti":"","expiresAt":\#(now + 60)}"#, #"{"jti":"j","expiresAt":\#(now + 60),"x":1}"#, "{", #"{"jti":"j"}"#,
            ] {
                let answer = try await client.post("/v1/admin/revocations", token: admin, json: body)
                #expect(answer.status == .badRequest && answer.problemType == "invalid-body", "\(body)")
            }
            let large = try await client.post("/v1/admin/revocations", token: admin, json: #"{"jti":"\#(String(repeating: "j", count: 2000))","expiresAt":1}"#)
            #expect(large.status == .contentTooLarge && large.problemType == "body-too-large")

            let revoked = try await client.post("/v1/admin/revocations", token: admin, json: #"{"jti":"\#(jti)","expiresAt":\#(now + 3600)}"#)
            #expect(revoked.status == .noContent)
            // A token already past its expiry needs no entry.
            let expired = try await client.post("/v1/admin/revocations", token: admin, json: #"{"jti":"\#(jti)-old","expiresAt":\#(now - 60)}"#)
            #expect(expired.status == .noContent)
            // An expiry beyond the longest token life (schema-valid, before 2100) is kept for that life only.
            let far = try await client.post("/v1/admin/revocations", token: admin, json: #"{"jti":"\#(jti)-far","expiresAt":\#(now + 30 * 86_400)}"#)
            #expect(far.status == .noContent)
        }
        let farTTL = try await harness.redis.send(["TTL", RedisTokenRevocations.key(tokenID: "\(jti)-far")]).integer ?? -2
        #expect((86_000...86_700).contains(farTTL), "clamped to the 24 h maximum lifetime (+ leeway)")
        let ttl = try await harness.redis.send(["TTL", RedisTokenRevocations.key(tokenID: jti)]).integer ?? -2
        #expect((3500...3600).contains(ttl))
        #expect(try await harness.redis.send(["EXISTS", RedisTokenRevocations.key(tokenID: "\(jti)-old")]).integer == 0)
    }

    // MARK: - Action tokens

    @Test func bannedUsersGetNoActionTokensAndMintingIsRateLimited() async throws {
        let harness = try GatewayHarness { $0.options.actionTokensPerUserPerMinute = 2 }
        defer { harness.close() }
        let admin = try await harness.token(harness.user("ops"), role: .admin)
        let banned = harness.user("banned"), busy = harness.user("busy")
        let bannedToken = try await harness.token(banned), busyToken = try await harness.token(busy)
        try await harness.withClient { client in
            #expect(try await client.send(.put, "/v1/admin/bans/\(banned)", token: admin).status == .noContent)
            let refused = try await client.post("/v1/actions/pvp-win/token", token: bannedToken, json: "{}")
            #expect(refused.status == .forbidden && refused.problemType == "banned")

            #expect(try await client.post("/v1/actions/pvp-win/token", token: busyToken, json: "{}").status == .created)
            #expect(try await client.post("/v1/actions/pvp-win/token", token: busyToken, json: "{}").status == .created)
            let limited = try await client.post("/v1/actions/pvp-win/token", token: busyToken, json: "{}")
            #expect(limited.status == .tooManyRequests && limited.problemType == "rate-limited" && limited.headers[.retryAfter] != nil)
        }
    }

    // MARK: - Limits on what an outsider controls

    @Test func bodySizesBatchLengthAndFieldLengthsHaveTheirProblems() async throws {
        let harness = try GatewayHarness()
        defer { harness.close() }
        let player = try await harness.token(harness.user("p"))
        let server = try await harness.token(harness.user("gs"), role: .gameServer)
        try await harness.withClient { client in
            // Bad input: a score body over 4 KiB, a batch of 1,001 items, a batch body over 512 KiB, an action token
            // over 1,024 characters, a user id over 64, and a body that is not JSON by its content type.
            let large = try await client.post("/v1/scores", token: player, json: #"{"action":"pvp-win","actionToken":"\#(String(repeating: "x", count: 5_000))","idempotencyKey":"\#(Self.key())"}"#)
            #expect(large.status == .contentTooLarge && large.problemType == "body-too-large")
            let many = try await client.post("/v1/events:batch", token: server, json: Self.batch(Array(repeating: Self.item(user: "u"), count: 1_001)))
            #expect(many.status == .badRequest && many.problemType == "invalid-body", "a batch longer than the schema's maxItems")
            let huge = try await client.post("/v1/events:batch", token: server, json: Self.batch([Self.item(user: String(repeating: "u", count: 600_000))]))
            #expect(huge.status == .contentTooLarge && huge.problemType == "body-too-large")
            let longToken = try await client.post("/v1/scores", token: player, json: #"{"action":"pvp-win","actionToken":"\#(String(repeating: "x", count: 1_025))","idempotencyKey":"\#(Self.key())"}"#)
            #expect(longToken.status == .badRequest && longToken.problemType == "invalid-body")
            let longUser = try await client.post("/v1/events:batch", token: server, json: Self.batch([Self.item(user: String(repeating: "u", count: 65))]))
            #expect(longUser.batchResults.map(\.problem) == ["invalid-body"])
            var headers: HTTPFields = [.contentType: "text/plain", .authorization: "Bearer \(player)"]
            headers[.accept] = "*/*"
            let text = try await client.execute(uri: "/v1/scores", method: .post, headers: headers, body: .init(string: "{}"))
            #expect(text.status == .unsupportedMediaType && text.problemType == "unsupported-media-type")
        }
        #expect(harness.publisher.published.isEmpty)
    }

    // MARK: - Per-IP limits behind proxies

    @Test(arguments: [true, false])
    func forwardedForCountsOnlyWhenThePeerIsATrustedProxy(trusted: Bool) async throws {
        let harness = try GatewayHarness { configuration in
            configuration.options.perIPPerMinute = 1
            configuration.options.trustedProxies = trusted ? [IPNetwork("127.0.0.0/8")!] : []
        }
        defer { harness.close() }
        // Two clients behind one proxy (the loopback peer), told apart only by X-Forwarded-For (the memory state is
        // this test's own, so no earlier run's window is found).
        let octet = Int.random(in: 1...250)
        let answers = try await harness.withClient(.live) { client in
            var statuses: [HTTPResponse.Status] = []
            for (index, name) in ["one", "two"].enumerated() {
                let user = harness.user(name)
                var headers: HTTPFields = [.contentType: "application/json", .authorization: "Bearer \(try await harness.token(user))"]
                headers[HTTPField.Name("X-Forwarded-For")!] = "198.51.\(octet).\(index + 1)"
                let answer = try await client.execute(
                    uri: "/v1/scores", method: .post, headers: headers, body: ByteBuffer(string: harness.scoreBody(user: user)))
                statuses.append(answer.status)
            }
            return statuses
        }
        // Trusted: two clients, two buckets. Not trusted: the header is ignored, both share the peer's bucket.
        #expect(answers == (trusted ? [.accepted, .accepted] : [.accepted, .tooManyRequests]))
    }

    // MARK: - Identifiers and methods

    @Test func identifiersWithAColonAreRefusedWhereverTheyEnter() async throws {
        let harness = try GatewayHarness()
        defer { harness.close() }
        let admin = try await harness.token(harness.user("ops"), role: .admin)
        // Bad input: a user id with ':' in a JWT sub, a path parameter, and a batch body; an action path parameter.
        let colonToken = try await harness.token("user:\(harness.tag)")
        let player = try await harness.token(harness.user("p"))
        try await harness.withClient { client in
            let bySubject = try await client.post("/v1/actions/pvp-win/token", token: colonToken, json: "{}")
            #expect(bySubject.status == .unauthorized && bySubject.problemType == "unauthenticated")
            let byPath = try await client.send(.put, "/v1/admin/bans/a:b", token: admin)
            #expect(byPath.status == .badRequest && byPath.problemType == "invalid-parameter")
            let byAction = try await client.post("/v1/actions/pvp:win/token", token: player, json: "{}")
            #expect(byAction.status == .badRequest && byAction.problemType == "invalid-parameter")
        }
    }

    @Test func knownPathsAnswerUndeclaredMethodsWith405() async throws {
        let harness = try GatewayHarness()
        defer { harness.close() }
        try await harness.withClient { client in
            for (method, uri, allowed) in [
                (HTTPRequest.Method.get, "/v1/scores", "POST"), (.patch, "/v1/events:batch", "POST"), (.get, "/v1/admin/revocations", "POST"),
                (.post, "/v1/admin/bans/someone", "DELETE, PUT"), (.delete, "/health/live", "GET"),
            ] {
                let answer = try await client.send(method, uri, token: nil)
                #expect(answer.status == .methodNotAllowed && answer.problemType == "method-not-allowed" && answer.isProblem, "\(method) \(uri)")
                #expect(answer.headers[.allow] == allowed, "\(method) \(uri)")
            }
            let unknown = try await client.send(.get, "/v1/nothing-here", token: nil)
            #expect(unknown.status == .notFound && unknown.problemType == "not-found")
        }
    }
}
