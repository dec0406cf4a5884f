/// What the workers count for real-time analytics, as declared in `analytics/metrics.yaml` (loaded by
/// ScoreboardDefinitions): metrics, the windows they are kept in and the dimensions they are broken down by.
public struct AnalyticsCatalog: Sendable, Hashable, Codable {
    public var limits: Limits
    /// How many days cells are kept, per window; `nil`: for ever.
    public var retentionDays: Retention?
    public var metrics: [String: AnalyticsMetric]

    public struct Limits: Sendable, Hashable, Codable {
        /// A distinct count is exact up to this many members; above it a HyperLogLog sketch takes over and the answer
        /// is labelled approximate.
        public var distinctExactUpTo: Int
        /// The most points one series answer may hold.
        public var maxPointsPerSeries: Int

        public init(distinctExactUpTo: Int = 1_000_000, maxPointsPerSeries: Int = 1_500) {
            self.distinctExactUpTo = distinctExactUpTo
            self.maxPointsPerSeries = maxPointsPerSeries
        }
    }

    /// Days a cell is kept after its bucket starts, per window: an older cell is deleted by the workers'
    /// ``AnalyticsRetention`` service (ScoreboardWorker).
    public struct Retention: Sendable, Hashable, Codable {
        /// Days the cells of each window are kept.
        public var minute: Int
        public var hour: Int
        public var day: Int

        public init(minute: Int, hour: Int, day: Int) {
            self.minute = minute
            self.hour = hour
            self.day = day
        }

        public func days(of window: AnalyticsWindow) -> Int {
            switch window {
            case .minute: minute
            case .hour: hour
            case .day: day
            }
        }

        /// The first bucket start kept at `now`: cells of buckets starting before it are old.
        public func oldestKept(_ window: AnalyticsWindow, now: Timestamp) -> Int64 {
            window.bucketStart(of: Timestamp(millisecondsSinceEpoch: now.millisecondsSinceEpoch - Int64(days(of: window)) * 86_400_000))
        }
    }

    public init(limits: Limits = Limits(), retentionDays: Retention? = nil, metrics: [String: AnalyticsMetric]) {
        self.limits = limits
        self.retentionDays = retentionDays
        self.metrics = metrics
    }

    /// No metrics: a worker built without the catalog counts nothing.
    public static let empty = AnalyticsCatalog(metrics: [:])

    /// The metrics of one kind, by name.
    public func metrics(of kind: AnalyticsMetric.Kind) -> [(name: String, metric: AnalyticsMetric)] {
        metrics.filter { $0.value.kind == kind }.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// - Throws: ``ScoreboardError`` with code `invalidDefinition`, listing every problem.
    public func validate() throws(ScoreboardError) {
        var problems: [String] = []
        if limits.distinctExactUpTo < 1 { problems.append("limits.distinctExactUpTo: at least 1") }
        if limits.maxPointsPerSeries < 1 { problems.append("limits.maxPointsPerSeries: at least 1") }
        if metrics.isEmpty { problems.append("metrics: at least one") }
        if let retention = retentionDays {
            // The summary reads the last 60 minute cells and the last 24 hour cells: those must still be there.
            for window in AnalyticsWindow.allCases where retention.days(of: window) < 1 {
                problems.append("retentionDays.\(window.rawValue): at least 1")
            }
        }
        for (name, metric) in metrics.sorted(by: { $0.key < $1.key }) {
            if let problem = ScoreEvent.identifierProblem(name) { problems.append("\(name): the name \(problem)") }
            if metric.windows.isEmpty { problems.append("\(name).windows: at least one") }
            if Set(metric.windows).count != metric.windows.count { problems.append("\(name).windows: each once") }
            if Set(metric.dimensions).count != metric.dimensions.count { problems.append("\(name).dimensions: each once") }
            switch metric.kind {
            case .events, .points:
                if metric.lagBucketsMilliseconds != nil { problems.append("\(name).lagBucketsMilliseconds: only for kind lag") }
                if metric.dimensions.contains(.problemType) { problems.append("\(name).dimensions: type only for kind rejections") }
            case .rejections:
                if metric.lagBucketsMilliseconds != nil { problems.append("\(name).lagBucketsMilliseconds: only for kind lag") }
                if metric.dimensions.contains(where: { $0 != .problemType }) { problems.append("\(name).dimensions: only type for kind rejections") }
            case .activeUsers, .lag:
                // Sets and lag histograms are kept whole: a breakdown would multiply their rows for no question asked.
                if !metric.dimensions.isEmpty { problems.append("\(name).dimensions: none for kind \(metric.kind.rawValue)") }
                if metric.kind == .lag {
                    let bounds = metric.lagBucketsMilliseconds ?? []
                    if bounds.isEmpty || bounds.first! <= 0 || zip(bounds, bounds.dropFirst()).contains(where: { $0 >= $1 }) {
                        problems.append("\(name).lagBucketsMilliseconds: rising positive upper bounds, at least one")
                    }
                } else if metric.lagBucketsMilliseconds != nil {
                    problems.append("\(name).lagBucketsMilliseconds: only for kind lag")
                }
            }
        }
        if !problems.isEmpty { throw ScoreboardError(code: .invalidDefinition, reasons: problems.map { "metrics: \($0)" }) }
    }
}

/// One metric: what is counted, in which windows, broken down by which dimensions.
public struct AnalyticsMetric: Sendable, Hashable, Codable {
    public enum Kind: String, Sendable, Hashable, Codable {
        /// Accepted events, counted.
        case events
        /// Their points, added.
        case points
        /// Distinct users (a set per bucket up to `distinctExactUpTo` members, a HyperLogLog sketch beyond).
        case activeUsers = "active-users"
        /// Commit time minus occurredAt, counted in histogram buckets (dimension ``AnalyticsDimension/lagBucket``).
        case lag
        /// Refused requests, from the rejections topic (by ``AnalyticsDimension/problemType``).
        case rejections
    }

    public var kind: Kind
    public var description: String
    public var windows: [AnalyticsWindow]
    public var dimensions: [AnalyticsDimension]
    /// For kind `lag`: the buckets' upper bounds, rising; one more bucket holds what is above the last.
    public var lagBucketsMilliseconds: [Int64]?

    public init(
        kind: Kind, description: String, windows: [AnalyticsWindow], dimensions: [AnalyticsDimension] = [],
        lagBucketsMilliseconds: [Int64]? = nil
    ) {
        self.kind = kind
        self.description = description
        self.windows = windows
        self.dimensions = dimensions
        self.lagBucketsMilliseconds = lagBucketsMilliseconds
    }
}

/// A bucket size: UTC minutes, hours and days, aligned to the Unix epoch.
public enum AnalyticsWindow: String, Sendable, Hashable, Codable, CaseIterable {
    case minute, hour, day

    public var milliseconds: Int64 {
        switch self {
        case .minute: 60_000
        case .hour: 3_600_000
        case .day: 86_400_000
        }
    }

    /// The start of the bucket holding `time`.
    public func bucketStart(of time: Timestamp) -> Int64 {
        let ms = time.millisecondsSinceEpoch
        return ms - ((ms % milliseconds) + milliseconds) % milliseconds
    }
}

/// What an event's counts are broken down by.
public enum AnalyticsDimension: String, Sendable, Hashable, Codable, CaseIterable {
    case action, region, guild
    /// A rejection's problem type (the last segment of its `type`: `invalid-parameter`, `rate-limited`, …).
    case problemType = "type"
    /// A lag histogram's bucket (its upper bound in milliseconds, or `+Inf`): not declared, implied by kind `lag`.
    case lagBucket = "le"

    /// The event's value of this dimension; absent regions and guilds count under ``AnalyticsCellKey/noValue``.
    func value(of event: ScoreEvent) -> String {
        switch self {
        case .action: event.action
        case .region: event.region ?? AnalyticsCellKey.noValue
        case .guild: event.guild ?? AnalyticsCellKey.noValue
        case .lagBucket, .problemType: AnalyticsCellKey.noValue
        }
    }
}
