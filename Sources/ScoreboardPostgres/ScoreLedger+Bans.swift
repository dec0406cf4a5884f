import PostgresNIO
import ScoreboardCore

// Bans in the workers' batches (issue 11: a confirmed flag bans its user). A ban is a record of the score-events topic
// keyed by the user (``UserBanned``), so the worker that owns the user's events applies it, ordered with them, in its
// batch's transaction: the user's totals are deleted there, and from then on none of their events is counted.
extension ScoreLedger {
    /// What the batch's bans did.
    struct AppliedBans {
        /// The users of the batch whose events are not counted: banned before it, or by one of its records.
        var banned: Set<String>
        /// The total rows the batch's ban records deleted.
        var removedTotals: [BatchAggregation.TotalKey: Int64]
    }

    /// Records the batch's bans in `fraud_bans` (once per user: the review has usually written the row already, and a
    /// replay finds it), deletes their users' totals, and reads which users of the batch's new events are banned.
    ///
    /// The review publishes the ban before its own COMMIT, so the row it inserted may still be uncommitted here: the
    /// INSERT then waits for that transaction (only its COMMIT is left, nothing of it waits for a worker) and either
    /// finds the row or, if the review rolled back, writes it: the ban the log carries is the ban PostgreSQL holds.
    func applyBans(_ batch: LedgerBatch, eventUsers: Set<String>, connection: PostgresConnection) async throws -> AppliedBans {
        var removed: [BatchAggregation.TotalKey: Int64] = [:]
        if !batch.bans.isEmpty {
            // Sorted, so two batches banning several users lock in one order.
            let bans = Dictionary(batch.bans.map { ($0.ban.userID, $0.ban) }, uniquingKeysWith: { first, _ in first }).values
                .sorted { $0.userID < $1.userID }
            try await connection.queryRows("""
                INSERT INTO fraud_bans (user_id, flag_id, banned_at)
                SELECT u, f, to_timestamp(a / 1000.0)
                FROM unnest(\(bans.map(\.userID))::text[], \(bans.map(\.flagID))::text[], \(bans.map(\.bannedAt))::bigint[]) AS b(u, f, a)
                ORDER BY u
                ON CONFLICT (user_id) DO NOTHING
                """, logger: logger)
            let rows = try await connection.queryRows("""
                DELETE FROM member_totals WHERE user_id = ANY(\(bans.map(\.userID))::text[])
                RETURNING board_window, period, user_id, region, guild, points
                """, logger: logger)
            removed = try Self.decodeTotals(rows)
        }
        let users = eventUsers.union(batch.bans.map(\.ban.userID))
        guard !eventUsers.isEmpty else { return AppliedBans(banned: Set(batch.bans.map(\.ban.userID)), removedTotals: removed) }
        let rows = try await connection.queryRows("""
            SELECT user_id FROM fraud_bans WHERE user_id = ANY(\(users.sorted())::text[])
            """, logger: logger)
        return AppliedBans(banned: Set(try rows.map { try $0.decode(String.self) }), removedTotals: removed)
    }

    /// Whether the user is banned (a row in `fraud_bans`).
    public func isBanned(userID: String) async throws -> Bool {
        try await !client.queryRows("SELECT 1 FROM fraud_bans WHERE user_id = \(userID)", logger: logger).isEmpty
    }
}
