import Hummingbird
import HummingbirdWebSocket
import Logging
import ScoreboardCore
import ScoreboardHTTP

/// Streams and queries: the push gateway's routes.
public struct PushGateway: Sendable {
    public struct Configuration: Sendable {
        /// Idle streams get a heartbeat this often; personal streams re-check their token as often.
        public var heartbeatInterval: Duration = .seconds(15)
        /// Pending items per client before it is dropped (coalescing starts at half of it).
        public var clientBufferLimit = 10_000
        /// `limit` is 1 to this.
        public var maxPageSize = 1_000
        /// `offset` is 0 to this.
        public var maxOffset = 1_000_000
        /// `radius` is 0 to this.
        public var maxRadius = 100
        /// Open streams per address, per user and in all.
        public var streams = StreamLimits()
        /// Board streams one WebSocket connection may follow at once.
        public var maxSubscriptionsPerConnection = 16
        /// WebSocket commands a connection may send: a burst of this many, refilled at `commandsPerSecond`. Each
        /// subscribe reads a snapshot, so a client that sends faster is closed (1008).
        public var commandBurst = 32
        public var commandsPerSecond = 4
        /// Largest WebSocket message a client may send (commands are small JSON objects).
        public var maxInboundMessageSize = 4 * 1024
        /// A write to a client that does not read within this long ends its stream (also bounds how long a
        /// shutdown waits for a stream's last event).
        public var writeTimeout: Duration = .seconds(10)

        public init() {}
    }

    public let configuration: Configuration
    public let feed: UpdateFeed
    public let reader: BoardReader
    public let authenticator: JWTAuthenticator
    public let admission: StreamAdmission
    public let openStreams = OpenStreams()
    /// A player's achievements and statistics (PlayerQueries.swift).
    public let players: PlayerQueries
    /// Fraud review's store, for the admin endpoints (`nil`: they answer 503).
    public var fraudReviews: (any FraudReviews)?
    /// The fraud review feed (`nil`: its stream answers 503).
    public var fraudFeed: FraudFeed?
    /// The analytics API's reads (AnalyticsRoutes.swift).
    public let analytics: AnalyticsReader
    let logger: Logger
    let now: @Sendable () -> Timestamp

    public init(
        configuration: Configuration, feed: UpdateFeed, reader: BoardReader, authenticator: JWTAuthenticator, logger: Logger,
        players: PlayerQueries = PlayerQueries(), now: @escaping @Sendable () -> Timestamp = { Timestamp.now() },
        analytics: AnalyticsReader = .unconfigured
    ) {
        self.players = players
        self.configuration = configuration
        self.analytics = analytics
        self.feed = feed
        self.reader = reader
        self.authenticator = authenticator
        self.admission = StreamAdmission(limits: configuration.streams)
        self.logger = logger
        self.now = now
    }

    /// The service that ends open streams on graceful shutdown; list it after the HTTP application.
    public var streamsShutdown: OpenStreamsShutdown { OpenStreamsShutdown(streams: openStreams, timeout: configuration.writeTimeout) }

    // MARK: - Routes

    public func router(operations: OperationsRoutes) -> Router<PushRequestContext> {
        let router = Router(context: PushRequestContext.self)
        let methods = MethodNotAllowedMiddleware<PushRequestContext>()
        router.add(middleware: MetricsMiddleware())
        router.add(middleware: ProblemMiddleware())
        router.add(middleware: methods)
        router.add(middleware: GzipResponseMiddleware())
        operations.add(to: router)
        switch DashboardRoutes.bundled {
        case .success(let dashboard): dashboard.add(to: router)
        case .failure(let error): logger.error("the live dashboard is not served", metadata: ["error": "\(error)"])
        }

        router.get("/v1/leaderboards/:window/:dimension") { request, context in try await self.top(request, context) }
        router.get("/v1/leaderboards/:window/:dimension/:value") { request, context in try await self.top(request, context) }
        router.get("/v1/leaderboards/:window/:dimension/around/:userId") { request, context in try await self.around(request, context) }
        router.get("/v1/leaderboards/:window/:dimension/:value/around/:userId") { request, context in try await self.around(request, context) }
        router.get("/v1/users/:userId/standing") { request, context in try await self.standing(request, context) }
        router.get("/v1/users/:userId/achievements") { request, context in try await self.achievements(request, context) }
        router.get("/v1/users/:userId/stats") { request, context in try await self.stats(request, context) }
        router.get("/v1/streams/sse/:window/:dimension") { request, context in try await self.sse(request, context) }
        router.get("/v1/streams/sse/:window/:dimension/:value") { request, context in try await self.sse(request, context) }
        router.get("/v1/streams/me") { request, context in try await self.personalSSE(request, context) }
        addAnalyticsRoutes(to: router)
        // Every client may upgrade and follow boards, within the caps per address; the personal channel checks the
        // upgrade request's bearer token when asked for (see `handleCommand`).
        router.ws("/v1/streams/ws", shouldUpgrade: { request, context in
            try self.checkCanOpenStream(request, context)
            return .upgrade([:])
        }, onUpgrade: { inbound, outbound, context in
            try await self.webSocket(
                inbound: inbound, outbound: outbound, request: context.request, address: Self.address(of: context.requestContext),
                channel: context.requestContext.channel)
        })
        FraudReviewRoutes(reviews: fraudReviews, feed: fraudFeed, authenticator: authenticator, now: now).add(to: router)
        // The review feed over WebSocket (FraudFeedWebSocket.swift). Through the router, a refused request gets its
        // problem+json; the server's own upgrade path (`httpServer`) can only upgrade and close with the problem.
        router.ws(RouterPath(stringLiteral: Self.fraudFeedWebSocketPath), shouldUpgrade: { request, _ in
            _ = try await self.admitToFraudFeed(request)
            return .upgrade([:])
        }, onUpgrade: { inbound, outbound, context in
            try await self.fraudFeedWebSocket(inbound: inbound, outbound: outbound, request: context.request)
        })
        methods.learn(router)
        return router
    }
}
