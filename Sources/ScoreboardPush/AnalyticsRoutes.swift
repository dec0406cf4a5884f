import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import ScoreboardCore
import ScoreboardHTTP
import ServiceLifecycle

// The analytics API: time series of the workers' analytics cells, the headline figures, and a stream of them.
//
// Who may read: anyone who may read the boards. The answers are aggregates (counts, sums, distinct counts, lag
// percentiles, per action, region and guild) and name no user, like the public leaderboards; their cost is bounded by
// the catalog's `maxPointsPerSeries`, and the summary is computed at most once a second for every caller together.
extension PushGateway {
    func addAnalyticsRoutes(to router: Router<PushRequestContext>) {
        router.get("/v1/analytics/summary") { _, _ in
            try Self.json(try await self.readingAnalytics { try await self.analytics.summary(now: self.now()) })
        }
        router.get("/v1/analytics/summary/stream") { request, context in try await self.analyticsSummaryStream(request, context) }
        router.get("/v1/analytics/boards/:window/:dimension") { request, context in try await self.scoreDistribution(request, context) }
        router.get("/v1/analytics/boards/:window/:dimension/:value") { request, context in try await self.scoreDistribution(request, context) }
        router.get("/v1/analytics/:metric") { request, context in
            let query = try self.analyticsQuery(request, context)
            return try Self.json(try await self.readingAnalytics { try await self.analytics.series(query) })
        }
    }

    /// The query parameters checked against the catalog: 400 problem+json naming each bad one.
    func analyticsQuery(_ request: Request, _ context: PushRequestContext) throws -> AnalyticsSeriesQuery {
        let metric = try context.parameters.require("metric")
        let parameters = request.uri.queryParameters
        let from = try Self.time(parameters["from"], name: "from")
        let to = try Self.time(parameters["to"], name: "to")
        do throws(ScoreboardError) {
            return try AnalyticsSeriesQuery.make(
                catalog: analytics.catalog, metric: metric, from: from, to: to, step: parameters["step"].map(String.init),
                by: parameters["by"].map(String.init), now: now())
        } catch {
            throw Problem(.invalidParameter, detail: error.reasons.joined(separator: "; "))
        }
    }

    /// A board's score distribution: p50, p90 and p99 of its members' totals, in the current period (the live board)
    /// or a closed one (`period=`, PostgreSQL's stored totals once the live board has expired), read as the members at
    /// those ranks (nearest rank: the p-th percentile is the smallest total with at least p of the members at or
    /// below it).
    func scoreDistribution(_ request: Request, _ context: PushRequestContext) async throws -> Response {
        let board = try board(request, context)
        let distribution = try await Self.readingDependencies { () async throws -> ScoreDistribution in
            let first = try await reader.top(board, limit: 1, offset: 0)
            var distribution = ScoreDistribution(
                board: first.board, period: first.period, members: first.members, source: first.source, max: first.entries.first?.score)
            let members = first.members
            guard members > 0 else { return distribution }
            func score(at quantile: Double) async throws -> Int64? {
                let rank = Int((quantile * Double(members)).rounded(.up))  // 1-based, from the lowest total
                return try await reader.top(board, limit: 1, offset: max(0, members - rank)).entries.first?.score
            }
            distribution.p50 = try await score(at: 0.5)
            distribution.p90 = try await score(at: 0.9)
            distribution.p99 = try await score(at: 0.99)
            return distribution
        }
        return try Self.json(distribution)
    }

    /// A time: epoch milliseconds (an optional `-` and 1 to 15 digits), or an RFC 3339 date-time
    /// (`2026-11-25T10:00:00Z`, fractions and offsets allowed), as openapi.yaml's schema says.
    static func time(_ text: Substring?, name: String) throws -> Timestamp? {
        guard let text else { return nil }
        let digits = text.first == "-" ? text.dropFirst() : text
        if (1...15).contains(digits.count), digits.allSatisfy({ $0.isASCII && $0.isNumber }), let milliseconds = Int64(text) {
            return Timestamp(millisecondsSinceEpoch: milliseconds)
        }
        if let date = rfc3339Date(String(text)) {
            return Timestamp(millisecondsSinceEpoch: Int64((date.timeIntervalSince1970 * 1000).rounded()))
        }
        throw Problem(.invalidParameter, detail: "\(name) must be epoch milliseconds or an RFC 3339 time such as 2026-11-25T10:00:00Z")
    }

    static func rfc3339Date(_ text: String) -> Date? {
        // RFC 3339 allows a lower-case t and z; ISO8601DateFormatter wants them upper-case.
        let text = text.uppercased()
        for options: ISO8601DateFormatter.Options in [[.withInternetDateTime], [.withInternetDateTime, .withFractionalSeconds]] {
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = options
            if let date = formatter.date(from: text) { return date }
        }
        return nil
    }

    /// A read of the analytics cells: PostgreSQL down, or no store configured, is 503 with Retry-After.
    func readingAnalytics<T>(_ read: () async throws -> T) async throws -> T {
        do {
            return try await read()
        } catch is AnalyticsReader.Unavailable {
            throw Problem(.dependencyUnavailable, detail: "this push gateway has no analytics store", retryAfter: Problem.dependencyRetryAfterSeconds)
        } catch {
            logger.warning("analytics read failed", metadata: ["error": "\(error)"])
            throw Problem(.dependencyUnavailable, detail: "the analytics store does not answer", retryAfter: Problem.dependencyRetryAfterSeconds)
        }
    }

    static func json(_ value: some Encodable) throws -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(data: try encodedJSON(value))))
    }

    /// Keys sorted, so that equal answers are equal bytes.
    static func encodedJSON(_ value: some Encodable) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return try encoder.encode(value)
    }

    /// The summary as server-sent events, one `summary` event a second (the dashboard's charts): while PostgreSQL does
    /// not answer, an `unavailable` event instead, and the stream goes on. Admitted and ended like the board streams
    /// (caps per address, ended at graceful shutdown).
    func analyticsSummaryStream(_ request: Request, _ context: PushRequestContext) async throws -> Response {
        let ticket = try admission.admit(address: Self.address(of: context), user: nil)
        // The buffer carries no items: it is what graceful shutdown closes, and what the timer wakes once a second.
        let buffer = SubscriberBuffer(limit: 1)
        let channel = context.channel
        let interval = AnalyticsReader.summaryMaxAge
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache", HTTPField.Name("X-Accel-Buffering")!: "no"],
            body: ResponseBody { [self] writer in
                let watchdog = WriteWatchdog()
                try await withOpenStream(transport: "sse", buffer: buffer, ticket: ticket) {
                    let timer = StreamTimer.start(
                        channel: channel, buffer: buffer, watchdog: watchdog, writeTimeout: configuration.writeTimeout,
                        interval: StreamTimer.interval(heartbeat: interval, writeTimeout: configuration.writeTimeout))
                    defer { timer.cancel() }
                    try await watchdog.watching { try await writer.write(ByteBuffer(staticString: ": connected\n\n")) }
                    try await withGracefulShutdownHandler {
                        while true {
                            let event: ByteBuffer
                            do {
                                let summary = try await analytics.summary(now: now())
                                event = ByteBuffer(string: "event: summary\ndata: \(String(decoding: try Self.encodedJSON(summary), as: UTF8.self))\n\n")
                            } catch {
                                logger.debug("analytics summary not read", metadata: ["error": "\(error)"])
                                event = ByteBuffer(staticString: "event: unavailable\ndata: {\"type\":\"unavailable\"}\n\n")
                            }
                            try await watchdog.watching { try await writer.write(event) }
                            if case .closed = await buffer.next(idleDeadline: .now + interval) {
                                try await watchdog.watching {
                                    try await writer.write(ByteBuffer(staticString: "event: end\ndata: {\"reason\":\"shutting-down\",\"type\":\"end\"}\n\n"))
                                }
                                return
                            }
                        }
                    } onGracefulShutdown: {
                        buffer.close(.shuttingDown)
                    }
                }
                try await writer.finish(nil)
            })
    }
}

/// A board's score distribution (`GET /v1/analytics/boards/...`).
///
/// The board is named by its id only: fields named like the path's parameters (window, dimension, value) would let a
/// client (schemathesis infers such links) feed a global board's dimension into a region board's path.
struct ScoreDistribution: Codable, Sendable, Hashable {
    var board: String
    var period: String
    var members: Int
    /// `live` (Redis) or `archive` (PostgreSQL's totals of a closed period).
    var source: String
    var max: Int64?
    var p50: Int64?
    var p90: Int64?
    var p99: Int64?
}
