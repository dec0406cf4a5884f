import Foundation
import PostgresNIO
import ScoreboardCore
import ScoreboardPostgres
import Testing

/// The analysts' views (migration 0010, analytics/README.md) and `scoreboard analytics export`, against a recount
/// computed here from the events the test stored: random events over five weeks for 80 users, with some users who
/// come back the next day, a week later, or never.
@Suite(.timeLimit(.minutes(2)))
struct AnalystViewsTests {
    struct StoredEvent: Sendable {
        var id: UUID
        var user: String
        var action: String
        var points: Int64
        /// Milliseconds since the epoch, as events carry them.
        var occurredAtMilliseconds: Int64
        var region: String?
        var guild: String?

        var occurredAt: Date { Date(timeIntervalSince1970: Double(occurredAtMilliseconds) / 1000) }
        var day: String { Self.dayFormatter.string(from: occurredAt) }

        static let dayFormatter: DateFormatter = {
            let formatter = DateFormatter()
            formatter.dateFormat = "yyyy-MM-dd"
            formatter.timeZone = TimeZone(identifier: "UTC")
            formatter.locale = Locale(identifier: "en_US_POSIX")
            return formatter
        }()
    }

    /// Five weeks of events ending now, by a seeded generator, so a failure can be replayed.
    static func events(seed: UInt64) -> [StoredEvent] {
        var random = SplitMix64(state: seed)
        let actions: [(String, Int64)] = [("quest", 10), ("pvp-win", 50), ("pvp-match", 25), ("daily-bonus", 40), ("comma,\"quoted\" action", 1)]
        let regions: [String?] = ["eu", "na", "apac", nil]
        let guilds: [String?] = ["g1", "g2", nil]
        let now = Date()
        var events: [StoredEvent] = []
        for user in 0..<80 {
            let first = Double(Int.random(in: 0..<35, using: &random))
            // Each user plays on their first day and then on a random subset of later days.
            var days: [Double] = [first]
            for offset in 1...10 where Bool.random(using: &random) {
                let day = first - Double(offset * (offset % 3 == 0 ? 7 : 1))
                if day >= 0 { days.append(day) }
            }
            for day in days {
                for _ in 0..<Int.random(in: 1...4, using: &random) {
                    let (action, points) = actions.randomElement(using: &random)!
                    let secondsIntoDay = Double.random(in: 0..<86_400, using: &random)
                    let midnight = Calendar.utc.startOfDay(for: now).addingTimeInterval(-day * 86_400)
                    let occurred = min(midnight.addingTimeInterval(secondsIntoDay), now.addingTimeInterval(-1))
                    events.append(StoredEvent(
                        id: UUID(), user: "user-\(user)", action: action, points: points,
                        occurredAtMilliseconds: Int64((occurred.timeIntervalSince1970 * 1000).rounded(.down)),
                        region: regions.randomElement(using: &random)!, guild: guilds.randomElement(using: &random)!))
                }
            }
        }
        return events
    }

    @Test func viewsEqualARecountOfTheEvents() async throws {
        let events = Self.events(seed: 20261125)
        try await withFreshPostgresStore(prefix: "views") { store in
            try await store.migrate()
            try await Self.insert(events, into: store)

            // Daily active users, events and points.
            var expectedDaily: [String: (users: Set<String>, events: Int64, points: Int64)] = [:]
            for event in events {
                expectedDaily[event.day, default: ([], 0, 0)].users.insert(event.user)
                expectedDaily[event.day]!.events += 1
                expectedDaily[event.day]!.points += event.points
            }
            let daily = try await Self.rows(store, "SELECT to_char(day, 'YYYY-MM-DD'), active_users, events, points FROM analytics_daily_active_users")
                .map { try $0.decode((String, Int64, Int64, Int64).self) }
            #expect(daily.count == expectedDaily.count)
            for (day, users, count, points) in daily {
                let expected = try #require(expectedDaily[day], "a day no event fell on: \(day)")
                #expect(users == Int64(expected.users.count) && count == expected.events && points == expected.points, "day \(day)")
            }

            // Weekly active users: distinct users per ISO week (Monday).
            var expectedWeekly: [String: Set<String>] = [:]
            for event in events { expectedWeekly[Self.monday(of: event.occurredAt), default: []].insert(event.user) }
            let weekly = try await Self.rows(store, "SELECT to_char(week, 'YYYY-MM-DD'), active_users FROM analytics_weekly_active_users")
                .map { try $0.decode((String, Int64).self) }
            #expect(Dictionary(uniqueKeysWithValues: weekly) == expectedWeekly.mapValues { Int64($0.count) })

            // D1 and D7 retention by first day.
            var activeDays: [String: Set<String>] = [:]
            for event in events { activeDays[event.user, default: []].insert(event.day) }
            var expectedRetention: [String: (size: Int64, d1: Int64, d7: Int64)] = [:]
            for (_, days) in activeDays {
                let first = days.min()!
                let firstDate = StoredEvent.dayFormatter.date(from: first)!
                let d1 = StoredEvent.dayFormatter.string(from: firstDate.addingTimeInterval(86_400))
                let d7 = StoredEvent.dayFormatter.string(from: firstDate.addingTimeInterval(7 * 86_400))
                expectedRetention[first, default: (0, 0, 0)].size += 1
                if days.contains(d1) { expectedRetention[first]!.d1 += 1 }
                if days.contains(d7) { expectedRetention[first]!.d7 += 1 }
            }
            let retention = try await Self.rows(store, "SELECT to_char(cohort_day, 'YYYY-MM-DD'), cohort_size, d1_retained, d7_retained FROM analytics_retention")
                .map { try $0.decode((String, Int64, Int64, Int64).self) }
            #expect(retention.count == expectedRetention.count)
            for (day, size, d1, d7) in retention {
                let expected = try #require(expectedRetention[day])
                #expect(size == expected.size && d1 == expected.d1 && d7 == expected.d7, "cohort \(day)")
            }
            #expect(expectedRetention.values.contains { $0.d1 > 0 } && expectedRetention.values.contains { $0.d7 > 0 }, "the data exercises retention")

            // Weekly churn: previous week's actives absent this week.
            var usersByWeek: [String: Set<String>] = [:]
            for event in events { usersByWeek[Self.monday(of: event.occurredAt), default: []].insert(event.user) }
            let churn = try await Self.rows(store, "SELECT to_char(week, 'YYYY-MM-DD'), previous_week_active, churned FROM analytics_weekly_churn")
                .map { try $0.decode((String, Int64, Int64).self) }
            #expect(!churn.isEmpty)
            for (week, previous, churned) in churn {
                let weekDate = StoredEvent.dayFormatter.date(from: week)!
                let before = usersByWeek[StoredEvent.dayFormatter.string(from: weekDate.addingTimeInterval(-7 * 86_400))] ?? []
                let now = usersByWeek[week] ?? []
                #expect(previous == Int64(before.count) && churned == Int64(before.subtracting(now).count), "week \(week)")
            }

            // Weekly cohorts: offset 0 holds the whole cohort.
            let cohorts = try await Self.rows(store, "SELECT week_offset, active_users, cohort_size FROM analytics_weekly_cohorts WHERE week_offset = 0")
                .map { try $0.decode((Int32, Int64, Int64).self) }
            #expect(!cohorts.isEmpty && cohorts.allSatisfy { $0.1 == $0.2 })
            let cohortTotal = try await Self.rows(store, "SELECT sum(cohort_size)::bigint FROM analytics_weekly_cohorts WHERE week_offset = 0")
                .map { try $0.decode(Int64.self) }
            #expect(cohortTotal == [Int64(activeDays.count)])

            // Per day by action, region and guild.
            var byRegion: [String: Int64] = [:]
            for event in events { byRegion["\(event.day)|\(event.region ?? "-")", default: 0] += event.points }
            let regions = try await Self.rows(store, "SELECT to_char(day, 'YYYY-MM-DD'), coalesce(region, '-'), points FROM analytics_daily_by_region")
                .map { try $0.decode((String, String, Int64).self) }
            #expect(Dictionary(uniqueKeysWithValues: regions.map { ("\($0.0)|\($0.1)", $0.2) }) == byRegion)

            // Top actions of the last seven days (today and the six days before).
            let cutoff = Calendar.utc.startOfDay(for: Date()).addingTimeInterval(-6 * 86_400)
            var recent: [String: Int64] = [:]
            for event in events where event.occurredAt >= cutoff { recent[event.action, default: 0] += 1 }
            let top = try await Self.rows(store, "SELECT action, events FROM analytics_top_actions_7d ORDER BY rank, action")
                .map { try $0.decode((String, Int64).self) }
            #expect(Dictionary(uniqueKeysWithValues: top) == recent)
            #expect(top.map(\.1) == top.map(\.1).sorted(by: >))
        }
    }

    @Test func exportWritesThePeriodsEventsAndAggregatesAsCSV() async throws {
        let events = Self.events(seed: 7)
        try await withFreshPostgresStore(prefix: "export") { store in
            try await store.migrate()
            try await Self.insert(events, into: store)
            let to = Calendar.utc.startOfDay(for: Date())
            let from = to.addingTimeInterval(-14 * 86_400)
            let inPeriod = events.filter { $0.occurredAt >= from && $0.occurredAt < to }
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("export-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: directory) }
            var export = AnalyticsExport(client: store.client, logger: TestEnvironment.logger)
            export.pageSize = 37  // several pages, the last one partial
            let counts = try await export.export(from: from, to: to, into: directory)

            #expect(counts[.events] == inPeriod.count)
            let eventLines = try Self.csvRecords(directory.appendingPathComponent("events.csv"))
            #expect(eventLines.first == ["event_id", "user_id", "action", "points", "occurred_at", "region", "guild", "source", "idempotency_key"])
            let byID = Dictionary(uniqueKeysWithValues: inPeriod.map { ($0.id.uuidString.lowercased(), $0) })
            #expect(Set(eventLines.dropFirst().map { $0[0] }) == Set(byID.keys), "every event of the period once, none outside it")
            for record in eventLines.dropFirst() {
                let event = try #require(byID[record[0]])
                #expect(record[1] == event.user && record[2] == event.action && record[3] == String(event.points))
                #expect(record[5] == (event.region ?? "") && record[6] == (event.guild ?? ""))
                #expect(record[4] == Self.isoMillis(event.occurredAtMilliseconds), "occurred_at of \(record[0])")
            }

            let dailyLines = try Self.csvRecords(directory.appendingPathComponent("daily.csv"))
            var expected: [String: (Int64, Int64)] = [:]
            for event in inPeriod {
                let key = [event.day, event.action, event.region ?? "", event.guild ?? ""].joined(separator: "|")
                expected[key, default: (0, 0)].0 += 1
                expected[key]!.1 += event.points
            }
            #expect(dailyLines.count - 1 == expected.count && counts[.daily] == expected.count)
            for record in dailyLines.dropFirst() {
                let value = try #require(expected[record[0..<4].joined(separator: "|")], "\(record)")
                #expect(record[4] == String(value.0) && record[5] == String(value.1))
            }
            let users = try Self.csvRecords(directory.appendingPathComponent("daily_active_users.csv"))
            #expect(users.dropFirst().map { Int($0[1])! }.reduce(0, +) == Set(inPeriod.map { "\($0.day)|\($0.user)" }).count)
        }
    }

    // MARK: - Helpers

    static func insert(_ events: [StoredEvent], into store: PostgresStore) async throws {
        for chunk in stride(from: 0, to: events.count, by: 1_000).map({ Array(events[$0..<min($0 + 1_000, events.count)]) }) {
            try await store.client.query("""
                INSERT INTO score_events (event_id, user_id, action, points, occurred_at, region, guild, idempotency_key, source, kafka_partition, kafka_offset)
                SELECT e, u, a, p, 'epoch'::timestamptz + o * interval '1 millisecond', NULLIF(r, ''), NULLIF(g, ''), gen_random_uuid(), 'test', 0, 0
                FROM unnest(\(chunk.map(\.id))::uuid[], \(chunk.map(\.user))::text[], \(chunk.map(\.action))::text[],
                            \(chunk.map(\.points))::bigint[], \(chunk.map(\.occurredAtMilliseconds))::bigint[],
                            \(chunk.map { $0.region ?? "" })::text[], \(chunk.map { $0.guild ?? "" })::text[]) AS t(e, u, a, p, o, r, g)
                """)
        }
    }

    static func rows(_ store: PostgresStore, _ sql: String) async throws -> [PostgresRow] {
        try await store.client.queryRows(PostgresQuery(unsafeSQL: sql), logger: TestEnvironment.logger)
    }

    static func monday(of date: Date) -> String {
        var calendar = Calendar(identifier: .iso8601)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let monday = calendar.date(from: calendar.dateComponents([.yearForWeekOfYear, .weekOfYear], from: date))!
        return StoredEvent.dayFormatter.string(from: monday)
    }

    static func isoMillis(_ millis: Int64) -> String {
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.locale = Locale(identifier: "en_US_POSIX")
        return formatter.string(from: Date(timeIntervalSince1970: Double(millis) / 1000))
    }

    /// Parses an RFC 4180 file (quoted fields, doubled quotes, CRLF line ends), as a warehouse loader would.
    static func csvRecords(_ url: URL) throws -> [[String]] {
        let text = try String(contentsOf: url, encoding: .utf8)
        var records: [[String]] = []
        var record: [String] = []
        var field = ""
        var quoted = false
        var characters = Array(text)[...]
        while let character = characters.popFirst() {
            if quoted {
                if character == "\"" {
                    if characters.first == "\"" { field.append("\""); characters.removeFirst() } else { quoted = false }
                } else {
                    field.append(character)
                }
            } else if character == "\"" {
                quoted = true
            } else if character == "," {
                record.append(field)
                field = ""
            } else if character == "\r\n" || character == "\n" {
                record.append(field)
                records.append(record)
                (record, field) = ([], "")
            } else {
                field.append(character)
            }
        }
        #expect(record.isEmpty && field.isEmpty, "the file ends with a line end")
        return records
    }
}

extension Calendar {
    static let utc: Calendar = {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        return calendar
    }()
}
