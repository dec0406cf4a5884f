import Foundation
import Hummingbird
import HummingbirdWebSocket
import NIOCore
import NIOWebSocket
import ScoreboardCore
import ScoreboardHTTP
import Synchronization

// The WebSocket transport: one connection follows several board streams and, with a token, the personal channel.
extension PushGateway {
    // MARK: - WebSocket

    /// WebSocket protocol: the client sends `{"type":"subscribe","board":"daily:region:eu","since":123}` (since
    /// optional), `{"type":"unsubscribe","board":…}` (without `board`: everything), or
    /// `{"type":"subscribe","personal":true}` with a bearer token on the upgrade request; the server sends
    /// `snapshot`, `update`, `heartbeat` and `error` messages. Limits: ``Configuration/maxSubscriptionsPerConnection``
    /// board streams, commands at ``Configuration/commandsPerSecond`` (close 1008 beyond), messages of at most
    /// ``Configuration/maxInboundMessageSize`` bytes (close 1009 beyond).
    func webSocket(
        inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, request: Request, address: String, channel: any Channel
    ) async throws {
        let ticket: StreamAdmission.Ticket
        do { ticket = try admission.admit(address: address, user: nil) } catch let problem as Problem {
            try await outbound.close(.unknown(1013), reason: problem.kind.rawValue)  // 1013: try again later
            return
        }
        let buffer = SubscriberBuffer(limit: configuration.clientBufferLimit)
        let connection = WebSocketSession()
        let watchdog = WriteWatchdog()
        try await withOpenStream(transport: "websocket", buffer: buffer, ticket: ticket) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                // The client's commands are read by the one child task; the sending runs in the connection's task.
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
                            try await watchdog.watching { try await outbound.write(.text(error)) }
                        }
                    }
                }
                defer { group.cancelAll() }
                try await self.pump(buffer, identity: nil, channel: channel, watchdog: watchdog) { output in
                    switch output {
                    case .heartbeat:
                        // A personal subscription's token is checked as often as heartbeats would go out.
                        if let identity = connection.identity, let end = await self.tokenEnd(identity) { buffer.close(end) }
                        try await watchdog.watching {
                            try await outbound.write(.text("{\"at\":\(self.now().millisecondsSinceEpoch),\"type\":\"heartbeat\"}"))
                        }
                    case .items(let items):
                        if let identity = connection.identity, connection.isTokenCheckDue(every: self.configuration.heartbeatInterval),
                           let end = await self.tokenEnd(identity) {
                            buffer.close(end)
                        }
                        // An update's text frame carries its shared bytes (encoded once for every subscriber).
                        try await watchdog.watching {
                            for item in items { try await outbound.write(.custom(WebSocketFrame(fin: true, opcode: .text, data: Self.jsonBytes(item)))) }
                        }
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
        }
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
