import ScoreboardCore

/// The boards as Redis sorted sets, one key per board period (``BoardKey/redisKey``), written as absolute values
/// (`ZADD key GT score member`, never `ZINCRBY`), so a replayed batch sets the same numbers again and the projection
/// converges. `GT` makes the writes order-independent: points are never negative, so a member's total only grows,
/// and a projection that arrives late (an older total, from a batch whose projection was overtaken, or from a
/// previous owner of the partition) never lowers a board. Windowed keys expire as the catalog says.
public struct RedisBoardStore: Sendable {
    let redis: RedisConnectionPool
    let catalog: LeaderboardCatalog
    /// Members per ZADD command: large enough to amortise, small enough to keep Redis responsive.
    static let membersPerCommand = 500

    public init(redis: RedisConnectionPool, catalog: LeaderboardCatalog) {
        self.redis = redis
        self.catalog = catalog
    }

    /// Raises every listed score to at least the given total (`ZADD GT`), refreshes each windowed key's expiry, and
    /// returns each member's score as stored after the write (the given total, or a higher one another projection
    /// already wrote) with its competition rank when it is inside the catalog's top N. Publishing the stored score
    /// rather than the given one keeps what one worker publishes for a member monotonic.
    public func raiseScores(_ scores: [BoardKey: [String: Int64]]) async throws -> BoardWrite {
        guard !scores.isEmpty else { return BoardWrite() }
        let boards = scores.keys.sorted { $0.id < $1.id }
        var commands: [[String]] = []
        var readBacks: [(board: BoardKey, members: [String], command: Int)] = []
        for board in boards {
            let members = scores[board]!.sorted { $0.key < $1.key }
            for chunk in stride(from: 0, to: members.count, by: Self.membersPerCommand) {
                let slice = members[chunk..<min(chunk + Self.membersPerCommand, members.count)]
                var command = ["ZADD", board.redisKey, "GT"]
                command.reserveCapacity(3 + 2 * slice.count)
                for (member, score) in slice {
                    command.append(String(score))
                    command.append(member)
                }
                commands.append(command)
                readBacks.append((board, slice.map(\.key), commands.count))
                commands.append(["ZMSCORE", board.redisKey] + slice.map(\.key))
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
        var write = BoardWrite()
        for readBack in readBacks {
            let stored = replies[readBack.command].array ?? []
            for (index, member) in readBack.members.enumerated() {
                let given = scores[readBack.board]![member]!
                // A score Redis cannot give back (none: the key expired in between) stays the given one.
                let score = index < stored.count ? stored[index].string.flatMap { Double($0) }.map { Int64($0) } ?? given : given
                write.scores[readBack.board, default: [:]][member] = max(score, given)
            }
        }
        // The rank of a score is one more than the number of strictly higher scores (ties share a rank).
        var rankQueries: [(BoardKey, String)] = []
        var rankCommands: [[String]] = []
        for (index, board) in boards.enumerated() {
            let nth = replies[thresholdStart + index].array.flatMap { $0.count == 2 ? $0[1].string.flatMap(Double.init) : nil }
            for (member, score) in write.scores[board]! where nth.map({ Double(score) >= $0 }) ?? true {
                rankCommands.append(["ZCOUNT", board.redisKey, "(\(score)", "+inf"])
                rankQueries.append((board, member))
            }
        }
        let counts = try await redis.pipeline(rankCommands)
        for (index, (board, member)) in rankQueries.enumerated() {
            let higher = Int(try counts[index].throwingServerError().integer ?? 0)
            if higher < catalog.topN { write.ranks[board, default: [:]][member] = higher + 1 }
        }
        return write
    }

    /// Takes members off boards (`ZREM`, a banned user's): idempotent, so a recovering worker may do it again.
    public func removeMembers(_ members: [BoardKey: [String]]) async throws {
        let commands = members.filter { !$0.value.isEmpty }.sorted { $0.key.id < $1.key.id }.map { ["ZREM", $0.key.redisKey] + $0.value }
        for chunk in commands.chunks(of: 500) {
            for reply in try await redis.pipeline(Array(chunk)) { _ = try reply.throwingServerError() }
        }
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
