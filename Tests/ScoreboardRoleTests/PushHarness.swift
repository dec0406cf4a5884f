import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import ScoreboardCore
import ScoreboardHTTP
@testable import ScoreboardPush

/// The push gateway in process, on its memory ports: no server, no broker, no sleeps.
struct PushWorld {
    let live = MemoryLiveBoards()
    let archive = MemoryStandingsArchive()
    let updates = MemoryUpdateSource()
    let parts: PushParts

    /// Every window × dimension, top 10, unless `boards` says otherwise.
    static let allBoards = LeaderboardCatalog(
        topN: 10, closedPeriodRetention: [:],
        boards: LeaderboardWindow.allCases.flatMap { window in BoardDimension.allCases.map { BoardDefinition(window: window, dimension: $0) } })

    init(boards: LeaderboardCatalog = PushWorld.allBoards, feed: UpdateFeed.Configuration = .init(), now: Timestamp? = nil) {
        var configuration = PushConfiguration(server: HTTPServerSettings(port: 0), boards: boards, feed: feed)
        configuration.streams.heartbeatInterval = .seconds(60)
        let ports = PushPorts(
            live: live, archive: archive, updates: updates,
            authenticator: Self.authenticator())
        parts = PushParts(configuration: configuration, ports: ports, logger: Logger(label: "test"), now: { now ?? Timestamp.now() })
    }

    /// An authenticator that knows no key (the query and board-stream tests need none).
    static func authenticator() -> JWTAuthenticator {
        JWTAuthenticator(keys: .init(), algorithmsByKeyID: [:], configuration: .init(), redis: nil)
    }

    var feed: UpdateFeed { parts.feed }
    var openStreams: OpenStreams { parts.gateway.openStreams }

    /// Runs `body` against the gateway's router, with the feed running (as `buildPush` runs it).
    func withClient<T: Sendable>(_ body: @escaping @Sendable (any TestClientProtocol) async throws -> T) async throws -> T {
        let app = Application(router: parts.router, services: [parts.feed], logger: Logger(label: "test"))
        return try await app.test(.router) { client in try await body(client) }
    }

    /// Waits until `count` streams are open: their subscriptions are registered with the feed by then.
    func streamsOpen(_ count: Int) async {
        while openStreams.count < count { await Task.yield() }
    }
}

extension BoardKey {
    static func allTime(_ dimension: BoardDimension = .global, _ value: String? = nil) -> BoardKey {
        BoardKey(window: .allTime, period: "all", dimension: dimension, value: value)
    }
}

/// An update of `user` on `board` whose total is `total` (default: its sequence).
func sequenced(_ sequence: Int64, board: BoardKey = .allTime(), user: String = "u", total: Int64? = nil) -> SequencedUpdate {
    SequencedUpdate(sequence: sequence, update: LeaderboardUpdate(board: board, userID: user, total: total ?? sequence, rank: nil))
}

/// The events of an SSE body: (event name, id) of each, in order; comments left out.
func sseEvents(_ body: ByteBuffer) -> [(event: String, id: Int64?)] {
    String(buffer: body).components(separatedBy: "\n\n").compactMap { block in
        var event: String?
        var id: Int64?
        for line in block.split(separator: "\n") {
            if line.hasPrefix("event: ") { event = String(line.dropFirst(7)) }
            if line.hasPrefix("id: ") { id = Int64(line.dropFirst(4)) }
        }
        return event.map { ($0, id) }
    }
}
