import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import JWTKit
import Logging
import NIOCore
import ScoreboardCore
import ScoreboardDefinitions
import ScoreboardGateway
import ScoreboardHTTP
import ScoreboardRedis
import Synchronization

/// The gateway in process, built by `buildGateway` on its ports: memory ports (the default), or the real Redis adapters
/// (the shared local Redis, database 21, or a closed port for outage tests) beside a memory broker. Users are unique
/// per test, so tests need not flush anything.
struct GatewayHarness {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let logger = Logger(label: "gateway-tests")

    /// What the ingest state and revocations run on.
    enum Backing {
        case memory
        case redis(RedisConfiguration)
    }

    let configuration: GatewayConfiguration
    let ports: GatewayPorts
    let publisher: MemoryScoreEventPublisher
    let rejections: MemoryRejectionPublisher
    /// Set for ``Backing/memory``.
    let memoryState: MemoryIngestState?
    let memoryRevocations: MemoryTokenRevocations?
    /// Set for ``Backing/redis(_:)``.
    let redisPool: RedisConnectionPool?
    let clock: TestClock
    let jwks: JWKSFile
    let actionKeys: ActionTokenKeys
    let tag = UUID().uuidString.prefix(8).lowercased()

    /// The Redis pool of a ``Backing/redis(_:)`` harness.
    var redis: RedisConnectionPool { redisPool! }

    /// The shared local Redis (`SCOREBOARD_REDIS_URL`), database 21.
    static func localRedis() throws -> RedisConfiguration {
        var configuration = try RedisConfiguration(url: ProcessInfo.processInfo.environment["SCOREBOARD_REDIS_URL"] ?? "redis://127.0.0.1:16379")
        configuration.database = 21
        return configuration
    }

    /// A Redis address where nothing listens: every command fails to connect.
    static func closedRedis() -> RedisConfiguration {
        var configuration = RedisConfiguration(host: "127.0.0.1", port: 1)
        configuration.connectTimeout = .seconds(1)
        return configuration
    }

    /// The error a memory port throws to play a Redis that is down (what the real adapter throws then).
    static let redisDown = RedisError(code: .connection, reason: "Connection refused")

    /// - Parameter checksRevocations: `false` keeps the revocation list in memory (and up), so a test reaches the
    ///   routes' own use of the ingest state.
    /// - Parameter wrapState: what the gateway is given instead of the ingest state (a wrapper that watches it).
    init(
        _ backing: Backing = .memory, checksRevocations: Bool = true, configure: (inout GatewayConfiguration) -> Void = { _ in },
        wrapState: (any IngestState) -> any IngestState = { $0 }
    ) throws {
        let clock = TestClock()
        self.clock = clock
        publisher = MemoryScoreEventPublisher()
        rejections = MemoryRejectionPublisher()
        jwks = try JWKSFile.parse(Data(JWKSFile.makeLocal(kid: "hs-test").utf8), origin: "test")
        actionKeys = try ActionTokenKeys.parse(Data(ActionTokenKeys.makeLocal(kid: "a1").utf8), origin: "test")
        let catalog = try PipelineCatalog.load(directory: Self.root.appendingPathComponent("pipelines"))
        let requests = try RequestSchemas.load(directory: Self.root.appendingPathComponent("topics/requests"))
        var configuration = GatewayConfiguration(
            server: HTTPServerSettings(host: "127.0.0.1", port: 0), actions: catalog.actions, actionTokenKeys: actionKeys,
            schemas: .init(
                scoreRequest: requests[RequestSchemas.scoreRequest], batchRequest: requests[RequestSchemas.batchRequest],
                revocationRequest: requests[RequestSchemas.revocationRequest]),
            jwks: jwks)
        configuration.options.perIPPerMinute = 1_000_000
        configure(&configuration)
        self.configuration = configuration
        let state: any IngestState, revocations: any TokenRevocations
        switch backing {
        case .memory:
            let memoryState = MemoryIngestState(clock: clock.now), memoryRevocations = MemoryTokenRevocations(clock: clock.now)
            (self.memoryState, self.memoryRevocations, redisPool) = (memoryState, memoryRevocations, nil)
            (state, revocations) = (memoryState, memoryRevocations)
        case .redis(let redisConfiguration):
            let redis = RedisConnectionPool(configuration: redisConfiguration, logger: Self.logger)
            let memoryRevocations = checksRevocations ? nil : MemoryTokenRevocations(clock: clock.now)
            (self.memoryState, self.memoryRevocations, redisPool) = (nil, memoryRevocations, redis)
            state = RedisIngestState(redis: redis)
            revocations = memoryRevocations ?? RedisTokenRevocations(redis: redis)
        }
        ports = GatewayPorts(scoreEvents: publisher, rejections: rejections, state: wrapState(state), revocations: revocations)
    }

    func close() { redisPool?.close() }

    /// A user id unique to this harness.
    func user(_ name: String) -> String { "\(name)-\(tag)" }

    func token(_ user: String, role: Role = .player, region: String? = nil, guild: String? = nil) async throws -> String {
        let now = Date(timeIntervalSince1970: Double(clock.now().millisecondsSinceEpoch) / 1000)
        let claims = ScoreboardClaims(
            subject: user, role: role, region: region, guild: guild, issuer: "scoreboard", audience: "scoreboard", issuedAt: now,
            expiresAt: now.addingTimeInterval(600))
        return try await JWTAuthenticator.sign(claims, keys: try await jwks.keyCollection(), kid: "hs-test")
    }

    /// Runs `body` with a client of the gateway built by `buildGateway` (`.live`: over a real loopback socket, so the
    /// peer is 127.0.0.1). Its services (the publisher, the rejection log) run for the duration.
    func withClient<T: Sendable>(
        _ setup: TestingSetup = .router, _ body: @escaping @Sendable (any TestClientProtocol) async throws -> T
    ) async throws -> T {
        let app = try await buildGateway(configuration: configuration, ports: ports, logger: Self.logger, clock: clock.now)
        return try await app.test(setup) { client in try await body(client) }
    }

    /// A `POST /v1/scores` body with a fresh action token for `user`.
    func scoreBody(user: String, action: String = "pvp-win", key: String = UUID().uuidString.lowercased()) -> String {
        let token = ActionToken.mint(userID: user, action: action, now: clock.now(), keys: actionKeys)
        return #"{"action":"\#(action)","actionToken":"\#(token)","idempotencyKey":"\#(key)"}"#
    }
}

/// The time the gateway and its memory ports read: the wall clock when the harness starts, then moved only by tests.
final class TestClock: Sendable {
    private let time = Mutex(Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000)))

    /// The current time, as a closure the gateway and the ports read.
    var now: @Sendable () -> Timestamp { { self.read() } }

    func read() -> Timestamp { time.withLock { $0 } }

    func advance(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        time.withLock { $0.millisecondsSinceEpoch += seconds * 1000 + attoseconds / 1_000_000_000_000_000 }
    }
}

// What the executable declares (GatewayPortAdapters.swift), declared again for the tests of the real adapter.
extension RedisIngestState: IngestState {}

extension TestClientProtocol {
    /// POSTs `json` (a string, sent as is) with a bearer token.
    func post(_ uri: String, token: String?, json: String) async throws -> TestResponse {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let token { headers[.authorization] = "Bearer \(token)" }
        return try await execute(uri: uri, method: .post, headers: headers, body: ByteBuffer(string: json))
    }

    func send(_ method: HTTPRequest.Method, _ uri: String, token: String?) async throws -> TestResponse {
        var headers: HTTPFields = [:]
        if let token { headers[.authorization] = "Bearer \(token)" }
        return try await execute(uri: uri, method: method, headers: headers)
    }
}

extension TestResponse {
    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView))) as? [String: Any] ?? [:] }
    /// The last segment of a problem's `type`.
    var problemType: String? { (json["type"] as? String).map { String($0.split(separator: "/").last ?? "") } }
    var isProblem: Bool { headers[.contentType] == Problem.contentType }
    /// For a batch answer: each item's status, and its problem type if any.
    var batchResults: [(status: Int, problem: String?, eventID: String?)] {
        (json["results"] as? [[String: Any]] ?? []).map { item in
            let problem = (item["problem"] as? [String: Any])?["type"] as? String
            return (
                (item["status"] as? NSNumber)?.intValue ?? 0, problem.map { String($0.split(separator: "/").last ?? "") },
                (item["accepted"] as? [String: Any])?["eventId"] as? String
            )
        }
    }
}
