/// One analytics cell, as a stage-state key: a metric's count in one bucket of one window, in total or for one value of
/// one dimension. Its text is `metric|window|dimension|bucketStart|value` (`*` and an empty value for the total), the
/// bucket start in 13 digits of epoch milliseconds, so that the cells of one metric, window and dimension sort by time
/// and a time range is a key range.
public struct AnalyticsCellKey: Hashable, Sendable, CustomStringConvertible {
    public var metric: String
    public var window: AnalyticsWindow
    /// `nil`: the total over every value.
    public var dimension: AnalyticsDimension?
    public var bucketStart: Int64
    /// The dimension's value; empty for the total.
    public var value: String

    /// The value counted for an event that has no region (or no guild). Not a valid identifier, so no real value
    /// can be mistaken for it.
    public static let noValue = "(none)"
    /// The value of the counter that marks a distinct-count cell whose count is a HyperLogLog estimate (set once, when
    /// it passes `distinctExactUpTo`).
    public static let approximate = "approximate"
    static let total = "*"

    public init(metric: String, window: AnalyticsWindow, dimension: AnalyticsDimension?, bucketStart: Int64, value: String = "") {
        self.metric = metric
        self.window = window
        self.dimension = dimension
        self.bucketStart = bucketStart
        self.value = value
    }

    public var description: String {
        Self.prefix(metric: metric, window: window, dimension: dimension) + Self.digits(bucketStart) + "|" + value
    }

    /// The marker of this total cell's count being approximate (``approximate``).
    public var approximateMarker: AnalyticsCellKey {
        AnalyticsCellKey(metric: metric, window: window, dimension: nil, bucketStart: bucketStart, value: Self.approximate)
    }

    /// Reads a key written by ``description``; `nil` for anything else.
    public init?(parsing text: String) {
        let parts = text.split(separator: "|", maxSplits: 4, omittingEmptySubsequences: false)
        guard parts.count == 5, let window = AnalyticsWindow(rawValue: String(parts[1])), let start = Int64(parts[3]) else { return nil }
        let dimension: AnalyticsDimension?
        if parts[2] == Self.total {
            dimension = nil
        } else if let named = AnalyticsDimension(rawValue: String(parts[2])) {
            dimension = named
        } else {
            return nil
        }
        self.init(metric: String(parts[0]), window: window, dimension: dimension, bucketStart: start, value: String(parts[4]))
    }

    /// The key range `[lower, upper)` holding the cells of buckets starting in `[from, to)`.
    public static func range(metric: String, window: AnalyticsWindow, dimension: AnalyticsDimension?, from: Int64, to: Int64) -> (lower: String, upper: String) {
        let prefix = prefix(metric: metric, window: window, dimension: dimension)
        return (prefix + digits(from), prefix + digits(to))
    }

    static func prefix(metric: String, window: AnalyticsWindow, dimension: AnalyticsDimension?) -> String {
        "\(metric)|\(window.rawValue)|\(dimension?.rawValue ?? total)|"
    }

    static func digits(_ value: Int64) -> String {
        let text = String(max(0, value))
        return String(repeating: "0", count: max(0, 13 - text.count)) + text
    }
}

/// What a batch's new events add to the analytics cells: pure, so that it runs inside the batch's transaction and
/// commits with it. Counters are only added to, so two workers sharing a cell stay exact, and a replay (whose events
/// the ledger drops) adds nothing. A distinct count (active users) is one stage-state value per cell
/// (``DistinctCount``: the members up to `distinctExactUpTo`, a HyperLogLog sketch beyond), read locked and replaced;
/// its count is kept beside it as a counter, added to by how much the count changed, so that readers read counters
/// only (never the 16 KiB sketches), and one more counter (value ``AnalyticsCellKey/approximate``) marks the cells
/// whose count is an estimate.
public enum AnalyticsAggregation {
    /// The worker stage's name, which prefixes its state rows.
    public static let stage = "analytics"

    /// The distinct-count cells `events` touch: read, locked, in the batch's transaction.
    public static func reads(for events: [ScoreEvent], catalog: AnalyticsCatalog) -> StageReads {
        StageReads(state: Set(distinctMembers(of: events, catalog: catalog).keys.map(stateKey)))
    }

    /// The cells' additions for `events`, committed at `committedAt` (for the lag); `state` holds the distinct-count
    /// cells that ``reads(for:catalog:)`` named, as committed before this batch.
    public static func writes(for events: [ScoreEvent], committedAt: Timestamp, catalog: AnalyticsCatalog, state: StageState) -> StageWrites {
        var writes = StageWrites()
        guard !events.isEmpty else { return writes }
        func add(_ cell: AnalyticsCellKey, _ amount: Int64) {
            writes.counters[stateKey(cell), default: 0] += amount
        }
        for (name, metric) in catalog.metrics {
            for window in metric.windows {
                for event in events {
                    let start = window.bucketStart(of: event.occurredAt)
                    switch metric.kind {
                    case .events, .points:
                        let amount = metric.kind == .events ? 1 : event.points
                        add(AnalyticsCellKey(metric: name, window: window, dimension: nil, bucketStart: start), amount)
                        for dimension in metric.dimensions {
                            add(AnalyticsCellKey(metric: name, window: window, dimension: dimension, bucketStart: start, value: dimension.value(of: event)), amount)
                        }
                    case .lag:
                        let lag = max(0, committedAt.millisecondsSinceEpoch - event.occurredAt.millisecondsSinceEpoch)
                        let bucket = AnalyticsHistogram.bucketLabel(for: lag, bounds: metric.lagBucketsMilliseconds ?? [])
                        add(AnalyticsCellKey(metric: name, window: window, dimension: .lagBucket, bucketStart: start, value: bucket), 1)
                    case .activeUsers, .rejections:
                        // Distinct counts below; rejections come from the rejections topic, not from events.
                        break
                    }
                }
            }
        }
        for (cell, members) in distinctMembers(of: events, catalog: catalog) {
            let key = stateKey(cell)
            // Absent (or unreadable, which only a hand-edited row could be): no member counted yet.
            let before = state[key].flatMap(DistinctCount.init(encoded:)) ?? .empty
            var after = before
            after.insert(members, exactUpTo: catalog.limits.distinctExactUpTo)
            guard after != before else { continue }
            writes.state[key] = after.encoded
            let change = after.count - before.count
            if change != 0 { writes.counters[key, default: 0] += change }
            if after.isApproximate && !before.isApproximate { add(cell.approximateMarker, 1) }
        }
        return writes
    }

    /// The rejections' additions to the cells of the `rejections` metrics: refused requests per bucket, in total and
    /// by problem type. Counted in the rejections consumer's transaction, with the offsets it read them to.
    public static func writes(forRejections rejections: [Rejection], catalog: AnalyticsCatalog) -> StageWrites {
        var writes = StageWrites()
        for (name, metric) in catalog.metrics where metric.kind == .rejections {
            for window in metric.windows {
                for rejection in rejections {
                    let start = window.bucketStart(of: rejection.occurredAt)
                    writes.counters[stateKey(AnalyticsCellKey(metric: name, window: window, dimension: nil, bucketStart: start)), default: 0] += 1
                    for dimension in metric.dimensions where dimension == .problemType {
                        // The gateway writes the reason; anything that is not an identifier is counted as no type
                        // rather than becoming part of a key.
                        let type = ScoreEvent.identifierProblem(rejection.reason) == nil ? rejection.reason : AnalyticsCellKey.noValue
                        let cell = AnalyticsCellKey(metric: name, window: window, dimension: dimension, bucketStart: start, value: type)
                        writes.counters[stateKey(cell), default: 0] += 1
                    }
                }
            }
        }
        return writes
    }

    /// The stage row of a cell (a counter, or a distinct count's state).
    public static func stateKey(_ cell: AnalyticsCellKey) -> StageKey { StageKey(stage: stage, key: cell.description) }

    /// The members each distinct-count cell gains from `events`.
    static func distinctMembers(of events: [ScoreEvent], catalog: AnalyticsCatalog) -> [AnalyticsCellKey: Set<String>] {
        var members: [AnalyticsCellKey: Set<String>] = [:]
        for (name, metric) in catalog.metrics where metric.kind == .activeUsers {
            for window in metric.windows {
                for event in events {
                    let cell = AnalyticsCellKey(metric: name, window: window, dimension: nil, bucketStart: window.bucketStart(of: event.occurredAt))
                    members[cell, default: []].insert(event.userID)
                }
            }
        }
        return members
    }
}

/// A lag histogram: counts per bucket, each bucket named by its upper bound in milliseconds (`+Inf` above the last).
public struct AnalyticsHistogram: Sendable, Hashable {
    public static let overflow = "+Inf"

    /// Counts by upper bound; `nil` is the bucket above every bound.
    public var counts: [Int64?: Int64]

    public init(counts: [Int64?: Int64] = [:]) { self.counts = counts }

    /// From cells' counts by bucket label (``bucketLabel(for:bounds:)``); unreadable labels are skipped.
    public init(labelled: [String: Int64]) {
        var counts: [Int64?: Int64] = [:]
        for (label, count) in labelled {
            if label == Self.overflow {
                counts[nil, default: 0] += count
            } else if let bound = Int64(label) {
                counts[bound, default: 0] += count
            }
        }
        self.counts = counts
    }

    public static func bucketLabel(for value: Int64, bounds: [Int64]) -> String {
        bounds.first { value <= $0 }.map(String.init) ?? overflow
    }

    public var total: Int64 { counts.values.reduce(0, +) }

    /// The upper bound of the bucket holding the `quantile` (0...1) of the values: the value is at most that, and above
    /// the bucket before it. `nil` for an empty histogram; `Int64.max` when it lies in the overflow bucket.
    public func percentile(_ quantile: Double) -> Int64? {
        let total = total
        guard total > 0 else { return nil }
        // The rank of the value sought, 1-based: the smallest rank with at least `quantile` of the values at or below it.
        let rank = max(1, Int64((quantile * Double(total)).rounded(.up)))
        var seen: Int64 = 0
        for bound in counts.keys.sorted(by: { ($0 ?? .max) < ($1 ?? .max) }) {
            seen += counts[bound] ?? 0
            if seen >= rank { return bound ?? .max }
        }
        return .max
    }

    public mutating func merge(_ other: AnalyticsHistogram) {
        counts.merge(other.counts, uniquingKeysWith: +)
    }
}
