import Foundation
import Hummingbird
import Logging
import Metrics
import NIOCore
import Prometheus
import ScoreboardRedis
import Synchronization

/// The operator endpoints every role serves: liveness, readiness and Prometheus metrics.
public struct OperationsRoutes: Sendable {
    /// Returns the name of each dependency that is not ready; empty means ready.
    public typealias ReadinessCheck = @Sendable () async -> [String: String]

    let registry: PrometheusCollectorRegistry
    let readiness: ReadinessCheck
    /// The readiness checks that have failed at least once, so that a scrape reports them back at 0 once they pass.
    private let checksSeen = SeenChecks()

    public init(registry: PrometheusCollectorRegistry, readiness: @escaping ReadinessCheck) {
        self.registry = registry
        self.readiness = readiness
    }

    public func add<Context: RequestContext>(to router: Router<Context>) {
        // Liveness: the process answers. Restarting it will not fix a broker outage, so dependencies are not checked.
        router.get("/health/live") { _, _ in
            try jsonResponse(["status": "ok"])
        }
        router.get("/health") { _, _ in try await self.readinessResponse() }
        router.get("/health/ready") { _, _ in try await self.readinessResponse() }
        router.get("/metrics") { _, _ in
            // Readiness is evaluated at every scrape too, so that alerts see a dependency that is down
            // (analytics/alerts.yaml) without anyone polling /health.
            self.recordReadiness(await self.readiness())
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                body: .init(byteBuffer: ByteBuffer(string: self.registry.emitToString())))
        }
    }

    /// `scoreboard_ready` (1 or 0) and `scoreboard_readiness_problem{check}`: 1 for each failing check (`redis`,
    /// `kafka`, `postgres`, …), 0 for one that failed before and passes now.
    func recordReadiness(_ problems: [String: String]) {
        registry.makeGauge(name: "scoreboard_ready", help: "1 when the role is ready, 0 when not (see /health/ready)")
            .set(Int64(problems.isEmpty ? 1 : 0))
        for check in checksSeen.union(problems.keys) {
            registry.makeGauge(
                name: "scoreboard_readiness_problem", labels: [("check", check)],
                help: "1 while this readiness check fails (redis, kafka, postgres, …), 0 once it passes again"
            ).set(Int64(problems[check] == nil ? 0 : 1))
        }
    }

    private func readinessResponse() async throws -> Response {
        let problems = await readiness()
        if problems.isEmpty { return try jsonResponse(["status": "ready"]) }
        var body = problems
        body["status"] = "not ready"
        return try jsonResponse(body, status: .serviceUnavailable)
    }
}

extension OperationsRoutes {
    /// `["redis": "unreachable"]` when Redis does not answer a PING, else empty. The reason names what is down and
    /// nothing more: `/health` is public, so the address and the raw error go to the log (once per failed check).
    public static func redisReadiness(_ redis: RedisConnectionPool, logger: Logger) async -> [String: String] {
        do {
            _ = try await redis.send(["PING"])
            return [:]
        } catch {
            logger.warning("readiness: redis does not answer", metadata: ["error": "\(error)"])
            return ["redis": "unreachable"]
        }
    }
}

/// The names of the readiness checks that have failed so far.
private final class SeenChecks: Sendable {
    private let names = Mutex<Set<String>>([])

    /// Adds `checks` and returns every name seen, these included.
    func union(_ checks: some Sequence<String>) -> Set<String> {
        names.withLock { names in
            names.formUnion(checks)
            return names
        }
    }
}

/// One registry per process, installed as the swift-metrics backend the first time it is asked for.
public enum ScoreboardMetrics {
    private static let shared: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // Recorders whose values are counts, not seconds, need buckets of their own.
        factory.valueHistogramBuckets["worker_batch_events"] = [1, 10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000]
        MetricsSystem.bootstrap(factory)
        return registry
    }()

    /// The process's registry; the first call bootstraps swift-metrics with it.
    public static func bootstrap() -> PrometheusCollectorRegistry { shared }
}
