import ArgumentParser
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import JWTKit
import Logging
import ScoreboardCore
import ScoreboardDefinitions
import ScoreboardGateway
import ScoreboardHTTP
import ScoreboardKafka
import ScoreboardPostgres
import ScoreboardPush
import ScoreboardRedis
import ScoreboardWorker
import ServiceLifecycle
import Synchronization

/// The flags of the HTTP roles.
public struct ServerOptions: ParsableArguments {
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on (0: any free port, printed at start).") var port: Int?

    public init() {}

    func settings(defaultPort: Int, limits: HTTPServerLimits = HTTPServerLimits()) -> HTTPServerSettings {
        HTTPServerSettings(host: host, port: port ?? defaultPort, limits: limits)
    }
}

/// Where the bearer-token keys are, and what tokens must say.
public struct AuthOptions: ParsableArguments {
    @Option(help: "JWKS file of the bearer-token keys (env SCOREBOARD_JWKS_FILE, default .local/dev/jwks.json).")
    var jwks: String?
    @Option(help: "Required iss claim (env SCOREBOARD_JWT_ISSUER, default scoreboard).") var jwtIssuer: String?
    @Option(help: "Required aud claim (env SCOREBOARD_JWT_AUDIENCE, default scoreboard).") var jwtAudience: String?
    @Option(help: "Longest bearer-token lifetime accepted, exp - iat, in seconds (env SCOREBOARD_JWT_MAX_LIFETIME_SECONDS, default 86400).")
    var jwtMaxLifetimeSeconds: Int?

    public init() {}

    var settings: AuthSettings {
        let environment = ProcessInfo.processInfo.environment
        return AuthSettings(
            jwksPath: jwks ?? environment["SCOREBOARD_JWKS_FILE"] ?? DefinitionsLocation.root().appendingPathComponent(".local/dev/jwks.json").path,
            configuration: JWTAuthenticator.Configuration(
                issuer: jwtIssuer ?? environment["SCOREBOARD_JWT_ISSUER"] ?? "scoreboard",
                audience: jwtAudience ?? environment["SCOREBOARD_JWT_AUDIENCE"] ?? "scoreboard",
                maximumLifetime: .seconds(jwtMaxLifetimeSeconds ?? environment["SCOREBOARD_JWT_MAX_LIFETIME_SECONDS"].flatMap { Int($0) } ?? 86_400)))
    }
}

/// Resolved ``AuthOptions``.
struct AuthSettings: Sendable {
    var jwksPath: String
    var configuration: JWTAuthenticator.Configuration

    func authenticator(redis: RedisConnectionPool?) async throws -> JWTAuthenticator {
        try await JWTAuthenticator(jwks: try JWKSFile.load(path: jwksPath), configuration: configuration, redis: redis)
    }
}

/// Logs to stderr; the level from SCOREBOARD_LOG_LEVEL (default info for the long-running roles).
enum RoleLogging {
    static let bootstrapped: Void = {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            let level = ProcessInfo.processInfo.environment["SCOREBOARD_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:))
            handler.logLevel = level ?? .info
            return handler
        }
    }()

    static func logger(_ label: String) -> Logger {
        _ = bootstrapped
        return Logger(label: label)
    }

    /// The logger handed to a client library's background work. PostgresNIO logs every failed connection attempt at
    /// info (several a second while PostgreSQL is down); the role logs the outage once itself, so the library's lines
    /// show from warning up, unless SCOREBOARD_LOG_LEVEL asks for debug or trace.
    static func libraryLogger(_ logger: Logger) -> Logger {
        var quieter = logger
        if logger.logLevel > .debug { quieter.logLevel = max(logger.logLevel, .warning) }
        return quieter
    }
}

/// Runs services until SIGTERM or SIGINT, then shuts them down in reverse order (the HTTP server first: it stops
/// accepting and drains requests in flight; producers flush last).
func runServices(_ services: [any Service], logger: Logger) async throws {
    var configurations = services.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) }
    if let watch = ParentProcessWatch(environment: ProcessInfo.processInfo.environment, logger: logger) {
        // When the parent is gone the watch returns, and the group shuts down as on SIGTERM.
        configurations.append(.init(service: watch, successTerminationBehavior: .gracefullyShutdownGroup))
    }
    let group = ServiceGroup(configuration: .init(
        services: configurations, gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [.sigquit], logger: logger))
    try await group.run()
}

/// Ends a role whose parent process is gone, for roles that a benchmark or a test harness starts as children
/// (`SCOREBOARD_STOP_WITH_PARENT=<the parent's pid>`): a harness killed with SIGKILL, or by `timeout`, cannot stop
/// its children, and they would keep running (and keep the ports, the consumer group and the CPU) after it.
/// Linux re-parents an orphan, so `getppid()` no longer answers the pid it was started under.
struct ParentProcessWatch: Service {
    let parent: Int32
    let logger: Logger
    var interval: Duration = .milliseconds(500)

    init?(environment: [String: String], logger: Logger) {
        guard let text = environment["SCOREBOARD_STOP_WITH_PARENT"], let parent = Int32(text), parent > 1 else { return nil }
        self.parent = parent
        self.logger = logger
    }

    func run() async throws {
        let (parent, interval) = (self.parent, self.interval)
        // A group that shuts down for another reason ends the watch too, without an error.
        let parentGone = await cancelWhenGracefulShutdown { () async -> Bool in
            while getppid() == parent {
                do { try await Task.sleep(for: interval) } catch { return false }
            }
            return true
        }
        if parentGone { logger.warning("parent process is gone: shutting down", metadata: ["parent": "\(parent)"]) }
    }
}

/// The pieces each role builds from the settings and the repository's definitions.
struct RoleContext {
    let settings: ConnectionSettings
    let pipelines: PipelineCatalog
    /// What the workers count and the push role answers about (`analytics/metrics.yaml`).
    let analytics: AnalyticsCatalog
    let root: URL

    init(connection: ConnectionOptions) throws {
        settings = try connection.settings()
        root = DefinitionsLocation.root()
        pipelines = try PipelineCatalog.load(directory: root.appendingPathComponent("pipelines"))
        analytics = try AnalyticsCatalog.load(directory: root.appendingPathComponent("analytics"))
    }

    /// `pipelines/achievements.yaml`, checked against the boards its ranking achievements name.
    func achievements() throws -> AchievementCatalog {
        let catalog = try PipelineCatalog.loadAchievements(directory: root.appendingPathComponent("pipelines"))
        try catalog.validate(against: pipelines.leaderboards)
        return catalog
    }

    func producer(logger: Logger) throws -> KafkaProducer {
        var configuration = KafkaProducerConfiguration(client: settings.kafkaClient)
        configuration.linger = .milliseconds(2)
        // Short, because nobody waits longer: the gateway answers 503 after a second and the worker retries its
        // batch. And after a broker restart the idempotent producer drains every message it still holds before it
        // can send again: with the 30 s default, a gateway answered 503 for 30 s after the broker was back.
        configuration.deliveryTimeout = .seconds(5)
        return try KafkaProducer(configuration: configuration, logger: logger)
    }

    func redis(logger: Logger) -> RedisConnectionPool {
        var configuration = settings.redis
        configuration.maximumConnections = max(configuration.maximumConnections, 16)
        return RedisConnectionPool(configuration: configuration, logger: logger)
    }
}

// MARK: - Role builders, shared by the single-role commands and `scoreboard dev`

enum Roles {
    static func gateway(
        context: RoleContext, server: HTTPServerSettings, auth: AuthSettings, options: GatewayConfiguration.Options, actionKeysPath: String
    ) async throws -> (services: [any Service], cleanup: @Sendable () -> Void) {
        let logger = RoleLogging.logger("scoreboard.gateway")
        let requests = try RequestSchemas.load(directory: context.root.appendingPathComponent("topics/requests"))
        let configuration = GatewayConfiguration(
            server: server, actions: context.pipelines.actions, actionTokenKeys: try ActionTokenKeys.load(path: actionKeysPath),
            schemas: .init(
                scoreRequest: requests[RequestSchemas.scoreRequest], batchRequest: requests[RequestSchemas.batchRequest],
                revocationRequest: requests[RequestSchemas.revocationRequest]),
            jwks: try JWKSFile.load(path: auth.jwksPath), authentication: auth.configuration, options: options)
        let redis = context.redis(logger: logger)
        let producer = try context.producer(logger: logger)
        let app = try await buildGateway(
            configuration: configuration, ports: .live(redis: redis, producer: producer, topics: context.settings.topics), logger: logger)
        return ([producer, app], { redis.close() })
    }

    static func worker(context: RoleContext, server: HTTPServerSettings, groupID: String) async throws -> (services: [any Service], cleanup: @Sendable () -> Void) {
        let logger = RoleLogging.logger("scoreboard.worker")
        let redis = context.redis(logger: logger)
        let producer = try context.producer(logger: logger)
        let admin = try KafkaAdminClient(configuration: context.settings.kafkaClient, logger: logger)
        let store = PostgresStore(configuration: context.settings.postgres, logger: RoleLogging.libraryLogger(logger))
        let ledger = ScoreLedger(client: store.client, consumerGroup: groupID, logger: logger)
        var consumer = context.settings.consumer(groupID: groupID)
        consumer.maxBatchSize = 5_000
        var workerConfiguration = ScoreWorker.Configuration(consumer: consumer, topics: context.settings.topics)
        workerConfiguration.achievements = try context.achievements()
        workerConfiguration.fraudRules = try PipelineCatalog.loadFraudRules(directory: context.root.appendingPathComponent("pipelines"))
        workerConfiguration.analytics = context.analytics
        let ports = WorkerPorts.live(
            ledger: ledger, redis: redis, catalog: context.pipelines.leaderboards, producer: producer, admin: admin,
            topics: context.settings.topics, schema: store)
        let worker = buildWorker(
            configuration: WorkerConfiguration(
                worker: workerConfiguration, boards: context.pipelines.leaderboards,
                actions: context.pipelines.actions, server: server),
            ports: ports, analyticsRetention: ledger, logger: logger)
        return ([store, producer, worker], { redis.close() })
    }

    static func push(
        context: RoleContext, server: HTTPServerSettings, auth: AuthSettings, configuration: PushGateway.Configuration
    ) async throws -> (services: [any Service], cleanup: @Sendable () -> Void) {
        let logger = RoleLogging.logger("scoreboard.push")
        let redis = context.redis(logger: logger)
        let store = PostgresStore(configuration: context.settings.postgres, logger: RoleLogging.libraryLogger(logger))
        let admin = try KafkaAdminClient(configuration: context.settings.kafkaClient, logger: logger)
        // A group of its own per process: every push gateway reads every update.
        let groupID = "scoreboard-push-\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString.prefix(8))"
        // Publishes confirmed reviews' bans (score-events topic); before the HTTP server in the group, so it stops after.
        let producer = try context.producer(logger: logger)
        let ports = PushPorts.live(
            redis: redis, ledger: ScoreLedger(client: store.client, consumerGroup: "", logger: logger), consumer: context.settings.consumer(groupID: groupID),
            admin: admin, producer: producer, topics: context.settings.topics, authenticator: try await auth.authenticator(redis: redis), logger: logger)
        var pushConfiguration = PushConfiguration(server: server, streams: configuration, boards: context.pipelines.leaderboards)
        pushConfiguration.achievements = try context.achievements()
        pushConfiguration.analytics = context.analytics
        let push = try await buildPush(configuration: pushConfiguration, ports: ports, logger: logger)
        return ([store, producer, push], { redis.close() })
    }
}

// The workers delete analytics cells past their retention (AnalyticsRetention) from PostgreSQL's ledger.
extension ScoreLedger: AnalyticsCellRetention {}
