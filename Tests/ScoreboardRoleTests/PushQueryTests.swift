import Foundation
import Hummingbird
import HummingbirdTesting
import ScoreboardCore
import ScoreboardHTTP
@testable import ScoreboardPush
import Testing

/// The query API in process, against memory boards: answers, bad parameters, and dependencies that are down.
struct PushQueryTests {
    struct Page: Decodable {
        struct Entry: Decodable, Equatable {
            var rank: Int
            var userId: String
            var score: Int64
        }

        var members: Int
        var entries: [Entry]
        var source: String
    }

    struct ProblemBody: Decodable {
        var type: String
        var status: Int
    }

    static func decode<T: Decodable>(_ type: T.Type, _ response: TestResponse) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(buffer: response.body))
    }

    /// a 30, c 20, b 20 (ties: member descending, as Redis orders them), d 10.
    func worldWithGlobalBoard() -> PushWorld {
        let world = PushWorld()
        world.live.setScores(["a": 30, "b": 20, "c": 20, "d": 10], on: .allTime())
        return world
    }

    @Test func topAnswersPagesWithCompetitionRanks() async throws {
        let world = worldWithGlobalBoard()
        try await world.withClient { client in
            try await client.execute(uri: "/v1/leaderboards/all-time/global?limit=3", method: .get) { response in
                #expect(response.status == .ok)
                let page = try Self.decode(Page.self, response)
                #expect(page.members == 4)
                #expect(page.source == "live")
                #expect(page.entries == [.init(rank: 1, userId: "a", score: 30), .init(rank: 2, userId: "c", score: 20), .init(rank: 2, userId: "b", score: 20)])
            }
            // A page that starts inside a tie keeps the tie's rank.
            try await client.execute(uri: "/v1/leaderboards/all-time/global?limit=2&offset=2", method: .get) { response in
                let page = try Self.decode(Page.self, response)
                #expect(page.entries == [.init(rank: 2, userId: "b", score: 20), .init(rank: 4, userId: "d", score: 10)])
            }
        }
    }

    @Test func aroundAnswersTheNeighbourhoodAnd404sAStranger() async throws {
        let world = worldWithGlobalBoard()
        try await world.withClient { client in
            try await client.execute(uri: "/v1/leaderboards/all-time/global/around/c?radius=1", method: .get) { response in
                #expect(response.status == .ok)
                let decoded = try Self.decode(Page.self, response)
                #expect(decoded.entries.map(\.userId) == ["a", "c", "b"])
            }
            try await client.execute(uri: "/v1/leaderboards/all-time/global/around/nobody", method: .get) { response in
                #expect(response.status == .notFound)
                let decoded = try Self.decode(ProblemBody.self, response)
                #expect(decoded.type == Problem.Kind.notFound.uri)
            }
        }
    }

    @Test func standingListsEveryBoardTheUserIsOn() async throws {
        let world = PushWorld()
        world.live.setScores(["me": 50, "other": 70], on: .allTime())
        world.live.setScores(["me": 50], on: .allTime(.region, "eu"))
        world.live.setScores(["me": 50, "x": 10, "y": 20, "z": 30], on: .allTime(.guild, "dragons"))
        world.archive.addPlacement(MemberPlacement(region: "eu", guild: "dragons"), of: "me", window: .allTime, period: "all")
        struct Body: Decodable {
            struct Standing: Decodable { var board: String; var rank: Int; var members: Int; var percentile: Double }
            var userId: String
            var standings: [Standing]
        }
        try await world.withClient { client in
            try await client.execute(uri: "/v1/users/me/standing", method: .get) { response in
                #expect(response.status == .ok)
                let body = try Self.decode(Body.self, response)
                let byBoard = Dictionary(uniqueKeysWithValues: body.standings.map { ($0.board, $0) })
                #expect(Set(byBoard.keys) == Set([BoardKey.allTime(), .allTime(.region, "eu"), .allTime(.guild, "dragons")].map(\.id)))
                #expect(byBoard.values.map(\.rank).sorted() == [1, 1, 2])
                #expect(body.standings.contains { $0.members == 4 && $0.rank == 1 && $0.percentile == 100 })
            }
        }
    }

    /// What the executable runs: `buildPush` on the same ports serves the same answers, with the feed as its service.
    @Test func theBuiltApplicationServesQueriesAndReadiness() async throws {
        let world = worldWithGlobalBoard()
        let app = try await buildPush(
            configuration: PushConfiguration(server: HTTPServerSettings(port: 0), boards: PushWorld.allBoards),
            ports: PushPorts(live: world.live, archive: world.archive, updates: world.updates, authenticator: PushWorld.authenticator()),
            logger: .init(label: "test"))
        try await app.test(.router) { client in
            try await client.execute(uri: "/v1/leaderboards/all-time/global?limit=1", method: .get) { response in
                let page = try Self.decode(Page.self, response)
                #expect(page.entries == [.init(rank: 1, userId: "a", score: 30)])
            }
            await world.updates.send(.assigned([0]))
            try await client.execute(uri: "/health/ready", method: .get) { response in
                #expect(response.status == .ok)
            }
        }
    }

    /// Bad input: boards and periods that do not exist, or are not written like one.
    @Test func unknownBoardsAndBadPeriodsAre404Or400() async throws {
        let onlyGlobal = LeaderboardCatalog(topN: 10, closedPeriodRetention: [:], boards: [BoardDefinition(window: .allTime, dimension: .global)])
        let world = PushWorld(boards: onlyGlobal)
        let cases: [(uri: String, status: HTTPResponse.Status, kind: Problem.Kind)] = [
            ("/v1/leaderboards/daily/global", .notFound, .notFound),  // declared window and dimension, but no such board
            ("/v1/leaderboards/yearly/global", .badRequest, .invalidParameter),
            ("/v1/leaderboards/all-time/planet", .badRequest, .invalidParameter),
            ("/v1/leaderboards/all-time/global?period=2026-02-30", .notFound, .notFound),  // shaped like a period, not one
            ("/v1/leaderboards/all-time/global?period=yesterday", .badRequest, .invalidParameter),
        ]
        try await world.withClient { client in
            for (uri, status, kind) in cases {
                try await client.execute(uri: uri, method: .get) { response in
                    #expect(response.status == status, "\(uri)")
                    #expect(response.headers[.contentType] == Problem.contentType, "\(uri)")
                    let decoded = try Self.decode(ProblemBody.self, response)
                    #expect(decoded.type == kind.uri, "\(uri)")
                }
            }
        }
    }

    @Test func aPeriodThatHasNotBegunIs404() async throws {
        let world = PushWorld(now: Timestamp(millisecondsSinceEpoch: 1_780_000_000_000))  // 2026-05-28
        try await world.withClient { client in
            try await client.execute(uri: "/v1/leaderboards/daily/global?period=2026-06-01", method: .get) { response in
                #expect(response.status == .notFound)
            }
            try await client.execute(uri: "/v1/leaderboards/daily/global?period=2026-05-28", method: .get) { response in
                #expect(response.status == .ok)
            }
        }
    }

    /// Bad input: `limit` and `offset` outside their ranges, or not integers.
    @Test func limitAndOffsetOutsideTheirRangesAre400() async throws {
        let world = worldWithGlobalBoard()
        try await world.withClient { client in
            for query in ["limit=0", "limit=1001", "limit=ten", "offset=-1", "offset=1000001", "radius=101"] {
                let path = query.hasPrefix("radius") ? "/v1/leaderboards/all-time/global/around/a" : "/v1/leaderboards/all-time/global"
                try await client.execute(uri: "\(path)?\(query)", method: .get) { response in
                    #expect(response.status == .badRequest, "\(query)")
                    let decoded = try Self.decode(ProblemBody.self, response)
                    #expect(decoded.type == Problem.Kind.invalidParameter.uri, "\(query)")
                }
            }
            try await client.execute(uri: "/v1/leaderboards/all-time/global?limit=1000&offset=1000000", method: .get) { response in
                #expect(response.status == .ok)
                let decoded = try Self.decode(Page.self, response)
                #expect(decoded.entries == [])
            }
        }
    }

    struct Down: Error {}

    /// The live boards (Redis) down: every read is 503 problem+json with Retry-After, never 500, and the gateway is
    /// not ready; back up, it answers again.
    @Test func aBoardStoreThatIsDownGives503WithRetryAfter() async throws {
        let world = worldWithGlobalBoard()
        world.live.fail(with: Down())
        try await world.withClient { client in
            for uri in ["/v1/leaderboards/all-time/global", "/v1/leaderboards/all-time/global/around/a", "/v1/streams/sse/all-time/global"] {
                try await client.execute(uri: uri, method: .get) { response in
                    #expect(response.status == .serviceUnavailable, "\(uri)")
                    #expect(response.headers[.retryAfter] == "1", "\(uri)")
                    #expect(response.headers[.contentType] == Problem.contentType, "\(uri)")
                    let decoded = try Self.decode(ProblemBody.self, response)
                    #expect(decoded.type == Problem.Kind.dependencyUnavailable.uri, "\(uri)")
                }
            }
            try await client.execute(uri: "/health/ready", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                #expect(String(buffer: response.body).contains("redis"))
            }
            world.live.fail(with: nil)
            try await client.execute(uri: "/v1/leaderboards/all-time/global", method: .get) { response in
                #expect(response.status == .ok)
            }
        }
    }

    /// The standings archive (PostgreSQL) down: a closed period no longer live is 503 with Retry-After.
    @Test func anArchiveThatIsDownGives503ForClosedPeriods() async throws {
        let world = PushWorld(now: Timestamp(millisecondsSinceEpoch: 1_780_000_000_000))  // 2026-05-28
        let closed = BoardKey(window: .daily, period: "2026-05-01", dimension: .global, value: nil)
        world.archive.setScores(["a": 5, "b": 7], on: closed)
        try await world.withClient { client in
            try await client.execute(uri: "/v1/leaderboards/daily/global?period=2026-05-01", method: .get) { response in
                #expect(response.status == .ok)
                let page = try Self.decode(Page.self, response)
                #expect(page.source == "archive")
                #expect(page.entries.map(\.userId) == ["b", "a"])
            }
            world.archive.fail(with: Down())
            // Another query of the same board: not cached, so it reaches the archive.
            try await client.execute(uri: "/v1/leaderboards/daily/global?period=2026-05-01&limit=1", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                #expect(response.headers[.retryAfter] == "1")
                let decoded = try Self.decode(ProblemBody.self, response)
                #expect(decoded.type == Problem.Kind.dependencyUnavailable.uri)
            }
        }
    }
}
