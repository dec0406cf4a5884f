import Foundation
import ScoreboardCLI
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

    /// One batch through the real ledger, as the worker runs it: the stage's reads locked, its rows written in the
    /// transaction, with `extra` writes beside them (the rejections consumer's).
    static func apply(_ batch: LedgerBatch, ledger: ScoreLedger, stage: AnalyticsStage, extra: StageWrites = .none) async throws {
        let leaderboards = pipelines.leaderboards
        _ = try await ledger.apply(
            batch, aggregate: { BatchAggregation(events: $0, catalog: leaderboards) },
            reads: { stage.reads(for: StageInput(applied: $0, partitions: [:], deadLetters: [])) }
        ) { applied, state in
            var rows = try stage.rows(for: StageInput(applied: applied, partitions: [:], deadLetters: []), state: state)
            rows.writes.merge(extra)
            return (outbox: rows.outbox, writes: rows.writes, due: 0)
        }
    }

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
            func apply(_ partition: Int32, _ events: [ScoreEvent]) async throws {
                let batch = LedgerBatch(
                    topic: topic, events: events.enumerated().map { SourcedEvent(event: $1, partition: partition, offset: Int64($0)) },
                    nextOffsets: [partition: Int64(events.count)], epochs: [partition: claims[Int(partition)].epoch])
                try await Self.apply(batch, ledger: ledger, stage: stage)
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
                let cells = try await ledger.analyticsCounters(metric: metric, window: window, dimension: query.cellDimension, from: query.from, to: query.to)
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

    /// Active users past a small exact limit (40), through the real ledger: each batch reads its cells locked and
    /// replaces them; the minute of 3,000 users (two workers' partitions at once, every user twice) becomes a sketch,
    /// labelled approximate, within three standard errors of the recount; a minute of 40 users stays exact; the
    /// replay changes nothing; the stored value is at most the sketch's 16 KiB.
    @Test func activeUsersPastTheLimitAreApproximateWithinTheirError() async throws {
        let catalog = AnalyticsCatalog(limits: .init(distinctExactUpTo: 40), metrics: [
            "active-users": AnalyticsMetric(kind: .activeUsers, description: "", windows: [.minute, .hour]),
        ])
        try await withFreshPostgresStore(prefix: "analytics_hll") { store in
            _ = try await store.migrate()
            let ledger = ScoreLedger(client: store.client, consumerGroup: "workers", logger: TestEnvironment.logger)
            let topic = "analytics-hll"
            let claims = try await ledger.claim(topic: topic, topicID: "t1", partitions: [0, 1])
            let start = AnalyticsWindow.hour.bucketStart(of: Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000))) - 3_600_000
            func event(_ user: Int, minute: Int64, copy: Int) -> ScoreEvent {
                ScoreEvent(
                    eventID: UUID().uuidString.lowercased(), userID: "user-\(user)", action: "complete-quest", points: 1,
                    occurredAt: Timestamp(millisecondsSinceEpoch: start + minute * 60_000 + Int64(user % 50_000)), region: nil, guild: nil,
                    idempotencyKey: UUID().uuidString.lowercased(), source: .player)
            }
            let quiet = (0..<40).map { event($0, minute: 0, copy: 0) }
            let crowd = (0..<3_000).flatMap { user in [event(user, minute: 1, copy: 0), event(user, minute: 1, copy: 1)] }
            let stage = AnalyticsStage(catalog: catalog, now: { Timestamp(millisecondsSinceEpoch: start + 3_600_000) })
            func apply(_ partition: Int32, _ events: ArraySlice<ScoreEvent>, from offset: Int64) async throws {
                let batch = LedgerBatch(
                    topic: topic, events: events.enumerated().map { SourcedEvent(event: $1, partition: partition, offset: offset + Int64($0)) },
                    nextOffsets: [partition: offset + Int64(events.count)], epochs: [partition: claims[Int(partition)].epoch])
                try await Self.apply(batch, ledger: ledger, stage: stage)
            }
            /// Each partition's events in batches of 500, both partitions at once (they share the minute's cells).
            func applyAll() async throws {
                let partitions = [quiet + crowd.filter { Int($0.userID.dropFirst(5))! % 2 == 0 }, crowd.filter { Int($0.userID.dropFirst(5))! % 2 == 1 }]
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for (partition, events) in partitions.enumerated() {
                        group.addTask {
                            for offset in stride(from: 0, to: events.count, by: 500) {
                                try await apply(Int32(partition), events[offset..<min(offset + 500, events.count)], from: Int64(offset))
                            }
                        }
                    }
                    try await group.waitForAll()
                }
            }
            try await applyAll()
            func read(_ window: AnalyticsWindow) async throws -> AnalyticsSeries {
                let query = try AnalyticsSeriesQuery.make(
                    catalog: catalog, metric: "active-users", from: Timestamp(millisecondsSinceEpoch: start),
                    to: Timestamp(millisecondsSinceEpoch: start + 3 * 60_000), step: window.rawValue, by: nil,
                    now: Timestamp(millisecondsSinceEpoch: start + 3_600_000))
                return query.series(counters: try await ledger.analyticsCounters(
                    metric: "active-users", window: window, dimension: nil, from: query.from, to: query.to))
            }
            let error = HyperLogLog.relativeStandardError(precision: 14)
            let minutes = try await read(.minute).series[0].points
            #expect(minutes[0].value == 40 && minutes[0].approximate == false, "exact up to the limit")
            #expect(minutes[1].approximate == true && minutes[1].relativeError == error)
            #expect(abs(Double(minutes[1].value) - 3_000) <= 3 * error * 3_000, "\(minutes[1].value) for 3,000 users")
            let hour = try #require(try await read(.hour).series[0].points.first)
            // users 0..<40 are in both minutes: 3,000 distinct in the hour.
            #expect(hour.approximate == true && abs(Double(hour.value) - 3_000) <= 3 * error * 3_000, "\(hour.value)")
            let rows = try await store.client.queryRows(
                "SELECT max(length(value)) FROM stage_state WHERE stage = 'analytics'", logger: TestEnvironment.logger)
            #expect(try rows.first?.decode(Int32.self) == Int32((1 << 14) + 1), "a sketch: 16 KiB and its tag")

            let before = (try await read(.minute), try await read(.hour))
            try await applyAll()
            let after = (try await read(.minute), try await read(.hour))
            #expect(after.0 == before.0 && after.1 == before.1, "a replay changes nothing")
        }
    }

    /// Retention: cells older than their window's days are deleted (counters, distinct counts' state and markers),
    /// newer ones kept, in batches smaller than what there is to delete.
    @Test func cellsOlderThanTheirRetentionAreDeletedNewerKept() async throws {
        try await withFreshPostgresStore(prefix: "analytics_retention") { store in
            _ = try await store.migrate()
            let ledger = ScoreLedger(client: store.client, consumerGroup: "workers", logger: TestEnvironment.logger)
            let topic = "analytics-retention"
            let claims = try await ledger.claim(topic: topic, topicID: "t1", partitions: [0])
            let day: Int64 = 86_400_000
            let now = Timestamp(millisecondsSinceEpoch: AnalyticsWindow.day.bucketStart(of: Timestamp(millisecondsSinceEpoch: 1_764_115_200_000)) + 12 * 3_600_000)
            let retention = try #require(Self.catalog.retentionDays)
            // Events 1, 3, 36 and 401 days old, 30 users each, in every region; plus rejections of the same ages.
            let ages: [Int64] = [1, 3, 36, 401]
            let regions: [String?] = ["eu", "na", nil]
            let actions = ["complete-quest", "pvp-win"]
            func event(user: Int, age: Int64) -> ScoreEvent {
                let at = now.millisecondsSinceEpoch - age * day + Int64(user) * 1_000
                return ScoreEvent(
                    eventID: UUID().uuidString.lowercased(), userID: "u\(user)", action: actions[user % 2], points: 5,
                    occurredAt: Timestamp(millisecondsSinceEpoch: at), region: regions[user % 3], guild: user % 2 == 0 ? "dragons" : nil,
                    idempotencyKey: UUID().uuidString.lowercased(), source: .player)
            }
            let events = ages.flatMap { age in (0..<30).map { event(user: $0, age: age) } }
            let rejections = ages.map { age in
                Rejection(
                    rejectionID: "r\(age)", reason: "invalid-parameter", userID: nil, clientIP: "10.0.0.3", action: nil,
                    occurredAt: Timestamp(millisecondsSinceEpoch: now.millisecondsSinceEpoch - age * day), detail: nil)
            }
            let stage = AnalyticsStage(catalog: Self.catalog, now: { now })
            let batch = LedgerBatch(
                topic: topic, events: events.enumerated().map { SourcedEvent(event: $1, partition: 0, offset: Int64($0)) },
                nextOffsets: [0: Int64(events.count)], epochs: [0: claims[0].epoch])
            try await Self.apply(
                batch, ledger: ledger, stage: stage, extra: AnalyticsAggregation.writes(forRejections: rejections, catalog: Self.catalog))

            /// Every analytics row's cell, from both tables.
            func cells() async throws -> [AnalyticsCellKey] {
                let rows = try await store.client.queryRows("""
                    SELECT key FROM stage_counters WHERE stage = 'analytics' UNION ALL SELECT key FROM stage_state WHERE stage = 'analytics'
                    """, logger: TestEnvironment.logger)
                return try rows.map { try #require(AnalyticsCellKey(parsing: try $0.decode(String.self))) }
            }
            let written = try await cells()
            func isOld(_ cell: AnalyticsCellKey) -> Bool { cell.bucketStart < retention.oldestKept(cell.window, now: now) }
            // Each window has cells on both sides of its limit (minutes: 1 day kept, 3 days not; hours: 3 kept, 36
            // not; days: 36 kept, 401 not), of every metric.
            for window in AnalyticsWindow.allCases {
                #expect(written.contains { $0.window == window && isOld($0) } && written.contains { $0.window == window && !isOld($0) })
            }
            #expect(Set(written.filter(isOld).map(\.metric)) == Set(Self.catalog.metrics.keys))

            let service = AnalyticsRetention(
                catalog: Self.catalog, retention: retention, cells: ledger, retry: RetryBackoff(initial: .milliseconds(1), maximum: .milliseconds(2)),
                deadline: .seconds(10), logger: TestEnvironment.logger, batchSize: 7, now: { now })
            // One old cell locked by another transaction (as a batch writing a late event would hold it): skipped, not
            // waited for (the deadline would end a pass that waited); deleted by the pass after the lock is gone.
            let locked = try #require(written.filter(isOld).first { $0.metric == "events" })
            let deleted = try await store.client.withConnection { connection in
                try await connection.query("BEGIN", logger: TestEnvironment.logger)
                try await connection.query(
                    "SELECT 1 FROM stage_counters WHERE stage = 'analytics' AND key = \(locked.description) FOR UPDATE", logger: TestEnvironment.logger)
                let deleted = try await service.sweep()
                try await connection.query("COMMIT", logger: TestEnvironment.logger)
                return deleted
            }
            func sorted(_ cells: [AnalyticsCellKey]) -> [String] { cells.map(\.description).sorted() }
            #expect(deleted == written.filter(isOld).count - 1)
            #expect(try await sorted(cells()) == sorted(written.filter { !isOld($0) } + [locked]))
            #expect(try await service.sweep() == 1, "the cell that was locked")
            #expect(try await sorted(cells()) == sorted(written.filter { !isOld($0) }))
            #expect(try await service.sweep() == 0, "nothing left to delete")
        }
    }

    /// Migration 0011 carries the active-user sets counted before it (rows of stage_set_members) over: each becomes an
    /// exact value with its size as the counter, so the series reads the same counts, and the next batch adds to them.
    @Test func migration0011CarriesTheSetsAlreadyCountedOver() async throws {
        try await withFreshPostgresStore(prefix: "analytics_0011") { store in
            _ = try await store.migrate()
            let start = AnalyticsWindow.minute.bucketStart(of: Timestamp(millisecondsSinceEpoch: 1_764_115_200_000))
            let cells = (0..<2).map { AnalyticsCellKey(metric: "active-users", window: .minute, dimension: nil, bucketStart: start + Int64($0) * 60_000) }
            // As the stage wrote them before 0011: one row per member; then 0011 applied again over them.
            let members = [(cells[0], ["ann", "bob", "cy"]), (cells[1], ["ann", "dee", "eve", "fay", "gus"])]
            for (cell, users) in members {
                for user in users {
                    try await store.client.query(
                        "INSERT INTO stage_set_members (stage, set_key, member) VALUES ('analytics', \(cell.description), \(user))",
                        logger: TestEnvironment.logger)
                }
            }
            try await store.client.query("DELETE FROM schema_migrations WHERE version = 11", logger: TestEnvironment.logger)
            #expect(try await store.migrate().applied == [11])

            let ledger = ScoreLedger(client: store.client, consumerGroup: "workers", logger: TestEnvironment.logger)
            let counters = try await ledger.analyticsCounters(metric: "active-users", window: .minute, dimension: nil, from: start, to: start + 120_000)
            #expect(counters == [cells[0]: 3, cells[1]: 5])
            let values = try await ledger.stageState(cells.map(AnalyticsAggregation.stateKey))
            #expect(values[AnalyticsAggregation.stateKey(cells[0])].flatMap(DistinctCount.init(encoded:)) == .exact(["ann", "bob", "cy"]))
            let left = try await store.client.queryRows("SELECT count(*) FROM stage_set_members", logger: TestEnvironment.logger)
            #expect(try left.first?.decode(Int64.self) == 0)

            // The next batch of that minute: one new user, one counted already.
            let claims = try await ledger.claim(topic: "analytics-0011", topicID: "t1", partitions: [0])
            let events = ["bob", "hal"].enumerated().map { index, user in
                ScoreEvent(
                    eventID: UUID().uuidString.lowercased(), userID: user, action: "complete-quest", points: 1,
                    occurredAt: Timestamp(millisecondsSinceEpoch: start + Int64(index) * 1_000), region: nil, guild: nil,
                    idempotencyKey: UUID().uuidString.lowercased(), source: .player)
            }
            let batch = LedgerBatch(
                topic: "analytics-0011", events: events.enumerated().map { SourcedEvent(event: $1, partition: 0, offset: Int64($0)) },
                nextOffsets: [0: 2], epochs: [0: claims[0].epoch])
            try await Self.apply(batch, ledger: ledger, stage: AnalyticsStage(catalog: Self.catalog, now: { Timestamp(millisecondsSinceEpoch: start) }))
            let after = try await ledger.analyticsCounters(metric: "active-users", window: .minute, dimension: nil, from: start, to: start + 120_000)
            #expect(after == [cells[0]: 4, cells[1]: 5])
        }
    }
}
