import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import ScoreboardHTTP

/// Limits on a connection's first request head, enforced on the raw bytes before any HTTP parsing.
///
/// The WebSocket-upgrade pipeline parses the first request before Hummingbird's idle handler and error handling are
/// installed, so a client that sends half a head and waits, or a 100 KB header, was held open without an answer.
/// This guard closes a connection whose first head is not complete within `timeout`, and answers a head larger than
/// `maxSize` with 431 problem+json and a close. Later requests on the connection are Hummingbird's (its idle timeout
/// and decoder limits).
public struct RequestHeadLimits: Sendable {
    public var timeout: Duration
    public var maxSize: Int

    public init(timeout: Duration, maxSize: Int) {
        self.timeout = timeout
        self.maxSize = maxSize
    }
}

extension PushGateway {
    /// The push gateway's HTTP server: HTTP/1.1 with WebSocket upgrades on `/v1/streams/ws` and on the fraud review
    /// feed's `/v1/admin/fraud-flags/ws`, behind the request head guard.
    public func httpServer(
        http1: HTTP1Channel.Configuration, webSocket: WebSocketServerConfiguration, headLimits: RequestHeadLimits
    ) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in
            let upgrading = HTTP1WebSocketUpgradeChannel(responder: responder, configuration: .init(http1: http1, ws: webSocket)) {
                head, channel, _ in
                let path = head.path?.split(separator: "?").first
                if path.map(String.init) == Self.fraudFeedWebSocketPath {
                    // Admitted once upgraded: a refusal here could only be a bare 400 (see `fraudFeedWebSocket`).
                    let request = Request(head: head, body: .init(buffer: ByteBuffer()))
                    return .upgrade([:]) { inbound, outbound, _ in
                        try await self.fraudFeedWebSocket(inbound: inbound, outbound: outbound, request: request)
                    }
                }
                guard path == "/v1/streams/ws" else { return .dontUpgrade }
                // An address at its cap is upgraded and closed at once with 1013 (see `webSocket`): a refused upgrade
                // would reach the client as a bare 400 from the upgrade machinery.
                let address = channel.remoteAddress?.ipAddress ?? "unknown"
                let request = Request(head: head, body: .init(buffer: ByteBuffer()))
                return .upgrade([:]) { inbound, outbound, _ in
                    try await self.webSocket(inbound: inbound, outbound: outbound, request: request, address: address, channel: channel)
                }
            }
            return RequestHeadGuardedChannel(inner: upgrading, limits: headLimits)
        }
    }
}

/// A child channel with the ``RequestHeadGuard`` in front of `inner`'s pipeline.
struct RequestHeadGuardedChannel<Inner: ServerChildChannel>: ServerChildChannel {
    typealias Value = Inner.Value
    let inner: Inner
    let limits: RequestHeadLimits

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let limits = self.limits
        return channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(RequestHeadGuard(limits: limits))
        }.flatMap { inner.setup(channel: channel, logger: logger) }
    }

    func handle(value: Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }
}

/// Watches the bytes of a connection's first request head: closes the connection when the head is not complete
/// (`\r\n\r\n`) within the timeout, answers 431 when it is larger than allowed; after the head, passes bytes on
/// untouched.
final class RequestHeadGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    let limits: RequestHeadLimits
    private var headBytes = 0
    /// The last bytes seen, so that a `\r\n\r\n` split across reads is found.
    private var tail: [UInt8] = []
    private var isHeadComplete = false
    private var timer: Scheduled<Void>?

    init(limits: RequestHeadLimits) {
        self.limits = limits
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { startTimer(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
    }

    func channelActive(context: ChannelHandlerContext) {
        startTimer(context)
        context.fireChannelActive()
    }

    private func startTimer(_ context: ChannelHandlerContext) {
        guard timer == nil, !isHeadComplete else { return }
        let nanoseconds = limits.timeout.components.seconds * 1_000_000_000 + limits.timeout.components.attoseconds / 1_000_000_000
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(nanoseconds)) { [self] in
            if !isHeadComplete { context.close(promise: nil) }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !isHeadComplete else {
            context.fireChannelRead(data)
            return
        }
        let buffer = unwrapInboundIn(data)
        var window = tail
        window.append(contentsOf: buffer.readableBytesView)
        if let end = Self.headEnd(in: window) {
            headBytes += end - tail.count
            isHeadComplete = true
            timer?.cancel()
        } else {
            headBytes += buffer.readableBytes
            tail = Array(window.suffix(3))
        }
        if headBytes > limits.maxSize {
            reject(context)
            return
        }
        context.fireChannelRead(data)
    }

    /// The index just past the first `\r\n\r\n`, if any.
    static func headEnd(in bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for index in 3..<bytes.count where bytes[index] == 10 && bytes[index - 1] == 13 && bytes[index - 2] == 10 && bytes[index - 3] == 13 {
            return index + 1
        }
        return nil
    }

    private func reject(_ context: ChannelHandlerContext) {
        isHeadComplete = true  // pass nothing on from now
        timer?.cancel()
        let body = JSONBodyValueEncoding.problem(
            type: Problem.Kind.headerTooLarge.uri, title: Problem.Kind.headerTooLarge.title, status: 431,
            detail: "request heads may have at most \(limits.maxSize) bytes")
        let response = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: \(Problem.contentType)\r\n"
            + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
        context.writeAndFlush(NIOAny(ByteBuffer(string: response))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}

/// The problem body the guard writes by hand (it answers before Hummingbird's response machinery exists).
enum JSONBodyValueEncoding {
    static func problem(type: String, title: String, status: Int, detail: String) -> String {
        #"{"detail":"\#(detail)","status":\#(status),"title":"\#(title)","type":"\#(type)"}"#
    }
}
