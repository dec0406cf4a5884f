import Foundation
import ScoreboardCore
import ScoreboardDefinitions
import Testing

/// The analytics cells (analytics/metrics.yaml) against a recount of the events themselves: whatever the batching,
/// the series equal the counts computed here from the events, exactly.
struct AnalyticsAggregationTests {
    static let catalog = try! AnalyticsCatalog.load(directory: repositoryRoot.appendingPathComponent("analytics"))
    static let start: Int64 = 1_764_115_200_000  // 2025-11-26T00:00:00Z, a UTC day's start

    /// `count` events within `minutes` minutes from `start`, of 40 users, with regions and guilds sometimes absent.
    static func events(count: Int, minutes: Int64, seed: UInt64) -> [ScoreEvent] {
        var random = SplitMix64(state: seed)
        let actions = ["complete-quest", "daily-bonus", "pvp-match", "pvp-win"]
        let regions: [String?] = ["eu", "na", "apac", nil]
        let guilds: [String?] = ["dragons", "wolves", nil]
        return (0..<count).map { index in
            ScoreEvent(
                eventID: "e\(index)", userID: "user-\(Int.random(in: 0..<40, using: &random))", action: actions.randomElement(using: &random)!,
                points: Int64.random(in: 0...50, using: &random),
                occurredAt: Timestamp(millisecondsSinceEpoch: start + Int64.random(in: 0..<(minutes * 60_000), using: &random)),
                region: regions.randomElement(using: &random)!, guild: guilds.randomElement(using: &random)!,
                idempotencyKey: "k\(index)", source: .player)
        }
    }

    /// Applies writes as the stage tables would: counters added, members inserted once.
    struct Cells {
        var counters: [AnalyticsCellKey: Int64] = [:]
        var sets: [AnalyticsCellKey: Set<String>] = [:]

        mutating func apply(_ writes: StageWrites) {
            for (key, amount) in writes.counters {
                counters[AnalyticsCellKey(parsing: key.key)!, default: 0] += amount
            }
            for member in writes.members { sets[AnalyticsCellKey(parsing: member.set.key)!, default: []].insert(member.member) }
        }

        func read(_ query: AnalyticsSeriesQuery) -> AnalyticsSeries {
            let cells: [AnalyticsCellKey: Int64] = query.metric.kind == .activeUsers
                ? sets.filter { $0.key.metric == query.metricName && $0.key.window == query.step }.mapValues { Int64($0.count) }
                : counters.filter { $0.key.metric == query.metricName && $0.key.window == query.step && $0.key.dimension == query.cellDimension }
            return query.series(counters: cells.filter { $0.key.bucketStart >= query.from && $0.key.bucketStart < query.to })
        }
    }

    static func query(_ metric: String, step: String, by: String? = nil, minutes: Int64 = 180) throws -> AnalyticsSeriesQuery {
        try AnalyticsSeriesQuery.make(
            catalog: catalog, metric: metric, from: Timestamp(millisecondsSinceEpoch: start),
            to: Timestamp(millisecondsSinceEpoch: start + minutes * 60_000), step: step, by: by, now: Timestamp(millisecondsSinceEpoch: start))
    }

    @Test func theCatalogDeclaresEveryKindAndChecksItsRules() throws {
        #expect(Set(Self.catalog.metrics.values.map(\.kind)) == [.events, .points, .activeUsers, .lag])
        // Bad definitions: a distinct count broken down by region, lag bounds that fall, no windows.
        let bad = AnalyticsCatalog(metrics: [
            "users": AnalyticsMetric(kind: .activeUsers, description: "", windows: [.minute], dimensions: [.region]),
            "lag": AnalyticsMetric(kind: .lag, description: "", windows: [.minute], lagBucketsMilliseconds: [100, 50]),
            "none": AnalyticsMetric(kind: .events, description: "", windows: []),
        ])
        let error = try #require(throws: ScoreboardError.self) { try bad.validate() }
        #expect(error.reasons.count == 3, "\(error.reasons)")
    }

    @Test func cellKeysRoundTripAndATimeRangeIsAKeyRange() {
        let cell = AnalyticsCellKey(metric: "events", window: .minute, dimension: .region, bucketStart: Self.start, value: "(none)")
        #expect(AnalyticsCellKey(parsing: cell.description) == cell)
        #expect(AnalyticsCellKey(parsing: "events|fortnight|*|0|") == nil, "an unknown window")
        let range = AnalyticsCellKey.range(metric: "events", window: .minute, dimension: .region, from: Self.start, to: Self.start + 120_000)
        let inside = AnalyticsCellKey(metric: "events", window: .minute, dimension: .region, bucketStart: Self.start + 60_000, value: "zz").description
        let atEnd = AnalyticsCellKey(metric: "events", window: .minute, dimension: .region, bucketStart: Self.start + 120_000, value: "").description
        let otherDimension = AnalyticsCellKey(metric: "events", window: .minute, dimension: .guild, bucketStart: Self.start + 60_000).description
        #expect(range.lower <= cell.description && cell.description < range.upper)
        #expect(range.lower <= inside && inside < range.upper)
        #expect(!(atEnd < range.upper), "the end is exclusive")
        #expect(!(range.lower <= otherDimension && otherDimension < range.upper))
    }

    /// The events in batches of random sizes, each batch's writes applied: every metric, step and breakdown equals
    /// the recount; applying the same events split otherwise gives the same cells.
    @Test(arguments: [UInt64(1), 2, 3]) func seriesEqualARecountOfTheEvents(seed: UInt64) throws {
        let events = Self.events(count: 2_000, minutes: 180, seed: seed)
        let committedAt = Timestamp(millisecondsSinceEpoch: Self.start + 180 * 60_000 + 1_234)
        var cells = Cells()
        var random = SplitMix64(state: seed &* 31)
        var rest = events[...]
        while !rest.isEmpty {
            let size = Int.random(in: 1...300, using: &random)
            cells.apply(AnalyticsAggregation.writes(for: Array(rest.prefix(size)), committedAt: committedAt, catalog: Self.catalog))
            rest = rest.dropFirst(size)
        }
        var whole = Cells()
        whole.apply(AnalyticsAggregation.writes(for: events, committedAt: committedAt, catalog: Self.catalog))
        #expect(whole.counters == cells.counters && whole.sets == cells.sets)

        for step in AnalyticsWindow.allCases {
            func bucket(_ event: ScoreEvent) -> Int64 { step.bucketStart(of: event.occurredAt) }
            // Totals.
            let counted = try cells.read(Self.query("events", step: step.rawValue))
            let expectedEvents = Dictionary(grouping: events, by: bucket).mapValues { Int64($0.count) }
            #expect(counted.series[0].points.filter { $0.value > 0 }.count == expectedEvents.count)
            for point in counted.series[0].points { #expect(point.value == expectedEvents[point.t] ?? 0) }
            let points = try cells.read(Self.query("points", step: step.rawValue))
            let expectedPoints = Dictionary(grouping: events, by: bucket).mapValues { $0.reduce(0) { $0 + $1.points } }
            for point in points.series[0].points { #expect(point.value == expectedPoints[point.t] ?? 0) }
            let users = try cells.read(Self.query("active-users", step: step.rawValue))
            let expectedUsers = Dictionary(grouping: events, by: bucket).mapValues { Int64(Set($0.map(\.userID)).count) }
            for point in users.series[0].points { #expect(point.value == expectedUsers[point.t] ?? 0) }
            #expect(users.approximate == false && users.exactUpTo == Self.catalog.limits.distinctExactUpTo)
            // Breakdowns.
            for dimension in ["action", "region", "guild"] {
                let series = try cells.read(Self.query("points", step: step.rawValue, by: dimension))
                let value: (ScoreEvent) -> String = {
                    switch dimension {
                    case "action": $0.action
                    case "region": $0.region ?? "(none)"
                    default: $0.guild ?? "(none)"
                    }
                }
                // Points may be 0: a value's bucket with only 0-point events reads as 0, like one with no event.
                let expected = Dictionary(grouping: events, by: { "\(value($0))@\(bucket($0))" }).mapValues { $0.reduce(0) { $0 + $1.points } }
                    .filter { $0.value != 0 }
                var seen: [String: Int64] = [:]
                for line in series.series { for point in line.points where point.value != 0 { seen["\(line.value!)@\(point.t)"] = point.value } }
                #expect(seen == expected, "points by \(dimension) per \(step)")
            }
        }
        // Lag: every event committed at one time, so each minute's histogram holds its events' lags exactly.
        let lag = try cells.read(Self.query("lag", step: "minute"))
        let bounds = Self.catalog.metrics["lag"]!.lagBucketsMilliseconds!
        for point in lag.series[0].points {
            let lags = events.filter { AnalyticsWindow.minute.bucketStart(of: $0.occurredAt) == point.t }
                .map { committedAt.millisecondsSinceEpoch - $0.occurredAt.millisecondsSinceEpoch }.sorted()
            #expect(point.value == Int64(lags.count))
            guard !lags.isEmpty else { continue }
            // The p90 reported is the upper bound of the bucket holding the value at rank ceil(0.9 n).
            let p90 = lags[Int((0.9 * Double(lags.count)).rounded(.up)) - 1]
            let bound = bounds.first { p90 <= $0 }
            #expect(point.p90 == bound)
        }
    }

    @Test func badQueriesNameWhatIsWrong() throws {
        let at = Timestamp(millisecondsSinceEpoch: Self.start)
        let later = Timestamp(millisecondsSinceEpoch: Self.start + 60_000)
        func problem(_ metric: String, from: Timestamp? = nil, to: Timestamp? = nil, step: String? = nil, by: String? = nil) -> String? {
            do {
                _ = try AnalyticsSeriesQuery.make(catalog: Self.catalog, metric: metric, from: from, to: to, step: step, by: by, now: at)
                return nil
            } catch {
                #expect(error.code == .invalidParameter)
                return error.reasons.joined(separator: "; ")
            }
        }
        #expect(problem("nope")?.hasPrefix("metric:") == true)
        #expect(problem("events", from: later, to: at)?.hasPrefix("from:") == true)
        #expect(problem("lag", step: "hour")?.hasPrefix("step:") == true, "lag is kept per minute only")
        #expect(problem("active-users", by: "region")?.hasPrefix("by:") == true)
        #expect(problem("events", by: "le")?.hasPrefix("by:") == true)
        // Two days of minutes: more points than the catalog allows.
        #expect(problem("events", from: at, to: Timestamp(millisecondsSinceEpoch: Self.start + 2 * 86_400_000), step: "minute")?.hasPrefix("to:") == true)
        #expect(problem("events", from: at, to: Timestamp(millisecondsSinceEpoch: Self.start + 2 * 86_400_000), step: "hour") == nil)
        #expect(problem("lag", by: "le") == nil)
        // Times at Int64's limits: clamped to the years events can have, so too many points, not an overflow.
        #expect(problem(
            "events", from: Timestamp(millisecondsSinceEpoch: .min), to: Timestamp(millisecondsSinceEpoch: .max), step: "minute")?.hasPrefix("to:") == true)
        #expect(problem("events", from: Timestamp(millisecondsSinceEpoch: .max), to: Timestamp(millisecondsSinceEpoch: .max), step: "day") == nil)
        // Defaults: the last 60 buckets of the first window, the current one included.
        let defaulted = try AnalyticsSeriesQuery.make(catalog: Self.catalog, metric: "events", from: nil, to: nil, step: nil, by: nil, now: later)
        #expect(defaulted.bucketStarts.count == 60 && defaulted.bucketStarts.last == Self.start + 60_000)
    }

    @Test func percentilesAreTheUpperBoundOfTheirBucket() {
        let histogram = AnalyticsHistogram(labelled: ["50": 50, "100": 40, "250": 9, "+Inf": 1])
        #expect(histogram.percentile(0.5) == 50)
        #expect(histogram.percentile(0.9) == 100)
        #expect(histogram.percentile(0.99) == 250)
        #expect(histogram.percentile(1) == .max && histogram.reportedPercentile(1) == nil)
        #expect(AnalyticsHistogram().percentile(0.5) == nil)
        #expect(AnalyticsHistogram.bucketLabel(for: 100, bounds: [50, 100]) == "100")
        #expect(AnalyticsHistogram.bucketLabel(for: 101, bounds: [50, 100]) == "+Inf")
    }
}
