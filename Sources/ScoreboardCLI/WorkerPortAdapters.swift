import ScoreboardCore
import ScoreboardKafka
import ScoreboardPostgres
import ScoreboardRedis
import ScoreboardWorker

// The adapters implement the worker's ports. The conformances live here, where the roles are composed: the worker
// library knows only its ports, and the adapters know nothing of the worker.
extension ScoreLedger: WorkerLedger {}
extension RedisBoardStore: BoardStore {}
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
            topics: admin, schema: schema)
    }
}
