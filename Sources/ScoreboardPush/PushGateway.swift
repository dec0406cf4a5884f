import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import Metrics
import NIOCore
import ScoreboardCore
import ScoreboardHTTP
import Synchronization

/// The push gateway's request context: WebSocket-capable, with the peer's address and the connection (an SSE
/// stream closes it when a write to a client that stopped reading stalls).
public struct PushRequestContext: RequestContext, WebSocketRequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let webSocket: WebSocketHandlerReference<PushRequestContext>
    public let remoteAddress: SocketAddress?
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        webSocket = .init()
        remoteAddress = source.channel.remoteAddress
        channel = source.channel
    }
}

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
    let logger: Logger
    let now: @Sendable () -> Timestamp

    public init(
        configuration: Configuration, feed: UpdateFeed, reader: BoardReader, authenticator: JWTAuthenticator, logger: Logger,
        now: @escaping @Sendable () -> Timestamp = { Timestamp.now() }
    ) {
        self.configuration = configuration
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
        operations.add(to: router)

        router.get("/v1/leaderboards/:window/:dimension") { request, context in try await self.top(request, context) }
        router.get("/v1/leaderboards/:window/:dimension/:value") { request, context in try await self.top(request, context) }
        router.get("/v1/leaderboards/:window/:dimension/around/:userId") { request, context in try await self.around(request, context) }
        router.get("/v1/leaderboards/:window/:dimension/:value/around/:userId") { request, context in try await self.around(request, context) }
        router.get("/v1/users/:userId/standing") { _, context in
            let userID = try Self.pathIdentifier(context, "userId")
            struct Body: Encodable { var userId: String; var standings: [Standing] }
            let standings = try await Self.readingDependencies { try await self.reader.standings(userID: userID, now: self.now()) }
            return try jsonResponse(Body(userId: userID, standings: standings))
        }
        router.get("/v1/streams/sse/:window/:dimension") { request, context in try await self.sse(request, context) }
        router.get("/v1/streams/sse/:window/:dimension/:value") { request, context in try await self.sse(request, context) }
        router.get("/v1/streams/me") { request, context in try await self.personalSSE(request, context) }
        // Every client may upgrade and follow boards, within the caps per address; the personal channel checks the
        // upgrade request's bearer token when asked for (see `handleCommand`).
        router.ws("/v1/streams/ws", shouldUpgrade: { request, context in
            try self.checkCanOpenStream(request, context)
            return .upgrade([:])
        }, onUpgrade: { inbound, outbound, context in
            try await self.webSocket(inbound: inbound, outbound: outbound, request: context.request, address: Self.address(of: context.requestContext))
        })
        methods.learn(router)
        return router
    }

    // MARK: - Queries

    /// The board a query or stream names, validated: window and dimension declared, a well-formed period that has
    /// begun. (A region or guild without scores is a valid, empty board: ``BoardReader`` reads nothing for it.)
    func board(_ request: Request, _ context: PushRequestContext) throws -> BoardKey {
        let stream: BoardStream
        do {
            stream = try BoardStream(
                window: try context.parameters.require("window"), dimension: try context.parameters.require("dimension"),
                value: try context.parameters.get("value").map { _ in try Self.pathIdentifier(context, "value") })
        } catch let error as ScoreboardError {
            throw Problem(.invalidParameter, errors: error.reasons)
        }
        guard reader.catalog.declares(stream) else { throw Problem(.notFound, detail: "no \(stream.window.rawValue) × \(stream.dimension.rawValue) board is declared") }
        let period = try period(request, of: stream.window)
        return stream.board(period: period.key)
    }

    /// The `period` query parameter (default: the current one). A period that has not begun yet has no board.
    func period(_ request: Request, of window: LeaderboardWindow) throws -> WindowPeriod {
        let current = window.period(containing: now())
        guard let named = request.uri.queryParameters["period"].map(String.init) else { return current }
        let period: WindowPeriod
        do {
            period = try window.period(named: named)
        } catch {
            // Written like a period (what openapi.yaml's pattern allows) but not one of this window's, such as `all`
            // on a monthly board or 2026-02-30: no such board period, as a period that has not begun. Anything else
            // is malformed.
            if Self.isPeriodShaped(named) { throw Problem(.notFound, detail: "\(window.rawValue) boards have no period \(named)") }
            throw Problem(.invalidParameter, errors: error.reasons)
        }
        if let start = period.start, let currentStart = current.start, start > currentStart {
            throw Problem(.notFound, detail: "period \(named) has not begun")
        }
        if let end = period.end, end <= ScoreEvent.Limits.earliest {
            throw Problem(.notFound, detail: "period \(named) is before any score")
        }
        return period
    }

    /// `all`, `YYYY-MM`, `YYYY-MM-DD` or `YYYY-Www` with months 01-12, days 01-31 and weeks 01-53: the `period`
    /// pattern of openapi.yaml.
    static func isPeriodShaped(_ key: String) -> Bool {
        if key == "all" { return true }
        let parts = key.split(separator: "-", omittingEmptySubsequences: false)
        func number(_ text: Substring, digits: Int, in range: ClosedRange<Int>) -> Bool {
            text.count == digits && text.allSatisfy(\.isASCII) && Int(text).map(range.contains) == true
        }
        guard parts.count >= 2, number(parts[0], digits: 4, in: 0...9999) else { return false }
        if parts.count == 2, parts[1].hasPrefix("W") { return number(parts[1].dropFirst(), digits: 2, in: 1...53) }
        guard number(parts[1], digits: 2, in: 1...12) else { return false }
        return parts.count == 2 || (parts.count == 3 && number(parts[2], digits: 2, in: 1...31))
    }

    func top(_ request: Request, _ context: PushRequestContext) async throws -> Response {
        let limit = try Self.integer(request, "limit", default: 10, range: 1...configuration.maxPageSize)
        let offset = try Self.integer(request, "offset", default: 0, range: 0...configuration.maxOffset)
        let board = try board(request, context)
        return try jsonResponse(try await Self.readingDependencies { try await reader.top(board, limit: limit, offset: offset) })
    }

    func around(_ request: Request, _ context: PushRequestContext) async throws -> Response {
        let userID = try Self.pathIdentifier(context, "userId")
        let radius = try Self.integer(request, "radius", default: 5, range: 0...configuration.maxRadius)
        let board = try board(request, context)
        guard let page = try await Self.readingDependencies({ try await reader.around(board, userID: userID, radius: radius) }) else {
            throw Problem(.notFound, detail: "\(userID) is not on \(board.id)")
        }
        return try jsonResponse(page)
    }

    /// Runs a read of Redis or PostgreSQL: a failure of either is 503 with Retry-After (the client retries), never 500.
    static func readingDependencies<T>(_ read: () async throws -> T) async throws -> T {
        do { return try await read() } catch let problem as Problem { throw problem } catch {
            throw Problem(.dependencyUnavailable, detail: "the board store does not answer", retryAfter: 1)
        }
    }

    static func integer(_ request: Request, _ name: String, default value: Int, range: ClosedRange<Int>) throws -> Int {
        guard let text = request.uri.queryParameters[Substring(name)] else { return value }
        guard let number = Int(String(text)), range.contains(number) else {
            throw Problem(.invalidParameter, detail: "\(name) must be an integer from \(range.lowerBound) to \(range.upperBound)")
        }
        return number
    }

    /// A path parameter that is an identifier, percent-decoded first (`%3A` is `:`).
    static func pathIdentifier(_ context: PushRequestContext, _ name: String) throws -> String {
        let raw = try context.parameters.require(name)
        guard let decoded = raw.removingPercentEncoding else { throw Problem(.invalidParameter, detail: "\(name) is not valid percent-encoding") }
        return try identifier(decoded, name: name)
    }

    static func identifier(_ value: String, name: String) throws -> String {
        if let problem = ScoreEvent.identifierProblem(value) { throw Problem(.invalidParameter, detail: "\(name) \(problem)") }
        return value
    }
}

/// Open connections per transport, as gauges.
final class Connections: Sendable {
    static let shared = Connections()
    private let counts = Mutex<[String: Int]>([:])

    func change(_ gauge: Gauge, by delta: Int) {
        let value = counts.withLock { counts -> Int in
            counts[gauge.label + gauge.dimensions.description, default: 0] += delta
            return counts[gauge.label + gauge.dimensions.description]!
        }
        gauge.record(value)
    }
}
