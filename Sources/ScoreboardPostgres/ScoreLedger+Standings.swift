import Logging
import PostgresNIO
import ScoreboardCore

// Archived periods: standings computed from the stored totals once a board's Redis key has expired.
extension ScoreLedger {
    /// A board's standings from the stored totals (archived periods whose Redis key expired): competition ranks,
    /// ties ordered as Redis orders them (member descending), and the number of members. `board_standings` is
    /// migration 0003's SQL function.
    public func page(of board: BoardKey, offset: Int, limit: Int) async throws -> BoardSlice {
        let (region, guild) = Self.filters(board)
        let rows = try await client.queryRows("""
            SELECT rank, user_id, score, members FROM board_standings(\(board.window.rawValue), \(board.period), \(region), \(guild))
            ORDER BY board_position LIMIT \(limit) OFFSET \(offset)
            """, logger: logger)
        let slice = try Self.decodeStandings(rows)
        if slice.entries.isEmpty && offset > 0 { return BoardSlice(members: try await memberCount(board: board), entries: []) }
        return slice
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
    public func neighbourhood(of userID: String, on board: BoardKey, radius: Int) async throws -> BoardSlice? {
        let (region, guild) = Self.filters(board)
        let rows = try await client.queryRows("""
            WITH ranked AS (SELECT * FROM board_standings(\(board.window.rawValue), \(board.period), \(region), \(guild))),
                 me AS (SELECT board_position FROM ranked WHERE user_id = \(userID))
            SELECT r.rank, r.user_id, r.score, r.members FROM ranked r, me
            WHERE r.board_position BETWEEN me.board_position - \(radius) AND me.board_position + \(radius)
            ORDER BY r.board_position
            """, logger: logger)
        let slice = try Self.decodeStandings(rows)
        return slice.entries.isEmpty ? nil : slice
    }

    /// The region and guild a board filters on (`nil`: all).
    static func filters(_ board: BoardKey) -> (region: String?, guild: String?) {
        (board.dimension == .region ? board.value : nil, board.dimension == .guild ? board.value : nil)
    }

    static func decodeStandings(_ rows: [PostgresRow]) throws -> BoardSlice {
        var entries: [RankedMember] = []
        var count = 0
        for row in rows {
            let (rank, user, score, members) = try row.decode((Int64, String, Int64, Int64).self)
            entries.append(RankedMember(rank: Int(rank), userID: user, score: score))
            count = Int(members)
        }
        return BoardSlice(members: count, entries: entries)
    }

    /// The (region, guild) pairs a user scored under in one period of a window: which boards they are on.
    public func placements(of userID: String, window: LeaderboardWindow, period: String) async throws -> [MemberPlacement] {
        let rows = try await client.queryRows("""
            SELECT region, guild FROM member_totals WHERE user_id = \(userID) AND board_window = \(window.rawValue) AND period = \(period)
            """, logger: logger)
        var placements: [MemberPlacement] = []
        for row in rows {
            let (region, guild) = try row.decode((String, String).self)
            placements.append(MemberPlacement(region: region.isEmpty ? nil : region, guild: guild.isEmpty ? nil : guild))
        }
        return placements
    }
}
