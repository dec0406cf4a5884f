import ScoreboardCore

/// Reads of the boards the workers write (``RedisBoardStore``): one sorted set per board period
/// (``BoardKey/redisKey``), members ordered by descending score (ties: member descending, as `ZREVRANGE` orders
/// them), competition ranks counted with `ZCOUNT` of the strictly higher scores.
public struct RedisBoardReads: Sendable {
    let redis: RedisConnectionPool

    public init(redis: RedisConnectionPool) {
        self.redis = redis
    }

    public func exists(_ board: BoardKey) async throws -> Bool {
        try await redis.send(["EXISTS", board.redisKey]).throwingServerError().integer == 1
    }

    /// Up to `limit` members from place `offset`; `nil` when the key does not exist.
    public func page(of board: BoardKey, offset: Int, limit: Int) async throws -> BoardSlice? {
        let replies = try await redis.pipeline([
            ["EXISTS", board.redisKey],
            ["ZCARD", board.redisKey],
            ["ZREVRANGE", board.redisKey, String(offset), String(offset + limit - 1), "WITHSCORES"],
        ])
        guard try replies[0].throwingServerError().integer == 1 else { return nil }
        let members = Int(try replies[1].throwingServerError().integer ?? 0)
        let pairs = Self.pairs(try replies[2].throwingServerError())
        return BoardSlice(members: members, entries: try await ranked(pairs, position: offset, board: board))
    }

    public func neighbourhood(of member: String, on board: BoardKey, radius: Int) async throws -> BoardNeighbourhood {
        let replies = try await redis.pipeline([["EXISTS", board.redisKey], ["ZREVRANK", board.redisKey, member], ["ZCARD", board.redisKey]])
        guard try replies[0].throwingServerError().integer == 1 else { return .noBoard }
        guard let position = try replies[1].throwingServerError().integer else { return .notOnBoard }
        let start = max(0, Int(position) - radius)
        let range = try await redis.send(["ZREVRANGE", board.redisKey, String(start), String(Int(position) + radius), "WITHSCORES"])
        let entries = try await ranked(Self.pairs(try range.throwingServerError()), position: start, board: board)
        return .slice(BoardSlice(members: Int(try replies[2].throwingServerError().integer ?? 0), entries: entries))
    }

    /// Score, rank and member count of `member` on each board it is on: one round trip for all boards (a script
    /// reads each score, then counts the members and the strictly higher scores; the score is needed before the
    /// count, which as plain commands cost a second round trip).
    public func placements(of member: String, on boards: [BoardKey]) async throws -> [BoardKey: LivePlacement] {
        guard !boards.isEmpty else { return [:] }
        let replies = try await redis.run(Self.placementsScript, keys: boards.map(\.redisKey), arguments: [member]).array ?? []
        var placements: [BoardKey: LivePlacement] = [:]
        for (board, reply) in zip(boards, replies) {
            guard let fields = reply.array, fields.count == 3, let score = fields[0].string.flatMap(Double.init).map({ Int64($0) }) else { continue }
            placements[board] = LivePlacement(score: score, rank: Int(fields[2].integer ?? 0) + 1, members: Int(fields[1].integer ?? 0))
        }
        return placements
    }

    /// Per key (a board): `false` when ARGV[1] is not on it, else its score, the member count and the number of
    /// strictly higher scores. (`false` keeps its place in the reply, where `nil` would end the Lua array.)
    static let placementsScript = RedisScript("""
        local out = {}
        for i, key in ipairs(KEYS) do
          local score = redis.call('ZSCORE', key, ARGV[1])
          if score then
            out[i] = {score, redis.call('ZCARD', key), redis.call('ZCOUNT', key, '(' .. score, '+inf')}
          else
            out[i] = false
          end
        end
        return out
        """)

    public func probe() async throws {
        _ = try await redis.send(["PING"]).throwingServerError()
    }

    static func pairs(_ reply: RedisReply) -> [(String, Int64)] {
        let items = reply.array ?? []
        return stride(from: 0, to: items.count - 1, by: 2).compactMap { index in
            guard let member = items[index].string, let score = items[index + 1].string.flatMap(Double.init) else { return nil }
            return (member, Int64(score))
        }
    }

    /// Competition ranks for a contiguous slice of the board starting at `position`, sorted by descending score.
    private func ranked(_ pairs: [(String, Int64)], position: Int, board: BoardKey) async throws -> [RankedMember] {
        guard let first = pairs.first else { return [] }
        let higher = try await redis.send(["ZCOUNT", board.redisKey, "(\(first.1)", "+inf"]).throwingServerError().integer ?? 0
        let ranks = CompetitionRanking.ranks(forDescending: pairs.map(\.1), firstPosition: position, firstRank: Int(higher) + 1)
        return zip(pairs, ranks).map { RankedMember(rank: $1, userID: $0.0, score: $0.1) }
    }
}
