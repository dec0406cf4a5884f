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

/// The fraud review feed over WebSocket, in process: who may open it (the upgrade request as the router sees it) and
/// the messages it sends. Tests/IntegrationTests/ScorePath/NotificationPathTests.swift opens it over a real socket.
@Suite(.timeLimit(.minutes(1)))
struct FraudFeedWebSocketTests {
    /// Bad input: a player's and a game server's tokens, none, and a `since` that is no position. Each is refused as
    /// the SSE feed refuses it (403 forbidden-role, 401, 400 invalid-parameter), as problem+json.
    @Test func onlyAdminsMayOpenTheFeed() async throws {
        let world = try await FraudReviewRouteTests.World()
        let player = try await world.token("mallory", role: .player), server = try await world.token("server-1", role: .gameServer)
        let admin = try await world.token("root", role: .admin)
        try await world.withClient { client in
            for token in [player, server] {
                let answer = try await FraudReviewRouteTests.send(client, .get, "/v1/admin/fraud-flags/ws", token: token)
                #expect(answer.status == .forbidden && answer.problemType == "forbidden-role")
                #expect(answer.contentType == Problem.contentType)
                let browser = try await FraudReviewRouteTests.send(client, .get, "/v1/admin/fraud-flags/ws?access_token=\(token)", token: nil)
                #expect(browser.status == .forbidden && browser.problemType == "forbidden-role", "the token as a browser sends it")
            }
            let anonymous = try await FraudReviewRouteTests.send(client, .get, "/v1/admin/fraud-flags/ws", token: nil)
            #expect(anonymous.status == .unauthorized && anonymous.problemType == "unauthenticated")
            let badPosition = try await FraudReviewRouteTests.send(client, .get, "/v1/admin/fraud-flags/ws?since=yesterday", token: admin)
            #expect(badPosition.status == .badRequest && badPosition.problemType == "invalid-parameter")
        }
        #expect(try await world.parts.gateway.admitToFraudFeed(Self.upgrade(token: admin, since: "1-7.3-0")) == FraudFeedPosition("1-7.3-0"))
    }

    static func upgrade(token: String, since: String) -> Request {
        var head = HTTPRequest(method: .get, scheme: "http", authority: "localhost", path: "/v1/admin/fraud-flags/ws?since=\(since)")
        head.headerFields[.authorization] = "Bearer \(token)"
        return Request(head: head, body: .init(buffer: ByteBuffer()))
    }

    /// The feed's WebSocket messages: the snapshot and each flag as the SSE events' JSON, with the position as `id`
    /// (the SSE events carry it as their `id:` line instead), so that a client resumes with `?since=` its last `id`.
    @Test func webSocketMessagesCarryThePositionAsTheirID() async throws {
        let reviews = MemoryFraudReviews()
        reviews.add(FraudFeedTests.flag("trent", by: "t1"), events: [])
        let source = MemoryFraudFlagSource()
        let feed = FraudFeed(source: source, reviews: reviews, logger: Logger(label: "test"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await feed.run() }
            var messages = try await feed.subscribe(since: nil, transport: .webSocket).makeAsyncIterator()
            var events = try await feed.subscribe(since: nil).makeAsyncIterator()
            let snapshot = try Self.json(await Self.nextEvent(&messages))
            #expect(snapshot["type"] as? String == "snapshot" && (snapshot["flags"] as? [Any])?.count == 1 && snapshot["id"] == nil)
            _ = try FraudFeedTests.parse(await Self.nextEvent(&events))

            let live = FraudFeedTests.flag("eve", by: "e1")
            await source.send([PositionedFraudFlag(partition: 1, offset: 7, flag: live)])
            let message = try Self.json(await Self.nextEvent(&messages))
            #expect(message["type"] as? String == "flag" && message["id"] as? String == "1-7")
            #expect((message["flag"] as? [String: Any])?["flagId"] as? String == live.flagID)
            let event = try FraudFeedTests.parse(await Self.nextEvent(&events))
            #expect(event.name == "flag" && event.id == "1-7" && event.json["id"] == nil)

            // Resumed from an id it gave: the flags after it, no snapshot.
            await source.send([PositionedFraudFlag(partition: 1, offset: 8, flag: FraudFeedTests.flag("eve", by: "e2"))])
            var resumed = try await feed.subscribe(since: FraudFeedPosition("1-7"), transport: .webSocket).makeAsyncIterator()
            let replayed = try Self.json(await Self.nextEvent(&resumed))
            #expect(replayed["type"] as? String == "flag" && replayed["id"] as? String == "1-8")
            group.cancelAll()
        }
    }

    /// The next item that is not a heartbeat.
    static func nextEvent(_ iterator: inout AsyncStream<FraudFeed.Item>.Iterator) async -> FraudFeed.Item? {
        while true {
            let item = await iterator.next()
            if case .heartbeat? = item { continue }
            return item
        }
    }

    static func json(_ item: FraudFeed.Item?) throws -> [String: Any] {
        guard case .event(let bytes)? = item else { throw FraudFeedTests.Unexpected(item: "\(String(describing: item))") }
        return try #require(try JSONSerialization.jsonObject(with: Data(String(buffer: bytes).utf8)) as? [String: Any])
    }
}
