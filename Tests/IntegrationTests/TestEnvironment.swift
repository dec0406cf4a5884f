import Foundation
import Logging
import ScoreboardCLI
import ScoreboardCore
import ScoreboardKafka
import ScoreboardPostgres
import ScoreboardRedis

/// The servers integration tests use: the local stack by default, or what `SCOREBOARD_*` variables say. A server that
/// is not there makes the tests that need it fail: nothing here skips.
enum TestEnvironment {
    static let settings: ConnectionSettings = {
        do { return try ConnectionSettings() } catch { fatalError("bad SCOREBOARD_* settings: \(error)") }
    }()

    static let logger: Logger = {
        var logger = Logger(label: "scoreboard.tests")
        logger.logLevel = ProcessInfo.processInfo.environment["SCOREBOARD_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .error
        return logger
    }()

    static func uniqueName(_ prefix: String) -> String {
        "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"
    }

    /// Client settings for tests: a short session timeout, because a group join takes about half of it on our broker.
    static func consumerConfiguration(group: String) -> KafkaConsumerConfiguration {
        var configuration = KafkaConsumerConfiguration(client: settings.kafkaClient, groupID: group)
        configuration.sessionTimeout = .seconds(3)
        configuration.heartbeatInterval = .milliseconds(300)
        return configuration
    }

    static func producer(deliveryTimeout: Duration = .seconds(20)) throws -> KafkaProducer {
        var configuration = KafkaProducerConfiguration(client: settings.kafkaClient)
        configuration.deliveryTimeout = deliveryTimeout
        return try KafkaProducer(configuration: configuration, logger: logger)
    }

    static func admin() throws -> KafkaAdminClient {
        try KafkaAdminClient(configuration: settings.kafkaClient, logger: logger)
    }

    /// Creates a topic for one test and deletes it afterwards (the local broker keeps everything in memory).
    static func withTopic<T>(partitions: Int32, _ body: (String) async throws -> T) async throws -> T {
        let admin = try admin()
        let topic = uniqueName("test")
        _ = try await admin.createTopics([KafkaNewTopic(name: topic, partitions: partitions)])
        do {
            let result = try await body(topic)
            try? await admin.deleteTopics([topic])
            return result
        } catch {
            try? await admin.deleteTopics([topic])
            throw error
        }
    }
}

/// Something a test sets up and must take down again: a world of topics, schema and keys, a private server.
protocol TestFixture: Sendable {
    func tearDown() async
}

/// Runs `body` with `fixture` and tears the fixture down afterwards, awaited, whether `body` returned or threw (never
/// a `defer { Task { … } }` that nobody awaits: the next test would start beside a teardown still running).
func using<Fixture: TestFixture, T>(_ fixture: Fixture, _ body: (Fixture) async throws -> T) async throws -> T {
    do {
        let result = try await body(fixture)
        await fixture.tearDown()
        return result
    } catch {
        await fixture.tearDown()
        throw error
    }
}

/// Fails the test (instead of hanging it) when `body` takes longer than `limit`.
func within<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withTimeout(limit, body)
}

/// A free TCP port on loopback, for servers a test starts itself.
func freeLoopbackPort() throws -> Int {
    let socket = Foundation.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(socket) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) } }
    guard bound == 0 else { throw POSIXError(.EADDRINUSE) }
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket, $0, &length) } }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Runs `body` with a store on a schema of its own, running the client as its service would, and drops the schema
/// after, whether `body` succeeded or not.
func withFreshPostgresStore<T: Sendable>(prefix: String, _ body: @escaping @Sendable (PostgresStore) async throws -> T) async throws -> T {
    var configuration = TestEnvironment.settings.postgres
    configuration.schema = TestEnvironment.uniqueName(prefix).replacingOccurrences(of: "-", with: "_")
    let store = PostgresStore(configuration: configuration, logger: TestEnvironment.logger)
    return try await store.withRunningClient { store in
        do {
            let result = try await body(store)
            try await store.client.query("DROP SCHEMA IF EXISTS \(unescaped: store.configuration.schema) CASCADE")
            return result
        } catch {
            _ = try? await store.client.query("DROP SCHEMA IF EXISTS \(unescaped: store.configuration.schema) CASCADE")
            throw error
        }
    }
}
