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

    func address(defaultPort: Int) -> ServerAddress { ServerAddress(host: host, port: port ?? defaultPort) }
}

struct ServerAddress: Sendable {
    var host: String
    var port: Int
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
    let group = ServiceGroup(configuration: .init(
        services: services.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) },
        gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [.sigquit], logger: logger))
    try await group.run()
}

/// The pieces each role builds from the settings and the repository's definitions.
struct RoleContext {
    let settings: ConnectionSettings
    let pipelines: PipelineCatalog
    let root: URL

    init(connection: ConnectionOptions) throws {
        settings = try connection.settings()
        root = DefinitionsLocation.root()
        pipelines = try PipelineCatalog.load(directory: root.appendingPathComponent("pipelines"))
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

    func application<Context: RequestContext>(
        router: Router<Context>, server: ServerAddress, name: String, logger: Logger,
        serverBuilder: HTTPServerBuilder? = nil
    ) -> some ApplicationProtocol where Context.Source == ApplicationRequestContextSource {
        let host = server.host
        return Application(
            router: router, server: serverBuilder ?? .http1(configuration: HTTPServerLimits().http1),
            configuration: .init(address: .hostname(server.host, port: server.port), serverName: name),
            onServerRunning: { channel in
                // Printed on stdout so that scripts and tests can find a port chosen by the system.
                FileHandle.standardOutput.write(Data("\(name) listening on http://\(host):\(channel.localAddress?.port ?? 0)\n".utf8))
            },
            logger: logger)
    }
}

/// What every HTTP role allows one connection: how long it may sit idle (no request, or a request head that never
/// completes: slow-header clients are closed too, since the idle clock only restarts on a complete part), and how
/// large a request head may be (past it the parser fails and the connection gets a 400 and is closed).
/// A response being written (an SSE stream) is never idle.
struct HTTPServerLimits {
    var idleTimeout: Duration = .seconds(30)
    var maxHeaderSize = 16 * 1024
    var maxHeaderCount = 100

    var http1: HTTP1Channel.Configuration {
        let seconds = idleTimeout.components
        return HTTP1Channel.Configuration(
            idleTimeout: .nanoseconds(seconds.seconds * 1_000_000_000 + seconds.attoseconds / 1_000_000_000),
            httpDecoderConfiguration: .init(maxHeaderFieldSize: maxHeaderSize, maxHeaderListSize: maxHeaderSize, maxHeaderFieldCount: maxHeaderCount))
    }
}

// MARK: - Role builders, shared by the single-role commands and `scoreboard dev`

enum Roles {
    static func gateway(
        context: RoleContext, server: ServerAddress, auth: AuthSettings, configuration: GatewayConfiguration, actionKeysPath: String
    ) async throws -> (services: [any Service], cleanup: @Sendable () -> Void) {
        let logger = RoleLogging.logger("scoreboard.gateway")
        let registry = ScoreboardMetrics.bootstrap()
        let redis = context.redis(logger: logger)
        let producer = try context.producer(logger: logger)
        let topics = try TopicCatalog.load(directory: context.root.appendingPathComponent("topics"))
        let requests = try RequestSchemas.load(directory: context.root.appendingPathComponent("topics/requests"))
        guard let eventSchema = try topics.valueSchema(of: TopicNames.scoreEventsBase) else {
            throw ValidationError("topics/: no \(TopicNames.scoreEventsBase)")
        }
        let publisher = EventPublisher(producer: producer, logger: logger)
        let rejections = RejectionLog(producer: producer, topic: configuration.topics.rejections, logger: logger)
        let ingest = ScoreIngest(
            configuration: configuration, actions: context.pipelines.actions, actionTokenKeys: try ActionTokenKeys.load(path: actionKeysPath),
            schemas: .init(
                scoreRequest: requests[RequestSchemas.scoreRequest], batchRequest: requests[RequestSchemas.batchRequest],
                revocationRequest: requests[RequestSchemas.revocationRequest], scoreEvent: eventSchema),
            authenticator: try await auth.authenticator(redis: redis), redis: redis, publisher: publisher, rejections: rejections, logger: logger)
        let operations = OperationsRoutes(registry: registry) {
            // Public: what is down, never where or the raw error (logged instead).
            var problems = await OperationsRoutes.redisReadiness(redis, logger: logger)
            if producer.outstandingMessageCount > 10_000 { problems["kafka"] = "\(producer.outstandingMessageCount) messages waiting for the broker" }
            return problems
        }
        let router = GatewayRoutes.router(ingest: ingest, operations: operations)
        let app = context.application(router: router, server: server, name: "gateway", logger: logger)
        return ([producer, rejections, publisher, app], { redis.close() })
    }

    static func worker(context: RoleContext, server: ServerAddress, groupID: String) async throws -> (services: [any Service], cleanup: @Sendable () -> Void) {
        let logger = RoleLogging.logger("scoreboard.worker")
        let registry = ScoreboardMetrics.bootstrap()
        let redis = context.redis(logger: logger)
        let producer = try context.producer(logger: logger)
        let admin = try KafkaAdminClient(configuration: context.settings.kafkaClient, logger: logger)
        let store = PostgresStore(configuration: context.settings.postgres, logger: RoleLogging.libraryLogger(logger))
        let ledger = ScoreLedger(client: store.client, consumerGroup: groupID, logger: logger)
        var consumer = context.settings.consumer(groupID: groupID)
        consumer.maxBatchSize = 5_000
        let ports = WorkerPorts.live(
            ledger: ledger, redis: redis, catalog: context.pipelines.leaderboards, producer: producer, admin: admin, topics: context.settings.topics)
        let worker = ScoreWorker(
            configuration: .init(consumer: consumer, topics: context.settings.topics), catalog: context.pipelines.leaderboards,
            actions: context.pipelines.actions, ports: ports, logger: logger)
        let migrator = MigrationService(store: store, logger: logger)
        let operations = OperationsRoutes(registry: registry) {
            // A worker keeps running through outages: it is ready only while it can make progress.
            var problems = worker.health.readinessProblems()
            if !migrator.isFinished { problems["postgres"] = problems["postgres"] ?? "migrations not applied yet" }
            return problems
        }
        let router = Router()
        let methods = MethodNotAllowedMiddleware<BasicRequestContext>()
        router.add(middleware: methods)
        operations.add(to: router)
        methods.learn(router)
        let app = context.application(router: router, server: server, name: "worker", logger: logger)
        // The migrator finishes before the worker starts consuming: the worker waits for it.
        return ([store, producer, migrator, WorkerAfterMigrations(worker: worker, migrator: migrator), app], { redis.close() })
    }

    static func push(
        context: RoleContext, server: ServerAddress, auth: AuthSettings, configuration: PushGateway.Configuration,
        limits: HTTPServerLimits = HTTPServerLimits()
    ) async throws -> (services: [any Service], cleanup: @Sendable () -> Void) {
        let logger = RoleLogging.logger("scoreboard.push")
        let registry = ScoreboardMetrics.bootstrap()
        let redis = context.redis(logger: logger)
        let store = PostgresStore(configuration: context.settings.postgres, logger: RoleLogging.libraryLogger(logger))
        let ledger = ScoreLedger(client: store.client, consumerGroup: "", logger: logger)
        // A group of its own per process: every push gateway reads every update.
        let groupID = "scoreboard-push-\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString.prefix(8))"
        let reader = BoardReader(redis: redis, ledger: ledger, catalog: context.pipelines.leaderboards)
        // An update of an archived board (a late event in a closed period) drops its cached answers.
        let feed = UpdateFeed(
            configuration: .init(consumer: context.settings.consumer(groupID: groupID), topic: context.settings.topics.leaderboardUpdates), logger: logger,
            onBoardsChanged: { [archive = reader.archive] boards in archive.invalidate(boards: boards) })
        let gateway = PushGateway(
            configuration: configuration, feed: feed, reader: reader, authenticator: try await auth.authenticator(redis: redis), logger: logger)
        let operations = OperationsRoutes(registry: registry) {
            var problems = await OperationsRoutes.redisReadiness(redis, logger: logger)
            if !feed.isReady { problems["kafka"] = "not yet assigned the leaderboard-updates partitions" }
            return problems
        }
        let router = gateway.router(operations: operations)
        // WebSocket frames are capped at the largest command a client may send; the close handshake at shutdown
        // waits at most two seconds for a client's answer.
        let webSocket = WebSocketServerConfiguration(
            maxFrameSize: configuration.maxInboundMessageSize, autoPing: .enabled(timePeriod: configuration.heartbeatInterval * 2),
            closeTimeout: .seconds(2))
        let app = context.application(
            router: router, server: server, name: "push", logger: logger,
            serverBuilder: gateway.httpServer(
                http1: limits.http1, webSocket: webSocket,
                headLimits: RequestHeadLimits(timeout: limits.idleTimeout, maxSize: limits.maxHeaderSize)))
        // Last, so that a graceful shutdown ends the open streams before the server waits for its connections.
        return ([store, feed, app, gateway.streamsShutdown], { redis.close() })
    }
}

/// Applies migrations once at start, then waits for shutdown; ``WorkerAfterMigrations`` waits for it.
/// PostgreSQL that is down at start is waited for (with capped backoff, logged once), not a reason to exit.
final class MigrationService: Service, Sendable {
    let store: PostgresStore
    let logger: Logger
    let done = AsyncStream<Void>.makeStream()
    private let finished = Atomic<Bool>(false)

    init(store: PostgresStore, logger: Logger) {
        self.store = store
        self.logger = logger
    }

    var isFinished: Bool { finished.load(ordering: .acquiring) }

    func run() async throws {
        var backoff = RetryBackoff(initial: .milliseconds(200), maximum: .seconds(5))
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                let report = try await withTimeout(.seconds(60)) { try await self.store.migrate() }
                logger.info("migrations", metadata: ["applied": "\(report.applied)"])
                finished.store(true, ordering: .releasing)
                done.continuation.finish()
                break
            } catch {
                if backoff.attempts == 0 { logger.error("migrations failed: retrying until PostgreSQL answers", metadata: ["error": "\(error)"]) }
                let delay = backoff.nextDelay()
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
            }
        }
        // Unblocks a worker still waiting, so that it can see the shutdown too.
        done.continuation.finish()
        try? await gracefulShutdown()
    }

    func wait() async {
        for await _ in done.stream {}
    }
}

struct WorkerAfterMigrations: Service {
    let worker: ScoreWorker
    let migrator: MigrationService

    func run() async throws {
        await migrator.wait()
        guard migrator.isFinished else { return }
        try await worker.run()
    }
}
