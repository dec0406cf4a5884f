import Foundation
import Logging
import PostgresNIO
import ScoreboardCore
import ScoreboardDefinitions
import ScoreboardHTTP
import ScoreboardKafka
import ScoreboardPostgres
import ScoreboardRedis
import ScoreboardWorker

/// End-to-end worker throughput (score events on Kafka → PostgreSQL transaction → Redis boards → updates on Kafka)
/// beside two floors measured in the same run on the same servers: bulk-inserting the same number of event rows
/// into PostgreSQL (`unnest`, 5,000 per transaction) and pipelining the same number of single-member ZADDs to
/// Redis. Each repetition uses fresh topics and a fresh schema; Redis database `redisDatabase` is flushed.
public struct WorkerBenchmark: Sendable {
    public struct Configuration: Sendable {
        public var events = 100_000
        public var users = 10_000
        public var repetitions = 3
        public var redisDatabase = 8
        /// The leaderboard-updates schema the worker publishes (1: a message per member per board, 2: per board).
        public var updateSchemaVersion = 2
        /// What the worker's analytics stage counts (empty: the stage counts nothing, as before it existed).
        public var analytics = AnalyticsCatalog.empty

        public init() {}
    }

    public struct Result: Sendable {
        public var workerRates: [Double] = []
        public var postgresFloorRates: [Double] = []
        public var redisFloorRates: [Double] = []
        public var batches: [Int] = []
    }

    let connection: ConnectionSettings
    let catalog: LeaderboardCatalog
    let actions: ActionCatalog
    let configuration: Configuration
    let logger: Logger
    let progress: @Sendable (String) -> Void

    public init(
        connection: ConnectionSettings, pipelines: PipelineCatalog, configuration: Configuration, logger: Logger,
        progress: @escaping @Sendable (String) -> Void
    ) {
        self.connection = connection
        self.catalog = pipelines.leaderboards
        self.actions = pipelines.actions
        self.configuration = configuration
        self.logger = logger
        self.progress = progress
    }

    public func run() async throws -> Result {
        var result = Result()
        var redisConfiguration = connection.redis
        redisConfiguration.database = configuration.redisDatabase
        let redis = RedisConnectionPool(configuration: redisConfiguration, logger: logger)
        defer { redis.close() }
        for repetition in 1...configuration.repetitions {
            try await redis.send(["FLUSHDB"])
            let id = UUID().uuidString.prefix(8).lowercased()
            var scratch = connection
            scratch.topicNamespace = "bench\(id)."
            scratch.postgres.schema = "bench_\(id)"
            let settings = scratch
            let topics = settings.topics
            let admin = try KafkaAdminClient(configuration: settings.kafkaClient, logger: logger)
            _ = try await admin.createTopics([
                KafkaNewTopic(name: topics.scoreEvents, partitions: 8), KafkaNewTopic(name: topics.leaderboardUpdates, partitions: 8),
                KafkaNewTopic(name: topics.deadLetter, partitions: 1),
            ])
            let store = PostgresStore(configuration: settings.postgres, logger: logger)
            let (worker, floor) = try await store.withRunningClient { store in
                try await store.migrate()
                try await produceEvents(settings: settings)
                let worker = try await measureWorker(settings: settings, store: store, redis: redis)
                let floor = try await postgresFloor(store: store)
                try await store.client.query("DROP SCHEMA \(unescaped: settings.postgres.schema) CASCADE")
                return (worker, floor)
            }
            try await redis.send(["FLUSHDB"])
            let redisFloor = try await redisFloor(redis: redis)
            try? await admin.deleteTopics([topics.scoreEvents, topics.leaderboardUpdates, topics.deadLetter])
            result.workerRates.append(worker.rate)
            result.batches.append(worker.batches)
            result.postgresFloorRates.append(floor)
            result.redisFloorRates.append(redisFloor)
            progress(String(format: "repetition %d: worker %.0f events/s in %d batches, PostgreSQL floor %.0f rows/s, Redis floor %.0f ZADD/s",
                            repetition, worker.rate, worker.batches, floor, redisFloor))
            progress("  " + worker.cpu.line(unit: "events"))
        }
        try await redis.send(["FLUSHDB"])
        return result
    }

    /// Events for `users` members over 3 regions and 5 guilds, stamped now.
    private func produceEvents(settings: ConnectionSettings) async throws {
        try await BenchEvents.produce(
            configuration.events, users: configuration.users, topic: settings.topics.scoreEvents, kafka: settings.kafkaClient, logger: logger)
    }

    private func measureWorker(
        settings: ConnectionSettings, store: PostgresStore, redis: RedisConnectionPool
    ) async throws -> (rate: Double, batches: Int, cpu: BenchCPU.Cost) {
        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(client: settings.kafkaClient), logger: logger)
        let groupID = "bench-workers-\(settings.topicNamespace)"
        var consumer = settings.consumer(groupID: groupID)
        consumer.sessionTimeout = .seconds(3)
        var workerConfiguration = ScoreWorker.Configuration(consumer: consumer, topics: settings.topics)
        workerConfiguration.updateSchemaVersion = configuration.updateSchemaVersion
        workerConfiguration.analytics = configuration.analytics
        let worker = ScoreWorker(
            configuration: workerConfiguration, catalog: catalog, actions: actions,
            ports: .live(
                ledger: ScoreLedger(client: store.client, consumerGroup: groupID, logger: logger), redis: redis, catalog: catalog,
                producer: producer, admin: try KafkaAdminClient(configuration: settings.kafkaClient, logger: logger), topics: settings.topics),
            logger: logger)
        let total = Int64(configuration.events)
        // A struct, not a tuple, as the task-group result: see scripts/repro/taskgroup-tuple-results.swift.
        struct Measured: Sendable {
            var rate: Double
            var batches: Int
            var cpu: BenchCPU.Cost
        }
        return try await withThrowingTaskGroup(of: Measured?.self) { group in
            group.addTask { try await producer.run(); return nil }
            group.addTask { try await worker.run(); return nil }
            group.addTask {
                // The clock starts once the group assigned the partitions: the join is not the worker's work.
                while worker.health.snapshot.assignedPartitions.isEmpty { try await Task.sleep(for: .milliseconds(5)) }
                let start = ContinuousClock.now
                let cpuBefore = BenchCPU.sample(["worker (in this process)": getpid()])
                // Done when every offset is committed and every committed batch's outputs are out (its outbox row gone).
                while true {
                    let rows = try await store.client.query("""
                        SELECT (SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets)::bigint, (SELECT count(*) FROM worker_outbox)::bigint
                        """, logger: logger)
                    var (done, owed): (Int64, Int64) = (0, 1)
                    for try await (offsets, outbox) in rows.decode((Int64, Int64).self) { (done, owed) = (offsets, outbox) }
                    if done >= total && owed == 0 { break }
                    try await Task.sleep(for: .milliseconds(20))
                }
                let cpu = cpuBefore.cost(until: BenchCPU.sample(["worker (in this process)": getpid()]), units: Double(total))
                return Measured(rate: Double(total) / (ContinuousClock.now - start).seconds, batches: worker.health.snapshot.batches, cpu: cpu)
            }
            var measured: Measured?
            while let next = try await group.next() {
                if let next {
                    measured = next
                    group.cancelAll()
                }
            }
            await producer.shutdown()
            guard let measured else { throw BenchError("the worker benchmark ended without a measurement") }
            return (measured.rate, measured.batches, measured.cpu)
        }
    }

    /// Rows per second for bulk inserts of event rows, the least any exactly-once design must write.
    private func postgresFloor(store: PostgresStore) async throws -> Double {
        try await store.client.query("CREATE TABLE bench_events (LIKE score_events INCLUDING ALL)", logger: logger)
        let start = ContinuousClock.now
        for chunk in stride(from: 0, to: configuration.events, by: 5_000) {
            let count = min(5_000, configuration.events - chunk)
            let ids = (0..<count).map { _ in UUID().uuidString.lowercased() }
            let users = (0..<count).map { "user-\((chunk + $0) % configuration.users)" }
            try await store.client.withTransaction(logger: logger) { connection in
                try await connection.query("""
                    INSERT INTO bench_events (event_id, user_id, action, points, occurred_at, idempotency_key, source, kafka_partition, kafka_offset)
                    SELECT id::uuid, u, 'complete-quest', 10, now(), id::uuid, 'game-server', 0, 0 FROM unnest(\(ids)::text[], \(users)::text[]) AS t(id, u)
                    ON CONFLICT (event_id) DO NOTHING
                    """, logger: logger)
            }
        }
        return Double(configuration.events) / (ContinuousClock.now - start).seconds
    }

    /// Single-member ZADDs per second, pipelined 5,000 at a time.
    private func redisFloor(redis: RedisConnectionPool) async throws -> Double {
        let start = ContinuousClock.now
        for chunk in stride(from: 0, to: configuration.events, by: 5_000) {
            let commands = (chunk..<min(chunk + 5_000, configuration.events)).map { index in
                ["ZADD", "bench:board:\(index % 12)", String(index), "user-\(index % configuration.users)"]
            }
            _ = try await redis.pipeline(commands)
        }
        return Double(configuration.events) / (ContinuousClock.now - start).seconds
    }
}
