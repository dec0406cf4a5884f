import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import ScoreboardCore
import ScoreboardHTTP
@testable import ScoreboardPush
import Testing

/// The admin fraud endpoints of the push role, on the memory review store: who may call them, what bad input gets
/// (and that it changes nothing), listing with filters and pages, and the audit log.
@Suite(.timeLimit(.minutes(1)))
struct FraudReviewRouteTests {
    struct World {
        let reviews = MemoryFraudReviews()
        let jwks: JWKSFile
        let parts: PushParts

        init() async throws {
            jwks = try JWKSFile.parse(Data(JWKSFile.makeLocal(kid: "hs-test").utf8), origin: "test")
            let authenticator = try await JWTAuthenticator(jwks: jwks, configuration: .init(), revocations: nil)
            let ports = PushPorts(
                live: MemoryLiveBoards(), archive: MemoryStandingsArchive(), updates: MemoryUpdateSource(), authenticator: authenticator,
                fraudReviews: reviews)
            parts = PushParts(
                configuration: PushConfiguration(server: HTTPServerSettings(port: 0), boards: PushWorld.allBoards), ports: ports,
                logger: Logger(label: "test"), now: { Timestamp(millisecondsSinceEpoch: 1_764_100_000_000) })
        }

        func token(_ user: String, role: Role) async throws -> String {
            let now = Date()
            let claims = ScoreboardClaims(
                subject: user, role: role, region: nil, guild: nil, issuer: "scoreboard", audience: "scoreboard", issuedAt: now,
                expiresAt: now.addingTimeInterval(600))
            return try await JWTAuthenticator.sign(claims, keys: try await jwks.keyCollection(), kid: "hs-test")
        }

        func withClient<T: Sendable>(_ body: @escaping @Sendable (any TestClientProtocol) async throws -> T) async throws -> T {
            let app = Application(router: parts.router, services: [parts.feed], logger: Logger(label: "test"))
            return try await app.test(.router) { client in try await body(client) }
        }
    }

    static func flag(_ user: String, rule: String = "rapid-actions", at: Int64 = 1_764_000_000_000, by trigger: String = "e1") -> FraudFlagMessage {
        FraudFlagMessage(
            userID: user, ruleID: rule, severity: rule == "token-manipulation" ? .critical : .high, outcome: .flag, detectedAt: at, triggeredBy: trigger,
            evidence: ["actions": 9, "seconds": 8], detail: "9 actions in 8 s")
    }

    struct Answer: Sendable {
        var status: HTTPResponse.Status
        var contentType: String?
        var json: [String: any Sendable]
        var problemType: String? { (json["type"] as? String).map { String($0.split(separator: "/").last ?? "") } }
    }

    static func send(
        _ client: any TestClientProtocol, _ method: HTTPRequest.Method, _ uri: String, token: String?, body: String? = nil
    ) async throws -> Answer {
        var headers: HTTPFields = [:]
        if let token { headers[.authorization] = "Bearer \(token)" }
        if body != nil { headers[.contentType] = "application/json" }
        return try await client.execute(uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) }) { response in
            let object = (try? JSONSerialization.jsonObject(with: Data(response.body.readableBytesView))) as? [String: Any] ?? [:]
            return Answer(status: response.status, contentType: response.headers[.contentType], json: object.mapValues { "\($0)" as any Sendable }
                .merging(object.compactMapValues { $0 as? [[String: Any]] }.mapValues { rows in rows.map { $0.mapValues { "\($0)" } } as any Sendable }) { $1 })
        }
    }

    /// Bad input: a player's and a game server's tokens, and none at all, on every admin endpoint and the feed. Each is
    /// refused (403 forbidden-role, 401 without a token) and no review is made.
    @Test func onlyAdminsReachTheFraudEndpoints() async throws {
        let world = try await World()
        let flag = Self.flag("mallory")
        world.reviews.add(flag)
        let player = try await world.token("mallory", role: .player), server = try await world.token("server-1", role: .gameServer)
        try await world.withClient { client in
            let calls: [(HTTPRequest.Method, String, String?)] = [
                (.get, "/v1/admin/fraud-flags", nil),
                (.post, "/v1/admin/fraud-flags/\(flag.flagID)/review", #"{"decision": "dismiss", "note": "mine"}"#),
                (.get, "/v1/admin/audit", nil),
                (.get, "/v1/admin/fraud-flags/stream", nil),
            ]
            for (method, uri, body) in calls {
                for token in [player, server] {
                    let answer = try await Self.send(client, method, uri, token: token, body: body)
                    #expect(answer.status == .forbidden && answer.problemType == "forbidden-role", "\(method) \(uri)")
                    #expect(answer.contentType == Problem.contentType)
                }
                #expect(try await Self.send(client, method, uri, token: nil, body: body).status == .unauthorized, "\(method) \(uri)")
            }
        }
        #expect(world.reviews.snapshot.reviews.isEmpty && world.reviews.snapshot.audit.isEmpty)
    }

    /// Bad input: an unknown flag (404), a flag reviewed already (409), no decision and a decision that is not one
    /// (400), an oversized note (400), a flag id that is not one (400), a body that is not JSON (400). Each a
    /// problem+json with a stable type; only the one valid review is recorded.
    @Test func badReviewsAreRefusedAndChangeNothing() async throws {
        let world = try await World()
        let flag = Self.flag("mallory")
        world.reviews.add(flag)
        let admin = try await world.token("root", role: .admin)
        let review = "/v1/admin/fraud-flags/\(flag.flagID)/review"
        try await world.withClient { client in
            let unknown = try await Self.send(
                client, .post, "/v1/admin/fraud-flags/\(UUID().uuidString.lowercased())/review", token: admin, body: #"{"decision": "confirm"}"#)
            #expect(unknown.status == .notFound && unknown.problemType == "unknown-fraud-flag")
            let missing = try await Self.send(client, .post, review, token: admin, body: #"{"note": "no decision"}"#)
            #expect(missing.status == .badRequest && missing.problemType == "invalid-body")
            let wrong = try await Self.send(client, .post, review, token: admin, body: #"{"decision": "approve"}"#)
            #expect(wrong.status == .badRequest && wrong.problemType == "invalid-body")
            let long = try await Self.send(
                client, .post, review, token: admin, body: #"{"decision": "confirm", "note": "\#(String(repeating: "x", count: 1_001))"}"#)
            #expect(long.status == .badRequest && long.problemType == "invalid-body")
            let notAnID = try await Self.send(client, .post, "/v1/admin/fraud-flags/42/review", token: admin, body: #"{"decision": "confirm"}"#)
            #expect(notAnID.status == .badRequest && notAnID.problemType == "invalid-parameter")
            let junk = try await Self.send(client, .post, review, token: admin, body: "{not json")
            #expect(junk.status == .badRequest && junk.problemType == "invalid-body")
            #expect(world.reviews.snapshot.reviews.isEmpty && world.reviews.snapshot.audit.isEmpty, "nothing changed by bad input")

            let done = try await Self.send(client, .post, review, token: admin, body: #"{"decision": "dismiss", "note": "a fast player"}"#)
            #expect(done.status == .ok && done.json["status"] as? String == "dismissed")
            let again = try await Self.send(client, .post, review, token: admin, body: #"{"decision": "confirm", "note": "changed my mind"}"#)
            #expect(again.status == .conflict && again.problemType == "fraud-flag-already-reviewed")
        }
        #expect(world.reviews.snapshot.reviews[flag.flagID]?.decision == .dismiss)
        #expect(world.reviews.snapshot.audit.count == 1)
        #expect(world.reviews.snapshot.banned.isEmpty)
    }

    /// A confirmed flag bans its user; the review and the audit entry name the admin; the listing filters by status,
    /// rule, user and time, and pages with the cursor it gives.
    @Test func reviewsAreAuditedAndTheListingFiltersAndPages() async throws {
        let world = try await World()
        let flags = [
            Self.flag("mallory", at: 1_000, by: "a"), Self.flag("mallory", rule: "token-manipulation", at: 2_000, by: "b"),
            Self.flag("trent", at: 3_000, by: "c"), Self.flag("eve", at: 4_000, by: "d"),
        ]
        for flag in flags { world.reviews.add(flag) }
        let admin = try await world.token("root", role: .admin)
        try await world.withClient { client in
            let confirmed = try await Self.send(
                client, .post, "/v1/admin/fraud-flags/\(flags[0].flagID)/review", token: admin, body: #"{"decision": "confirm", "note": "bot"}"#)
            #expect(confirmed.status == .ok && confirmed.json["status"] as? String == "confirmed")

            func ids(_ uri: String) async throws -> (ids: [String], next: String?) {
                let answer = try await Self.send(client, .get, uri, token: admin)
                #expect(answer.status == .ok, "\(uri)")
                let rows = answer.json["flags"] as? [[String: String]] ?? []
                return (rows.compactMap { $0["flagId"] }, (answer.json["nextCursor"] as? String).flatMap { $0 == "<null>" ? nil : $0 })
            }
            #expect(try await ids("/v1/admin/fraud-flags").ids == flags.map(\.flagID))
            #expect(try await ids("/v1/admin/fraud-flags?status=open").ids == flags.dropFirst().map(\.flagID))
            #expect(try await ids("/v1/admin/fraud-flags?status=confirmed").ids == [flags[0].flagID])
            #expect(try await ids("/v1/admin/fraud-flags?rule=token-manipulation").ids == [flags[1].flagID])
            #expect(try await ids("/v1/admin/fraud-flags?userId=mallory").ids == [flags[0].flagID, flags[1].flagID])
            #expect(try await ids("/v1/admin/fraud-flags?from=2000&to=4000").ids == [flags[1].flagID, flags[2].flagID])
            let first = try await ids("/v1/admin/fraud-flags?limit=3")
            #expect(first.ids == flags.prefix(3).map(\.flagID))
            let cursor = try #require(first.next)
            #expect(try await ids("/v1/admin/fraud-flags?limit=3&cursor=\(cursor)") == ([flags[3].flagID], nil))

            for bad in ["status=closed", "limit=0", "from=-1", "userId=a:b", "cursor=nonsense"] {
                let answer = try await Self.send(client, .get, "/v1/admin/fraud-flags?\(bad)", token: admin)
                #expect(answer.status == .badRequest && answer.problemType == "invalid-parameter", "\(bad)")
            }

            let audit = try await Self.send(client, .get, "/v1/admin/audit?userId=mallory", token: admin)
            let entries = audit.json["entries"] as? [[String: String]] ?? []
            #expect(entries.count == 1)
            #expect(entries.first?["actor"] == "root" && entries.first?["action"] == "review-confirm" && entries.first?["flagId"] == flags[0].flagID)
            #expect((try await Self.send(client, .get, "/v1/admin/audit?userId=eve", token: admin).json["entries"] as? [[String: String]])?.isEmpty == true)
        }
        #expect(world.reviews.snapshot.banned == ["mallory"])
    }

    /// The fault: the review store does not answer. Every endpoint says 503 with Retry-After, never 500.
    @Test func aStoreThatIsDownIs503() async throws {
        struct ConnectionRefused: Error {}
        let world = try await World()
        let flag = Self.flag("mallory")
        world.reviews.add(flag)
        world.reviews.fail(with: ConnectionRefused())
        let admin = try await world.token("root", role: .admin)
        try await world.withClient { client in
            for (method, uri, body) in [
                (HTTPRequest.Method.get, "/v1/admin/fraud-flags", nil), (.get, "/v1/admin/audit", nil),
                (.post, "/v1/admin/fraud-flags/\(flag.flagID)/review", #"{"decision": "confirm"}"#),
            ] {
                let answer = try await Self.send(client, method, uri, token: admin, body: body)
                #expect(answer.status == .serviceUnavailable && answer.problemType == "dependency-unavailable", "\(uri)")
            }
        }
    }
}
