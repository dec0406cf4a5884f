// What reading a board answers, in the domain's words: the push role's ports return these, and the Redis and
// PostgreSQL adapters that implement them build them.

/// One member's place on a board (in JSON: `{"rank", "userId", "score"}`, an entry of a board page).
public struct RankedMember: Sendable, Hashable, Codable {
    /// Competition rank: one more than the number of members with a strictly higher score.
    public var rank: Int
    public var userID: String
    public var score: Int64

    public init(rank: Int, userID: String, score: Int64) {
        self.rank = rank
        self.userID = userID
        self.score = score
    }

    enum CodingKeys: String, CodingKey { case rank, userID = "userId", score }
}

/// Consecutive members of one board, highest score first, with competition ranks, and how many members the board has.
public struct BoardSlice: Sendable, Hashable {
    public var members: Int
    public var entries: [RankedMember]

    public init(members: Int, entries: [RankedMember]) {
        self.members = members
        self.entries = entries
    }
}

/// Where one member stands on one live board.
public struct LivePlacement: Sendable, Hashable {
    public var score: Int64
    /// Competition rank: one more than the number of members with a strictly higher score.
    public var rank: Int
    public var members: Int

    public init(score: Int64, rank: Int, members: Int) {
        self.score = score
        self.rank = rank
        self.members = members
    }
}

/// What a board holds around one member.
public enum BoardNeighbourhood: Sendable, Hashable {
    /// The board has no live data (never written, or its period expired): ask the archive.
    case noBoard
    /// The board is live but the member is not on it.
    case notOnBoard
    case slice(BoardSlice)
}

/// The region and guild a member scored under in one period: which dimension boards they are on.
public struct MemberPlacement: Sendable, Hashable {
    public var region: String?
    public var guild: String?

    public init(region: String?, guild: String?) {
        self.region = region
        self.guild = guild
    }
}
