import Foundation
import ScoreboardCore
import ScoreboardPostgres
import ScoreboardRedis

/// A page of a board's standings.
public struct BoardPage: Codable, Sendable, Hashable {
    public struct Entry: Codable, Sendable, Hashable {
        public var rank: Int
        public var userID: String
        public var score: Int64

        enum CodingKeys: String, CodingKey { case rank, userID = "userId", score }
    }

    public var board: String
    public var window: LeaderboardWindow
    public var period: String
    public var dimension: BoardDimension
    public var value: String?
    /// Members on the board.
    public var members: Int
    public var entries: [Entry]
    /// `live` (Redis) or `archive` (PostgreSQL's stored totals of a period whose Redis key has expired).
    public var source: String

    public init(
        board: String, window: LeaderboardWindow, period: String, dimension: BoardDimension, value: String?, members: Int, entries: [Entry], source: String
    ) {
        self.board = board
        self.window = window
        self.period = period
        self.dimension = dimension
        self.value = value
        self.members = members
        self.entries = entries
        self.source = source
    }
}

/// One board a user stands on.
public struct Standing: Codable, Sendable, Hashable {
    public var board: String
    public var window: LeaderboardWindow
    public var period: String
    public var dimension: BoardDimension
    public var value: String?
    public var score: Int64
    public var rank: Int
    public var members: Int
    /// The share of the board's members at or below this user's score, in percent (100 for the leader).
    public var percentile: Double
}

/// Reads boards: from Redis while a period's sorted set exists, from PostgreSQL's totals once it has expired.
/// Ranks are competition ranks (ties share a rank): the rank of a score is one more than the number of strictly
/// higher scores.
///
/// Reads that would reach PostgreSQL (a period no longer in Redis) first check that the region or guild has any
/// score at all (``knowsDimensionValue(_:)``; if not, the board is empty and nothing is read), then go through
/// ``ArchiveReads``: a small cache of recent pages and a cap on concurrent queries, so that anonymous clients cannot
/// queue full-board aggregations.
public struct BoardReader: Sendable {
    let redis: RedisConnectionPool
    let ledger: ScoreLedger
    let catalog: LeaderboardCatalog
    public let archive: ArchiveReads
    let knownValues: KnownDimensionValues

    public init(redis: RedisConnectionPool, ledger: ScoreLedger, catalog: LeaderboardCatalog, archive: ArchiveReads.Limits = .init()) {
        self.redis = redis
        self.ledger = ledger
        self.catalog = catalog
        self.archive = ArchiveReads(limits: archive)
        self.knownValues = KnownDimensionValues()
    }

    /// Whether the stream's region or guild has ever had a score (global streams always exist). The all-time board
    /// of a value is created by its first score and never expires, so one `EXISTS` answers it; known values are
    /// remembered, so a board read pays it once per value.
    public func knowsDimensionValue(_ stream: BoardStream) async throws -> Bool {
        guard let value = stream.value else { return true }
        let allTime = BoardStream(window: .allTime, dimension: stream.dimension, value: value)
        // Without an all-time board for the dimension there is nothing to check against: accept.
        guard catalog.declares(allTime) else { return true }
        if knownValues.contains(allTime.id) { return true }
        let board = allTime.board(period: LeaderboardWindow.allTime.period(containing: Timestamp(millisecondsSinceEpoch: 0)).key)
        guard try await redis.send(["EXISTS", board.redisKey]).integer == 1 else { return false }
        knownValues.insert(allTime.id)
        return true
    }

    public func top(_ board: BoardKey, limit: Int, offset: Int) async throws -> BoardPage {
        let replies = try await redis.pipeline([
            ["EXISTS", board.redisKey],
            ["ZCARD", board.redisKey],
            ["ZREVRANGE", board.redisKey, String(offset), String(offset + limit - 1), "WITHSCORES"],
        ])
        guard replies[0].integer == 1 else {
            // A region or guild without any score has an empty board in every period: nothing to read.
            guard try await knowsDimensionValue(board.stream) else { return page(board, members: 0, entries: [], source: "archive") }
            let archived = try await archive.read(board: board.id, query: "top|\(limit)|\(offset)") { [ledger] in
                let (entries, count) = try await ledger.standings(board: board, limit: limit, offset: offset)
                return page(board, members: count, entries: entries.map { .init(rank: $0.rank, userID: $0.userID, score: $0.score) }, source: "archive")
            }
            return archived ?? page(board, members: 0, entries: [], source: "archive")
        }
        let members = Int(try replies[1].throwingServerError().integer ?? 0)
        let pairs = Self.pairs(try replies[2].throwingServerError())
        return page(board, members: members, entries: try await ranked(pairs, position: offset, board: board), source: "live")
    }

    public func around(_ board: BoardKey, userID: String, radius: Int) async throws -> BoardPage? {
        let replies = try await redis.pipeline([["EXISTS", board.redisKey], ["ZREVRANK", board.redisKey, userID], ["ZCARD", board.redisKey]])
        guard replies[0].integer == 1 else {
            guard try await knowsDimensionValue(board.stream) else { return nil }
            return try await archive.read(board: board.id, query: "around|\(userID)|\(radius)") { [ledger] in
                guard let (entries, count) = try await ledger.around(board: board, userID: userID, radius: radius) else { return nil }
                return page(board, members: count, entries: entries.map { .init(rank: $0.rank, userID: $0.userID, score: $0.score) }, source: "archive")
            }
        }
        guard let position = try replies[1].throwingServerError().integer else { return nil }
        let start = max(0, Int(position) - radius)
        let range = try await redis.send(["ZREVRANGE", board.redisKey, String(start), String(Int(position) + radius), "WITHSCORES"])
        return page(board, members: Int(replies[2].integer ?? 0), entries: try await ranked(Self.pairs(range), position: start, board: board), source: "live")
    }

    /// The user's score, rank and percentile on every board of every declared window's current period.
    public func standings(userID: String, now: Timestamp) async throws -> [Standing] {
        var boards: [BoardKey] = []
        for window in Set(catalog.boards.map(\.window)).sorted(by: { $0.rawValue < $1.rawValue }) {
            let period = window.period(containing: now).key
            for (region, guild) in try await ledger.placements(userID: userID, window: window, period: period) {
                for definition in catalog.boards where definition.window == window {
                    if let board = definition.dimension.board(window: window, period: period, region: region, guild: guild), !boards.contains(board) {
                        boards.append(board)
                    }
                }
            }
        }
        var standings: [Standing] = []
        let scores = try await redis.pipeline(boards.flatMap { [["ZSCORE", $0.redisKey, userID], ["ZCARD", $0.redisKey]] })
        var rankCommands: [[String]] = []
        var found: [(BoardKey, Int64, Int)] = []
        for (index, board) in boards.enumerated() {
            guard let text = scores[index * 2].string, let score = Double(text).map({ Int64($0) }) else { continue }
            found.append((board, score, Int(scores[index * 2 + 1].integer ?? 0)))
            rankCommands.append(["ZCOUNT", board.redisKey, "(\(score)", "+inf"])
        }
        let higher = try await redis.pipeline(rankCommands)
        for (index, (board, score, members)) in found.enumerated() {
            let rank = Int(higher[index].integer ?? 0) + 1
            standings.append(Standing(
                board: board.id, window: board.window, period: board.period, dimension: board.dimension, value: board.value, score: score,
                rank: rank, members: members, percentile: members == 0 ? 0 : (Double(members - rank + 1) / Double(members) * 1000).rounded() / 10))
        }
        return standings
    }

    /// The top N of a board for a stream snapshot.
    public func snapshot(_ board: BoardKey) async throws -> BoardPage {
        try await top(board, limit: catalog.topN, offset: 0)
    }

    private func page(_ board: BoardKey, members: Int, entries: [BoardPage.Entry], source: String) -> BoardPage {
        BoardPage(
            board: board.id, window: board.window, period: board.period, dimension: board.dimension, value: board.value, members: members,
            entries: entries, source: source)
    }

    static func pairs(_ reply: RedisReply) -> [(String, Int64)] {
        let items = reply.array ?? []
        return stride(from: 0, to: items.count - 1, by: 2).compactMap { index in
            guard let member = items[index].string, let score = items[index + 1].string.flatMap(Double.init) else { return nil }
            return (member, Int64(score))
        }
    }

    /// Competition ranks for a contiguous slice of the board starting at `position`, sorted by descending score.
    private func ranked(_ pairs: [(String, Int64)], position: Int, board: BoardKey) async throws -> [BoardPage.Entry] {
        guard let first = pairs.first else { return [] }
        let higher = try await redis.send(["ZCOUNT", board.redisKey, "(\(first.1)", "+inf"]).integer ?? 0
        let ranks = CompetitionRanking.ranks(forDescending: pairs.map(\.1), firstPosition: position, firstRank: Int(higher) + 1)
        return zip(pairs, ranks).map { BoardPage.Entry(rank: $1, userID: $0.0, score: $0.1) }
    }
}
