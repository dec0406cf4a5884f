import Foundation
import ScoreboardCore
import Synchronization

/// The analytics cells the workers keep (AnalyticsStage, in PostgreSQL's stage tables): read only. The ledger adapter
/// implements it (ScoreboardPostgres/ScoreLedger+Analytics.swift); ``MemoryAnalyticsCells`` beside it.
public protocol AnalyticsCells: Sendable {
    /// One metric's counters in `window` for `dimension` (`nil`: totals), buckets starting in `[from, to)`.
    /// (Distinct counts are counters too: each cell's count, and its ``AnalyticsCellKey/approximate`` marker.)
    func analyticsCounters(metric: String, window: AnalyticsWindow, dimension: AnalyticsDimension?, from: Int64, to: Int64) async throws
        -> [AnalyticsCellKey: Int64]
}

/// The cells in memory, written as a worker's stage writes would be (counters added): for in-process tests and local
/// runs.
public final class MemoryAnalyticsCells: AnalyticsCells {
    private let counters = Mutex<[AnalyticsCellKey: Int64]>([:])

    public init() {}

    /// Applies a batch's analytics writes (other stages' keys are ignored; the distinct counts' sets and sketches are
    /// not read back, only their counters).
    public func apply(_ writes: StageWrites) {
        counters.withLock { counters in
            for (key, amount) in writes.counters where key.stage == AnalyticsAggregation.stage {
                if let cell = AnalyticsCellKey(parsing: key.key) { counters[cell, default: 0] += amount }
            }
        }
    }

    public func analyticsCounters(metric: String, window: AnalyticsWindow, dimension: AnalyticsDimension?, from: Int64, to: Int64) async throws
        -> [AnalyticsCellKey: Int64]
    {
        counters.withLock { counters in
            counters.filter { cell, _ in
                cell.metric == metric && cell.window == window && cell.dimension == dimension && cell.bucketStart >= from && cell.bucketStart < to
            }
        }
    }
}

/// The analytics the push role answers: time series and the headline figures, from the catalog and the cells.
public final class AnalyticsReader: Sendable {
    public let catalog: AnalyticsCatalog
    let cells: (any AnalyticsCells)?
    /// The last summary, shared by every caller for a second: the dashboards' streams ask once a second each, and
    /// PostgreSQL should answer once a second in all.
    private let cachedSummary = Mutex<(at: ContinuousClock.Instant, summary: AnalyticsSummary)?>(nil)
    static let summaryMaxAge: Duration = .seconds(1)

    /// - Parameter cells: `nil` when the role has no store of analytics (then every read is 503).
    public init(catalog: AnalyticsCatalog, cells: (any AnalyticsCells)?) {
        self.catalog = catalog
        self.cells = cells
    }

    /// No metrics, no store.
    public static let unconfigured = AnalyticsReader(catalog: .empty, cells: nil)

    struct Unavailable: Error {}

    func requireCells() throws -> any AnalyticsCells {
        guard let cells else { throw Unavailable() }
        return cells
    }

    /// The series a checked query asks for.
    public func series(_ query: AnalyticsSeriesQuery) async throws -> AnalyticsSeries {
        let read = try await requireCells().analyticsCounters(
            metric: query.metricName, window: query.step, dimension: query.cellDimension, from: query.from, to: query.to)
        return query.series(counters: read)
    }

    /// The headline figures at `now`, at most a second old.
    public func summary(now: Timestamp) async throws -> AnalyticsSummary {
        if let cached = cachedSummary.withLock({ $0 }), ContinuousClock.now - cached.at < Self.summaryMaxAge { return cached.summary }
        let summary = try await computeSummary(now: now)
        cachedSummary.withLock { $0 = (.now, summary) }
        return summary
    }

    func computeSummary(now: Timestamp) async throws -> AnalyticsSummary {
        let cells = try requireCells()
        var summary = AnalyticsSummary(at: now.millisecondsSinceEpoch)
        /// The current bucket of `window` and the `count - 1` before it.
        func range(_ window: AnalyticsWindow, last count: Int64) -> (from: Int64, to: Int64) {
            let current = window.bucketStart(of: now)
            return (current - (count - 1) * window.milliseconds, current + window.milliseconds)
        }
        func counters(_ metric: String, _ window: AnalyticsWindow, _ dimension: AnalyticsDimension?, last count: Int64) async throws
            -> [AnalyticsCellKey: Int64]
        {
            let (from, to) = range(window, last: count)
            return try await cells.analyticsCounters(metric: metric, window: window, dimension: dimension, from: from, to: to)
        }
        func current(_ metric: AnalyticsMetric, named name: String) async throws -> AnalyticsSummary.Windows {
            var windows = AnalyticsSummary.Windows()
            for window in metric.windows {
                let read = try await counters(name, window, nil, last: 1)
                // A distinct count's marker says its count is an estimate; it is no count itself.
                let value = read.filter { $0.key.value != AnalyticsCellKey.approximate }.values.reduce(0, +)
                let isApproximate = read.keys.contains { $0.value == AnalyticsCellKey.approximate }
                switch window {
                case .minute: windows.minute = value
                case .hour: windows.hour = value
                case .day: windows.day = value
                }
                if isApproximate { windows.approximate = (windows.approximate ?? []) + [window.rawValue] }
            }
            return windows
        }
        /// The sums by value of `dimension` over the last `count` buckets of `window`.
        func totals(_ metric: String, _ window: AnalyticsWindow, _ dimension: AnalyticsDimension, last count: Int64) async throws -> [String: Int64] {
            try await counters(metric, window, dimension, last: count).reduce(into: [:]) { $0[$1.key.value, default: 0] += $1.value }
        }

        let events = catalog.metrics(of: .events).first
        let points = catalog.metrics(of: .points).first
        if let events {
            summary.events = try await current(events.metric, named: events.name)
            if events.metric.windows.contains(.minute) {
                // Over the last 60 seconds: the current minute so far, and the share of the previous minute that is
                // still inside those 60 seconds (spread evenly over it).
                let minutes = try await counters(events.name, .minute, nil, last: 2)
                let currentStart = AnalyticsWindow.minute.bucketStart(of: now)
                let elapsed = Double(now.millisecondsSinceEpoch - currentStart) / 60_000
                let previous = Double(minutes.first { $0.key.bucketStart < currentStart }?.value ?? 0)
                let thisMinute = Double(minutes.first { $0.key.bucketStart == currentStart }?.value ?? 0)
                summary.eventsPerSecond = (thisMinute + previous * (1 - elapsed)) / 60
            }
        }
        if let points { summary.points = try await current(points.metric, named: points.name) }
        if let active = catalog.metrics(of: .activeUsers).first {
            summary.activeUsers = try await current(active.metric, named: active.name)
            summary.activeUsersExactUpTo = catalog.limits.distinctExactUpTo
            if summary.activeUsers?.approximate != nil {
                summary.activeUsersRelativeError = HyperLogLog.relativeStandardError(precision: HyperLogLog.defaultPrecision)
            }
        }
        if let rejections = catalog.metrics(of: .rejections).first {
            summary.rejections = try await current(rejections.metric, named: rejections.name)
            if rejections.metric.windows.contains(.minute), rejections.metric.dimensions.contains(.problemType) {
                summary.rejectionsByTypeLastHour = try await totals(rejections.name, .minute, .problemType, last: 60)
            }
        }
        // Top actions: the last 60 minutes from the minute cells, the last 24 hours from the hour cells.
        for (window, count, period) in [(AnalyticsWindow.minute, Int64(60), "hour"), (.hour, 24, "day")] {
            guard let events, events.metric.windows.contains(window), events.metric.dimensions.contains(.action) else { continue }
            let eventCounts = try await totals(events.name, window, .action, last: count)
            var pointSums: [String: Int64] = [:]
            if let points, points.metric.windows.contains(window), points.metric.dimensions.contains(.action) {
                pointSums = try await totals(points.name, window, .action, last: count)
            }
            let top = eventCounts.sorted { ($1.value, $0.key) < ($0.value, $1.key) }.prefix(10).map {
                AnalyticsSummary.ActionFigure(action: $0.key, events: $0.value, points: pointSums[$0.key] ?? 0)
            }
            summary.topActions[period] = Array(top)
        }
        if let points, points.metric.windows.contains(.minute), points.metric.dimensions.contains(.region) {
            summary.pointsByRegionLastHour = try await totals(points.name, .minute, .region, last: 60)
        }
        if let lag = catalog.metrics(of: .lag).first, lag.metric.windows.contains(.minute) {
            let buckets = try await counters(lag.name, .minute, .lagBucket, last: 5)
            let histogram = AnalyticsHistogram(labelled: buckets.reduce(into: [:]) { $0[$1.key.value, default: 0] += $1.value })
            summary.lastFiveMinutesLag = AnalyticsSummary.Lag(
                count: histogram.total, p50: histogram.reportedPercentile(0.5), p90: histogram.reportedPercentile(0.9),
                p99: histogram.reportedPercentile(0.99))
        }
        return summary
    }
}

/// The headline figures (`GET /v1/analytics/summary`, and each event of its stream).
public struct AnalyticsSummary: Sendable, Hashable, Codable {
    /// When they were read, epoch milliseconds.
    public var at: Int64
    /// Accepted events in the current minute, hour and UTC day (so far).
    public var events: Windows?
    /// Events per second over the last 60 seconds (the previous minute's share estimated as even).
    public var eventsPerSecond: Double?
    public var points: Windows?
    /// Distinct users with an accepted event in the current minute, hour and UTC day: exact up to
    /// ``activeUsersExactUpTo``, HyperLogLog estimates beyond (the windows listed in `approximate`).
    public var activeUsers: Windows?
    /// The set size up to which distinct counts are exact.
    public var activeUsersExactUpTo: Int?
    /// When some active-user figure is an estimate: its relative standard error (1.04/√m).
    public var activeUsersRelativeError: Double?
    /// The ten actions with most events over the last `hour` (60 minutes) and `day` (24 hours).
    public var topActions: [String: [ActionFigure]] = [:]
    /// Points by region (`(none)`: events without one) over the last 60 minutes.
    public var pointsByRegionLastHour: [String: Int64]?
    /// Gateway-to-projection lag of the events of the last five minutes.
    public var lastFiveMinutesLag: Lag?
    /// Refused requests (from the rejections topic) in the current minute, hour and UTC day.
    public var rejections: Windows?
    /// Refused requests by problem type over the last 60 minutes.
    public var rejectionsByTypeLastHour: [String: Int64]?

    public init(at: Int64) { self.at = at }

    public struct Windows: Sendable, Hashable, Codable {
        public var minute: Int64?
        public var hour: Int64?
        public var day: Int64?
        /// The windows whose figure is a HyperLogLog estimate (distinct counts past the exact limit); absent when none.
        public var approximate: [String]?
    }

    public struct ActionFigure: Sendable, Hashable, Codable {
        public var action: String
        public var events: Int64
        public var points: Int64
    }

    public struct Lag: Sendable, Hashable, Codable {
        public var count: Int64
        /// Milliseconds (the upper bound of the bucket holding the percentile); `nil` with no events or above the last
        /// bound.
        public var p50: Int64?
        public var p90: Int64?
        public var p99: Int64?
    }
}
