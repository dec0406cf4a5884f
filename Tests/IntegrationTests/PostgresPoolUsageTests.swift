import PostgresNIO
import ScoreboardCore
@testable import ScoreboardPostgres
import Testing

/// The pool gauges an alert reads (analytics/alerts.yaml, PostgreSQL pool above 90%): connections held by queries and
/// transactions are counted while held and no longer once given back.
@Suite(.timeLimit(.minutes(1)))
struct PostgresPoolUsageTests {
    @Test func connectionsHeldByTransactionsAreCountedUntilGivenBack() async throws {
        try await withFreshPostgresStore(prefix: "pool") { store in
            let held = 3
            let inside = AsyncStream<Void>.makeStream()
            let release = Latch()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<held {
                    group.addTask {
                        try await store.client.withTransactionRows(logger: TestEnvironment.logger) { connection in
                            try await connection.queryRows("SELECT 1", logger: TestEnvironment.logger)
                            inside.continuation.yield()
                            await release.wait()
                        }
                    }
                }
                var entered = 0
                for await _ in inside.stream {
                    entered += 1
                    if entered == held { break }
                }
                // Other suites run queries at the same time: at least these three are counted.
                #expect(PoolUsage.shared.leasedNow >= held)
                release.open()
                try await group.waitForAll()
            }
        }
    }
}
