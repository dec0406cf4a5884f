import Logging
import PostgresNIO
import ScoreboardCore

// Archived periods: standings computed from the stored totals once a board's Redis key has expired.
extension ScoreLedger {
    /// One entry of a board's standings.
    public struct Standing: Sendable, Hashable {
        public var rank: Int
        public var userID: String
        public var score: Int64
    }

    /// A board's standings from the stored totals (archived periods whose Redis key expired): competition ranks,
    /// ties ordered as Redis orders them (member descending), and the number of members. `board_standings` is
    /// migration 0003's SQL function.
    public func standings(board: BoardKey, limit: Int, offset: Int) async throws -> (entries: [Standing], count: Int) {
        let (region, guild) = Self.filters(board)
        let rows = try await client.queryRows("""
            SELECT rank, user_id, score, members FROM board_standings(\(board.window.rawValue), \(board.period), \(region), \(guild))
            ORDER BY board_position LIMIT \(limit) OFFSET \(offset)
            """, logger: logger)
        let (entries, count) = try Self.decodeStandings(rows)
        if entries.isEmpty && offset > 0 { return (entries, try await memberCount(board: board)) }
        return (entries, count)
    }

    public func memberCount(board: BoardKey) async throws -> Int {
        let (region, guild) = Self.filters(board)
        let rows = try await client.queryRows("""
            SELECT count(*)::bigint FROM board_standings(\(board.window.rawValue), \(board.period), \(region), \(guild))
            """, logger: logger)
        for row in rows {
            let count = try row.decode(Int64.self)
            return Int(count)
        }
        return 0
    }

    /// The standings within `radius` places of `userID` on a board, from the stored totals; `nil` when the user is
    /// not on it.
    public func around(board: BoardKey, userID: String, radius: Int) async throws -> (entries: [Standing], count: Int)? {
        let (region, guild) = Self.filters(board)
        let rows = try await client.queryRows("""
            WITH ranked AS (SELECT * FROM board_standings(\(board.window.rawValue), \(board.period), \(region), \(guild))),
                 me AS (SELECT board_position FROM ranked WHERE user_id = \(userID))
            SELECT r.rank, r.user_id, r.score, r.members FROM ranked r, me
            WHERE r.board_position BETWEEN me.board_position - \(radius) AND me.board_position + \(radius)
            ORDER BY r.board_position
            """, logger: logger)
        let (entries, count) = try Self.decodeStandings(rows)
        return entries.isEmpty ? nil : (entries, count)
    }

    /// The region and guild a board filters on (`nil`: all).
    static func filters(_ board: BoardKey) -> (region: String?, guild: String?) {
        (board.dimension == .region ? board.value : nil, board.dimension == .guild ? board.value : nil)
    }

    static func decodeStandings(_ rows: [PostgresRow]) throws -> (entries: [Standing], count: Int) {
        var entries: [Standing] = []
        var count = 0
        for row in rows {
            let (rank, user, score, members) = try row.decode((Int64, String, Int64, Int64).self)
            entries.append(Standing(rank: Int(rank), userID: user, score: score))
            count = Int(members)
        }
        return (entries, count)
    }

    /// The (region, guild) pairs a user scored under in one period of a window: which boards they are on.
    public func placements(userID: String, window: LeaderboardWindow, period: String) async throws -> [(region: String?, guild: String?)] {
        let rows = try await client.queryRows("""
            SELECT region, guild FROM member_totals WHERE user_id = \(userID) AND board_window = \(window.rawValue) AND period = \(period)
            """, logger: logger)
        var pairs: [(String?, String?)] = []
        for row in rows {
            let (region, guild) = try row.decode((String, String).self)
            pairs.append((region.isEmpty ? nil : region, guild.isEmpty ? nil : guild))
        }
        return pairs
    }
}
