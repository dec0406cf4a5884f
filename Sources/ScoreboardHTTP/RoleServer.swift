import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import ServiceLifecycle

/// Where an HTTP role listens, and what it allows one connection. Part of every role's configuration.
public struct HTTPServerSettings: Sendable {
    public var host: String
    /// 0: any free port (the bound one is printed at start).
    public var port: Int
    public var limits: HTTPServerLimits

    public init(host: String = "127.0.0.1", port: Int, limits: HTTPServerLimits = HTTPServerLimits()) {
        self.host = host
        self.port = port
        self.limits = limits
    }
}

/// What every HTTP role allows one connection: how long it may sit idle (no request, or a request head that never
/// completes: slow-header clients are closed too, since the idle clock only restarts on a complete part), and how
/// large a request head may be (past it the parser fails and the connection gets a 400 and is closed).
/// A response being written (an SSE stream) is never idle.
public struct HTTPServerLimits: Sendable, Equatable {
    public var idleTimeout: Duration = .seconds(30)
    public var maxHeaderSize = 16 * 1024
    public var maxHeaderCount = 100

    public init() {}

    public var http1: HTTP1Channel.Configuration {
        let seconds = idleTimeout.components
        return HTTP1Channel.Configuration(
            idleTimeout: .nanoseconds(seconds.seconds * 1_000_000_000 + seconds.attoseconds / 1_000_000_000),
            httpDecoderConfiguration: .init(maxHeaderFieldSize: maxHeaderSize, maxHeaderListSize: maxHeaderSize, maxHeaderFieldCount: maxHeaderCount))
    }
}

extension HTTPServerSettings {
    /// A role's Hummingbird application: `router` behind these limits (or behind `server`, for a role that needs its
    /// own channel setup), with the role's `services` run before the server starts and stopped after it has drained
    /// (Hummingbird runs them in the application's own group, the server last). The bound address is printed on
    /// stdout, so that scripts and tests can find a port chosen by the system.
    public func application<Context: RequestContext>(
        router: Router<Context>, name: String, services: [any Service] = [], server: HTTPServerBuilder? = nil, logger: Logger
    ) -> Application<RouterResponder<Context>> where Context.Source == ApplicationRequestContextSource {
        let host = self.host
        return Application(
            router: router, server: server ?? .http1(configuration: limits.http1),
            configuration: .init(address: .hostname(host, port: port), serverName: name),
            services: services,
            onServerRunning: { channel in
                FileHandle.standardOutput.write(Data("\(name) listening on http://\(host):\(channel.localAddress?.port ?? 0)\n".utf8))
            },
            logger: logger)
    }
}
