import Foundation
import Logging
import PostgresNIO
import ScoreboardPostgres
import Testing

@Suite(.timeLimit(.minutes(2)))
struct PostgresTests {
    /// Runs `body` with a store on a fresh schema (dropped after).
    func withStore<T: Sendable>(_ body: @escaping @Sendable (PostgresStore) async throws -> T) async throws -> T {
        try await withFreshPostgresStore(prefix: "test", body)
    }

    @Test func migrationsAppliedTwiceAreANoOpTheSecondTime() async throws {
        try await withStore { store in
            let all = try Migration.bundled().map(\.version)
            let first = try await store.migrate()
            #expect(first.applied == all)
            #expect(first.alreadyApplied == [])
            let second = try await store.migrate()
            #expect(second.applied == [])
            #expect(second.alreadyApplied == all)

            let schema = store.configuration.schema
            let rows = try await store.client.query(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = \(schema) AND table_type = 'BASE TABLE' ORDER BY table_name")
            var tables: [String] = []
            for try await name in rows.decode(String.self) { tables.append(name) }
            #expect(tables == [
                "consumer_offsets", "fraud_audit", "fraud_bans", "fraud_reviews", "member_totals", "schema_migrations", "score_events", "stage_counters",
                "stage_records", "stage_set_members", "stage_state", "worker_outbox",
            ])
            // Migration 0004 keeps only the secondary index of member_totals that a read uses.
            let indexes = try await store.client.query(
                "SELECT indexname FROM pg_indexes WHERE schemaname = \(schema) AND tablename = 'member_totals' ORDER BY indexname")
            var names: [String] = []
            for try await name in indexes.decode(String.self) { names.append(name) }
            #expect(names == ["member_totals_by_user", "member_totals_pkey"])
            let recorded = try await store.client.query("SELECT count(*) FROM schema_migrations")
            for try await count in recorded.decode(Int.self) { #expect(count == all.count) }
        }
    }

    @Test func concurrentMigratorsTakeTurns() async throws {
        try await withStore { store in
            let reports = try await withThrowingTaskGroup(of: PostgresMigrator.Report.self) { group in
                for _ in 0..<3 { group.addTask { try await store.migrate() } }
                var reports: [PostgresMigrator.Report] = []
                for try await report in group { reports.append(report) }
                return reports
            }
            // Exactly one of them applied each migration; the others found it applied.
            #expect(reports.map(\.applied.count).reduce(0, +) == (try Migration.bundled()).count)
        }
    }

    @Test func aMigrationChangedAfterItWasAppliedIsRefused() async throws {
        try await withStore { store in
            try await store.migrate()
            try await store.client.query("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
            let error = await #expect(throws: StorageError.self) { try await store.migrate() }
            #expect(error?.code == .migration)
        }
    }

    @Test func serverVersionIsReported() async throws {
        let version = try await withStore { try await $0.serverVersion() }
        #expect(version.hasPrefix("15") || version.hasPrefix("16") || version.hasPrefix("17"))
    }
}
