import PostgresNIO
import ScoreboardCore

// Readers of the analytics cells that the workers' AnalyticsStage keeps in the stage tables (migration 0005), for the
// push role's analytics API, and their deletion past retention (the workers' AnalyticsRetention). Distinct counts are
// read from their counters too (the stage keeps each one's count as a counter beside its set or sketch). A cell's key sorts by time within its metric, window and dimension
// (``AnalyticsCellKey``), so a time range is a range of the primary key (stage, key): no scan of other cells.
extension ScoreLedger {
    /// The counters of one metric's cells in `window`, for `dimension` (`nil`: the totals), of the buckets starting in
    /// `[from, to)` (epoch milliseconds). Cells never written are absent.
    public func analyticsCounters(
        metric: String, window: AnalyticsWindow, dimension: AnalyticsDimension?, from: Int64, to: Int64
    ) async throws -> [AnalyticsCellKey: Int64] {
        let range = AnalyticsCellKey.range(metric: metric, window: window, dimension: dimension, from: from, to: to)
        let rows = try await client.queryRows("""
            SELECT key, value FROM stage_counters
            WHERE stage = \(AnalyticsAggregation.stage) AND key >= \(range.lower) AND key < \(range.upper)
            """, logger: logger)
        return try Self.cells(rows, metric: metric, window: window, dimension: dimension, from: from, to: to)
    }

    /// Deletes the cells of one metric in `window` for `dimension` (`nil`: the totals) of the buckets starting before
    /// `before`: at most `limit` counters and at most `limit` distinct-count states (with their placeholders), each
    /// table in its own short statement, a range of the primary key.
    /// - Returns: How many rows were deleted.
    public func deleteAnalyticsCells(metric: String, window: AnalyticsWindow, dimension: AnalyticsDimension?, before: Int64, limit: Int) async throws -> Int {
        let range = AnalyticsCellKey.range(metric: metric, window: window, dimension: dimension, from: 0, to: before)
        var deleted = 0
        // The two tables of cells, named in code (never from input), with the same primary key (stage, key). Rows
        // locked by a batch (an event late enough to write an old cell) or another worker's retention are skipped,
        // not waited for: the next pass deletes them, and no delete can deadlock with another.
        for table in ["stage_counters", "stage_state"] {
            deleted += try await client.queryRows("""
                DELETE FROM \(unescaped: table) c USING (
                    SELECT key FROM \(unescaped: table)
                    WHERE stage = \(AnalyticsAggregation.stage) AND key >= \(range.lower) AND key < \(range.upper)
                    ORDER BY key LIMIT \(limit)
                    FOR UPDATE SKIP LOCKED
                ) old
                WHERE c.stage = \(AnalyticsAggregation.stage) AND c.key = old.key
                RETURNING 1
                """, logger: logger).count
        }
        return deleted
    }

    /// Rows of (key, number) as cells of the range asked for.
    private static func cells(
        _ rows: [PostgresRow], metric: String, window: AnalyticsWindow, dimension: AnalyticsDimension?, from: Int64, to: Int64
    ) throws -> [AnalyticsCellKey: Int64] {
        var cells: [AnalyticsCellKey: Int64] = [:]
        for row in rows {
            let (key, value) = try row.decode((String, Int64).self)
            // The range is byte order's; a collation that orders otherwise could let a neighbour in: checked again.
            if let cell = AnalyticsCellKey(parsing: key), cell.metric == metric, cell.window == window, cell.dimension == dimension,
                cell.bucketStart >= from, cell.bucketStart < to
            {
                cells[cell] = value
            }
        }
        return cells
    }
}
