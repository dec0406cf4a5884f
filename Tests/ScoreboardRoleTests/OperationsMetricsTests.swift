import Hummingbird
import HummingbirdTesting
import ScoreboardHTTP
import Synchronization
import Testing

/// `/metrics` carries readiness, so that an alert (analytics/alerts.yaml) sees a dependency that is down without
/// anyone polling /health.
struct OperationsMetricsTests {
    @Test func aScrapeReportsEachFailingReadinessCheckAndClearsItOnceItPasses() async throws {
        let problems = Mutex<[String: String]>(["redis": "unreachable", "kafka": "the broker does not acknowledge"])
        let operations = OperationsRoutes(registry: .init()) { problems.withLock { $0 } }
        let router = Router()
        operations.add(to: router)
        let app = Application(router: router)
        try await app.test(.router) { client in
            let down = try await client.execute(uri: "/metrics", method: .get) { String(buffer: $0.body) }
            #expect(down.contains("scoreboard_ready 0"))
            #expect(down.contains(#"scoreboard_readiness_problem{check="redis"} 1"#))
            #expect(down.contains(#"scoreboard_readiness_problem{check="kafka"} 1"#))

            problems.withLock { $0 = ["kafka": "the broker does not acknowledge"] }
            let partly = try await client.execute(uri: "/metrics", method: .get) { String(buffer: $0.body) }
            #expect(partly.contains(#"scoreboard_readiness_problem{check="redis"} 0"#))
            #expect(partly.contains(#"scoreboard_readiness_problem{check="kafka"} 1"#))

            problems.withLock { $0 = [:] }
            let up = try await client.execute(uri: "/metrics", method: .get) { String(buffer: $0.body) }
            #expect(up.contains("scoreboard_ready 1"))
            #expect(up.contains(#"scoreboard_readiness_problem{check="kafka"} 0"#))
        }
    }
}
