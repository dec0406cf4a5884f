import ArgumentParser
import Foundation
import ScoreboardCore
import ScoreboardKafka
import ScoreboardPostgres
import ScoreboardRedis

/// Where the three servers are. Flags win over environment variables, which win over defaults that match the local
/// stack (`scripts/stack.sh`).
public struct ConnectionSettings: Sendable, Hashable {
    public static let defaultKafkaBrokers = "127.0.0.1:19092"
    public static let defaultRedisURL = "redis://127.0.0.1:16379"
    public static let defaultPostgresURL = "postgres://scoreboard:scoreboard@127.0.0.1:15432/scoreboard"

    public var kafkaBrokers: [String]
    public var redis: RedisConfiguration
    public var postgres: PostgresConfiguration
    /// Prepended to every topic name (env SCOREBOARD_TOPIC_NAMESPACE): tests and deployments sharing a cluster.
    public var topicNamespace: String
    /// `session.timeout.ms` for consumers (env SCOREBOARD_KAFKA_SESSION_TIMEOUT_MS). A group join takes about half of
    /// it on the local broker, so local runs use a few seconds.
    public var kafkaSessionTimeout: Duration
    /// SASL/PLAIN credentials for the brokers (env SCOREBOARD_KAFKA_SASL_USERNAME and SCOREBOARD_KAFKA_SASL_PASSWORD,
    /// both or neither); none for the local stack.
    public var kafkaAuthentication: KafkaClientConfiguration.Authentication
    /// The longest a consumer's fetch waits at the broker for new records (`fetch.wait.max.ms`; env
    /// SCOREBOARD_KAFKA_FETCH_WAIT_MS; `nil`: ``KafkaConsumerConfiguration/fetchWait``'s 500 ms, which says why).
    public var kafkaFetchWait: Duration?

    /// - Throws: A ``ValidationError`` naming the setting that cannot be read.
    public init(
        kafkaBrokers: String? = nil, redisURL: String? = nil, postgresURL: String? = nil, postgresSchema: String? = nil,
        topicNamespace: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws {
        let brokers = kafkaBrokers ?? environment["SCOREBOARD_KAFKA_BROKERS"] ?? Self.defaultKafkaBrokers
        self.kafkaBrokers = brokers.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !self.kafkaBrokers.isEmpty else { throw ValidationError("--kafka-brokers: give at least one host:port") }
        do {
            redis = try RedisConfiguration(url: redisURL ?? environment["SCOREBOARD_REDIS_URL"] ?? Self.defaultRedisURL)
        } catch {
            throw ValidationError("--redis-url: \(error)")
        }
        do {
            postgres = try PostgresConfiguration(url: postgresURL ?? environment["SCOREBOARD_POSTGRES_URL"] ?? Self.defaultPostgresURL)
        } catch {
            throw ValidationError("--postgres-url: \(error)")
        }
        if let schema = postgresSchema ?? environment["SCOREBOARD_POSTGRES_SCHEMA"] { postgres.schema = schema }
        self.topicNamespace = topicNamespace ?? environment["SCOREBOARD_TOPIC_NAMESPACE"] ?? ""
        if let text = environment["SCOREBOARD_KAFKA_SESSION_TIMEOUT_MS"] {
            guard let milliseconds = Int(text), milliseconds >= 1000 else { throw ValidationError("SCOREBOARD_KAFKA_SESSION_TIMEOUT_MS: at least 1000") }
            kafkaSessionTimeout = .milliseconds(milliseconds)
        } else {
            kafkaSessionTimeout = .seconds(10)
        }
        if let text = environment["SCOREBOARD_KAFKA_FETCH_WAIT_MS"] {
            guard let milliseconds = Int(text), (0...5_000).contains(milliseconds) else { throw ValidationError("SCOREBOARD_KAFKA_FETCH_WAIT_MS: 0 to 5000") }
            kafkaFetchWait = .milliseconds(milliseconds)
        } else {
            kafkaFetchWait = nil
        }
        switch (environment["SCOREBOARD_KAFKA_SASL_USERNAME"], environment["SCOREBOARD_KAFKA_SASL_PASSWORD"]) {
        case (nil, nil):
            kafkaAuthentication = .none
        case (let username?, let password?) where !username.isEmpty && !password.isEmpty:
            kafkaAuthentication = .saslPlain(username: username, password: password)
        default:
            throw ValidationError("SCOREBOARD_KAFKA_SASL_USERNAME and SCOREBOARD_KAFKA_SASL_PASSWORD: set both (not empty), or neither")
        }
    }

    public var topics: TopicNames { TopicNames(namespace: topicNamespace) }

    public func consumer(groupID: String) -> KafkaConsumerConfiguration {
        var configuration = KafkaConsumerConfiguration(client: kafkaClient, groupID: groupID)
        configuration.sessionTimeout = kafkaSessionTimeout
        configuration.heartbeatInterval = min(.seconds(1), kafkaSessionTimeout / 3)
        if let kafkaFetchWait { configuration.fetchWait = kafkaFetchWait }
        return configuration
    }

    public var kafkaClient: KafkaClientConfiguration {
        var configuration = KafkaClientConfiguration(bootstrapServers: kafkaBrokers)
        configuration.socketTimeout = .seconds(5)
        configuration.authentication = kafkaAuthentication
        return configuration
    }
}

/// The connection flags every command that talks to a server accepts.
public struct ConnectionOptions: ParsableArguments {
    @Option(name: .customLong("kafka-brokers"), help: "Kafka bootstrap servers, comma separated (env SCOREBOARD_KAFKA_BROKERS, default \(ConnectionSettings.defaultKafkaBrokers)).")
    var kafkaBrokers: String?

    @Option(name: .customLong("redis-url"), help: "redis://[:password@]host[:port][/db] (env SCOREBOARD_REDIS_URL, default \(ConnectionSettings.defaultRedisURL)).")
    var redisURL: String?

    @Option(name: .customLong("postgres-url"), help: "postgres://user:password@host:port/database (env SCOREBOARD_POSTGRES_URL).")
    var postgresURL: String?

    @Option(name: .customLong("postgres-schema"), help: "The PostgreSQL schema to use (env SCOREBOARD_POSTGRES_SCHEMA, default scoreboard).")
    var postgresSchema: String?

    @Option(name: .customLong("topic-namespace"), help: "Prefix for every topic name (env SCOREBOARD_TOPIC_NAMESPACE, default none).")
    var topicNamespace: String?

    public init() {}

    func settings() throws -> ConnectionSettings {
        try ConnectionSettings(
            kafkaBrokers: kafkaBrokers, redisURL: redisURL, postgresURL: postgresURL, postgresSchema: postgresSchema, topicNamespace: topicNamespace)
    }
}
