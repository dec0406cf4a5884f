import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import ScoreboardCore
import ScoreboardHTTP
import ServiceLifecycle

/// What a push gateway needs to know: where it listens and what one connection may do, the limits of its streams
/// and queries, the boards it serves, how much update history it keeps and how archive reads are bounded.
public struct PushConfiguration: Sendable {
    public var server: HTTPServerSettings
    public var streams: PushGateway.Configuration
    public var boards: LeaderboardCatalog
    public var feed: UpdateFeed.Configuration
    public var archive: ArchiveReads.Limits
    /// What the board memory may hold (the hot boards, answered without Redis).
    public var memory = BoardMemory.Limits()
    /// Bound on one readiness probe of the live boards.
    public var probeDeadline: Duration = .seconds(2)
    /// The achievements (`pipelines/achievements.yaml`) the player queries measure progress against.
    public var achievements = AchievementCatalog(achievements: [])
    /// What the analytics API answers about (`analytics/metrics.yaml`).
    public var analytics = AnalyticsCatalog.empty

    public init(
        server: HTTPServerSettings, streams: PushGateway.Configuration = .init(), boards: LeaderboardCatalog,
        feed: UpdateFeed.Configuration = .init(), archive: ArchiveReads.Limits = .init()
    ) {
        self.server = server
        self.streams = streams
        self.boards = boards
        self.feed = feed
        self.archive = archive
    }
}

/// The push gateway and query API as one application (a `Service`; in tests, `.test(.router)`): its HTTP server
/// with WebSocket upgrades behind the request-head guard, the update feed run before the server starts and stopped
/// after it, and, on graceful shutdown, every open stream ended before the server waits for its connections. The
/// ports' own clients (the PostgreSQL pool, the Redis pool) are the caller's to run, before this service.
public func buildPush(configuration: PushConfiguration, ports: PushPorts, logger: Logger) async throws -> some ApplicationProtocol {
    let parts = PushParts(configuration: configuration, ports: ports, logger: logger)
    let streams = configuration.streams
    // WebSocket frames are capped at the largest command a client may send; the close handshake at shutdown waits at
    // most two seconds for a client's answer.
    let webSocket = WebSocketServerConfiguration(
        maxFrameSize: streams.maxInboundMessageSize, autoPing: .enabled(timePeriod: streams.heartbeatInterval * 2), closeTimeout: .seconds(2))
    let limits = configuration.server.limits
    let app = configuration.server.application(
        router: parts.router, name: "push", services: [parts.feed] + (parts.fraudFeed.map { [$0] } ?? []) + (parts.achievements.map { [$0] } ?? []),
        server: parts.gateway.httpServer(
            http1: limits.http1, webSocket: webSocket, headLimits: RequestHeadLimits(timeout: limits.idleTimeout, maxSize: limits.maxHeaderSize)),
        logger: logger)
    return PushApplication(app: app, streamsShutdown: parts.gateway.streamsShutdown)
}

/// The push gateway's pieces, wired to its ports: what ``buildPush(configuration:ports:logger:)`` serves, and what
/// in-process tests reach into (the feed, the open streams).
struct PushParts: Sendable {
    let gateway: PushGateway
    let feed: UpdateFeed
    let operations: OperationsRoutes
    /// The fraud review feed, when the ports read the fraud-flags topic.
    let fraudFeed: FraudFeed?
    /// The achievements sent on personal channels, when the ports read the notifications topic.
    let achievements: AchievementFeed?

    var router: Router<PushRequestContext> { gateway.router(operations: operations) }

    init(configuration: PushConfiguration, ports: PushPorts, logger: Logger, now: @escaping @Sendable () -> Timestamp = { Timestamp.now() }) {
        let registry = ScoreboardMetrics.bootstrap()
        let memory = BoardMemory(limits: configuration.memory, catalog: configuration.boards, logger: logger, now: now)
        let reader = BoardReader(
            live: ports.live, archive: ports.archive, catalog: configuration.boards, archiveLimits: configuration.archive, memory: memory)
        // An update of an archived board (a late event in a closed period) drops its cached answers. The board memory
        // sees every update before the feed does.
        let feed = UpdateFeed(
            configuration: configuration.feed, source: BoardMemoryFeeding(source: ports.updates, memory: memory, live: ports.live), logger: logger,
            onBoardsChanged: { [archive = reader.archive] boards in archive.invalidate(boards: boards) })
        var gateway = PushGateway(
            configuration: configuration.streams, feed: feed, reader: reader, authenticator: ports.authenticator, logger: logger,
            players: PlayerQueries(records: ports.players, catalog: configuration.achievements), now: now,
            analytics: AnalyticsReader(catalog: configuration.analytics, cells: ports.analytics))
        gateway.fraudReviews = ports.fraudReviews
        let fraudFeed = ports.fraudFlags.map { FraudFeed(source: $0, reviews: ports.fraudReviews, logger: logger) }
        gateway.fraudFeed = fraudFeed
        self.fraudFeed = fraudFeed
        let achievements = ports.notifications.map { AchievementFeed(source: $0, feed: feed, logger: logger) }
        self.achievements = achievements
        let operations = OperationsRoutes(registry: registry) { [live = ports.live, deadline = configuration.probeDeadline] in
            // Public: what is down, never where or the raw error (logged instead).
            var problems: [String: String] = [:]
            do {
                try await withTimeout(deadline) { try await live.probe() }
            } catch {
                logger.warning("readiness: the live boards do not answer", metadata: ["error": "\(error)"])
                problems["redis"] = "unreachable"
            }
            if !feed.isReady { problems["kafka"] = "not yet assigned the leaderboard-updates partitions" }
            if let achievements, !achievements.isReady { problems["kafka"] = "not yet assigned the notifications partitions" }
            if let fraudFeed, !fraudFeed.isReady { problems["kafka"] = "not yet assigned the fraud-flags partitions" }
            return problems
        }
        self.gateway = gateway
        self.feed = feed
        self.operations = operations
    }
}

/// A Hummingbird application, run beside the service that ends the open streams at shutdown.
///
/// A `ServiceGroup` stops its services in reverse order, so ``OpenStreamsShutdown`` (listed last) ends the streams
/// first, while the server still holds their connections; the server then finds no stream to wait for. (Left to the
/// server, an SSE response never ends, and the WebSocket library closes with 1000.) Everything else, the responder
/// and services that tests use, is the wrapped application's.
public struct PushApplication<App: ApplicationProtocol>: ApplicationProtocol {
    public typealias Responder = App.Responder

    let app: App
    let streamsShutdown: OpenStreamsShutdown

    public var responder: App.Responder {
        get async throws { try await app.responder }
    }

    public var server: HTTPServerBuilder { app.server }
    public var eventLoopGroup: any EventLoopGroup { app.eventLoopGroup }
    public var configuration: ApplicationConfiguration { app.configuration }
    public var logger: Logger { app.logger }
    public var services: [any Service] { app.services }
    public var processesRunBeforeServerStart: [@Sendable () async throws -> Void] { app.processesRunBeforeServerStart }

    public func onServerRunning(_ channel: any Channel) async { await app.onServerRunning(channel) }

    public func run() async throws {
        let group = ServiceGroup(configuration: .init(services: [app, streamsShutdown], logger: app.logger))
        try await group.run()
    }
}
