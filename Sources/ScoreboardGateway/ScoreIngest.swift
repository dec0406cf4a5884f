import Foundation
import HTTPTypes
import Hummingbird
import Logging
import ScoreboardCore
import ScoreboardHTTP

/// The gateway's request handling, free of routing: authenticate, validate, guard, publish, answer. The handlers are
/// in `ScoreIngest+*.swift`, one concern each; this file holds what they share.
public struct ScoreIngest: Sendable {
    public let configuration: GatewayConfiguration
    let authenticator: JWTAuthenticator
    let state: any IngestState
    let revocations: any TokenRevocations
    let publisher: EventPublisher
    let rejections: RejectionLog
    let logger: Logger
    /// The clock, injectable for tests of expiry.
    let now: @Sendable () -> Timestamp

    var options: GatewayConfiguration.Options { configuration.options }

    init(
        configuration: GatewayConfiguration, authenticator: JWTAuthenticator, ports: GatewayPorts, publisher: EventPublisher,
        rejections: RejectionLog, logger: Logger, now: @escaping @Sendable () -> Timestamp
    ) {
        self.configuration = configuration
        self.authenticator = authenticator
        self.state = ports.state
        self.revocations = ports.revocations
        self.publisher = publisher
        self.rejections = rejections
        self.logger = logger
        self.now = now
    }

    // MARK: - Shared steps

    func authenticate(_ request: Request, context: ScoreboardRequestContext, roles: Set<Role>) async throws -> Identity {
        do {
            return try await authenticator.authenticate(request, roles: roles)
        } catch let problem as Problem {
            throw reject(problem, userID: nil, action: nil, clientIP: clientIP(request, context: context))
        }
    }

    /// The client's address: the TCP peer, or what our trusted proxies say in `X-Forwarded-For`.
    func clientIP(_ request: Request, context: ScoreboardRequestContext) -> String {
        ClientAddress.resolve(
            peer: context.clientIP, forwardedFor: request.headers[values: Self.forwardedFor], trustedProxies: options.trustedProxies)
    }

    static let forwardedFor = HTTPField.Name("X-Forwarded-For")!

    /// Reads the body as JSON (bounded in size and depth), checks it against `schema` (every violation reported),
    /// then decodes it.
    func decodeValidated<T: Decodable>(_ type: T.Type, from request: inout Request, schema: JSONSchema, limit: Int) async throws -> T {
        let value = try await request.decodeJSONValue(limit: limit)
        let violations = schema.validate(value)
        guard violations.isEmpty else { throw Problem(.invalidBody, errors: violations.map(\.description)) }
        return try JSONValue.decode(T.self, from: value)
    }

    /// Records a refusal on the rejections topic and returns the problem to throw.
    func reject(_ problem: Problem, userID: String?, action: String?, clientIP: String) -> Problem {
        record(problem, userID: userID, action: action, clientIP: clientIP)
        return problem
    }

    func record(_ problem: Problem, userID: String?, action: String?, clientIP: String) {
        rejections.record(Rejection(
            rejectionID: UUID().uuidString.lowercased(), reason: problem.kind.rawValue, userID: userID, clientIP: clientIP,
            action: action.map { String($0.prefix(64)) }, occurredAt: now(),
            detail: (problem.detail ?? problem.errors.first).map { String($0.prefix(1000)) }))
    }

    /// The answer for a check that threw: a 503 for an outage, else a 500 whose cause is logged, not sent.
    func problem(for error: any Error) -> Problem {
        if let problem = error as? Problem { return problem }
        if let problem = Problem(dependencyError: error) {
            logger.warning("dependency unavailable", metadata: ["error": "\(String(reflecting: error))"])
            return problem
        }
        logger.error("ingest check failed", metadata: ["error": "\(String(reflecting: error))"])
        return Problem(.internalError)
    }

    /// Runs one call to a port for a handler: an outage becomes its 503 (never a 500), anything else a logged 500.
    func withDependency<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            throw problem(for: error)
        }
    }
}
