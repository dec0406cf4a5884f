import Foundation
import PostgresNIO
import ScoreboardCore
import ScoreboardPostgres
import Testing

/// Migration 0009: the review listing (`GET /v1/admin/fraud-flags`, `ScoreLedger.fraudFlags`) orders and filters the
/// fraud records by `(payload->>'detectedAt')::bigint`; the partial expression index lets it read one page in order
/// instead of every flag. Checked on the real PostgreSQL, with enough rows (analysed) that the planner has a choice.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct FraudFlagIndexTests {
    static let index = "stage_records_fraud_by_detected_at"

    @Test func theFlagListingReadsItsPageThroughTheDetectionTimeIndex() async throws {
        try await withFreshPostgresStore(prefix: "fraudindex") { store in
            try await store.migrate()
            let client = store.client
            // 5,000 flags of 50 users and as many achievement records (the other stage in the same table).
            try await client.query("""
                INSERT INTO stage_records (stage, id, user_id, occurred_at, payload)
                SELECT 'fraud', md5(i::text), 'user-' || (i % 50), to_timestamp((1764000000000 + i * 1000) / 1000.0),
                       jsonb_build_object('schemaVersion', 1, 'flagId', md5(i::text), 'userId', 'user-' || (i % 50), 'rule', 'rapid-actions',
                                          'severity', 'high', 'outcome', 'flag', 'detectedAt', 1764000000000 + i * 1000,
                                          'triggeredBy', 'e' || i, 'evidence', '{}'::jsonb, 'detail', '')
                FROM generate_series(1, 5000) AS i
                """)
            try await client.query("""
                INSERT INTO stage_records (stage, id, user_id, occurred_at, payload)
                SELECT 'achievements', 'user-' || i || ':beginner', 'user-' || i, now(), '{}'::jsonb FROM generate_series(1, 5000) AS i
                """)
            try await client.query("ANALYZE stage_records")

            // The listing's statement (ScoreLedger+Fraud.swift, `fraudFlags`), planned with its parameters as the
            // driver sends them (an unnamed statement: planned for these values).
            func plan(from: Int64?, to: Int64?, after: Int64?) async throws -> String {
                let rows = try await client.query("""
                    EXPLAIN SELECT r.payload::text, v.decision, v.note, v.reviewer, (extract(epoch FROM v.reviewed_at) * 1000)::bigint
                    FROM stage_records r LEFT JOIN fraud_reviews v ON v.flag_id = r.id
                    WHERE r.stage = \("fraud")
                      AND (\(String?.none)::text IS NULL OR r.user_id = \(String?.none))
                      AND (\(String?.none)::text IS NULL OR r.payload->>'rule' = \(String?.none))
                      AND (\(String?.none)::text IS NULL OR CASE WHEN v.decision IS NULL THEN 'open' WHEN v.decision = 'confirm' THEN 'confirmed' ELSE 'dismissed' END = \(String?.none))
                      AND (\(from)::bigint IS NULL OR (r.payload->>'detectedAt')::bigint >= \(from))
                      AND (\(to)::bigint IS NULL OR (r.payload->>'detectedAt')::bigint < \(to))
                      AND (\(after)::bigint IS NULL
                           OR ((r.payload->>'detectedAt')::bigint, r.id) > (\(after)::bigint, \(after.map { _ in "" })::text))
                    ORDER BY (r.payload->>'detectedAt')::bigint, r.id
                    LIMIT \(50)
                    """)
                var lines: [String] = []
                for try await line in rows.decode(String.self) { lines.append(line) }
                return lines.joined(separator: "\n")
            }
            let firstPage = try await plan(from: nil, to: nil, after: nil)
            #expect(firstPage.contains(Self.index), "\(firstPage)")
            let period = try await plan(from: 1_764_001_000_000, to: 1_764_002_000_000, after: nil)
            #expect(period.contains("Index") && period.contains(Self.index), "\(period)")
            let nextPage = try await plan(from: nil, to: nil, after: 1_764_003_000_000)
            #expect(nextPage.contains(Self.index), "\(nextPage)")

            // The listing itself, through the ledger: in detection order, and its scans counted on the index.
            let ledger = ScoreLedger(client: client, consumerGroup: "workers", logger: TestEnvironment.logger)
            let page = try await ledger.fraudFlags(FraudFlagQuery(from: 1_764_001_000_000, limit: 20))
            #expect(page.map(\.flag.detectedAt) == (1_000..<1_020).map { 1_764_000_000_000 + Int64($0) * 1_000 })
            let schema = store.configuration.schema
            try await within(.seconds(15)) {
                while true {
                    // Statistics reach the shared counters when the listing's backend goes idle (within a second).
                    let rows = try await client.query(
                        "SELECT idx_scan FROM pg_stat_user_indexes WHERE schemaname = \(schema) AND indexrelname = \(Self.index)")
                    var scans: Int64 = 0
                    for try await count in rows.decode(Int64.self) { scans = count }
                    if scans > 0 { return }
                    try await Task.sleep(for: .milliseconds(200))
                }
            }
        }
    }
}
