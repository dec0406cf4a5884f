import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// How the load generator's subscribers follow their board.
public enum SubscriberTransport: String, Sendable, CaseIterable, Codable {
    /// `GET /v1/streams/sse/{board}`: server-sent events.
    case sse
    /// `/v1/streams/ws`, one `subscribe` command for the board.
    case ws
}

/// A WebSocket subscriber of the load generator: upgrades `/v1/streams/ws` (SwiftNIO directly, as the HTTP
/// connections do), subscribes to one board and reports every member total an update frame carries, as the SSE
/// subscriber does.
enum WebSocketSubscriber {
    enum Upgrade {
        case upgraded(NIOAsyncChannel<WebSocketFrame, WebSocketFrame>)
        case refused
    }

    /// What one text message from the server means to a subscriber.
    enum Message: Equatable {
        /// The subscription's snapshot: the stream is open, later updates reach it.
        case snapshot
        /// Member totals of an update frame.
        case update([MemberTotal])
        /// The server refused a command (`{type: error, problem, detail}`).
        case error(String)
        /// Heartbeats and anything else.
        case other
    }

    struct MemberTotal: Equatable {
        var userID: String
        var total: Int64
    }

    /// The subscribe command for a board given as in the SSE path (`all-time/global`, `daily/region/eu`).
    static func subscribeCommand(board: String) -> String {
        let id = board.split(separator: "/").joined(separator: ":")
        let data = try? JSONSerialization.data(withJSONObject: ["type": "subscribe", "board": id], options: [.sortedKeys])
        return String(decoding: data ?? Data(), as: UTF8.self)
    }

    /// Reads one text message.
    static func message(_ text: ByteBuffer) -> Message {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.readableBytesView)) as? [String: Any] else { return .other }
        switch object["type"] as? String {
        case "snapshot": return .snapshot
        case "update": return .update(SubscriberStream.memberTotals(in: object).map { MemberTotal(userID: $0.0, total: $0.1) })
        case "error": return .error("\(object["problem"] ?? "") \(object["detail"] ?? "")")
        default: return .other
        }
    }

    /// Follows `board` until cancelled or the server closes.
    /// - Throws: ``LoadError`` when the upgrade is refused, the server refuses the subscription or closes.
    static func follow(target: LoadTarget, board: String, progress: SubscriberProgress) async throws {
        let upgrade = try await connect(target)
        guard case .upgraded(let channel) = try await upgrade.get() else {
            throw LoadError("subscriber: \(target)/v1/streams/ws was not upgraded to a WebSocket")
        }
        try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(masked(.text, ByteBuffer(string: subscribeCommand(board: board))))
            var fragments = ByteBuffer()
            for try await frame in inbound {
                let arrived = ContinuousClock.now
                switch frame.opcode {
                case .text, .continuation:
                    var data = frame.data
                    fragments.writeBuffer(&data)
                    guard frame.fin else { continue }
                    defer { fragments.clear() }
                    switch message(fragments) {
                    case .snapshot: progress.markConnected()
                    case .update(let members):
                        progress.markConnected()
                        for member in members { progress.saw(userID: member.userID, total: member.total, at: arrived) }
                    case .error(let problem): throw LoadError("subscriber: the server refused the subscription to \(board): \(problem)")
                    case .other: break
                    }
                case .ping:
                    try await outbound.write(masked(.pong, frame.data))
                case .connectionClose:
                    throw LoadError("subscriber: the server closed the WebSocket")
                default:
                    break
                }
                if Task.isCancelled { return }
            }
        }
    }

    /// A client frame: RFC 6455 wants every frame from a client masked (the encoder applies the key).
    static func masked(_ opcode: WebSocketOpcode, _ data: ByteBuffer) -> WebSocketFrame {
        WebSocketFrame(fin: true, opcode: opcode, maskKey: .random(), data: data)
    }

    /// Connects and asks for the upgrade; the future says whether the server upgraded.
    private static func connect(_ target: LoadTarget) async throws -> EventLoopFuture<Upgrade> {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(5))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: target.host, port: target.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    // A snapshot or a busy board's update can be far larger than NIO's default 16 KiB frame.
                    let upgrader = NIOTypedWebSocketClientUpgrader<Upgrade>(maxFrameSize: 1 << 24) { channel, _ in
                        channel.eventLoop.makeCompletedFuture {
                            .upgraded(try NIOAsyncChannel<WebSocketFrame, WebSocketFrame>(wrappingChannelSynchronously: channel))
                        }
                    }
                    var headers = HTTPHeaders()
                    headers.add(name: "Host", value: target.host)
                    headers.add(name: "Content-Length", value: "0")
                    let configuration = NIOTypedHTTPClientUpgradeConfiguration(
                        upgradeRequestHead: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/v1/streams/ws", headers: headers),
                        upgraders: [upgrader],
                        notUpgradingCompletionHandler: { channel in channel.eventLoop.makeCompletedFuture { .refused } })
                    return try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(
                        configuration: .init(upgradeConfiguration: configuration))
                }
            }
    }
}
