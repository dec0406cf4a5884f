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
        Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache", HTTPField.Name("X-Accel-Buffering")!: "no"],
            body: ResponseBody { [self] writer in
                // The stream runs in the connection's own task: no task of its own, its timer on the event loop.
                let watchdog = WriteWatchdog()
                try await withOpenStream(transport: "sse", buffer: buffer, ticket: ticket) {
                    try await watchdog.watching { try await writer.write(ByteBuffer(staticString: ": connected\n\n")) }
                    try await pump(buffer, identity: identity, channel: channel, watchdog: watchdog) { output in
                        let event: ByteBuffer
                        switch output {
                        case .heartbeat: event = ByteBuffer(string: ": heartbeat \(now().millisecondsSinceEpoch)\n\n")
                        case .items(let items):
                            // The updates' events are shared bytes (encoded once for every subscriber); one flush.
                            try await watchdog.watching { try await writer.write(contentsOf: items.map(Self.sseEvent)) }
                            return
                        case .overflowed: event = ByteBuffer(staticString: "event: overflow\ndata: {\"type\":\"overflow\"}\n\n")
                        case .end(let end?): event = ByteBuffer(string: "event: end\ndata: {\"reason\":\"\(end.rawValue)\",\"type\":\"end\"}\n\n")
                        case .end(nil): return
                        }
                        try await watchdog.watching { try await writer.write(event) }
                    }
                }
                try await writer.finish(nil)
            })
    }

    /// An item as one SSE event: an update's shared bytes, or a snapshot encoded for its one subscriber.
    static func sseEvent(_ item: OutboundItem) -> ByteBuffer {
        switch item {
        case .update(let update): update.frame.sse
        case .snapshot(_, let sequence, _): ByteBuffer(string: "id: \(sequence)\nevent: snapshot\ndata: \(json(item))\n\n")
        case .achievement(let achievement): achievement.frame.sse
        }
    }

    /// An item's JSON as a WebSocket text message carries it: an update's shared bytes, or a snapshot's own.
    static func jsonBytes(_ item: OutboundItem) -> ByteBuffer {
        switch item {
        case .update(let update): update.frame.json
        case .snapshot: ByteBuffer(string: json(item))
        case .achievement(let achievement): achievement.frame.json
        }
    }

    /// The JSON a client receives for an item, on either transport.
    static func json(_ item: OutboundItem) -> String {
        struct Snapshot: Encodable { var type = "snapshot"; var stream: String; var sequence: Int64; var page: BoardPage }
        switch item {
        case .update(let update):
            return String(buffer: update.frame.json)
        case .achievement(let achievement):
            return String(buffer: achievement.frame.json)
        case .snapshot(let stream, let sequence, let page):
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let data = try? encoder.encode(Snapshot(stream: stream, sequence: sequence, page: page))
            return String(decoding: data ?? Data("{}".utf8), as: UTF8.self)
        }
    }
}
