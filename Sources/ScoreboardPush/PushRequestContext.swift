import Hummingbird
import HummingbirdWebSocket
import NIOCore

/// The push gateway's request context: WebSocket-capable, with the peer's address and the connection (an SSE
/// stream closes it when a write to a client that stopped reading stalls).
public struct PushRequestContext: RequestContext, WebSocketRequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let webSocket: WebSocketHandlerReference<PushRequestContext>
    public let remoteAddress: SocketAddress?
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        webSocket = .init()
        remoteAddress = source.channel.remoteAddress
        channel = source.channel
    }
}
