import Foundation
import Hummingbird
import HummingbirdWebSocket
import NIOWebSocket
import ScoreboardCore
import ScoreboardHTTP
import ServiceLifecycle

// The fraud review feed over WebSocket: the same feed as `GET /v1/admin/fraud-flags/stream` (FraudFeed.swift), for
// admins only, resumable by the same position.
extension PushGateway {
    static let fraudFeedWebSocketPath = "/v1/admin/fraud-flags/ws"

    /// Who may follow the feed: an admin's bearer token on the upgrade request (`Authorization`, or `access_token` for
    /// a browser, which cannot set headers on an upgrade), and a `since` that is a position this feed gave.
    /// - Returns: Where to resume from (`nil`: a snapshot first).
    /// - Throws: A `Problem`: `unauthenticated`, `token-revoked`, `forbidden-role` (a player, a game server),
    ///   `invalid-parameter`, or 503 when the revocation list does not answer.
    func admitToFraudFeed(_ request: Request) async throws -> FraudFeedPosition? {
        let header = request.headers[.authorization].flatMap { $0.lowercased().hasPrefix("bearer ") ? String($0.dropFirst(7)) : nil }
        guard let token = header ?? request.uri.queryParameters["access_token"].map(String.init) else {
            throw Problem(.unauthenticated, detail: "send Authorization: Bearer <token> (or access_token) on the upgrade request")
        }
        _ = try await Self.readingDependencies { try await authenticator.authenticate(token: token, roles: [.admin]) }
        guard let since = request.uri.queryParameters["since"].map(String.init), !since.isEmpty else { return nil }
        guard let position = FraudFeedPosition(since) else {
            throw Problem(.invalidParameter, detail: "since must be an id this feed gave (0-12.1-5)")
        }
        return position
    }

    /// The review feed over WebSocket. The server sends `snapshot` (`{"type":"snapshot","id","flags":[…]}`) or the
    /// flags after `since`, then a `flag` message (`{"type":"flag","id","flag":{…}}`) per flag published, and
    /// `heartbeat` messages; `id` is the position to resume from (`?since=`), as the SSE stream's event ids. The client
    /// sends nothing (its messages are read and ignored). A refused upgrade request (the upgrade itself cannot answer
    /// with a status) gets one `error` message carrying the problem (`{"type":"error","problem","status","detail"}`)
    /// and a close: 1008 with the problem's type as the reason (`forbidden-role`, `unauthenticated`, …), or 1013 when
    /// a dependency does not answer. A client the feed dropped for falling behind is closed with 1008 and resumes with
    /// its last `id`; at shutdown, 1001.
    func fraudFeedWebSocket(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, request: Request) async throws {
        let items: AsyncStream<FraudFeed.Item>
        do {
            let since = try await admitToFraudFeed(request)
            guard let fraudFeed else { throw Problem.unavailable("the fraud feed") }
            items = try await Self.readingDependencies { try await fraudFeed.subscribe(since: since, transport: .webSocket) }
        } catch let problem as Problem {
            try await refuse(outbound, problem)
            return
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                // The feed is one way: the client's messages are only read to see it close.
                for try await _ in inbound.messages(maxSize: self.configuration.maxInboundMessageSize) {}
            }
            group.addTask {
                // Graceful shutdown ends the iteration, as does the feed dropping a client too far behind.
                for await item in items.cancelOnGracefulShutdown() {
                    switch item {
                    case .event(let message): try await outbound.write(.custom(WebSocketFrame(fin: true, opcode: .text, data: message)))
                    case .heartbeat: try await outbound.write(.text("{\"at\":\(self.now().millisecondsSinceEpoch),\"type\":\"heartbeat\"}"))
                    }
                }
                // The client left (the reading task ended and cancelled this one): nothing to say.
                guard !Task.isCancelled else { return }
                // Closed from here, so that the client answers and the reading task ends too.
                if Task.isShuttingDownGracefully {
                    try await outbound.close(.goingAway, reason: StreamEnd.shuttingDown.rawValue)
                } else {
                    try await outbound.close(.policyViolation, reason: "too far behind; reconnect with your last id")
                }
            }
            // Whichever ends first ends the other.
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    /// Tells a client why it may not follow the feed, then closes.
    private func refuse(_ outbound: WebSocketOutboundWriter, _ problem: Problem) async throws {
        struct ErrorMessage: Encodable { var type = "error"; var problem: String; var status: Int; var detail: String }
        let detail = problem.detail ?? problem.errors.joined(separator: "; ")
        let message = ErrorMessage(problem: problem.kind.uri, status: problem.status.code, detail: detail)
        try await outbound.write(.text(FraudFeed.json(message)))
        if problem.status == .serviceUnavailable {
            try await outbound.close(.unknown(1013), reason: problem.kind.rawValue)  // 1013: try again later
        } else {
            try await outbound.close(.policyViolation, reason: problem.kind.rawValue)
        }
    }
}
