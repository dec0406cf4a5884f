import Foundation
import Logging
import PostgresNIO
import ScoreboardCore

/// A period's events and aggregates as CSV files, for a warehouse (`scoreboard analytics export`).
///
/// The period is `[from, to)` on `occurred_at`. Events are read through a cursor a page at a time, so an export of
/// any size holds one page in memory.
public struct AnalyticsExport: Sendable {
    /// One exported file: its name and what it holds.
    public enum File: String, CaseIterable, Sendable {
        /// One row per applied event.
        case events = "events.csv"
        /// Events and points per UTC day, action, region and guild.
        case daily = "daily.csv"
        /// Active users, events and points per UTC day.
        case dailyActiveUsers = "daily_active_users.csv"
    }

    let client: PostgresClient
    let logger: Logger
    /// Events per FETCH (and per write).
    public var pageSize = 10_000

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Writes every file into `directory` (created if missing) and returns how many data rows each holds. All three
    /// are read in one read-only snapshot, so they agree with each other whatever the workers write meanwhile.
    /// - Parameter progress: called after every page of events with the rows written so far.
    public func export(
        from: Date, to: Date, into directory: URL, progress: @Sendable (Int) -> Void = { _ in }
    ) async throws -> [File: Int] {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return try await client.withTransactionRows(logger: logger) { connection in
            try await connection.queryRows("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", logger: logger)
            var counts: [File: Int] = [:]
            counts[.events] = try await writeEvents(
                from: from, to: to, to: directory.appendingPathComponent(File.events.rawValue), on: connection, progress: progress)
            counts[.daily] = try await write(
                header: ["day", "action", "region", "guild", "events", "points"],
                query: """
                    SELECT \(unescaped: Self.utcDay), action, region, guild, count(*)::bigint, sum(points)::bigint
                    FROM score_events WHERE occurred_at >= \(from) AND occurred_at < \(to)
                    GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3 NULLS FIRST, 4 NULLS FIRST
                    """,
                to: directory.appendingPathComponent(File.daily.rawValue), on: connection
            ) { row in
                let (day, action, region, guild, events, points) = try row.decode((String, String, String?, String?, Int64, Int64).self)
                return [day, action, region, guild, String(events), String(points)]
            }
            counts[.dailyActiveUsers] = try await write(
                header: ["day", "active_users", "events", "points"],
                query: """
                    SELECT \(unescaped: Self.utcDay), count(DISTINCT user_id)::bigint, count(*)::bigint, sum(points)::bigint
                    FROM score_events WHERE occurred_at >= \(from) AND occurred_at < \(to)
                    GROUP BY 1 ORDER BY 1
                    """,
                to: directory.appendingPathComponent(File.dailyActiveUsers.rawValue), on: connection
            ) { row in
                let (day, users, events, points) = try row.decode((String, Int64, Int64, Int64).self)
                return [day, String(users), String(events), String(points)]
            }
            return counts
        }
    }

    private func writeEvents(
        from: Date, to: Date, to file: URL, on connection: PostgresConnection, progress: @Sendable (Int) -> Void
    ) async throws -> Int {
        let output = try CSVFile(url: file, header: ["event_id", "user_id", "action", "points", "occurred_at", "region", "guild", "source", "idempotency_key"])
        defer { output.close() }
        // One scan through a cursor, fetched a page at a time: each FETCH is a short query (no long-lived row stream:
        // PostgresStore.swift says why this codebase avoids them), and the export holds one page in memory.
        try await connection.queryRows("""
            DECLARE export_events NO SCROLL CURSOR FOR
            SELECT event_id, user_id, action, points, \(unescaped: Self.utcTimestamp), region, guild, source, idempotency_key
            FROM score_events WHERE occurred_at >= \(from) AND occurred_at < \(to) ORDER BY occurred_at, event_id
            """, logger: logger)
        var written = 0
        while true {
            let rows = try await connection.queryRows("FETCH \(unescaped: String(pageSize)) FROM export_events", logger: logger)
            var lines = ""
            for row in rows {
                let (id, user, action, points, occurred, region, guild, source, key) =
                    try row.decode((UUID, String, String, Int64, String, String?, String?, String, UUID).self)
                lines += CSV.line([
                    id.uuidString.lowercased(), user, action, String(points), occurred, region, guild, source, key.uuidString.lowercased(),
                ])
            }
            try output.write(lines)
            written += rows.count
            progress(written)
            if rows.count < pageSize { return written }
        }
    }

    private func write(
        header: [String], query: PostgresQuery, to file: URL, on connection: PostgresConnection, line: (PostgresRow) throws -> [String?]
    ) async throws -> Int {
        let output = try CSVFile(url: file, header: header)
        defer { output.close() }
        let rows = try await connection.queryRows(query, logger: logger)
        try output.write(try rows.map { CSV.line(try line($0)) }.joined())
        return rows.count
    }

    /// `occurred_at`'s UTC day as `YYYY-MM-DD`.
    static let utcDay = "to_char((occurred_at AT TIME ZONE 'UTC')::date, 'YYYY-MM-DD')"

    /// `occurred_at` as ISO 8601 in UTC with milliseconds (the precision events carry), formatted by PostgreSQL.
    static let utcTimestamp = #"to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"#
}

/// A CSV file being written: created (or truncated) with its header line.
private final class CSVFile {
    let handle: FileHandle

    init(url: URL, header: [String]) throws {
        FileManager.default.createFile(atPath: url.path, contents: nil)
        handle = try FileHandle(forWritingTo: url)
        try write(CSV.line(header))
    }

    func write(_ text: String) throws {
        try handle.write(contentsOf: Data(text.utf8))
    }

    func close() {
        try? handle.close()
    }
}
