import Logging
import PostgresNIO
import ScoreboardCore

// Rebuilds: reading every total while no batch is in flight.
extension ScoreLedger {

    /// The second key of the advisory lock between batches and rebuilds (the first is the schema's hash).
    static let projectionLockID: Int32 = 0x5342_5250

    /// Runs `body` while no batch is in flight and none can start: it waits for the batches in flight to commit, then
    /// holds them off until `body` returns. `scoreboard rebuild` reads totals and replaces the Redis boards inside
    /// it, so that it never writes a total older than one a worker already projected.
    public func withBatchesPaused<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        try await client.withConnection { connection in
            try await connection.queryRows(
                "SELECT pg_advisory_lock(hashtext(current_schema()), \(Self.projectionLockID))", logger: logger)
            do {
                let result = try await body()
                try await connection.queryRows(
                    "SELECT pg_advisory_unlock(hashtext(current_schema()), \(Self.projectionLockID))", logger: logger)
                return result
            } catch {
                // Ending the session would release it too; unlock now so the connection can go back to the pool.
                _ = try? await connection.query(
                    "SELECT pg_advisory_unlock(hashtext(current_schema()), \(Self.projectionLockID))", logger: logger)
                throw error
            }
        }
    }

    /// Every total row of a window, all periods, for `scoreboard rebuild`.
    public func totals(window: LeaderboardWindow) async throws -> [BatchAggregation.TotalKey: Int64] {
        try Self.decodeTotals(try await client.queryRows("""
            SELECT board_window, period, user_id, region, guild, points FROM member_totals WHERE board_window = \(window.rawValue)
            """, logger: logger))
    }
}
