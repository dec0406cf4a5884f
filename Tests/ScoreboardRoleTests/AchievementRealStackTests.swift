import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import PostgresNIO
import ScoreboardCore
import ScoreboardHTTP
@testable import ScoreboardKafka
import ScoreboardPostgres
@testable import ScoreboardPush
import ScoreboardRedis
@testable import ScoreboardWorker
import Testing

// The conformances the executable declares (ScoreboardCLI), which this target does not link.
extension ScoreLedger: WorkerLedger {}
extension ScoreLedger: StandingsArchive {}
extension ScoreLedger: PlayerRecords {}
extension RedisBoardStore: BoardStore {}

/// Achievements on the real PostgreSQL and Redis, the worker and the push role's queries driven in process: a worker
/// stopped between its commit and its outputs, then the batch replayed, leave one record per unlock and the same
/// progress; the two endpoints answer from those rows and the Redis boards.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct AchievementRealStackTests {
    static let topic = "score-events"

    /// A fresh schema (dropped afterwards), Redis database 21 with user ids unique to the run.
    static func withStack(_ body: @escaping @Sendable (ScoreLedger, RedisConnectionPool, PostgresClient) async throws -> Void) async throws {
        var configuration = try PostgresConfiguration(
            url: ProcessInfo.processInfo.environment["SCOREBOARD_POSTGRES_URL"] ?? "postgres://scoreboard:scoreboard@127.0.0.1:15432/scoreboard")
        configuration.schema = "achievements_\(UUID().uuidString.prefix(8).lowercased())"
        let schema = configuration.schema
        let store = PostgresStore(configuration: configuration, logger: Logger(label: "test"))
        let redis = RedisConnectionPool(configuration: try GatewayHarness.localRedis(), logger: Logger(label: "test"))
        defer { redis.close() }
        try await store.withRunningClient { store in
            do {
                _ = try await store.migrate()
                try await body(ScoreLedger(client: store.client, consumerGroup: "workers", logger: Logger(label: "test")), redis, store.client)
                try await store.client.query("DROP SCHEMA IF EXISTS \(unescaped: schema) CASCADE")
            } catch {
                _ = try? await store.client.query("DROP SCHEMA IF EXISTS \(unescaped: schema) CASCADE")
                throw error
            }
        }
    }

    static func worker(ledger: ScoreLedger, redis: RedisConnectionPool) -> ScoreWorker {
        var configuration = ScoreWorker.Configuration(
            consumer: KafkaConsumerConfiguration(client: KafkaClientConfiguration(bootstrapServers: ["unused:1"]), groupID: "g"),
            topics: TopicNames())
        configuration.retry = RetryBackoff(initial: .milliseconds(1), maximum: .milliseconds(2))
        configuration.achievements = RepositoryAchievements.catalog
        return ScoreWorker(
            configuration: configuration, catalog: WorkerInProcessTests.pipelines.leaderboards, actions: WorkerInProcessTests.pipelines.actions,
            ports: WorkerPorts(
                ledger: ledger, boards: RedisBoardStore(redis: redis, catalog: WorkerInProcessTests.pipelines.leaderboards), outputs: MemoryWorkerOutputs(),
                topics: MemoryTopicIncarnations([topic: "incarnation-1"])),
            logger: Logger(label: "test"))
    }

    /// The unlock rows of one user, with when each was recorded (a rewrite would change it).
    static func unlockRows(_ user: String, client: PostgresClient) async throws -> [String: Date] {
        let rows = try await client.query("SELECT id, recorded_at FROM stage_records WHERE stage = 'achievements' AND user_id = \(user)")
        var found: [String: Date] = [:]
        for try await (id, recorded) in rows.decode((String, Date).self) { found[id] = recorded }
        return found
    }

    @Test func aStoppedWorkerAndAReplayedBatchLeaveOneRecordPerUnlockAndTheQueriesReadThem() async throws {
        try await Self.withStack { ledger, redis, client in
            // Redis database 21 outlives the run: a user of its own, with a score no earlier run's members reach.
            let user = "ach-\(UUID().uuidString.prefix(8).lowercased())"
            let now = Timestamp.now()
            let batch = try AchievementStageTests.batch(user, "pvp-win", count: 30, at: now)
            let stopped = Self.worker(ledger: ledger, redis: redis)
            _ = try await stopped.assign([KafkaTopicPartition(topic: Self.topic, partition: 0)], topic: Self.topic)
            let committed = try #require(try await stopped.commit(stopped.decode(batch, topic: Self.topic), topic: Self.topic))
            #expect(Set(try await Self.unlockRows(user, client: client).keys) == ["\(user):beginner", "\(user):novice"])

            // The next owner projects what the stopped worker owed: the ranks reach the two ranking achievements.
            let next = Self.worker(ledger: ledger, redis: redis)
            _ = try await next.assign([KafkaTopicPartition(topic: Self.topic, partition: 0)], topic: Self.topic)
            let unlocked = try await Self.unlockRows(user, client: client)
            #expect(Set(unlocked.keys) == Set(["beginner", "novice", "daily-top-10", "all-time-top-10"].map { "\(user):\($0)" }))
            #expect(try await stopped.project(committed, topic: Self.topic) == false)
            let progress = try #require(try await ledger.playerProgress(userID: user))

            // Bad input: the batch again, to the new owner (its events are applied: nothing moves, nothing is rewritten).
            await next.applyUntilDone(batch, topic: Self.topic)
            #expect(try await Self.unlockRows(user, client: client) == unlocked)
            #expect(try await ledger.playerProgress(userID: user) == progress)
            #expect(progress.totalPoints == 1_200 && progress.actionCounts == ["pvp-win": 30])

            // The queries, on the same PostgreSQL and Redis.
            var configuration = PushConfiguration(server: HTTPServerSettings(port: 0), boards: WorkerInProcessTests.pipelines.leaderboards)
            configuration.achievements = RepositoryAchievements.catalog
            let ports = PushPorts(
                live: RedisBoardReads(redis: redis), archive: ledger, updates: MemoryUpdateSource(), authenticator: PushWorld.authenticator(),
                players: ledger)
            // The events' own time, so that "today" is their day even if the run crosses midnight.
            let parts = PushParts(configuration: configuration, ports: ports, logger: Logger(label: "test"), now: { now })
            let app = Application(router: parts.router, services: [parts.feed], logger: Logger(label: "test"))
            try await app.test(.router) { client in
                try await client.execute(uri: "/v1/users/\(user)/achievements", method: .get) { response in
                    #expect(response.status == .ok)
                    let body = try AchievementQueryTests.decode(AchievementQueryTests.AchievementsBody.self, response)
                    #expect(Set(body.unlocked.map(\.achievement)) == ["beginner", "novice", "daily-top-10", "all-time-top-10"])
                    #expect(body.next.first { $0.kind == "score" }?.achievement == "expert")
                    let count = body.next.first { $0.kind == "count" }
                    #expect(count?.achievement == "gladiator" && count?.current == 30)
                }
                try await client.execute(uri: "/v1/users/\(user)/stats", method: .get) { response in
                    #expect(response.status == .ok)
                    struct Stats: Decodable { var score: Int64; var rank: Int?; var todayScore: Int64; var todayActions: Int; var achievements: Int }
                    let stats = try AchievementQueryTests.decode(Stats.self, response)
                    #expect(stats.score == 1_200 && stats.rank == 1 && stats.todayScore == 1_200 && stats.todayActions == 30 && stats.achievements == 4)
                }
                try await client.execute(uri: "/v1/users/\(user)-nobody/stats", method: .get) { response in
                    #expect(response.status == .notFound)
                    #expect(response.headers[.contentType] == Problem.contentType)
                }
            }
        }
    }
}
