import Foundation
import Hummingbird
import NIOCore
import ScoreboardCore

/// The gateway's request context: Hummingbird's core context plus the peer's address (for per-IP rate limits).
public struct ScoreboardRequestContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }

    /// The client's IP without port, `unknown` when the transport has none.
    public var clientIP: String { remoteAddress?.ipAddress ?? "unknown" }
}

extension Timestamp {
    /// The wall clock, for the roles (the domain core never reads a clock; callers pass time in).
    public static func now() -> Timestamp {
        Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000))
    }
}
