import Foundation
import ScoreboardCore
import ScoreboardDefinitions
import ScoreboardPostgres
@testable import ScoreboardWorker
import Testing

/// The analytics stage against the real PostgreSQL: its cells commit with the batch that counted them, the readers of
/// the push role give back exactly a recount of the accepted events, and a replay (the same batch again, as after a
/// crash before its offsets were read back) changes nothing.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct AnalyticsStageTests {
    static let catalog = try! AnalyticsCatalog.load(directory: Repository.root.appendingPathComponent("analytics"))
    static let pipelines = try! PipelineCatalog.load(directory: Repository.root.appendingPathComponent("pipelines"))

    @Test func cellsEqualARecountAndAReplayChangesNothing() async throws {
        try await withFreshPostgresStore(prefix: "analytics") { store in
            _ = try await store.migrate()
            let ledger = ScoreLedger(client: store.client, consumerGroup: "workers", logger: TestEnvironment.logger)
            let topic = "analytics-test"
            let claims = try await ledger.claim(topic: topic, topicID: "t1", partitions: [0, 1])
            // Two workers' batches, one per partition, sharing the population cells (the same minutes, actions, regions).
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            let start = AnalyticsWindow.minute.bucketStart(of: Timestamp(millisecondsSinceEpoch: now)) - 3 * 60_000
            var random = SplitMix64(state: 7)
            let regions: [String?] = ["eu", "na", nil]
            let events = (0..<400).map { index in
                ScoreEvent(
                    eventID: UUID().uuidString.lowercased(), userID: "user-\(Int.random(in: 0..<25, using: &random))",
                    action: ["complete-quest", "pvp-match", "pvp-win"].randomElement(using: &random)!, points: Int64.random(in: 1...40, using: &random),
                    occurredAt: Timestamp(millisecondsSinceEpoch: start + Int64.random(in: 0..<180_000, using: &random)),
                    region: regions.randomElement(using: &random)!, guild: nil, idempotencyKey: UUID().uuidString.lowercased(), source: .player)
            }
            let committedAt = Timestamp(millisecondsSinceEpoch: now + 500)
            let stage = AnalyticsStage(catalog: Self.catalog, now: { committedAt })
            let catalog = Self.pipelines.leaderboards
            func apply(_ partition: Int32, _ events: [ScoreEvent]) async throws {
                let batch = LedgerBatch(
                    topic: topic, events: events.enumerated().map { SourcedEvent(event: $1, partition: partition, offset: Int64($0)) },
                    nextOffsets: [partition: Int64(events.count)], epochs: [partition: claims[Int(partition)].epoch])
                _ = try await ledger.apply(batch, aggregate: { BatchAggregation(events: $0, catalog: catalog) }) { applied, state in
                    let rows = try stage.rows(for: StageInput(applied: applied, partitions: [:], deadLetters: []), state: state)
                    return (outbox: rows.outbox, writes: rows.writes, due: 0)
                }
            }
            // Users are split by partition, as the gateway's key does.
            let first = events.filter { Int($0.userID.dropFirst(5))! % 2 == 0 }
            let second = events.filter { Int($0.userID.dropFirst(5))! % 2 == 1 }
            async let one: Void = apply(0, first)
            async let two: Void = apply(1, second)
            _ = try await (one, two)

            func read(_ metric: String, _ window: AnalyticsWindow, by: String? = nil) async throws -> AnalyticsSeries {
                let query = try AnalyticsSeriesQuery.make(
                    catalog: Self.catalog, metric: metric, from: Timestamp(millisecondsSinceEpoch: start),
                    to: Timestamp(millisecondsSinceEpoch: start + 180_000), step: window.rawValue, by: by, now: committedAt)
                let cells = query.metric.kind == .activeUsers
                    ? try await ledger.analyticsDistinctCounts(metric: metric, window: window, from: query.from, to: query.to)
                    : try await ledger.analyticsCounters(metric: metric, window: window, dimension: query.cellDimension, from: query.from, to: query.to)
                return query.series(counters: cells)
            }
            func observed() async throws -> [AnalyticsSeries] {
                [
                    try await read("events", .minute), try await read("points", .minute, by: "region"), try await read("points", .minute, by: "action"),
                    try await read("active-users", .minute), try await read("active-users", .hour), try await read("lag", .minute),
                ]
            }
            let committed = try await observed()
            func minute(_ event: ScoreEvent) -> Int64 { AnalyticsWindow.minute.bucketStart(of: event.occurredAt) }
            let eventsPerMinute = Dictionary(grouping: events, by: minute).mapValues { Int64($0.count) }
            #expect(committed[0].series[0].points.map(\.value) == committed[0].series[0].points.map { eventsPerMinute[$0.t] ?? 0 })
            #expect(committed[0].series[0].points.map(\.value).reduce(0, +) == 400)
            for (index, value) in [(1, { (event: ScoreEvent) in event.region ?? "(none)" }), (2, { (event: ScoreEvent) in event.action })] {
                let expected = Dictionary(grouping: events, by: { "\(value($0))@\(minute($0))" }).mapValues { $0.reduce(0) { $0 + $1.points } }
                var seen: [String: Int64] = [:]
                for line in committed[index].series { for point in line.points where point.value > 0 { seen["\(line.value!)@\(point.t)"] = point.value } }
                #expect(seen == expected)
            }
            let usersPerMinute = Dictionary(grouping: events, by: minute).mapValues { Int64(Set($0.map(\.userID)).count) }
            #expect(committed[3].series[0].points.map(\.value) == committed[3].series[0].points.map { usersPerMinute[$0.t] ?? 0 })
            let hour = AnalyticsWindow.hour
            let usersPerHour = Dictionary(grouping: events, by: { hour.bucketStart(of: $0.occurredAt) }).mapValues { Int64(Set($0.map(\.userID)).count) }
            #expect(committed[4].series[0].points.map(\.value) == committed[4].series[0].points.map { usersPerHour[$0.t] ?? 0 })
            #expect(committed[5].series[0].points.map(\.value) == committed[0].series[0].points.map(\.value), "one lag count per event")

            // The replay: both batches again. The ledger drops their events as applied; the stage sees none.
            async let replayOne: Void = apply(0, first)
            async let replayTwo: Void = apply(1, second)
            _ = try await (replayOne, replayTwo)
            #expect(try await observed() == committed)
        }
    }
}
