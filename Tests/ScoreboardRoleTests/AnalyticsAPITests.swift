import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import CompressNIO
import ScoreboardCore
import ScoreboardDefinitions
import ScoreboardHTTP
@testable import ScoreboardPush
import Testing

/// The analytics API on the push gateway's memory ports: series and summary equal a recount of the events the cells
/// were written from, bad parameters are 400 problem+json (invalid-parameter), a missing store is 503.
struct AnalyticsAPITests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let catalog = try! AnalyticsCatalog.load(directory: root.appendingPathComponent("analytics"))
    /// 2025-11-25T12:30:30Z.
    static let now = Timestamp(millisecondsSinceEpoch: 1_764_073_830_000)

    static func parts(
        cells: (any AnalyticsCells)?, live: MemoryLiveBoards = MemoryLiveBoards(), archive: MemoryStandingsArchive = MemoryStandingsArchive()
    ) -> PushParts {
        var configuration = PushConfiguration(server: HTTPServerSettings(port: 0), boards: PushWorld.allBoards)
        configuration.analytics = catalog
        let ports = PushPorts(
            live: live, archive: archive, updates: MemoryUpdateSource(), authenticator: PushWorld.authenticator(),
            analytics: cells)
        return PushParts(configuration: configuration, ports: ports, logger: Logger(label: "test"), now: { now })
    }

    /// Events of the last 90 minutes (so the hour and the 60-minute figures differ), written as a worker would.
    static func world() -> (cells: MemoryAnalyticsCells, events: [ScoreEvent]) {
        var random = SplitMix64(state: 12)
        let events = (0..<600).map { index in
            ScoreEvent(
                eventID: "e\(index)", userID: "u\(Int.random(in: 0..<30, using: &random))",
                action: ["complete-quest", "pvp-match", "pvp-win", "daily-bonus"].randomElement(using: &random)!,
                points: Int64.random(in: 1...50, using: &random),
                occurredAt: Timestamp(millisecondsSinceEpoch: now.millisecondsSinceEpoch - Int64.random(in: 0..<(90 * 60_000), using: &random)),
                region: ["eu", "na", nil].randomElement(using: &random)!, guild: nil, idempotencyKey: "k\(index)", source: .player)
        }
        let cells = MemoryAnalyticsCells()
        var state = StageState()
        for batch in stride(from: 0, to: events.count, by: 70) {
            let writes = AnalyticsAggregation.writes(
                for: Array(events[batch..<min(batch + 70, events.count)]), committedAt: now, catalog: catalog, state: state)
            state.values.merge(writes.state) { _, new in new }
            cells.apply(writes)
        }
        return (cells, events)
    }

    static func withClient<T: Sendable>(_ parts: PushParts, _ body: @escaping @Sendable (any TestClientProtocol) async throws -> T) async throws -> T {
        let app = Application(router: parts.router, services: [parts.feed], logger: Logger(label: "test"))
        return try await app.test(.router) { client in try await body(client) }
    }

    @Test func seriesEqualARecountOfTheEvents() async throws {
        let (cells, events) = Self.world()
        let from = AnalyticsWindow.minute.bucketStart(of: Self.now) - 100 * 60_000
        let to = Self.now.millisecondsSinceEpoch
        try await Self.withClient(Self.parts(cells: cells)) { client in
            try await client.execute(uri: "/v1/analytics/events?from=\(from)&to=\(to)&step=minute&by=region", method: .get) { response in
                #expect(response.status == .ok)
                let series = try JSONDecoder().decode(AnalyticsSeries.self, from: Data(buffer: response.body))
                #expect(series.from == from && series.by == "region")
                let expected = Dictionary(grouping: events, by: { "\($0.region ?? "(none)")@\(AnalyticsWindow.minute.bucketStart(of: $0.occurredAt))" })
                    .mapValues { Int64($0.count) }
                var seen: [String: Int64] = [:]
                for line in series.series { for point in line.points where point.value > 0 { seen["\(line.value!)@\(point.t)"] = point.value } }
                #expect(seen == expected)
            }
            // ISO 8601 times; the active users per hour.
            try await client.execute(uri: "/v1/analytics/active-users?from=2025-11-25T10:00:00Z&to=2025-11-25T13:00:00Z&step=hour", method: .get) { response in
                let series = try JSONDecoder().decode(AnalyticsSeries.self, from: Data(buffer: response.body))
                let expected = Dictionary(grouping: events, by: { AnalyticsWindow.hour.bucketStart(of: $0.occurredAt) }).mapValues { Int64(Set($0.map(\.userID)).count) }
                #expect(series.series[0].points.map(\.value) == series.series[0].points.map { expected[$0.t] ?? 0 })
                #expect(series.series[0].points.count == 3 && series.approximate == false)
                #expect(series.series[0].points.map(\.value).reduce(0, +) > 0, "the hours of the events")
            }
        }
    }

    @Test func theSummaryEqualsARecount() async throws {
        let (cells, events) = Self.world()
        // Rejections of the last 90 minutes too, as the rejections consumer counts them.
        var random = SplitMix64(state: 5)
        let rejections = (0..<120).map { index in
            Rejection(
                rejectionID: "r\(index)", reason: ["invalid-parameter", "unauthenticated", "rate-limited"].randomElement(using: &random)!, userID: nil,
                clientIP: "10.0.0.2", action: nil,
                occurredAt: Timestamp(millisecondsSinceEpoch: Self.now.millisecondsSinceEpoch - Int64.random(in: 0..<(90 * 60_000), using: &random)),
                detail: nil)
        }
        cells.apply(AnalyticsAggregation.writes(forRejections: rejections, catalog: Self.catalog))
        try await Self.withClient(Self.parts(cells: cells)) { client in
            try await client.execute(uri: "/v1/analytics/summary", method: .get) { response in
                #expect(response.status == .ok)
                let summary = try JSONDecoder().decode(AnalyticsSummary.self, from: Data(buffer: response.body))
                let hourStart = AnalyticsWindow.hour.bucketStart(of: Self.now)
                let minuteStart = AnalyticsWindow.minute.bucketStart(of: Self.now)
                #expect(summary.events?.hour == Int64(events.filter { $0.occurredAt.millisecondsSinceEpoch >= hourStart }.count))
                #expect(summary.events?.minute == Int64(events.filter { $0.occurredAt.millisecondsSinceEpoch >= minuteStart }.count))
                #expect(summary.events?.day == Int64(events.count), "all 90 minutes are on one UTC day")
                #expect(summary.activeUsers?.hour == Int64(Set(events.filter { $0.occurredAt.millisecondsSinceEpoch >= hourStart }.map(\.userID)).count))
                // The last 60 minute buckets, the current one included.
                let lastHour = events.filter { $0.occurredAt.millisecondsSinceEpoch >= minuteStart - 59 * 60_000 }
                let byAction = Dictionary(grouping: lastHour, by: \.action)
                #expect(summary.topActions["hour"]?.map(\.action) == byAction.sorted { ($1.value.count, $0.key) < ($0.value.count, $1.key) }.map(\.key))
                for figure in summary.topActions["hour"] ?? [] {
                    #expect(figure.events == Int64(byAction[figure.action]!.count))
                    #expect(figure.points == byAction[figure.action]!.reduce(0) { $0 + $1.points })
                }
                #expect(summary.pointsByRegionLastHour == Dictionary(grouping: lastHour, by: { $0.region ?? "(none)" }).mapValues { $0.reduce(0) { $0 + $1.points } })
                let recentLags = events.filter { $0.occurredAt.millisecondsSinceEpoch >= minuteStart - 4 * 60_000 }
                #expect(summary.lastFiveMinutesLag?.count == Int64(recentLags.count))
                #expect(summary.activeUsers?.approximate == nil && summary.activeUsersRelativeError == nil, "30 users: exact")
                #expect(summary.rejections?.day == 120)
                #expect(summary.rejections?.hour == Int64(rejections.filter { $0.occurredAt.millisecondsSinceEpoch >= hourStart }.count))
                let refusedLastHour = rejections.filter { $0.occurredAt.millisecondsSinceEpoch >= minuteStart - 59 * 60_000 }
                #expect(summary.rejectionsByTypeLastHour == Dictionary(grouping: refusedLastHour, by: \.reason).mapValues { Int64($0.count) })
            }
        }
    }

    /// Bad input, each a 400 problem+json of type invalid-parameter: an unknown metric, from after to, a step the
    /// metric does not keep, a breakdown it does not have, too many points, a time that is not one.
    @Test func badParametersAreProblems() async throws {
        let (cells, _) = Self.world()
        try await Self.withClient(Self.parts(cells: cells)) { client in
            for uri in [
                "/v1/analytics/nope", "/v1/analytics/events?from=2000&to=1000", "/v1/analytics/lag?step=day", "/v1/analytics/active-users?by=region",
                "/v1/analytics/events?from=0&to=999999999999&step=minute", "/v1/analytics/events?from=yesterday", "/v1/analytics/events?from=",
                "/v1/analytics/events?to=%2B5", "/v1/analytics/events?from=2025-11-25",
            ] {
                try await client.execute(uri: uri, method: .get) { response in
                    #expect(response.status == .badRequest, "\(uri)")
                    #expect(response.headers[.contentType] == "application/problem+json", "\(uri)")
                    let problem = try JSONDecoder().decode(PushQueryTests.ProblemBody.self, from: Data(buffer: response.body))
                    #expect(problem.type == Problem.Kind.invalidParameter.uri, "\(uri)")
                }
            }
        }
    }

    /// RFC 3339 as schemathesis writes it: lower-case t and z, fractions, offsets.
    @Test func timesAreEpochMillisecondsOrRFC3339() async throws {
        let (cells, _) = Self.world()
        try await Self.withClient(Self.parts(cells: cells)) { client in
            for (from, expected) in [
                ("2025-11-25t11:00:00z", 1_764_068_400_000), ("2025-11-25T11:00:00.250Z", 1_764_068_400_000),
                ("2025-11-25T12:00:00%2B01:00", 1_764_068_400_000), ("1764068400000", 1_764_068_400_000),
            ] as [(String, Int64)] {
                try await client.execute(uri: "/v1/analytics/events?from=\(from)&to=1764072000000", method: .get) { response in
                    #expect(response.status == .ok, "\(from)")
                    let series = try JSONDecoder().decode(AnalyticsSeries.self, from: Data(buffer: response.body))
                    #expect(series.from == expected && series.series[0].points.count == 60, "\(from)")
                }
            }
        }
    }

    /// No analytics store, or one that fails: 503 problem+json with Retry-After, never 500.
    @Test func aMissingOrFailingStoreIs503() async throws {
        struct Failing: AnalyticsCells {
            struct Down: Error {}
            func analyticsCounters(metric: String, window: AnalyticsWindow, dimension: AnalyticsDimension?, from: Int64, to: Int64) async throws
                -> [AnalyticsCellKey: Int64]
            { throw Down() }
        }
        for cells in [nil, Failing()] as [(any AnalyticsCells)?] {
            try await Self.withClient(Self.parts(cells: cells)) { client in
                for uri in ["/v1/analytics/events", "/v1/analytics/summary"] {
                    try await client.execute(uri: uri, method: .get) { response in
                        #expect(response.status == .serviceUnavailable)
                        #expect(response.headers[.retryAfter] != nil)
                    }
                }
            }
        }
    }

    /// p50, p90 and p99 of a board's totals: nearest rank, from the live board now and from the stored totals of a
    /// closed period.
    @Test func scoreDistributionsOfLiveAndClosedBoards() async throws {
        let live = MemoryLiveBoards()
        let archive = MemoryStandingsArchive()
        // 200 members scoring 1 to 200 on the live all-time board; 10 members scoring 10 to 100 on a closed day.
        live.setScores(Dictionary(uniqueKeysWithValues: (1...200).map { ("m\($0)", Int64($0)) }), on: .allTime())
        let closedDay = BoardKey(window: .daily, period: "2025-11-20", dimension: .global, value: nil)
        archive.setScores(Dictionary(uniqueKeysWithValues: (1...10).map { ("m\($0)", Int64($0 * 10)) }), on: closedDay)
        try await Self.withClient(Self.parts(cells: nil, live: live, archive: archive)) { client in
            try await client.execute(uri: "/v1/analytics/boards/all-time/global", method: .get) { response in
                #expect(response.status == .ok)
                let distribution = try JSONDecoder().decode(ScoreDistribution.self, from: Data(buffer: response.body))
                #expect(distribution.members == 200 && distribution.source == "live" && distribution.max == 200)
                #expect(distribution.p50 == 100 && distribution.p90 == 180 && distribution.p99 == 198)
            }
            try await client.execute(uri: "/v1/analytics/boards/daily/global?period=2025-11-20", method: .get) { response in
                #expect(response.status == .ok)
                let distribution = try JSONDecoder().decode(ScoreDistribution.self, from: Data(buffer: response.body))
                #expect(distribution.members == 10 && distribution.source == "archive")
                #expect(distribution.p50 == 50 && distribution.p90 == 90 && distribution.p99 == 100)
            }
            // Bad input: a window that does not exist.
            try await client.execute(uri: "/v1/analytics/boards/fortnightly/global", method: .get) { response in
                #expect(response.status == .badRequest)
            }
        }
    }

    /// Large JSON answers are gzipped for a client that accepts it, and decompress to the identity answer; small ones,
    /// clients that do not ask, and a refusal (`gzip;q=0`) get identity.
    @Test func largeAnswersAreGzippedWhenTheClientAcceptsIt() async throws {
        let (cells, _) = Self.world()
        let live = MemoryLiveBoards()
        live.setScores(Dictionary(uniqueKeysWithValues: (1...500).map { ("member-\($0)", Int64($0)) }), on: .allTime())
        try await Self.withClient(Self.parts(cells: cells, live: live)) { client in
            for uri in ["/v1/leaderboards/all-time/global?limit=500", "/v1/analytics/points?step=minute&by=action"] {
                let identity = try await client.execute(uri: uri, method: .get) { response in
                    #expect(response.headers[.contentEncoding] == nil)
                    return response.body
                }
                try await client.execute(uri: uri, method: .get, headers: [.acceptEncoding: "br;q=1.0, gzip;q=0.8"]) { response in
                    #expect(response.status == .ok)
                    #expect(response.headers[.contentEncoding] == "gzip", "\(uri)")
                    #expect(response.body.readableBytes < identity.readableBytes / 3, "\(uri): \(response.body.readableBytes) of \(identity.readableBytes)")
                    var body = response.body
                    let decompressed = try body.decompress(with: .gzip())
                    #expect(decompressed == identity)
                }
                try await client.execute(uri: uri, method: .get, headers: [.acceptEncoding: "gzip;q=0"]) { response in
                    #expect(response.headers[.contentEncoding] == nil)
                }
            }
            // A small answer (a page of one) is not worth it.
            try await client.execute(uri: "/v1/leaderboards/all-time/global?limit=1", method: .get, headers: [.acceptEncoding: "gzip"]) { response in
                #expect(response.headers[.contentEncoding] == nil)
            }
        }
    }
}
