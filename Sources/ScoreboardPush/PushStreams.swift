import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import Metrics
import NIOCore
import ScoreboardCore
import ScoreboardHTTP
import ServiceLifecycle
import Synchronization

/// What the stream loop hands a transport to send.
enum StreamOutput: Sendable {
    case items([OutboundItem])
    case heartbeat
    /// The client fell too far behind.
    case overflowed
    /// The stream ends; with the server's reason when it ended it on its own.
    case end(StreamEnd?)
}

extension PushGateway {
    // MARK: - Admission

    static func address(of context: PushRequestContext) -> String { context.remoteAddress?.ipAddress ?? "unknown" }

    /// Refuses an upgrade from an address (or server) already at its cap, before the connection exists.
    func checkCanOpenStream(_ request: Request, _ context: PushRequestContext) throws {
        _ = try admission.admit(address: Self.address(of: context), user: nil)
    }

    // MARK: - Starting a board stream

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

    // MARK: - SSE

    func sse(_ request: Request, _ context: PushRequestContext) async throws -> Response {
        let lastEventID = request.headers[HTTPField.Name("Last-Event-ID")!] ?? request.uri.queryParameters["since"].map(String.init)
        var since: Int64?
        if let lastEventID {
            guard let value = Int64(lastEventID), value >= -1 else { throw Problem(.invalidParameter, detail: "Last-Event-ID / since must be a sequence") }
            since = value
        }
        let stream = try board(request, context).stream
        // The slot is taken before the snapshot is read or the feed knows the stream.
        let ticket = try admission.admit(address: Self.address(of: context), user: nil)
        let buffer = SubscriberBuffer(limit: configuration.clientBufferLimit)
        do {
            try await Self.readingDependencies { try await start(stream, since: since, buffer: buffer) }
        } catch {
            feed.unsubscribe(buffer)
            throw error
        }
        return sseResponse(buffer: buffer, ticket: ticket, identity: nil, channel: context.channel)
    }

    /// The personal channel: the caller's own updates on every board, for as long as its token is valid.
    func personalSSE(_ request: Request, _ context: PushRequestContext) async throws -> Response {
        // The revocation list is in Redis: when it does not answer, 503 (retry), not 500.
        let identity = try await Self.readingDependencies { try await authenticator.authenticate(request, roles: Set(Role.allCases)) }
        let ticket = try admission.admit(address: Self.address(of: context), user: identity.userID)
        let buffer = SubscriberBuffer(limit: configuration.clientBufferLimit)
        feed.subscribe(buffer, toUser: identity.userID)
        return sseResponse(buffer: buffer, ticket: ticket, identity: identity, channel: context.channel)
    }

    func sseResponse(buffer: SubscriberBuffer, ticket: StreamAdmission.Ticket, identity: Identity?, channel: any Channel) -> Response {
        let watchdog = WriteWatchdog()
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache", HTTPField.Name("X-Accel-Buffering")!: "no"],
            body: ResponseBody { [self] writer in
                try await withOpenStream(transport: "sse", buffer: buffer, ticket: ticket) {
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask { await watchdog.closeWhenStalled(channel, after: self.configuration.writeTimeout) }
                        defer { group.cancelAll() }
                        try await watchdog.watching { try await writer.write(ByteBuffer(string: ": connected\n\n")) }
                        try await pump(buffer, identity: identity) { output in
                            let text: String
                            switch output {
                            case .heartbeat: text = ": heartbeat \(now().millisecondsSinceEpoch)\n\n"
                            case .items(let items): text = items.map(Self.sseEvent).joined()
                            case .overflowed: text = "event: overflow\ndata: {\"type\":\"overflow\"}\n\n"
                            case .end(let end?): text = "event: end\ndata: {\"reason\":\"\(end.rawValue)\",\"type\":\"end\"}\n\n"
                            case .end(nil): return
                            }
                            try await watchdog.watching { try await writer.write(ByteBuffer(string: text)) }
                        }
                    }
                }
                try await writer.finish(nil)
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

    // MARK: - The stream loop, for both transports

    /// Sends what `buffer` yields until the stream ends: heartbeats when idle; for a personal stream, its token
    /// re-checked once per heartbeat interval and at `exp`, the stream ended when it expired or was revoked; on
    /// graceful shutdown, a last `shutting-down` end. Returns after sending the end.
    func pump(_ buffer: SubscriberBuffer, identity: Identity?, send: (StreamOutput) async throws -> Void) async throws {
        let heartbeat = configuration.heartbeatInterval
        try await withGracefulShutdownHandler {
            var nextTokenCheck = ContinuousClock.now + heartbeat
            while true {
                var idle = heartbeat
                if let identity {
                    let untilExpiry = Duration.milliseconds(Int64(max(0, identity.expiresAt.timeIntervalSinceNow) * 1000) + 1)
                    idle = min(idle, untilExpiry, max(.zero, nextTokenCheck - .now))
                }
                let drained = await buffer.next(idle: idle)
                if let identity, ContinuousClock.now >= nextTokenCheck || identity.expiresAt <= Date() {
                    nextTokenCheck = .now + heartbeat
                    if let end = await tokenEnd(identity) { buffer.close(end) }
                }
                switch drained {
                case nil:
                    try await send(.heartbeat)
                case .items(let items):
                    try await send(.items(items))
                case .overflowed:
                    Counter(label: "push_clients_dropped_total").increment()
                    try await send(.overflowed)
                    return
                case .closed(let end):
                    try await send(.end(end))
                    return
                }
            }
        } onGracefulShutdown: {
            buffer.close(.shuttingDown)
        }
    }

    /// Why a personal stream must end now, if it must.
    func tokenEnd(_ identity: Identity) async -> StreamEnd? {
        if identity.expiresAt <= Date() { return .tokenExpired }
        do {
            if try await authenticator.isRevoked(tokenID: identity.tokenID) { return .tokenRevoked }
        } catch {
            // Redis is down: the stream goes on (the check runs again next interval) rather than dropping every
            // personal stream during an outage.
            logger.debug("revocation check failed", metadata: ["error": "\(error)"])
        }
        return nil
    }

    // MARK: - WebSocket

    /// WebSocket protocol: the client sends `{"type":"subscribe","board":"daily:region:eu","since":123}` (since
    /// optional), `{"type":"unsubscribe","board":…}` (without `board`: everything), or
    /// `{"type":"subscribe","personal":true}` with a bearer token on the upgrade request; the server sends
    /// `snapshot`, `update`, `heartbeat` and `error` messages. Limits: ``Configuration/maxSubscriptionsPerConnection``
    /// board streams, commands at ``Configuration/commandsPerSecond`` (close 1008 beyond), messages of at most
    /// ``Configuration/maxInboundMessageSize`` bytes (close 1009 beyond).
    func webSocket(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, request: Request, address: String) async throws {
        let ticket: StreamAdmission.Ticket
        do { ticket = try admission.admit(address: address, user: nil) } catch let problem as Problem {
            try await outbound.close(.unknown(1013), reason: problem.kind.rawValue)  // 1013: try again later
            return
        }
        let buffer = SubscriberBuffer(limit: configuration.clientBufferLimit)
        let connection = WebSocketSession()
        try await withOpenStream(transport: "websocket", buffer: buffer, ticket: ticket) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    defer { buffer.close() }
                    var commands = CommandBudget(burst: self.configuration.commandBurst, perSecond: self.configuration.commandsPerSecond)
                    for try await message in inbound.messages(maxSize: self.configuration.maxInboundMessageSize) {
                        guard case .text(let text) = message else { continue }
                        guard commands.spend(at: .now) else {
                            try await outbound.close(.policyViolation, reason: "too many commands")
                            return
                        }
                        if let error = await self.handleCommand(text, buffer: buffer, request: request, session: connection) {
                            try await outbound.write(.text(error))
                        }
                    }
                }
                group.addTask {
                    try await self.pump(buffer, identity: nil) { output in
                        switch output {
                        case .heartbeat:
                            // A personal subscription's token is checked as often as heartbeats would go out.
                            if let identity = connection.identity, let end = await self.tokenEnd(identity) { buffer.close(end) }
                            try await outbound.write(.text("{\"at\":\(self.now().millisecondsSinceEpoch),\"type\":\"heartbeat\"}"))
                        case .items(let items):
                            if let identity = connection.identity, connection.isTokenCheckDue(every: self.configuration.heartbeatInterval),
                               let end = await self.tokenEnd(identity) {
                                buffer.close(end)
                            }
                            for item in items { try await outbound.write(.text(Self.json(item))) }
                        case .overflowed:
                            try await outbound.close(.policyViolation, reason: "too far behind; reconnect with your last sequence")
                        case .end(.shuttingDown?):
                            try await outbound.close(.goingAway, reason: StreamEnd.shuttingDown.rawValue)
                        case .end(let end?):
                            try await outbound.close(.policyViolation, reason: end.rawValue)
                        case .end(nil):
                            break
                        }
                    }
                }
                try await group.next()
                group.cancelAll()
            }
        }
    }

    /// Runs one open stream: counted on the connections gauge; when it ends, however it ends, its buffer leaves the
    /// feed and its admission slot is freed.
    func withOpenStream(transport: String, buffer: SubscriberBuffer, ticket: StreamAdmission.Ticket, _ body: () async throws -> Void) async throws {
        let gauge = Gauge(label: "push_connections", dimensions: [("transport", transport)])
        Connections.shared.change(gauge, by: 1)
        openStreams.insert(buffer)
        defer {
            openStreams.remove(buffer)
            feed.unsubscribe(buffer)
            Connections.shared.change(gauge, by: -1)
            withExtendedLifetime(ticket) {}
        }
        try await body()
    }

    /// Applies one client command; returns an error message to send, if any.
    func handleCommand(_ text: String, buffer: SubscriberBuffer, request: Request, session: WebSocketSession) async -> String? {
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
                if session.identity?.userID != identity.userID {
                    // The personal channel counts against the user's cap (the connection already counts for its address).
                    session.userTicket = try admission.admit(address: nil, user: identity.userID)
                }
                session.identity = identity
                feed.subscribe(buffer, toUser: identity.userID)
            case ("subscribe", _, let board?):
                let stream = try BoardStream(id: board)
                guard reader.catalog.declares(stream) else { throw Problem(.notFound, detail: "no such board") }
                guard feed.streamCount(of: buffer) < configuration.maxSubscriptionsPerConnection else {
                    throw Problem(.tooManySubscriptions, detail: "at most \(configuration.maxSubscriptionsPerConnection) boards per connection")
                }
                try await start(stream, since: command.since, buffer: buffer)
            case ("unsubscribe", _, let board?):
                feed.unsubscribe(buffer, from: try BoardStream(id: board))
            case ("unsubscribe", _, nil):
                feed.unsubscribe(buffer)
                session.identity = nil
                session.userTicket = nil
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

/// Closes a connection whose pending write has not completed within a timeout: a client that stopped reading
/// would otherwise hold its stream (and a graceful shutdown) for ever, since a write waits for the socket to drain.
final class WriteWatchdog: Sendable {
    private let pendingSince = Mutex<ContinuousClock.Instant?>(nil)

    /// Runs one write, marked as pending while it runs.
    func watching(_ write: () async throws -> Void) async throws {
        pendingSince.withLock { $0 = .now }
        defer { pendingSince.withLock { $0 = nil } }
        try await write()
    }

    /// Until cancelled, looks every quarter of `timeout` whether a write has been pending longer, and if so closes
    /// `channel` (which fails the write).
    func closeWhenStalled(_ channel: any Channel, after timeout: Duration) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: timeout / 4)
            if let since = pendingSince.withLock({ $0 }), ContinuousClock.now - since > timeout {
                channel.close(promise: nil)
                return
            }
        }
    }
}

/// What one WebSocket connection has authenticated as (set by a personal subscribe, read by the sending side).
final class WebSocketSession: Sendable {
    struct State {
        var identity: Identity?
        /// The personal channel's slot under the per-user cap.
        var userTicket: StreamAdmission.Ticket?
        var lastTokenCheck = ContinuousClock.now
    }

    private let state = Mutex(State())

    var identity: Identity? {
        get { state.withLock { $0.identity } }
        set { state.withLock { $0.identity = newValue } }
    }

    var userTicket: StreamAdmission.Ticket? {
        get { state.withLock { $0.userTicket } }
        set { state.withLock { $0.userTicket = newValue } }
    }

    /// True once per `interval`, when it has passed since the last check.
    func isTokenCheckDue(every interval: Duration) -> Bool {
        state.withLock { state in
            guard ContinuousClock.now - state.lastTokenCheck >= interval else { return false }
            state.lastTokenCheck = .now
            return true
        }
    }
}

/// A token bucket for one connection's commands.
struct CommandBudget {
    let burst: Double
    let perSecond: Double
    var tokens: Double
    var last: ContinuousClock.Instant?

    init(burst: Int, perSecond: Int) {
        self.burst = Double(burst)
        self.perSecond = Double(perSecond)
        tokens = Double(burst)
    }

    mutating func spend(at now: ContinuousClock.Instant) -> Bool {
        if let last {
            let elapsed = now - last
            tokens = min(burst, tokens + (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18) * perSecond)
        }
        last = now
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}
