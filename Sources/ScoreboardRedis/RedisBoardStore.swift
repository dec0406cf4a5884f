import ScoreboardCore

/// The boards as Redis sorted sets, one key per board period (``BoardKey/redisKey``), written as absolute values
/// (`ZADD key score member`, never `ZINCRBY`), so a replayed batch sets the same numbers again and the projection
/// converges. Windowed keys expire as the catalog says.
public struct RedisBoardStore: Sendable {
    let redis: RedisConnectionPool
    let catalog: LeaderboardCatalog
    /// Members per ZADD command: large enough to amortise, small enough to keep Redis responsive.
    static let membersPerCommand = 500

    public init(redis: RedisConnectionPool, catalog: LeaderboardCatalog) {
        self.redis = redis
        self.catalog = catalog
    }

    /// Sets every score, refreshes each windowed key's expiry, and returns the competition rank of every member
    /// written when it is inside the catalog's top N.
    public func setScores(_ scores: [BoardKey: [String: Int64]]) async throws -> [BoardKey: [String: Int]] {
        guard !scores.isEmpty else { return [:] }
        let boards = scores.keys.sorted { $0.id < $1.id }
        var commands: [[String]] = []
        for board in boards {
            let members = scores[board]!.sorted { $0.key < $1.key }
            for chunk in stride(from: 0, to: members.count, by: Self.membersPerCommand) {
                var command = ["ZADD", board.redisKey]
                for (member, score) in members[chunk..<min(chunk + Self.membersPerCommand, members.count)] {
                    command.append(String(score))
                    command.append(member)
                }
                commands.append(command)
            }
            if let expiry = catalog.redisExpiry(of: board) {
                commands.append(["PEXPIREAT", board.redisKey, String(expiry.millisecondsSinceEpoch)])
            }
        }
        // Ranks are only published inside the top N, so first read each board's N-th score (after the writes, in the
        // same round trip): only members at or above it need a rank query. Measured: one ZCOUNT per written member
        // cost a fifth of a batch's Redis time for nothing (docs/benchmarks.md).
        let thresholdStart = commands.count
        for board in boards {
            commands.append(["ZREVRANGE", board.redisKey, String(catalog.topN - 1), String(catalog.topN - 1), "WITHSCORES"])
        }
        let replies = try await redis.pipeline(commands)
        if let failure = replies.first(where: { if case .error = $0 { return true } else { return false } }) {
            _ = try failure.throwingServerError()
        }
        // The rank of a score is one more than the number of strictly higher scores (ties share a rank).
        var rankQueries: [(BoardKey, String)] = []
        var rankCommands: [[String]] = []
        for (index, board) in boards.enumerated() {
            let nth = replies[thresholdStart + index].array.flatMap { $0.count == 2 ? $0[1].string.flatMap(Double.init) : nil }
            for (member, score) in scores[board]! where nth.map({ Double(score) >= $0 }) ?? true {
                rankCommands.append(["ZCOUNT", board.redisKey, "(\(score)", "+inf"])
                rankQueries.append((board, member))
            }
        }
        let counts = try await redis.pipeline(rankCommands)
        var ranks: [BoardKey: [String: Int]] = [:]
        for (index, (board, member)) in rankQueries.enumerated() {
            let higher = Int(try counts[index].throwingServerError().integer ?? 0)
            if higher < catalog.topN { ranks[board, default: [:]][member] = higher + 1 }
        }
        return ranks
    }

    /// `PING`: answers when Redis does.
    public func probe() async throws {
        try await redis.send(["PING"])
    }

    /// Replaces the listed boards with exactly these scores (for `scoreboard rebuild`): each key is written under a
    /// temporary name and renamed over the old one, so readers never see a half-built board.
    public func replaceBoards(_ scores: [BoardKey: [String: Int64]]) async throws {
        for (board, members) in scores {
            let temporary = board.redisKey + ":rebuild"
            var commands: [[String]] = [["DEL", temporary]]
            let sorted = members.sorted { $0.key < $1.key }
            for chunk in stride(from: 0, to: sorted.count, by: Self.membersPerCommand) {
                var command = ["ZADD", temporary]
                for (member, score) in sorted[chunk..<min(chunk + Self.membersPerCommand, sorted.count)] {
                    command += [String(score), member]
                }
                commands.append(command)
            }
            commands.append(["RENAME", temporary, board.redisKey])
            if let expiry = catalog.redisExpiry(of: board) {
                commands.append(["PEXPIREAT", board.redisKey, String(expiry.millisecondsSinceEpoch)])
            }
            for reply in try await redis.pipeline(commands) { _ = try reply.throwingServerError() }
        }
    }
}
