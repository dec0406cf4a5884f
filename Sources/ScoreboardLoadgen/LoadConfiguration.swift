import Foundation

/// Where a server listens.
public struct LoadTarget: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `http://host:port` or `host:port`.
    public init?(_ text: String) {
        var rest = Substring(text)
        if rest.hasPrefix("http://") { rest = rest.dropFirst(7) }
        while rest.hasSuffix("/") { rest = rest.dropLast() }
        guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]), (1...65_535).contains(port),
              colon > rest.startIndex
        else { return nil }
        self.init(host: String(rest[..<colon]), port: port)
    }

    public var description: String { "http://\(host):\(port)" }
}

/// A player of the generated traffic.
public struct LoadUser: Sendable, Hashable {
    public var id: String
    public var region: String
    public var guild: String
}

/// What `scoreboard loadgen` sends, how fast and for how long.
public struct LoadConfiguration: Sendable {
    public enum Path: String, Sendable, CaseIterable {
        /// A player's flow over HTTP: an action token, then the score (two requests per event).
        case player
        /// A game server's batches: `batchSize` events per request.
        case batch
        /// Queries of the push gateway's API, for players of the run `runID` (populate them first): the top 10 of
        /// `board`, a player's neighbours on it, a player's standing on every board.
        case top, around, standing

        public var isQuery: Bool { self == .top || self == .around || self == .standing }
    }

    public var gateway: LoadTarget
    /// Where subscribers connect (the push gateway); `nil` with no subscribers.
    public var push: LoadTarget?
    public var path: Path = .batch
    /// Events (or queries) per second, sent open loop: each on its schedule whether or not earlier ones were
    /// answered. 0: closed loop, as fast as the connections go (for throughput; latency is then service time).
    public var rate: Double = 1_000
    public var duration: Duration = .seconds(10)
    public var batchSize = 100
    /// Distinct players, drawn with a Zipf distribution of this exponent.
    public var users = 10_000
    public var zipfExponent = 1.1
    public var regions = ["eu", "na", "apac", "latam"]
    public var guilds = 50
    /// The catalog's action names; each event picks one uniformly.
    public var actions: [String]
    /// HTTP connections to the gateway (requests in flight at most).
    public var connections = 32
    /// Subscribers to `board`, each measuring 202 → update.
    public var subscribers = 0
    /// How the subscribers follow the board: server-sent events or a WebSocket.
    public var subscriberTransport = SubscriberTransport.sse
    /// The board stream the subscribers follow, as in `/v1/streams/sse/{board}` (it must change with every event),
    /// and the board the queries read.
    public var board = "all-time/global"
    /// How long after the last send to wait for the subscribers' last updates.
    public var drain: Duration = .seconds(15)
    public var seed: UInt64 = 1
    /// Prefixes the players' ids, so that each run starts its players at zero (and leaves others' boards alone).
    public var runID: String

    public init(gateway: LoadTarget, actions: [String], runID: String) {
        self.gateway = gateway
        self.actions = actions
        self.runID = runID
    }

    public func user(_ index: Int) -> LoadUser {
        LoadUser(id: "lg-\(runID)-\(index)", region: regions[index % regions.count], guild: "g\(index % max(1, guilds))")
    }

    /// Requests per second the schedule makes (a player's event is one flow of two requests).
    var operationsPerSecond: Double { path == .batch ? rate / Double(batchSize) : rate }
}
