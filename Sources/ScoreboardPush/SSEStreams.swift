import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import ScoreboardCore
import ScoreboardHTTP

// Server-sent events: board streams and the personal channel.
extension PushGateway {
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
        struct Update: Encodable { var type = "update"; var stream: String; var sequence: Int64; var update: UpdateBody }
        struct Snapshot: Encodable { var type = "snapshot"; var stream: String; var sequence: Int64; var page: BoardPage }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data: Data?
        switch item {
        case .update(let update): data = try? encoder.encode(Update(stream: update.streamID, sequence: update.sequence, update: UpdateBody(update.changes)))
        case .snapshot(let stream, let sequence, let page): data = try? encoder.encode(Snapshot(stream: stream, sequence: sequence, page: page))
        }
        return String(decoding: data ?? Data("{}".utf8), as: UTF8.self)
    }
}

/// The `update` of an update frame: the board period and its changed members (one for a version 1 message, and on
/// a personal channel the subscriber's own entry). Clients apply each member as they applied a single update before.
struct UpdateBody: Encodable {
    var board: String
    var window: LeaderboardWindow
    var period: String
    var dimension: BoardDimension
    var dimensionValue: String?
    var members: [BoardChanges.Member]

    init(_ changes: BoardChanges) {
        board = changes.board
        window = changes.window
        period = changes.period
        dimension = changes.dimension
        dimensionValue = changes.dimensionValue
        members = changes.members
    }
}
