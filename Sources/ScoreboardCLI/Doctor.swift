import Logging
import ScoreboardCore
import ScoreboardKafka
import ScoreboardPostgres
import ScoreboardRedis

/// Connects to each server and reports its version, or why it is down.
public struct Doctor: Sendable {
    public struct Check: Sendable, Hashable {
        public var server: String
        public var endpoint: String
        public var isHealthy: Bool
        /// The server's version when healthy, the error when not.
        public var detail: String
    }

    let settings: ConnectionSettings
    let logger: Logger
    let timeout: Duration

    public init(settings: ConnectionSettings, logger: Logger, timeout: Duration = .seconds(8)) {
        self.settings = settings
        self.logger = logger
        self.timeout = timeout
    }

    /// Checks the three servers concurrently; each check is bounded by the doctor's timeout.
    public func run() async -> [Check] {
        async let kafka = check("kafka", settings.kafkaBrokers.joined(separator: ",")) { try await kafkaDetail() }
        async let redis = check("redis", "\(settings.redis.host):\(settings.redis.port)") { try await redisDetail() }
        async let postgres = check("postgres", "\(settings.postgres.host):\(settings.postgres.port)/\(settings.postgres.database)") {
            try await postgresDetail()
        }
        return await [kafka, redis, postgres]
    }

    private func check(_ server: String, _ endpoint: String, _ probe: @escaping @Sendable () async throws -> String) async -> Check {
        do {
            let detail = try await withTimeout(timeout, probe)
            return Check(server: server, endpoint: endpoint, isHealthy: true, detail: detail)
        } catch {
            return Check(server: server, endpoint: endpoint, isHealthy: false, detail: "\(error)")
        }
    }

    private func kafkaDetail() async throws -> String {
        let admin = try KafkaAdminClient(configuration: settings.kafkaClient, logger: logger)
        let metadata = try await admin.metadata(timeout: timeout - .seconds(1))
        let brokers = metadata.brokers.map { "\($0.id)@\($0.host):\($0.port)" }.joined(separator: ",")
        return "librdkafka \(KafkaRuntime.version), brokers [\(brokers)], \(metadata.topicNames.count) topics"
    }

    private func redisDetail() async throws -> String {
        var configuration = settings.redis
        configuration.maximumConnections = 1
        let pool = RedisConnectionPool(configuration: configuration, logger: logger)
        defer { pool.close() }
        return "redis \(try await pool.serverVersion())"
    }

    private func postgresDetail() async throws -> String {
        let store = PostgresStore(configuration: settings.postgres, logger: logger)
        return try await store.withRunningClient { "postgresql \(try await $0.serverVersion())" }
    }
}
