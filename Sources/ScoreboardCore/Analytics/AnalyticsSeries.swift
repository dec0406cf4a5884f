/// A time-series question about one metric, checked against the catalog: buckets of `step` starting in `[from, to)`,
/// in total or broken down `by` a dimension.
public struct AnalyticsSeriesQuery: Sendable, Hashable {
    public var metricName: String
    public var metric: AnalyticsMetric
    public var step: AnalyticsWindow
    public var by: AnalyticsDimension?
    /// The first bucket's start: `from` rounded down to the step.
    public var from: Int64
    /// Exclusive: no bucket starts at or after it.
    public var to: Int64
    /// The set size up to which distinct counts (kind `active-users`) are exact; above it they are estimates.
    public var distinctExactUpTo: Int

    /// Checks a request's parameters; every problem is named.
    /// - Parameters:
    ///   - step: a window of the metric; its first window when `nil`.
    ///   - from: when `nil`, 60 steps before `to`.
    ///   - to: when `nil`, `now` (the current bucket included).
    /// - Throws: ``ScoreboardError`` with code `invalidParameter`: an unknown metric, `from` after `to`, a step or
    ///   dimension the metric does not declare, more points than the catalog allows.
    public static func make(
        catalog: AnalyticsCatalog, metric name: String, from: Timestamp?, to: Timestamp?, step: String?, by: String?, now: Timestamp
    ) throws(ScoreboardError) -> AnalyticsSeriesQuery {
        guard let metric = catalog.metrics[name] else {
            throw ScoreboardError(code: .invalidParameter, reasons: ["metric: unknown metric \(name) (known: \(catalog.metrics.keys.sorted().joined(separator: ", ")))"])
        }
        var problems: [String] = []
        var window = metric.windows[0]
        if let step {
            if let declared = AnalyticsWindow(rawValue: step), metric.windows.contains(declared) {
                window = declared
            } else {
                problems.append("step: \(name) is kept per \(metric.windows.map(\.rawValue).joined(separator: ", ")), not \(step)")
            }
        }
        var dimension: AnalyticsDimension?
        if let by {
            let allowed = metric.kind == .lag ? [AnalyticsDimension.lagBucket] : metric.dimensions
            if let named = AnalyticsDimension(rawValue: by), allowed.contains(named) {
                dimension = named
            } else {
                let known = allowed.isEmpty ? "no dimension" : allowed.map(\.rawValue).joined(separator: ", ")
                problems.append("by: \(name) is broken down by \(known), not \(by)")
            }
        }
        if let from, let to, from > to { problems.append("from: must not be after to") }
        // Times outside the years events can have are clamped to them: nothing was counted there, and the arithmetic
        // below stays far from Int64's limits whatever a client sends.
        let bounds = 0...ScoreEvent.Limits.latest.millisecondsSinceEpoch
        let end = (to ?? now).millisecondsSinceEpoch.clamped(to: bounds)
        let start = (from?.millisecondsSinceEpoch ?? (window.bucketStart(of: Timestamp(millisecondsSinceEpoch: end)) - 59 * window.milliseconds))
            .clamped(to: bounds)
        if !problems.isEmpty { throw ScoreboardError(code: .invalidParameter, reasons: problems) }
        let first = window.bucketStart(of: Timestamp(millisecondsSinceEpoch: start))
        // `to` itself is excluded, except when it is `now` by default: the current bucket is shown while it fills.
        let exclusiveEnd = to == nil ? window.bucketStart(of: Timestamp(millisecondsSinceEpoch: end)) + window.milliseconds : end
        let points = exclusiveEnd <= first ? 0 : (exclusiveEnd - first + window.milliseconds - 1) / window.milliseconds
        if points > Int64(catalog.limits.maxPointsPerSeries) {
            throw ScoreboardError(code: .invalidParameter, reasons: [
                "to: \(points) points of \(window.rawValue) asked for, at most \(catalog.limits.maxPointsPerSeries): a shorter range or a larger step",
            ])
        }
        return AnalyticsSeriesQuery(
            metricName: name, metric: metric, step: window, by: dimension, from: first, to: exclusiveEnd,
            distinctExactUpTo: catalog.limits.distinctExactUpTo)
    }

    /// The bucket starts answered, in order.
    public var bucketStarts: [Int64] { Array(stride(from: from, to: to, by: Int(step.milliseconds))) }

    /// The dimension whose cells are read: lag is always read by bucket, to compute its percentiles.
    public var cellDimension: AnalyticsDimension? { metric.kind == .lag ? .lagBucket : by }

    /// The series from the counters read (for `active-users`: the counts and their approximate markers), every bucket
    /// present (0 when no cell was written).
    public func series(counters: [AnalyticsCellKey: Int64]) -> AnalyticsSeries {
        let starts = bucketStarts
        var lines: [AnalyticsSeries.Line]
        if metric.kind == .lag, by == nil {
            var histograms: [Int64: [String: Int64]] = [:]
            for (cell, count) in counters where cell.dimension == .lagBucket {
                histograms[cell.bucketStart, default: [:]][cell.value, default: 0] += count
            }
            lines = [AnalyticsSeries.Line(value: nil, points: starts.map { start in
                let histogram = AnalyticsHistogram(labelled: histograms[start] ?? [:])
                return AnalyticsSeries.Point(
                    t: start, value: histogram.total, p50: histogram.reportedPercentile(0.5), p90: histogram.reportedPercentile(0.9),
                    p99: histogram.reportedPercentile(0.99))
            })]
        } else if let by {
            var byValue: [String: [Int64: Int64]] = [:]
            for (cell, count) in counters where cell.dimension == by { byValue[cell.value, default: [:]][cell.bucketStart, default: 0] += count }
            lines = byValue.sorted { $0.key < $1.key }.map { value, counts in
                AnalyticsSeries.Line(value: value, points: starts.map { AnalyticsSeries.Point(t: $0, value: counts[$0] ?? 0) })
            }
        } else if metric.kind == .activeUsers {
            // Each cell's count, and whether it is a sketch's estimate (its marker counter exists).
            var counts: [Int64: Int64] = [:]
            var approximate: Set<Int64> = []
            for (cell, count) in counters where cell.dimension == nil {
                if cell.value == AnalyticsCellKey.approximate { approximate.insert(cell.bucketStart) } else { counts[cell.bucketStart, default: 0] += count }
            }
            let error = HyperLogLog.relativeStandardError(precision: HyperLogLog.defaultPrecision)
            lines = [AnalyticsSeries.Line(value: nil, points: starts.map { start in
                var point = AnalyticsSeries.Point(t: start, value: counts[start] ?? 0)
                point.approximate = approximate.contains(start)
                point.relativeError = approximate.contains(start) ? error : nil
                return point
            })]
        } else {
            var counts: [Int64: Int64] = [:]
            for (cell, count) in counters where cell.dimension == nil { counts[cell.bucketStart, default: 0] += count }
            lines = [AnalyticsSeries.Line(value: nil, points: starts.map { AnalyticsSeries.Point(t: $0, value: counts[$0] ?? 0) })]
        }
        let isDistinct = metric.kind == .activeUsers
        let isApproximate = lines.contains { $0.points.contains { $0.approximate == true } }
        return AnalyticsSeries(
            metric: metricName, kind: metric.kind.rawValue, step: step.rawValue, from: from, to: to, by: by?.rawValue,
            exactUpTo: isDistinct ? distinctExactUpTo : nil, approximate: isApproximate,
            relativeError: isApproximate ? HyperLogLog.relativeStandardError(precision: HyperLogLog.defaultPrecision) : nil, series: lines)
    }
}

/// A time series answer (`GET /v1/analytics/{metric}`).
public struct AnalyticsSeries: Sendable, Hashable, Codable {
    public var metric: String
    public var kind: String
    public var step: String
    /// The first bucket's start, epoch milliseconds.
    public var from: Int64
    /// Exclusive end, epoch milliseconds.
    public var to: Int64
    public var by: String?
    /// For distinct counts: the set size up to which they are exact.
    public var exactUpTo: Int?
    /// Whether any point is a HyperLogLog estimate (a distinct count past ``exactUpTo``).
    public var approximate: Bool
    /// With `approximate`: the estimates' relative standard error, 1.04/√m.
    public var relativeError: Double?
    public var series: [Line]

    public struct Line: Sendable, Hashable, Codable {
        /// The dimension's value (`(none)` for events without one); `nil` for the total.
        public var value: String?
        public var points: [Point]
    }

    public struct Point: Sendable, Hashable, Codable {
        /// The bucket's start, epoch milliseconds.
        public var t: Int64
        /// The count, sum or distinct count (for lag: how many events).
        public var value: Int64
        /// For lag: percentiles in milliseconds, as the upper bound of the histogram bucket holding them; `nil` with no
        /// events, or above the last bound.
        public var p50: Int64?
        public var p90: Int64?
        public var p99: Int64?
        /// For distinct counts: whether `value` is a HyperLogLog estimate (the bucket had more than `exactUpTo` users)
        /// rather than exact; `nil` for other kinds.
        public var approximate: Bool?
        /// With `approximate: true`: the estimate's relative standard error (1.04/√m: 0.0081 for 16,384 registers).
        public var relativeError: Double?

        public init(t: Int64, value: Int64, p50: Int64? = nil, p90: Int64? = nil, p99: Int64? = nil) {
            self.t = t
            self.value = value
            self.p50 = p50
            self.p90 = p90
            self.p99 = p99
        }
    }
}

extension AnalyticsHistogram {
    /// A percentile as answered: `nil` for no values or one above the last bound.
    public func reportedPercentile(_ quantile: Double) -> Int64? {
        percentile(quantile).flatMap { $0 == .max ? nil : $0 }
    }
}

extension Comparable {
    func clamped(to range: ClosedRange<Self>) -> Self { min(max(self, range.lowerBound), range.upperBound) }
}
