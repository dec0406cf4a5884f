import Metrics
import ScoreboardCore

/// Real-time analytics (`analytics/metrics.yaml`) as stream state: each batch's new events add to the analytics cells
/// (counters per metric, window bucket and dimension value; active-user distinct counts, exact sets up to
/// `distinctExactUpTo` members and HyperLogLog sketches beyond, read locked and replaced; lag histograms) in the
/// batch's own transaction, so they count every accepted event exactly once, however often a batch is replayed. It
/// owes nothing after commit: the push role reads the cells from PostgreSQL. The rejections topic's counts are added
/// by the rejections consumer (FraudRejectionConsumer), and old cells deleted by ``AnalyticsRetention``.
struct AnalyticsStage: WorkerStage {
    let catalog: AnalyticsCatalog
    /// The commit time the lag is measured to (read inside the transaction, just before COMMIT).
    var now: @Sendable () -> Timestamp = { Timestamp.now() }

    var name: String { AnalyticsAggregation.stage }

    /// The distinct-count cells of the batch's new events: every worker's batch of the same minute locks the same
    /// three rows (minute, hour, day) until its COMMIT, in key order like every shared stage row.
    func reads(for batch: StageInput) -> StageReads {
        AnalyticsAggregation.reads(for: batch.applied.newEvents, catalog: catalog)
    }

    func rows(for batch: StageInput, state: StageState) throws -> StageRows<Void> {
        let writes = AnalyticsAggregation.writes(for: batch.applied.newEvents, committedAt: now(), catalog: catalog, state: state)
        return StageRows(writes: writes, due: ())
    }

    func outputs(_ due: Void) async throws {}

    func recover(_ entries: [OutboxEntry]) async throws {}
}
