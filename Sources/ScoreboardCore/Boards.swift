/// What a board ranks members within: everyone, or the members of one region or one guild.
public enum BoardDimension: String, CaseIterable, Hashable, Sendable, Codable {
    case global, region, guild

    /// The board of this dimension that points with this region and guild count on, in one window period; `nil`
    /// when they lack this dimension's value (an event without a guild counts on no guild board).
    public func board(window: LeaderboardWindow, period: String, region: String?, guild: String?) -> BoardKey? {
        let value: String?
        switch self {
        case .global: value = nil
        case .region:
            guard let region else { return nil }
            value = region
        case .guild:
            guard let guild else { return nil }
            value = guild
        }
        return BoardKey(window: window, period: period, dimension: self, value: value)
    }
}

/// A board as `pipelines/leaderboards.yaml` declares it: a window × a dimension.
public struct BoardDefinition: Hashable, Sendable, Codable {
    public var window: LeaderboardWindow
    public var dimension: BoardDimension

    public init(window: LeaderboardWindow, dimension: BoardDimension) {
        self.window = window
        self.dimension = dimension
    }
}

/// One concrete board: a definition, a period of its window, and the dimension's value (`nil` for global).
public struct BoardKey: Hashable, Sendable, CustomStringConvertible {
    public var window: LeaderboardWindow
    public var period: String
    public var dimension: BoardDimension
    public var value: String?

    public init(window: LeaderboardWindow, period: String, dimension: BoardDimension, value: String?) {
        self.window = window
        self.period = period
        self.dimension = dimension
        self.value = value
    }

    /// `daily:2026-11-23:region:eu`, `all-time:all:global`. Unambiguous even though a region or guild may contain
    /// `:`: window names, period keys and dimension names never do, and the value comes last.
    public var id: String {
        "\(window.rawValue):\(period):\(dimension.rawValue)" + (value.map { ":\($0)" } ?? "")
    }

    /// The Redis sorted set holding this board's totals.
    public var redisKey: String { "sb:board:" + id }

    public var description: String { id }
}

/// The boards: which exist, how many ranks updates carry, and how long closed periods stay in Redis.
public struct LeaderboardCatalog: Hashable, Sendable, Codable {
    public var topN: Int
    public var closedPeriodRetention: [String: Int]
    public var boards: [BoardDefinition]

    public init(topN: Int, closedPeriodRetention: [String: Int], boards: [BoardDefinition]) {
        self.topN = topN
        self.closedPeriodRetention = closedPeriodRetention
        self.boards = boards
    }

    /// - Throws: ``ScoreboardError`` with code `invalidDefinition`, listing every problem.
    public func validate() throws(ScoreboardError) {
        var problems: [String] = []
        if !(1...10_000).contains(topN) { problems.append("topN: from 1 to 10000") }
        if boards.isEmpty { problems.append("boards: at least one") }
        var seen: Set<BoardDefinition> = []
        for board in boards where !seen.insert(board).inserted {
            problems.append("boards: \(board.window.rawValue) × \(board.dimension.rawValue) is declared twice")
        }
        for (window, periods) in closedPeriodRetention.sorted(by: { $0.key < $1.key }) {
            guard let known = LeaderboardWindow(rawValue: window), known != .allTime else {
                problems.append("closedPeriodRetention: \(window) is not a window with closing periods")
                continue
            }
            if periods < 1 { problems.append("closedPeriodRetention.\(known.rawValue): at least 1") }
        }
        if !problems.isEmpty { throw ScoreboardError(code: .invalidDefinition, reasons: problems.map { "leaderboards: \($0)" }) }
    }

    /// The concrete boards an event counts on: every declared board whose dimension the event has a value for,
    /// in the period of its window that contains the event's time.
    public func boards(for event: ScoreEvent) -> [BoardKey] {
        boards.compactMap { board in
            board.dimension.board(
                window: board.window, period: board.window.period(containing: event.occurredAt).key,
                region: event.region, guild: event.guild)
        }
    }

    /// How many periods after its end a closed period's Redis key lives (`nil`: forever, as for all-time).
    public func retainedPeriods(after window: LeaderboardWindow) -> Int? {
        closedPeriodRetention[window.rawValue]
    }
}

/// Competition ranking ("1224"): equal scores share a rank, and the next rank skips the tied places.
public enum CompetitionRanking {
    /// Ranks for scores already sorted from highest to lowest. For a slice that starts further down a board, pass
    /// `firstPosition` (the 0-based place of `scores[0]` on the board) and `firstRank` (its rank: one more than the
    /// number of strictly higher scores). They differ when `scores[0]` ties with members before the slice: a slice
    /// `[80, 20]` at positions 1 and 2 of `[80, 80, 20]` ranks `[1, 3]`.
    public static func ranks(forDescending scores: [Int64], firstPosition: Int = 0, firstRank: Int? = nil) -> [Int] {
        var ranks: [Int] = []
        ranks.reserveCapacity(scores.count)
        for (index, score) in scores.enumerated() {
            if index == 0 {
                ranks.append(firstRank ?? firstPosition + 1)
            } else if score == scores[index - 1] {
                ranks.append(ranks[index - 1])
            } else {
                ranks.append(firstPosition + index + 1)
            }
        }
        return ranks
    }
}

extension LeaderboardCatalog {
    /// When a board's Redis key may go: the end of its period plus the retained number of further periods (each
    /// step is one real following period, so months keep their lengths). `nil` for all-time boards, and for windows
    /// without a retention (kept until a rebuild or an operator removes them).
    public func redisExpiry(of board: BoardKey) -> Timestamp? {
        guard let retained = retainedPeriods(after: board.window), let period = try? board.window.period(named: board.period) else {
            return nil
        }
        var current = period
        for _ in 0..<retained {
            guard let next = current.next else { return nil }
            current = next
        }
        return current.end
    }

    /// The boards whose definition is declared, for one stream (window × dimension); `false` for undeclared ones.
    public func declares(_ stream: BoardStream) -> Bool {
        boards.contains(BoardDefinition(window: stream.window, dimension: stream.dimension))
    }
}
