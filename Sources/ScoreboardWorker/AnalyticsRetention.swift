import Logging
import Metrics
import ScoreboardCore
import ServiceLifecycle

/// Where old analytics cells are deleted: PostgreSQL's ledger implements it (ScoreboardPostgres/ScoreLedger+Analytics.swift,
/// declared in the CLI's WorkerPortAdapters.swift).
public protocol AnalyticsCellRetention: Sendable {
    /// Deletes at most `limit` rows of each of the cells' tables (counters, and the distinct counts' state) for
    /// `metric` in `window` and `dimension` (`nil`: the totals), of the buckets starting before `before` (epoch
    /// milliseconds).
    /// - Returns: How many rows were deleted; `limit` or more means there may be more.
    func deleteAnalyticsCells(metric: String, window: AnalyticsWindow, dimension: AnalyticsDimension?, before: Int64, limit: Int) async throws -> Int
}

/// Deletes analytics cells older than their window's retention (`analytics/metrics.yaml`, `retentionDays`), on a
/// timer, in the worker process. Every worker may run it: a delete of rows another worker already deleted deletes
/// nothing, and a cell's rows are each deleted whole. A batch still writing an old bucket (an event that waited in the
/// topic longer than the retention) re-creates its cell, which the next pass deletes.
///
/// Bounded work: each call deletes at most ``batchSize`` rows per table, under ``deadline``; a pass repeats the call
/// until fewer come back. A PostgreSQL that fails or does not answer is retried with capped backoff, and the worker
/// goes on consuming meanwhile (this service only logs and counts the failure).
struct AnalyticsRetention: Service {
    let catalog: AnalyticsCatalog
    let retention: AnalyticsCatalog.Retention
    let cells: any AnalyticsCellRetention
    let retry: RetryBackoff
    /// Bound on one delete call: at most a thousand rows of a primary-key range, milliseconds when PostgreSQL is
    /// well; a server that stops answering fails the pass, which is retried.
    var deadline: Duration = .seconds(10)
    let logger: Logger
    /// Time between passes.
    var interval: Duration = .seconds(60)
    /// The most rows one call deletes from each table: short transactions, short locks.
    var batchSize = 1_000
    var now: @Sendable () -> Timestamp = { Timestamp.now() }

    func run() async throws {
        var backoff = retry
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let delay: Duration
            do {
                let deleted = try await sweep()
                backoff.reset()
                delay = interval
                if deleted > 0 { logger.info("old analytics cells deleted", metadata: ["rows": "\(deleted)"]) }
            } catch {
                if Task.isShuttingDownGracefully || Task.isCancelled { return }
                Counter(label: "worker_analytics_retention_failures_total").increment()
                logger.warning("deleting old analytics cells failed: retrying", metadata: ["error": "\(error)"])
                delay = backoff.nextDelay()
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
        }
    }

    /// One pass over every metric, window and breakdown.
    /// - Returns: How many rows were deleted.
    func sweep() async throws -> Int {
        var total = 0
        let now = now()
        for (name, metric) in catalog.metrics.sorted(by: { $0.key < $1.key }) {
            // The cells a metric writes: lag only by bucket; the others in total (distinct counts: their counts,
            // markers and sketches) and by each dimension.
            let dimensions: [AnalyticsDimension?] = metric.kind == .lag ? [.lagBucket] : [nil] + metric.dimensions.map { $0 }
            for window in metric.windows {
                let before = retention.oldestKept(window, now: now)
                for dimension in dimensions {
                    while !Task.isShuttingDownGracefully {
                        let (cells, batchSize) = (cells, batchSize)
                        let deleted = try await withTimeout(deadline) {
                            try await cells.deleteAnalyticsCells(metric: name, window: window, dimension: dimension, before: before, limit: batchSize)
                        }
                        total += deleted
                        Counter(label: "worker_analytics_cells_deleted_total", dimensions: [("window", window.rawValue)]).increment(by: deleted)
                        if deleted < batchSize { break }
                    }
                }
            }
        }
        return total
    }
}
