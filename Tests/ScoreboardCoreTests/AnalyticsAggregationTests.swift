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

    /// The stage tables as a batch's transaction uses them: the state it names read, values replaced, counters added.
    struct Cells {
        var counters: [AnalyticsCellKey: Int64] = [:]
        var state: [StageKey: [UInt8]] = [:]

        /// One batch: reads, then writes, as the analytics stage does.
        mutating func count(_ events: [ScoreEvent], committedAt: Timestamp, catalog: AnalyticsCatalog) {
            let reads = AnalyticsAggregation.reads(for: events, catalog: catalog)
            let read = StageState(values: state.filter { reads.state.contains($0.key) })
            apply(AnalyticsAggregation.writes(for: events, committedAt: committedAt, catalog: catalog, state: read))
        }

        mutating func apply(_ writes: StageWrites) {
            for (key, amount) in writes.counters {
                counters[AnalyticsCellKey(parsing: key.key)!, default: 0] += amount
            }
            state.merge(writes.state) { _, new in new }
            #expect(writes.members.isEmpty, "distinct counts keep no set rows")
        }

        func read(_ query: AnalyticsSeriesQuery) -> AnalyticsSeries {
            let cells = counters.filter { $0.key.metric == query.metricName && $0.key.window == query.step && $0.key.dimension == query.cellDimension }
            return query.series(counters: cells.filter { $0.key.bucketStart >= query.from && $0.key.bucketStart < query.to })
        }
    }

    static func query(_ metric: String, step: String, by: String? = nil, minutes: Int64 = 180) throws -> AnalyticsSeriesQuery {
        try AnalyticsSeriesQuery.make(
            catalog: catalog, metric: metric, from: Timestamp(millisecondsSinceEpoch: start),
            to: Timestamp(millisecondsSinceEpoch: start + minutes * 60_000), step: step, by: by, now: Timestamp(millisecondsSinceEpoch: start))
    }

    @Test func theCatalogDeclaresEveryKindAndChecksItsRules() throws {
        #expect(Set(Self.catalog.metrics.values.map(\.kind)) == [.events, .points, .activeUsers, .lag, .rejections])
        #expect(Self.catalog.retentionDays == AnalyticsCatalog.Retention(minute: 2, hour: 35, day: 400))
        // Bad definitions: a distinct count broken down by region, lag bounds that fall, no windows, rejections by
        // region, events by type, a retention of no days.
        let bad = AnalyticsCatalog(retentionDays: AnalyticsCatalog.Retention(minute: 0, hour: 35, day: 400), metrics: [
            "users": AnalyticsMetric(kind: .activeUsers, description: "", windows: [.minute], dimensions: [.region]),
            "lag": AnalyticsMetric(kind: .lag, description: "", windows: [.minute], lagBucketsMilliseconds: [100, 50]),
            "none": AnalyticsMetric(kind: .events, description: "", windows: []),
            "refused": AnalyticsMetric(kind: .rejections, description: "", windows: [.minute], dimensions: [.region]),
            "typed": AnalyticsMetric(kind: .events, description: "", windows: [.minute], dimensions: [.problemType]),
        ])
        let error = try #require(throws: ScoreboardError.self) { try bad.validate() }
        #expect(error.reasons.count == 6, "\(error.reasons)")
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
            cells.count(Array(rest.prefix(size)), committedAt: committedAt, catalog: Self.catalog)
            rest = rest.dropFirst(size)
        }
        var whole = Cells()
        whole.count(events, committedAt: committedAt, catalog: Self.catalog)
        #expect(whole.counters == cells.counters && whole.state == cells.state)

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

    /// Active users past a small exact limit (50 in this test's catalog): a bucket of exactly 50 users stays an exact
    /// set; the 51st turns it into a sketch and labels it approximate; a bucket of 20,000 users (each seen twice, in
    /// random batches) reads within three standard errors of the recount; counting users again changes nothing.
    @Test func distinctCountsPastTheLimitAreSketchesWithinTheirStatedError() throws {
        let catalog = AnalyticsCatalog(limits: .init(distinctExactUpTo: 50), metrics: [
            "active-users": AnalyticsMetric(kind: .activeUsers, description: "", windows: [.minute, .hour]),
        ])
        func events(minute: Int64, users: Range<Int>) -> [ScoreEvent] {
            users.map { user in
                ScoreEvent(
                    eventID: "e\(minute)-\(user)", userID: "player-\(user)", action: "complete-quest", points: 1,
                    occurredAt: Timestamp(millisecondsSinceEpoch: Self.start + minute * 60_000 + Int64(user % 60_000)), region: nil, guild: nil,
                    idempotencyKey: "k\(minute)-\(user)", source: .player)
            }
        }
        var random = SplitMix64(state: 12)
        let crowd = (events(minute: 2, users: 0..<20_000) + events(minute: 2, users: 0..<20_000)).shuffled(using: &random)
        var cells = Cells()
        let committedAt = Timestamp(millisecondsSinceEpoch: Self.start + 3_600_000)
        cells.count(events(minute: 0, users: 0..<50), committedAt: committedAt, catalog: catalog)
        cells.count(events(minute: 1, users: 0..<50), committedAt: committedAt, catalog: catalog)
        cells.count(events(minute: 1, users: 50..<51), committedAt: committedAt, catalog: catalog)
        var rest = crowd[...]
        while !rest.isEmpty {
            let size = Int.random(in: 1...3_000, using: &random)
            cells.count(Array(rest.prefix(size)), committedAt: committedAt, catalog: catalog)
            rest = rest.dropFirst(size)
        }
        let query = try AnalyticsSeriesQuery.make(
            catalog: catalog, metric: "active-users", from: Timestamp(millisecondsSinceEpoch: Self.start),
            to: Timestamp(millisecondsSinceEpoch: Self.start + 3 * 60_000), step: "minute", by: nil, now: committedAt)
        let minutes = cells.read(query).series[0].points
        let error = 1.04 / Double(1 << 14).squareRoot()
        #expect(minutes[0].value == 50 && minutes[0].approximate == false && minutes[0].relativeError == nil, "exact up to the limit")
        #expect(minutes[1].approximate == true && minutes[1].relativeError == error, "the 51st user makes it a sketch")
        #expect(abs(Double(minutes[1].value) - 51) <= 3 * error * 51)
        #expect(minutes[2].approximate == true && abs(Double(minutes[2].value) - 20_000) <= 3 * error * 20_000, "\(minutes[2].value)")
        #expect(cells.read(query).approximate && cells.read(query).relativeError == error)
        let hour = try AnalyticsSeriesQuery.make(
            catalog: catalog, metric: "active-users", from: Timestamp(millisecondsSinceEpoch: Self.start),
            to: Timestamp(millisecondsSinceEpoch: Self.start + 3_600_000), step: "hour", by: nil, now: committedAt)
        let users = Double(Set(crowd.map(\.userID)).union((0..<51).map { "player-\($0)" }).count)
        let hourly = try #require(cells.read(hour).series[0].points.first)
        #expect(hourly.approximate == true && abs(Double(hourly.value) - users) <= 3 * error * users, "\(hourly.value) for \(users)")
        // A sketch's cell is bounded: one byte per register, plus its tag.
        #expect(cells.state.values.map(\.count).max() == (1 << 14) + 1)

        // Users already counted, again (new events of the same users): no state written, no count changed.
        let before = cells
        cells.count(Array(crowd.prefix(500)) + events(minute: 0, users: 10..<20), committedAt: committedAt, catalog: catalog)
        #expect(cells.counters == before.counters && cells.state == before.state)
    }

    /// Rejections from the topic, counted per bucket in total and by problem type; a reason that is no identifier
    /// (what a broken gateway might write) counts as `(none)` rather than making a key of it.
    @Test func rejectionsAreCountedByProblemType() throws {
        let reasons = ["invalid-parameter", "unauthenticated", "invalid-parameter", "rate-limited", "bad|reason\n"]
        let rejections = reasons.enumerated().map { index, reason in
            Rejection(
                rejectionID: "r\(index)", reason: reason, userID: index % 2 == 0 ? "ann" : nil, clientIP: "10.0.0.1", action: nil,
                occurredAt: Timestamp(millisecondsSinceEpoch: Self.start + Int64(index) * 61_000), detail: nil)
        }
        var cells = Cells()
        cells.apply(AnalyticsAggregation.writes(forRejections: rejections, catalog: Self.catalog))
        #expect(AnalyticsAggregation.writes(for: [], committedAt: Timestamp(millisecondsSinceEpoch: Self.start), catalog: Self.catalog, state: StageState()).isEmpty)
        let series = cells.read(try Self.query("rejections", step: "day", by: "type"))
        let totals = Dictionary(uniqueKeysWithValues: series.series.map { ($0.value!, $0.points.reduce(0) { $0 + $1.value }) })
        #expect(totals == ["invalid-parameter": 2, "unauthenticated": 1, "rate-limited": 1, "(none)": 1])
        let perMinute = cells.read(try Self.query("rejections", step: "minute")).series[0].points.prefix(5).map(\.value)
        #expect(perMinute == [1, 1, 1, 1, 1])
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
