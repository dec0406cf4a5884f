import ScoreboardCore

/// A page of a board's standings.
public struct BoardPage: Codable, Sendable, Hashable {
    /// An entry: rank, member and score.
    public typealias Entry = RankedMember

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

    public init(board: BoardKey, placement: LivePlacement) {
        self.board = board.id
        self.window = board.window
        self.period = board.period
        self.dimension = board.dimension
        self.value = board.value
        self.score = placement.score
        self.rank = placement.rank
        self.members = placement.members
        percentile = placement.members == 0
            ? 0 : (Double(placement.members - placement.rank + 1) / Double(placement.members) * 1000).rounded() / 10
    }
}
