import Foundation
import ScoreboardCore
import ScoreboardKafka
import ScoreboardPostgres
import ScoreboardRedis
import ScoreboardWorker

// The adapters implement the worker's ports. The conformances live here, where the roles are composed: the worker
// library knows only its ports, and the adapters know nothing of the worker.
extension ScoreLedger: WorkerLedger {}
extension RedisBoardStore: BoardStore, BoardRemovals {}
extension KafkaWorkerOutputs: WorkerOutputs {}
extension KafkaAdminClient: TopicIncarnations {}
extension PostgresStore: LedgerSchema {
    public func applyMigrations() async throws -> Int { try await migrate().applied.count }
}

extension WorkerPorts {
    /// The production ports: PostgreSQL's ledger, Redis's boards, Kafka's topics.
    /// - Parameter schema: the store whose migrations the worker applies at start (`nil`: someone else applies them).
    public static func live(
        ledger: ScoreLedger, redis: RedisConnectionPool, catalog: LeaderboardCatalog, producer: KafkaProducer, admin: KafkaAdminClient,
        topics: TopicNames, schema: PostgresStore? = nil
    ) -> WorkerPorts {
        WorkerPorts(
            ledger: ledger, boards: RedisBoardStore(redis: redis, catalog: catalog), outputs: KafkaWorkerOutputs(producer: producer, topics: topics),
            topics: admin, schema: schema,
            fraudFlags: KafkaRedisFraudFlagOutputs(producer: producer, topic: topics.fraudFlags, marks: RedisFraudMarks(redis: redis)),
            notifications: KafkaAchievementNotifications(producer: producer, topic: topics.notifications))
    }
}

/// The achievement stage's announcements: each unlock published to the notifications topic
/// (`topics/notifications.yaml`), keyed by user, as an ``AchievementNotification`` (its record id beside it, which
/// readers keep one message per).
struct KafkaAchievementNotifications: AchievementNotifications {
    let producer: KafkaProducer
    let topic: String

    func publishUnlocks(_ unlocks: [AchievementUnlock]) async throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let messages = try unlocks.map { unlock in
            KafkaProducerMessage(topic: topic, key: Array(unlock.userID.utf8), value: Array(try encoder.encode(AchievementNotification(unlock))))
        }
        for result in try await producer.send(batch: messages) { _ = try result.get() }
    }
}

/// The fraud stage's outputs: each flag marked open in Redis first (the gateway limits the user from then on), then
/// published to the fraud-flags topic, keyed by user. Both are idempotent by flag id (`SET NX`; readers keep one
/// message per flag id).
struct KafkaRedisFraudFlagOutputs: FraudFlagOutputs {
    let producer: KafkaProducer
    let topic: String
    let marks: RedisFraudMarks

    func publishFlags(_ flags: [FraudFlagMessage]) async throws {
        try await marks.markOpen(flags)
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let messages = try flags.map { KafkaProducerMessage(topic: topic, key: Array($0.userID.utf8), value: Array(try encoder.encode($0))) }
        for result in try await producer.send(batch: messages) { _ = try result.get() }
    }
}
