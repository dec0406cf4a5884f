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
@testable import ScoreboardKafka
import ScoreboardRedis
import Synchronization

/// The gateway's router in process, on Redis (the shared local one, database 8, or a closed port for outage tests)
/// and a fake broker. Users are unique per test, so tests need not flush anything.
struct GatewayHarness {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let logger = Logger(label: "gateway-tests")

    let ingest: ScoreIngest
    let publisher: FakePublisher
    let rejections: RejectionLog
    let redis: RedisConnectionPool
    let jwks: JWKSFile
    let actionKeys: ActionTokenKeys
    let tag = UUID().uuidString.prefix(8).lowercased()

    /// The shared local Redis (`SCOREBOARD_REDIS_URL`), database 8.
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

    /// - Parameter checksRevocations: `false` leaves Redis out of authentication, so a test reaches the routes' own
    ///   use of it.
    init(
        redis redisConfiguration: RedisConfiguration, checksRevocations: Bool = true, configure: (inout GatewayConfiguration) -> Void = { _ in }
    ) async throws {
        redis = RedisConnectionPool(configuration: redisConfiguration, logger: Self.logger)
        publisher = FakePublisher()
        let producer = try KafkaProducer(configuration: .init(client: .init(bootstrapServers: ["127.0.0.1:1"])), logger: Self.logger)
        rejections = RejectionLog(producer: producer, topic: "unused", logger: Self.logger)
        jwks = try JWKSFile.parse(Data(JWKSFile.makeLocal(kid: "hs-test").utf8), origin: "test")
        actionKeys = try ActionTokenKeys.parse(Data(ActionTokenKeys.makeLocal(kid: "a1").utf8), origin: "test")
        let catalog = try PipelineCatalog.load(directory: Self.root.appendingPathComponent("pipelines"))
        let requests = try RequestSchemas.load(directory: Self.root.appendingPathComponent("topics/requests"))
        let topics = try TopicCatalog.load(directory: Self.root.appendingPathComponent("topics"))
        var configuration = GatewayConfiguration()
        configuration.perIPPerMinute = 1_000_000
        configure(&configuration)
        ingest = ScoreIngest(
            configuration: configuration, actions: catalog.actions, actionTokenKeys: actionKeys,
            schemas: .init(
                scoreRequest: requests[RequestSchemas.scoreRequest], batchRequest: requests[RequestSchemas.batchRequest],
                revocationRequest: requests[RequestSchemas.revocationRequest],
                scoreEvent: try topics.valueSchema(of: TopicNames.scoreEventsBase)!),
            authenticator: try await JWTAuthenticator(jwks: jwks, configuration: .init(), redis: checksRevocations ? redis : nil), redis: redis, publisher: publisher,
            rejections: rejections, logger: Self.logger)
    }

    func close() { redis.close() }

    /// A user id unique to this harness.
    func user(_ name: String) -> String { "\(name)-\(tag)" }

    func token(_ user: String, role: Role = .player, region: String? = nil, guild: String? = nil) async throws -> String {
        let now = Date()
        let claims = ScoreboardClaims(
            subject: user, role: role, region: region, guild: guild, issuer: "scoreboard", audience: "scoreboard", issuedAt: now,
            expiresAt: now.addingTimeInterval(600))
        return try await JWTAuthenticator.sign(claims, keys: try await jwks.keyCollection(), kid: "hs-test")
    }

    /// Runs `body` with a client of the router (`.live`: over a real loopback socket, so the peer is 127.0.0.1).
    func withClient<T: Sendable>(
        _ setup: TestingSetup = .router, _ body: @escaping @Sendable (any TestClientProtocol) async throws -> T
    ) async throws -> T {
        let router = GatewayRoutes.router(ingest: ingest, operations: OperationsRoutes(registry: .init()) { [:] })
        return try await Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)), logger: Self.logger)
            .test(setup) { client in try await body(client) }
    }

    /// A `POST /v1/scores` body with a fresh action token for `user`.
    func scoreBody(user: String, action: String = "pvp-win") -> String {
        let token = ActionToken.mint(userID: user, action: action, now: .now(), keys: actionKeys)
        return #"{"action":"\#(action)","actionToken":"\#(token)","idempotencyKey":"\#(UUID().uuidString.lowercased())"}"#
    }
}

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

/// A broker that acknowledges (or refuses) at once and remembers what it was given.
final class FakePublisher: ScoreEventPublishing {
    enum Mode { case acknowledge, refuse }
    private let state = Mutex<(mode: Mode, messages: [KafkaProducerMessage], offset: Int64)>((.acknowledge, [], 0))

    var mode: Mode {
        get { state.withLock { $0.mode } }
        set { state.withLock { $0.mode = newValue } }
    }

    var published: [KafkaProducerMessage] { state.withLock { $0.messages } }

    func publish(
        _ messages: [KafkaProducerMessage], deadline: Duration,
        settle: @escaping @Sendable ([Result<KafkaDeliveryReport, KafkaError>]) async -> Void
    ) async -> [Result<KafkaDeliveryReport, KafkaError>]? {
        let results: [Result<KafkaDeliveryReport, KafkaError>] = state.withLock { state in
            messages.map { message in
                guard state.mode == .acknowledge else { return .failure(KafkaError.shuttingDown) }
                state.messages.append(message)
                state.offset += 1
                return .success(KafkaDeliveryReport(topic: message.topic, partition: 0, offset: state.offset))
            }
        }
        await settle(results)
        return results
    }
}
