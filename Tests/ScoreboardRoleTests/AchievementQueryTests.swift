import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import ScoreboardCore
import ScoreboardDefinitions
import ScoreboardHTTP
@testable import ScoreboardPush
import Testing

/// `GET /v1/users/{id}/achievements` and `GET /v1/users/{id}/stats` in process: answers from the maintained progress,
/// the unlock records and the live boards; unknown users, bad ids and a store that is down.
@Suite struct AchievementQueryTests {
    static let catalog = RepositoryAchievements.catalog
    /// Wednesday 11 March 2026, 18:00 UTC.
    static let now = Timestamp(millisecondsSinceEpoch: 1_773_252_000_000)

    struct World {
        let live = MemoryLiveBoards()
        let records = MemoryPlayerRecords()
        let parts: PushParts

        init() {
            var configuration = PushConfiguration(server: HTTPServerSettings(port: 0), boards: PushWorld.allBoards)
            configuration.achievements = AchievementQueryTests.catalog
            let ports = PushPorts(
                live: live, archive: MemoryStandingsArchive(), updates: MemoryUpdateSource(), authenticator: PushWorld.authenticator(), players: records)
            parts = PushParts(configuration: configuration, ports: ports, logger: Logger(label: "test"), now: { AchievementQueryTests.now })
        }

        func withClient<T: Sendable>(_ body: @escaping @Sendable (any TestClientProtocol) async throws -> T) async throws -> T {
            let app = Application(router: parts.router, services: [parts.feed], logger: Logger(label: "test"))
            return try await app.test(.router) { client in try await body(client) }
        }
    }

    struct AchievementsBody: Decodable {
        struct Unlocked: Decodable, Equatable {
            var achievement: String
            var kind: String
            var unlockedAt: Int64
            var triggeredBy: String
        }

        struct Next: Decodable {
            var achievement: String
            var kind: String
            var current: Int64?
            var target: Int64
            var fraction: Double
        }

        var userId: String
        var unlocked: [Unlocked]
        var next: [Next]
    }

    struct ProblemBody: Decodable {
        var type: String
        var status: Int
    }

    /// Ann: 900 points over two weeks (as the core's statistics test), beginner and novice unlocked with her events,
    /// daily-top-10 unlocked as a ranking record; rank 3 of 5 on the all-time board, 25th today on the daily one.
    static func ann(in world: World) -> PlayerProgress {
        let engine = AchievementEngine(catalog: catalog)
        var progress = PlayerProgress(userID: "ann")
        let day: Int64 = 86_400_000
        let monday = now.millisecondsSinceEpoch - 2 * day - 8 * 3_600_000  // Monday 9 March, 10:00
        var unlocks: [AchievementUnlock] = []
        for (index, (offset, points)) in [(-7 * day, 100), (-5 * day, 100), (-3 * day, 500), (day, 150), (2 * day - 3_600_000, 40), (2 * day + 7 * 3_600_000, 10)].enumerated() {
            unlocks += engine.apply(
                eventID: "e\(index)", action: "complete-quest", points: Int64(points), at: Timestamp(millisecondsSinceEpoch: monday + offset), to: &progress)
        }
        world.records.setProgress(progress)
        for unlock in unlocks { world.records.addUnlock(unlock) }
        world.records.addUnlock(AchievementUnlock(userID: "ann", achievementID: "daily-top-10", kind: .ranking, unlockedAt: now, triggeredBy: "rank:daily:global"))
        world.live.setScores(["a": 2_000, "b": 1_000, "ann": 900, "c": 10, "d": 5], on: .allTime())
        let today = BoardKey(window: .daily, period: LeaderboardWindow.daily.period(containing: now).key, dimension: .global, value: nil)
        world.live.setScores(Dictionary(uniqueKeysWithValues: (0..<30).map { ("p\($0)", Int64(1_000 - $0)) }).merging(["ann": 976]) { $1 }, on: today)
        return progress
    }

    static func decode<T: Decodable>(_ type: T.Type, _ response: TestResponse) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(buffer: response.body))
    }

    @Test func achievementsListUnlocksWithTimesAndTheNextOfEachKind() async throws {
        let world = World()
        _ = Self.ann(in: world)
        try await world.withClient { client in
            try await client.execute(uri: "/v1/users/ann/achievements", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "application/json")
                let body = try Self.decode(AchievementsBody.self, response)
                #expect(body.userId == "ann")
                #expect(body.unlocked.map(\.achievement) == ["beginner", "novice", "daily-top-10"])
                #expect(body.unlocked.last == .init(achievement: "daily-top-10", kind: "ranking", unlockedAt: Self.now.millisecondsSinceEpoch, triggeredBy: "rank:daily:global"))
                let next = Dictionary(uniqueKeysWithValues: body.next.map { ($0.kind, $0) })
                #expect(Set(next.keys) == ["score", "streak", "ranking", "count"])
                #expect(next["score"]?.achievement == "expert" && next["score"]?.current == 900 && next["score"]?.target == 5_000)
                #expect(next["streak"]?.achievement == "regular" && next["streak"]?.current == 2)
                // daily-top-10 is unlocked: the next ranking one is all-time-top-10, where she is third now.
                #expect(next["ranking"]?.achievement == "all-time-top-10" && next["ranking"]?.current == 3 && next["ranking"]?.fraction == 1)
                #expect(next["count"]?.achievement == "quester" && next["count"]?.current == 6)
            }
        }
    }

    @Test func statsComeFromTheMaintainedProgressAndTheGlobalBoard() async throws {
        let world = World()
        _ = Self.ann(in: world)
        struct Stats: Decodable {
            struct Milestone: Decodable { var achievement: String; var target: Int64 }
            var userId: String
            var score: Int64
            var rank: Int?
            var percentile: Double?
            var todayScore: Int64
            var todayActions: Int
            var currentStreak: Int
            var longestStreak: Int
            var weeklyTrend: String
            var velocity: Double
            var achievements: Int
            var nextMilestone: Milestone?
        }
        try await world.withClient { client in
            try await client.execute(uri: "/v1/users/ann/stats", method: .get) { response in
                #expect(response.status == .ok)
                let stats = try Self.decode(Stats.self, response)
                #expect(stats.userId == "ann" && stats.score == 900)
                #expect(stats.rank == 3 && stats.percentile == 60)
                #expect(stats.todayScore == 50 && stats.todayActions == 2)
                #expect(stats.currentStreak == 2 && stats.longestStreak == 2)
                #expect(stats.weeklyTrend == "stable")
                #expect(stats.velocity == 700.0 / 7)
                // beginner and novice from her events, daily-top-10 from a rank.
                #expect(stats.achievements == 3)
                #expect(stats.nextMilestone?.achievement == "expert" && stats.nextMilestone?.target == 5_000)
            }
        }
    }

    /// Bad input: a user the workers never saw (404), an id with characters ids never have, an id longer than any id
    /// (400), each as problem+json with its stable type.
    @Test func unknownUsersAndBadIdsAreProblems() async throws {
        let world = World()
        let long = String(repeating: "x", count: ScoreEvent.Limits.identifierMaxLength + 1)
        let cases: [(uri: String, status: HTTPResponse.Status, kind: Problem.Kind)] = [
            ("/v1/users/nobody/achievements", .notFound, .notFound),
            ("/v1/users/nobody/stats", .notFound, .notFound),
            ("/v1/users/bad%20id/achievements", .badRequest, .invalidParameter),
            ("/v1/users/bad%20id/stats", .badRequest, .invalidParameter),
            ("/v1/users/\(long)/achievements", .badRequest, .invalidParameter),
            ("/v1/users/\(long)/stats", .badRequest, .invalidParameter),
            ("/v1/users/%ZZ/stats", .badRequest, .invalidParameter),
        ]
        try await world.withClient { client in
            for (uri, status, kind) in cases {
                try await client.execute(uri: uri, method: .get) { response in
                    #expect(response.status == status, "\(uri)")
                    #expect(response.headers[.contentType] == Problem.contentType, "\(uri)")
                    let problem = try Self.decode(ProblemBody.self, response)
                    #expect(problem.type == kind.uri, "\(uri)")
                }
            }
        }
    }

    /// PostgreSQL or Redis down: 503 with Retry-After, never 500.
    @Test func aStoreThatIsDownIs503WithRetryAfter() async throws {
        struct Down: Error {}
        let world = World()
        _ = Self.ann(in: world)
        world.records.fail(with: Down())
        try await world.withClient { client in
            for uri in ["/v1/users/ann/achievements", "/v1/users/ann/stats"] {
                try await client.execute(uri: uri, method: .get) { response in
                    #expect(response.status == .serviceUnavailable, "\(uri)")
                    #expect(response.headers[.retryAfter] == "1", "\(uri)")
                    let problem = try Self.decode(ProblemBody.self, response)
                    #expect(problem.type == Problem.Kind.dependencyUnavailable.uri)
                }
            }
            world.records.fail(with: nil)
            world.live.fail(with: Down())
            try await client.execute(uri: "/v1/users/ann/stats", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
            }
        }
    }
}

/// The repository's achievements, read once for the suites that need them.
enum RepositoryAchievements {
    static let catalog = try! PipelineCatalog.loadAchievements(directory: URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("pipelines"))
}
