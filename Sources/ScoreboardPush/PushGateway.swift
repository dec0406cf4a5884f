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

/// The push gateway's request context: WebSocket-capable, with the peer's address.
public struct PushRequestContext: RequestContext, WebSocketRequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let webSocket: WebSocketHandlerReference<PushRequestContext>
    public let remoteAddress: SocketAddress?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        webSocket = .init()
        remoteAddress = source.channel.remoteAddress
    }
}

/// Streams and queries: the push gateway's routes.
public struct PushGateway: Sendable {
    public struct Configuration: Sendable {
        public var heartbeatInterval: Duration = .seconds(15)
        /// Pending items per client before it is dropped (coalescing starts at half of it).
        public var clientBufferLimit = 10_000
        public var maxPageSize = 1_000
        public var maxRadius = 100

        public init() {}
    }

    public let configuration: Configuration
    public let feed: UpdateFeed
    public let reader: BoardReader
    public let authenticator: JWTAuthenticator
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
        self.logger = logger
        self.now = now
    }

    // MARK: - Routes

    public func router(operations: OperationsRoutes) -> Router<PushRequestContext> {
        let router = Router(context: PushRequestContext.self)
        router.add(middleware: MetricsMiddleware())
        router.add(middleware: ProblemMiddleware())
        operations.add(to: router)

        router.get("/v1/leaderboards/:window/:dimension") { request, context in try await self.top(request, context) }
        router.get("/v1/leaderboards/:window/:dimension/:value") { request, context in try await self.top(request, context) }
        router.get("/v1/leaderboards/:window/:dimension/around/:userId") { request, context in try await self.around(request, context) }
        router.get("/v1/leaderboards/:window/:dimension/:value/around/:userId") { request, context in try await self.around(request, context) }
        router.get("/v1/users/:userId/standing") { _, context in
            let userID = try Self.identifier(try context.parameters.require("userId"), name: "userId")
            struct Body: Encodable { var userId: String; var standings: [Standing] }
            return try jsonResponse(Body(userId: userID, standings: try await self.reader.standings(userID: userID, now: self.now())))
        }
        router.get("/v1/streams/sse/:window/:dimension") { request, context in try await self.sse(request, context) }
        router.get("/v1/streams/sse/:window/:dimension/:value") { request, context in try await self.sse(request, context) }
        router.get("/v1/streams/me") { request, context in
            let identity = try await self.authenticator.authenticate(request, roles: Set(Role.allCases))
            return self.sseResponse { buffer in self.feed.subscribe(buffer, toUser: identity.userID) }
        }
        // Every client may upgrade and follow boards; the personal channel checks the upgrade request's bearer token
        // when asked for (see `handleCommand`).
        router.ws("/v1/streams/ws", onUpgrade: { inbound, outbound, context in
            try await self.webSocket(inbound: inbound, outbound: outbound, request: context.request)
        })
        return router
    }

    // MARK: - Queries

    func board(_ request: Request, _ context: PushRequestContext) throws -> BoardKey {
        let stream: BoardStream
        do {
            stream = try BoardStream(
                window: try context.parameters.require("window"), dimension: try context.parameters.require("dimension"),
                value: context.parameters.get("value"))
        } catch let error as ScoreboardError {
            throw Problem(.invalidParameter, errors: error.reasons)
        }
        guard reader.catalog.declares(stream) else { throw Problem(.notFound, detail: "no \(stream.window.rawValue) × \(stream.dimension.rawValue) board is declared") }
        let period: String
        if let named = request.uri.queryParameters["period"].map(String.init) {
            do { period = try stream.window.period(named: named).key } catch { throw Problem(.invalidParameter, errors: error.reasons) }
        } else {
            period = stream.window.period(containing: now()).key
        }
        return stream.board(period: period)
    }

    func top(_ request: Request, _ context: PushRequestContext) async throws -> Response {
        let board = try board(request, context)
        let limit = try Self.integer(request, "limit", default: 10, range: 1...configuration.maxPageSize)
        let offset = try Self.integer(request, "offset", default: 0, range: 0...1_000_000)
        return try jsonResponse(try await reader.top(board, limit: limit, offset: offset))
    }

    func around(_ request: Request, _ context: PushRequestContext) async throws -> Response {
        let board = try board(request, context)
        let userID = try Self.identifier(try context.parameters.require("userId"), name: "userId")
        let radius = try Self.integer(request, "radius", default: 5, range: 0...configuration.maxRadius)
        guard let page = try await reader.around(board, userID: userID, radius: radius) else {
            throw Problem(.notFound, detail: "\(userID) is not on \(board.id)")
        }
        return try jsonResponse(page)
    }

    static func integer(_ request: Request, _ name: String, default value: Int, range: ClosedRange<Int>) throws -> Int {
        guard let text = request.uri.queryParameters[Substring(name)] else { return value }
        guard let number = Int(String(text)), range.contains(number) else {
            throw Problem(.invalidParameter, detail: "\(name) must be an integer from \(range.lowerBound) to \(range.upperBound)")
        }
        return number
    }

    static func identifier(_ value: String, name: String) throws -> String {
        if let problem = ScoreEvent.identifierProblem(value) { throw Problem(.invalidParameter, detail: "\(name) \(problem)") }
        return value
    }

    // MARK: - Streams

    /// Registers `buffer` for `stream` and queues its start: the missed updates, or a snapshot (delivery is held
    /// until the snapshot is queued, so no update overtakes it).
    func start(_ stream: BoardStream, since: Int64?, buffer: SubscriberBuffer) async throws {
        buffer.hold()
        defer { buffer.release() }
        switch feed.subscribe(buffer, to: stream, since: since) {
        case .resume(let missed):
            Counter(label: "push_resumes_total").increment()
            buffer.append(missed.map(OutboundItem.update))
        case .snapshot(let sequence):
            Counter(label: "push_snapshots_total").increment()
            let page = try await reader.snapshot(stream.board(period: stream.window.period(containing: now()).key))
            buffer.append([.snapshot(stream: stream.id, sequence: sequence, page: page)])
        }
    }

    func sse(_ request: Request, _ context: PushRequestContext) async throws -> Response {
        let stream = try board(request, context).stream
        let lastEventID = request.headers[HTTPField.Name("Last-Event-ID")!] ?? request.uri.queryParameters["since"].map(String.init)
        var since: Int64?
        if let lastEventID {
            guard let value = Int64(lastEventID), value >= -1 else { throw Problem(.invalidParameter, detail: "Last-Event-ID / since must be a sequence") }
            since = value
        }
        let buffer = SubscriberBuffer(limit: configuration.clientBufferLimit)
        try await start(stream, since: since, buffer: buffer)
        return sseResponse(buffer: buffer)
    }

    func sseResponse(register: @escaping @Sendable (SubscriberBuffer) -> Void) -> Response {
        let buffer = SubscriberBuffer(limit: configuration.clientBufferLimit)
        register(buffer)
        return sseResponse(buffer: buffer)
    }

    func sseResponse(buffer: SubscriberBuffer) -> Response {
        let gauge = Gauge(label: "push_connections", dimensions: [("transport", "sse")])
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache", HTTPField.Name("X-Accel-Buffering")!: "no"],
            body: ResponseBody { [self] writer in
                Connections.shared.change(gauge, by: 1)
                defer {
                    feed.unsubscribe(buffer)
                    Connections.shared.change(gauge, by: -1)
                }
                try await writer.write(ByteBuffer(string: ": connected\n\n"))
                while true {
                    switch await buffer.next(idle: configuration.heartbeatInterval) {
                    case nil:
                        try await writer.write(ByteBuffer(string: ": heartbeat \(now().millisecondsSinceEpoch)\n\n"))
                    case .items(let items):
                        var text = ""
                        for item in items { text += Self.sseEvent(item) }
                        try await writer.write(ByteBuffer(string: text))
                    case .overflowed:
                        Counter(label: "push_clients_dropped_total").increment()
                        try await writer.write(ByteBuffer(string: "event: overflow\ndata: {\"type\":\"overflow\"}\n\n"))
                        try await writer.finish(nil)
                        return
                    case .closed:
                        try await writer.finish(nil)
                        return
                    }
                }
            })
    }

    static func sseEvent(_ item: OutboundItem) -> String {
        let (type, sequence) = item.order.1 == 0 ? ("snapshot", item.order.0) : ("update", item.order.0)
        return "id: \(sequence)\nevent: \(type)\ndata: \(json(item))\n\n"
    }

    /// The JSON a client receives for an item, on either transport.
    static func json(_ item: OutboundItem) -> String {
        struct Update: Encodable { var type = "update"; var stream: String; var sequence: Int64; var update: LeaderboardUpdate }
        struct Snapshot: Encodable { var type = "snapshot"; var stream: String; var sequence: Int64; var page: BoardPage }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data: Data?
        switch item {
        case .update(let update): data = try? encoder.encode(Update(stream: update.update.streamID, sequence: update.sequence, update: update.update))
        case .snapshot(let stream, let sequence, let page): data = try? encoder.encode(Snapshot(stream: stream, sequence: sequence, page: page))
        }
        return String(decoding: data ?? Data("{}".utf8), as: UTF8.self)
    }

    /// WebSocket protocol: the client sends `{"type":"subscribe","board":"daily:region:eu","since":123}` (since
    /// optional) or `{"type":"unsubscribe",…}`, or `{"type":"subscribe","personal":true}` with a bearer token on the
    /// upgrade request; the server sends `snapshot`, `update`, `heartbeat` and `error` messages.
    func webSocket(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, request: Request) async throws {
        let buffer = SubscriberBuffer(limit: configuration.clientBufferLimit)
        let gauge = Gauge(label: "push_connections", dimensions: [("transport", "websocket")])
        Connections.shared.change(gauge, by: 1)
        defer {
            feed.unsubscribe(buffer)
            Connections.shared.change(gauge, by: -1)
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                defer { buffer.close() }
                for try await message in inbound.messages(maxSize: 16 * 1024) {
                    guard case .text(let text) = message else { continue }
                    if let error = await self.handleCommand(text, buffer: buffer, request: request) {
                        try await outbound.write(.text(error))
                    }
                }
            }
            group.addTask {
                while true {
                    switch await buffer.next(idle: self.configuration.heartbeatInterval) {
                    case nil:
                        try await outbound.write(.text("{\"at\":\(self.now().millisecondsSinceEpoch),\"type\":\"heartbeat\"}"))
                    case .items(let items):
                        for item in items { try await outbound.write(.text(Self.json(item))) }
                    case .overflowed:
                        Counter(label: "push_clients_dropped_total").increment()
                        try await outbound.close(.policyViolation, reason: "too far behind; reconnect with your last sequence")
                        return
                    case .closed:
                        return
                    }
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// Applies one client command; returns an error message to send, if any.
    func handleCommand(_ text: String, buffer: SubscriberBuffer, request: Request) async -> String? {
        struct Command: Decodable { var type: String; var board: String?; var since: Int64?; var personal: Bool? }
        func errorMessage(_ problem: Problem) -> String {
            let body = ["type": "error", "problem": problem.kind.uri, "detail": problem.detail ?? problem.errors.joined(separator: "; ")]
            return String(decoding: (try? JSONEncoder().encode(body)) ?? Data(), as: UTF8.self)
        }
        guard let command = try? JSONDecoder().decode(Command.self, from: Data(text.utf8)) else {
            return errorMessage(Problem(.invalidBody, detail: "expected {\"type\":\"subscribe\",\"board\":\"window:dimension[:value]\"}"))
        }
        do {
            switch (command.type, command.personal, command.board) {
            case ("subscribe", true?, _):
                let header = request.headers[.authorization].flatMap { $0.lowercased().hasPrefix("bearer ") ? String($0.dropFirst(7)) : nil }
                guard let token = header ?? request.uri.queryParameters["access_token"].map(String.init) else {
                    throw Problem(.unauthenticated, detail: "the personal channel needs a bearer token on the upgrade request")
                }
                let identity = try await authenticator.authenticate(token: token, roles: Set(Role.allCases))
                feed.subscribe(buffer, toUser: identity.userID)
            case ("subscribe", _, let board?):
                let stream = try BoardStream(id: board)
                guard reader.catalog.declares(stream) else { throw Problem(.notFound, detail: "no such board") }
                try await start(stream, since: command.since, buffer: buffer)
            case ("unsubscribe", _, _):
                feed.unsubscribe(buffer)
            default:
                throw Problem(.invalidBody, detail: "unknown command \(command.type)")
            }
            return nil
        } catch let problem as Problem {
            return errorMessage(problem)
        } catch let scoreboardError as ScoreboardError {
            return errorMessage(Problem(.invalidParameter, errors: scoreboardError.reasons))
        } catch {
            return errorMessage(Problem(.dependencyUnavailable))
        }
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
