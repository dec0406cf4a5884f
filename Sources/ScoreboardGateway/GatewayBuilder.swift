import Hummingbird
import Logging
import ScoreboardCore
import ScoreboardHTTP
import ServiceLifecycle

/// The gateway's router, and the services its handlers rely on (the publisher that gives every publish a deadline,
/// and the rejection log's sender): what ``buildGateway(configuration:ports:logger:clock:)`` serves.
public struct GatewayRouter {
    public let router: Router<ScoreboardRequestContext>
    /// Run before the server starts and stopped after it has drained.
    public let services: [any Service]
}

/// The ingest gateway as one application (a `Service`; in tests, `.test(.router)`): its routes behind the configured
/// server limits, with the publisher and the rejection log run before the server and stopped after it. The ports'
/// own clients (the Kafka producer, the Redis pool) are the caller's to run, before this service in the same group.
/// - Parameter clock: The time requests are stamped and checked with (tests drive expiry with it).
public func buildGateway(
    configuration: GatewayConfiguration, ports: GatewayPorts, logger: Logger, clock: @escaping @Sendable () -> Timestamp = { Timestamp.now() }
) async throws -> some ApplicationProtocol {
    let gateway = try await buildGatewayRouter(configuration: configuration, ports: ports, logger: logger, clock: clock)
    return configuration.server.application(router: gateway.router, name: "gateway", services: gateway.services, logger: logger)
}

/// The parts of ``buildGateway(configuration:ports:logger:clock:)`` before they are served.
public func buildGatewayRouter(
    configuration: GatewayConfiguration, ports: GatewayPorts, logger: Logger, clock: @escaping @Sendable () -> Timestamp = { Timestamp.now() }
) async throws -> GatewayRouter {
    let registry = ScoreboardMetrics.bootstrap()
    let authenticator = try await JWTAuthenticator(jwks: configuration.jwks, configuration: configuration.authentication, revocations: ports.revocations)
    let publisher = EventPublisher(port: ports.scoreEvents, logger: logger)
    let rejections = RejectionLog(port: ports.rejections, logger: logger)
    let ingest = ScoreIngest(
        configuration: configuration, authenticator: authenticator, ports: ports, publisher: publisher, rejections: rejections, logger: logger,
        now: clock)
    let maxUnacknowledged = configuration.options.maxUnacknowledgedEvents
    let operations = OperationsRoutes(registry: registry) { [state = ports.state, scoreEvents = ports.scoreEvents] in
        // Public: what is down, never where or the raw error (logged instead). The state store is named as operators
        // know it (and as Problem.unavailable names it in the 503s): Redis.
        var problems: [String: String] = [:]
        do {
            try await state.probe()
        } catch {
            logger.warning("readiness: the ingest state store does not answer", metadata: ["error": "\(error)"])
            problems["redis"] = "unreachable"
        }
        let waiting = scoreEvents.unacknowledgedCount
        if waiting > maxUnacknowledged { problems["kafka"] = "\(waiting) messages waiting for the broker" }
        return problems
    }
    return GatewayRouter(router: GatewayRoutes.router(ingest: ingest, operations: operations), services: [rejections, publisher])
}
