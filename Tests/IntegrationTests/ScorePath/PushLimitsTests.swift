import Foundation
import HummingbirdWSClient
import Logging
import NIOCore
import NIOPosix
import ScoreboardCore
import ScoreboardHTTP
import Synchronization
import Testing

extension ScorePath {
/// The push gateway under hostile or ending clients: token lifetime on personal streams, graceful shutdown of open
/// streams, caps and timeouts, query validation and WebSocket limits. Real `scoreboard push` processes.
@Suite(.serialized, .timeLimit(.minutes(4)))
struct PushLimitsTests {
    /// Records SSE events (and comments, as empty events) of one stream.
    final class EventLog: Sendable {
        let events = Mutex<[ServerSentEvent]>([])
        let ended = Atomic<Bool>(false)
        func append(_ event: ServerSentEvent) { events.withLock { $0.append(event) } }
        /// The server closed the stream.
        var isEnded: Bool { ended.load(ordering: .relaxed) }
        var names: [String] { events.withLock { $0.compactMap(\.event) } }
        var count: Int { events.withLock { $0.count } }
        func first(named name: String) -> ServerSentEvent? { events.withLock { $0.first { $0.event == name } } }
    }

    /// Puts a member on the current global board of every window, so snapshots read Redis (these tests start no
    /// worker, so PostgreSQL has no schema for archive reads).
    func seedGlobalBoards(_ world: ScorePathWorld) async throws {
        let now = Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000))
        for window in LeaderboardWindow.allCases {
            let board = BoardKey(window: window, period: window.period(containing: now).key, dimension: .global, value: nil)
            _ = try await world.redis.send(["ZADD", board.redisKey, "5", "alice"])
        }
    }

    func follow(port: Int, path: String, token: String? = nil, into log: EventLog) async throws {
        try await readServerSentEvents(port: port, path: path, headers: token.map { ["Authorization": "Bearer \($0)"] } ?? [:], comments: true) { event in
            log.append(event)
            return true
        }
        log.ended.store(true, ordering: .relaxed)
    }

    /// 1. Bad input: a personal stream whose token is revoked (its jti put on the revocation list) and one whose
    /// token expires. Before, both kept streaming; now each gets `event: end` with the reason and is closed within
    /// a heartbeat (1 s here).
    @Test func personalStreamsEndWhenTheirTokenIsRevokedOrExpires() async throws {
        try await withScorePathWorld(redisDatabase: 22) { world in
            let push = try await world.start("push", arguments: ["--heartbeat-seconds", "1"])
            try await ScorePathTests().waitUntilReady(port: push.port)

            let revokedToken = try await world.token("revoked-user")
            let revoked = EventLog()
            let revokedStream = Task { try await follow(port: push.port, path: "/v1/streams/me", token: revokedToken, into: revoked) }
            try await within(.seconds(10)) { while revoked.count < 1 { try await Task.sleep(for: .milliseconds(20)) } }
            let jti = try #require(GatewayAndQueryTests.claim("jti", of: revokedToken))
            _ = try await world.redis.send(["SET", JWTAuthenticator.revocationKey(tokenID: jti), "1", "EX", "600"])
            // Polled rather than awaited, so that a stream that never ends fails the test instead of hanging it.
            try await within(.seconds(5)) { while !revoked.isEnded { try await Task.sleep(for: .milliseconds(20)) } }
            #expect(revoked.first(named: "end")?.json["reason"] as? String == "token-revoked")
            revokedStream.cancel()

            let expiringToken = try await world.token("expiring-user", expiresIn: 3)
            let expiring = EventLog()
            let started = ContinuousClock.now
            let expiringStream = Task { try await follow(port: push.port, path: "/v1/streams/me", token: expiringToken, into: expiring) }
            defer { expiringStream.cancel() }
            try await within(.seconds(8)) { while !expiring.isEnded { try await Task.sleep(for: .milliseconds(20)) } }
            #expect(expiring.first(named: "end")?.json["reason"] as? String == "token-expired")
            #expect(ContinuousClock.now - started >= .seconds(1), "the stream ended before the token expired")
        }
    }

    /// 7. SIGTERM with an SSE and a WebSocket client connected. Before, the process never exited while the SSE
    /// client stayed; now the SSE client gets `event: end` (shutting-down), the WebSocket a 1001 close, and the
    /// process exits 0 promptly.
    @Test func sigtermEndsOpenStreamsCleanly() async throws {
        try await withScorePathWorld(redisDatabase: 22) { world in
            try await seedGlobalBoards(world)
            let push = try await RoleProcess("push", arguments: ["--heartbeat-seconds", "1"], environment: world.environment, acceptsSIGTERM: true)
            try await ScorePathTests().waitUntilReady(port: push.port)

            let sse = EventLog()
            let sseStream = Task { try await follow(port: push.port, path: "/v1/streams/sse/all-time/global", into: sse) }
            let webSocketSnapshot = Atomic<Bool>(false)
            let webSocket = Task { () -> WebSocketCloseFrame? in
                var logger = Logger(label: "test.ws")
                logger.logLevel = .error
                return try await WebSocketClient.connect(url: "ws://127.0.0.1:\(push.port)/v1/streams/ws", logger: logger) { inbound, outbound, _ in
                    try await outbound.write(.text(#"{"type":"subscribe","board":"all-time:global"}"#))
                    for try await message in inbound.messages(maxSize: 1 << 20) {
                        if case .text(let text) = message, text.contains("\"snapshot\"") { webSocketSnapshot.store(true, ordering: .relaxed) }
                    }
                }
            }
            try await within(.seconds(10)) {
                while sse.first(named: "snapshot") == nil || !webSocketSnapshot.load(ordering: .relaxed) { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(try await push.terminate(within: .seconds(10)) == 0)
            try await within(.seconds(5)) { while !sse.isEnded { try await Task.sleep(for: .milliseconds(20)) } }
            sseStream.cancel()
            #expect(sse.first(named: "end")?.json["reason"] as? String == "shutting-down")
            let close = try await within(.seconds(5)) { try await webSocket.value }
            #expect(close?.closeCode == .goingAway)
        }
    }

    /// 2. Bad input: a third stream (SSE, then a WebSocket) from one address with a cap of two; a socket that sends
    /// half a request head and waits; a 100 KB header. Before: all were held open without an answer. Now: 429
    /// too-many-streams (WebSocket: close 1013), a close after the idle timeout (1 s here), and 431 with a close.
    @Test func streamCapsAndConnectionTimeouts() async throws {
        try await withScorePathWorld(redisDatabase: 22) { world in
            try await seedGlobalBoards(world)
            let push = try await world.start("push", arguments: ["--max-streams-per-address", "2", "--idle-timeout-seconds", "1"])
            try await ScorePathTests().waitUntilReady(port: push.port)

            let held = [EventLog(), EventLog()]
            let holders = held.map { log in Task { try await follow(port: push.port, path: "/v1/streams/sse/all-time/global", into: log) } }
            try await within(.seconds(10)) { while held.contains(where: { $0.count == 0 }) { try await Task.sleep(for: .milliseconds(20)) } }
            let refused = try await HTTPConnection.with(port: push.port) { try await $0.send(.GET, "/v1/streams/sse/all-time/global") }
            #expect(refused.status == 429)
            #expect(refused.problemType == "too-many-streams")
            #expect(refused.headers["retry-after"] != nil)
            // A WebSocket from the same address is closed at once with 1013 (try again later).
            let logger = { var logger = Logger(label: "test.ws"); logger.logLevel = .error; return logger }()
            let close = try await within(.seconds(10)) {
                try await WebSocketClient.connect(url: "ws://127.0.0.1:\(push.port)/v1/streams/ws", logger: logger) { inbound, _, _ in
                    for try await _ in inbound.messages(maxSize: 1 << 16) {}
                }
            }
            #expect(close?.closeCode == .unknown(1013))
            #expect(close?.reason == "too-many-streams")
            // Queries are not streams: still answered.
            let query = try await HTTPConnection.with(port: push.port) { try await $0.send(.GET, "/v1/leaderboards/all-time/global") }
            #expect(query.status == 200)
            for holder in holders { holder.cancel() }

            // Half a request head, then silence: closed by the server.
            let closed = try await within(.seconds(10)) { try await RawSocket.closesAfterSending("GET /health HTTP/1.1\r\nHost: x\r\n", port: push.port) }
            #expect(closed)

            // A 100 KB header: 431, then a close.
            let huge = "GET /health HTTP/1.1\r\nHost: x\r\nX-Filler: " + String(repeating: "a", count: 100_000) + "\r\n\r\n"
            let answer = try await within(.seconds(10)) { try await RawSocket.firstLine(afterSending: huge, port: push.port) }
            #expect(answer == "HTTP/1.1 431 Request Header Fields Too Large")
        }
    }

    /// 3 and 8. Bad input on the query API: unknown regions and guilds, periods that are empty, malformed or not begun,
    /// out-of-range limit/offset/radius, percent-encoded ids. Before: an unknown region or a future period ran a
    /// PostgreSQL aggregation (here: 500, there is no schema). Now: an empty board or 404 without a query, 400
    /// problem+json for malformed values, `%3A` decoded.
    @Test func queryParametersAreValidated() async throws {
        try await withScorePathWorld(redisDatabase: 22) { world in
            try await seedGlobalBoards(world)
            let push = try await world.start("push")
            try await ScorePathTests().waitUntilReady(port: push.port)
            let board = BoardKey(window: .allTime, period: "all", dimension: .region, value: "eu")
            _ = try await world.redis.send(["ZADD", board.redisKey, "5", "alice"])

            func get(_ path: String) async throws -> HTTPAnswer {
                try await HTTPConnection.with(port: push.port) { try await $0.send(.GET, path) }
            }
            func expect(_ path: String, _ status: Int, _ type: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) async throws {
                let answer = try await get(path)
                #expect(answer.status == status, "\(path)", sourceLocation: sourceLocation)
                if let type {
                    #expect(answer.problemType == type, "\(path)", sourceLocation: sourceLocation)
                    #expect(answer.headers["content-type"] == "application/problem+json", sourceLocation: sourceLocation)
                }
            }
            try await expect("/v1/leaderboards/all-time/region/eu", 200)
            // No worker ran, so PostgreSQL has no schema here: an archive query would fail. Unknown regions and guilds
            // are empty boards read from nothing.
            for path in ["/v1/leaderboards/all-time/region/nowhere", "/v1/leaderboards/daily/guild/0", "/v1/leaderboards/weekly/region/r7?period=2026-W01"] {
                let answer = try await get(path)
                #expect(answer.status == 200, "\(path)")
                #expect((answer.json["members"] as? NSNumber)?.intValue == 0, "\(path)")
            }
            try await expect("/v1/leaderboards/daily/guild/0/around/alice", 404, "not-found")
            try await expect("/v1/leaderboards/daily/region/eu?period=", 400, "invalid-parameter")
            try await expect("/v1/leaderboards/daily/region/eu?period=2026-13-01", 400, "invalid-parameter")
            try await expect("/v1/leaderboards/daily/region/eu?period=2099-01-01", 404, "not-found")
            try await expect("/v1/leaderboards/daily/region/eu?period=2019-01-01", 404, "not-found")
            try await expect("/v1/leaderboards/all-time/global?limit=0", 400, "invalid-parameter")
            try await expect("/v1/leaderboards/all-time/global?limit=1001", 400, "invalid-parameter")
            try await expect("/v1/leaderboards/all-time/global?offset=-1", 400, "invalid-parameter")
            try await expect("/v1/leaderboards/all-time/global?offset=1000001", 400, "invalid-parameter")
            try await expect("/v1/leaderboards/all-time/region/eu/around/alice?radius=101", 400, "invalid-parameter")
            try await expect("/v1/leaderboards/all-time/region/eu/around/alice", 200)
            // Percent-decoded, then checked: `:` is not an identifier character (the gateway refuses it too).
            try await expect("/v1/leaderboards/all-time/global/around/%3Aalice", 400, "invalid-parameter")
            try await expect("/v1/users/a%20b/standing", 400, "invalid-parameter")
            try await expect("/v1/streams/sse/daily/global?since=x", 400, "invalid-parameter")
        }
    }

    /// 9. Bad input on the WebSocket: more boards than a connection may follow (2 here), then a 10 KB message.
    /// Before: unlimited subscriptions (each a snapshot query) and 16 KB messages. Now: `too-many-subscriptions`,
    /// then a 1009 close for the oversized message.
    @Test func webSocketSubscriptionAndFrameLimits() async throws {
        try await withScorePathWorld(redisDatabase: 22) { world in
            try await seedGlobalBoards(world)
            let push = try await world.start("push", arguments: ["--max-subscriptions-per-connection", "2"])
            try await ScorePathTests().waitUntilReady(port: push.port)
            let messages = Mutex<[String]>([])
            let logger = { var logger = Logger(label: "test.ws"); logger.logLevel = .error; return logger }()
            let close = try await within(.seconds(20)) {
                try await WebSocketClient.connect(url: "ws://127.0.0.1:\(push.port)/v1/streams/ws", logger: logger) { inbound, outbound, _ in
                    for board in ["all-time:global", "daily:global", "weekly:global"] {
                        try await outbound.write(.text(#"{"type":"subscribe","board":"\#(board)"}"#))
                    }
                    var sentLarge = false
                    for try await message in inbound.messages(maxSize: 1 << 20) {
                        guard case .text(let text) = message else { continue }
                        messages.withLock { $0.append(text) }
                        if text.contains("too-many-subscriptions") && !sentLarge {
                            sentLarge = true
                            try await outbound.write(.text(#"{"type":"subscribe","board":""# + String(repeating: "x", count: 10_000) + #""}"#))
                        }
                    }
                }
            }
            let received = messages.withLock { $0 }
            #expect(received.filter { $0.contains("\"snapshot\"") }.count == 2)
            #expect(received.contains { $0.contains("too-many-subscriptions") })
            #expect(close?.closeCode == .messageTooLarge)
        }
    }
}
}

/// Plain sockets, for requests no HTTP client would send.
enum RawSocket {
    /// Connects, sends `text`, then reads until the server closes; true when it did (a read of 0 bytes).
    static func closesAfterSending(_ text: String, port: Int) async throws -> Bool {
        try await exchange(text, port: port) { _ in false } == nil
    }

    /// The first line the server answers, or nil when it closed without answering.
    static func firstLine(afterSending text: String, port: Int) async throws -> String? {
        try await exchange(text, port: port) { received in received.contains("\r\n") }.map { String($0.split(separator: "\r\n").first ?? "") }
    }

    /// Sends `text` and reads until `isEnough` says so (returns what was read) or the server closes (returns what was
    /// read, or nil if nothing).
    static func exchange(_ text: String, port: Int, isEnough: @escaping @Sendable (String) -> Bool) async throws -> String? {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
            }
        return try await channel.executeThenClose { inbound, outbound in
            // A server may close while a large request is still being written: that is an answer too.
            try? await outbound.write(ByteBuffer(string: text))
            var received = ""
            do {
                for try await buffer in inbound {
                    received += String(buffer: buffer)
                    if isEnough(received) { return received }
                }
            } catch {
                // Reset by the server: a close.
            }
            return received.isEmpty ? nil : received
        }
    }
}
