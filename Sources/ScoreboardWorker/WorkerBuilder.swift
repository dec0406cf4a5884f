import Hummingbird
import Logging
import ScoreboardCore
import ScoreboardHTTP
import ServiceLifecycle

/// What a stream worker needs to know: its consumer and topics, the catalogs it prices and projects with, and where
/// its operations endpoints (/health, /metrics) listen.
public struct WorkerConfiguration: Sendable {
    public var worker: ScoreWorker.Configuration
    public var boards: LeaderboardCatalog
    public var actions: ActionCatalog
    public var server: HTTPServerSettings

    public init(worker: ScoreWorker.Configuration, boards: LeaderboardCatalog, actions: ActionCatalog, server: HTTPServerSettings) {
        self.worker = worker
        self.boards = boards
        self.actions = actions
        self.server = server
    }
}

/// The stream worker as one application (a `Service`; in tests, `.test(.router)`): its operations server, with the
/// schema migration and the consume loop run before it starts and stopped after it. The ports' own clients (the
/// PostgreSQL pool, the producer) are the caller's to run, before this service in the same group, so that they stop
/// after it.
/// - Parameter analyticsRetention: where old analytics cells are deleted (`analytics/metrics.yaml`'s `retentionDays`);
///   `nil`: they are kept (a memory ledger, or a role that leaves retention to another worker).
public func buildWorker(
    configuration: WorkerConfiguration, ports: WorkerPorts, analyticsRetention: (any AnalyticsCellRetention)? = nil, logger: Logger
) -> some ApplicationProtocol {
    let registry = ScoreboardMetrics.bootstrap()
    let worker = ScoreWorker(
        configuration: configuration.worker, catalog: configuration.boards, actions: configuration.actions, ports: ports, logger: logger)
    let migration = SchemaMigration(schema: ports.schema, logger: logger)
    let operations = OperationsRoutes(registry: registry) {
        // A worker keeps running through outages: it is ready only while it can make progress.
        var problems = worker.health.readinessProblems()
        if !migration.isFinished { problems["postgres"] = problems["postgres"] ?? "migrations not applied yet" }
        return problems
    }
    let router = Router()
    let methods = MethodNotAllowedMiddleware<BasicRequestContext>()
    router.add(middleware: methods)
    operations.add(to: router)
    methods.learn(router)
    // The rejections consumer (FraudRejectionConsumer.swift), beside the score worker, when it has fraud rules or the
    // analytics count rejections.
    let analytics = configuration.worker.analytics
    var services: [any Service] = [migration, AfterMigration(body: worker, migration: migration)]
    if configuration.worker.fraudRules != nil || !analytics.metrics(of: .rejections).isEmpty {
        var consumer = configuration.worker.consumer
        consumer.groupID += "-rejections"
        services.append(AfterMigration(
            body: FraudRejectionConsumer(
                topic: configuration.worker.topics.rejections, consumer: consumer,
                stage: configuration.worker.fraudRules.map { FraudStage(rules: $0, outputs: ports.fraudFlags, logger: logger) }, analytics: analytics,
                ports: ports, catalog: configuration.boards, retry: configuration.worker.retry, batchDeadline: configuration.worker.batchDeadline,
                logger: logger),
            migration: migration))
    }
    if let analyticsRetention, let retention = analytics.retentionDays {
        services.append(AfterMigration(
            body: AnalyticsRetention(
                catalog: analytics, retention: retention, cells: analyticsRetention, retry: configuration.worker.retry, logger: logger),
            migration: migration))
    }
    return configuration.server.application(router: router, name: "worker", services: services, logger: logger)
}

/// Applies the ledger's schema migrations once at start, then waits for shutdown; ``AfterMigration`` waits for
/// it. PostgreSQL that is down at start is waited for (capped backoff, logged once), not a reason to exit.
final class SchemaMigration: Service, Sendable {
    let schema: (any LedgerSchema)?
    let logger: Logger
    private let done = Latch()
    private let finished = Latch()

    init(schema: (any LedgerSchema)?, logger: Logger) {
        self.schema = schema
        self.logger = logger
    }

    /// Whether the migrations are applied.
    var isFinished: Bool { finished.isOpen }

    func run() async throws {
        var backoff = RetryBackoff(initial: .milliseconds(200), maximum: .seconds(5))
        var isApplied = schema == nil
        while let schema, !isApplied, !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                let applied = try await withTimeout(.seconds(60)) { try await schema.applyMigrations() }
                logger.info("migrations", metadata: ["applied": "\(applied)"])
                isApplied = true
            } catch {
                if backoff.attempts == 0 { logger.error("migrations failed: retrying until PostgreSQL answers", metadata: ["error": "\(error)"]) }
                let delay = backoff.nextDelay()
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
            }
        }
        if isApplied { finished.open() }
        // Unblocks a worker still waiting, so that it can see the shutdown too.
        done.open()
        try? await gracefulShutdown()
    }

    /// Returns once the migrations are applied, or given up at shutdown (then ``isFinished`` is false).
    func wait() async { await done.wait() }
}

/// A consume loop (the score worker's, the rejections consumer's), started once the schema is in place; never, when
/// the worker stops before the migrations are applied.
struct AfterMigration<Body: Service>: Service {
    let body: Body
    let migration: SchemaMigration

    func run() async throws {
        await migration.wait()
        guard migration.isFinished else { return }
        try await body.run()
    }
}
