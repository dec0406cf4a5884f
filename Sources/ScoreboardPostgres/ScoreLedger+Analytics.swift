import PostgresNIO
import ScoreboardCore

// Readers of the analytics cells that the workers' AnalyticsStage keeps in the stage tables (migration 0005), for the
// push role's analytics API. A cell's key sorts by time within its metric, window and dimension
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

    /// The sizes of one distinct-count metric's sets in `window`, of the buckets starting in `[from, to)`.
    public func analyticsDistinctCounts(metric: String, window: AnalyticsWindow, from: Int64, to: Int64) async throws -> [AnalyticsCellKey: Int64] {
        let range = AnalyticsCellKey.range(metric: metric, window: window, dimension: nil, from: from, to: to)
        let rows = try await client.queryRows("""
            SELECT set_key, count(*) FROM stage_set_members
            WHERE stage = \(AnalyticsAggregation.stage) AND set_key >= \(range.lower) AND set_key < \(range.upper)
            GROUP BY set_key
            """, logger: logger)
        return try Self.cells(rows, metric: metric, window: window, dimension: nil, from: from, to: to)
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
