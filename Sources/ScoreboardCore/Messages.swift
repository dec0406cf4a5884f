/// The topics the roles use, by role. `namespace` is prepended to each declared name, so tests (and several
/// deployments sharing one cluster) keep their own topics; production leaves it empty.
public struct TopicNames: Hashable, Sendable {
    public static let scoreEventsBase = "scoreboard.score-events.v1"
    public static let leaderboardUpdatesBase = "scoreboard.leaderboard-updates.v1"
    public static let rejectionsBase = "scoreboard.rejections.v1"
    public static let deadLetterBase = "scoreboard.dead-letter.v1"
    public static let fraudFlagsBase = "scoreboard.fraud-flags.v1"
    public static let notificationsBase = "scoreboard.notifications.v1"

    public var namespace: String

    public init(namespace: String = "") {
        self.namespace = namespace
    }

    public func name(_ base: String) -> String { namespace + base }
    public var scoreEvents: String { name(Self.scoreEventsBase) }
    public var leaderboardUpdates: String { name(Self.leaderboardUpdatesBase) }
    public var rejections: String { name(Self.rejectionsBase) }
    public var deadLetter: String { name(Self.deadLetterBase) }
    public var fraudFlags: String { name(Self.fraudFlagsBase) }
    public var notifications: String { name(Self.notificationsBase) }
}

/// One change of a member's total on one board period, as published to the leaderboard-updates topic (its JSON
/// Schema is `topics/leaderboard-updates.yaml`). The Kafka key is ``streamID``: every period of one board lands on one
/// partition, so the partition offset is a per-board sequence that push clients resume from.
public struct LeaderboardUpdate: Hashable, Sendable, Codable {
    public var schemaVersion: Int = 1
    /// The concrete board, period included: `daily:2026-11-23:region:eu`.
    public var board: String
    public var window: LeaderboardWindow
    public var period: String
    public var dimension: BoardDimension
    public var dimensionValue: String?
    public var userID: String
    public var total: Int64
    /// Competition rank, when the member is inside the catalog's top N.
    public var rank: Int?

    enum CodingKeys: String, CodingKey {
        case schemaVersion, board, window, period, dimension, dimensionValue, userID = "userId", total, rank
    }

    public init(board: BoardKey, userID: String, total: Int64, rank: Int?) {
        self.board = board.id
        self.window = board.window
        self.period = board.period
        self.dimension = board.dimension
        self.dimensionValue = board.value
        self.userID = userID
        self.total = total
        self.rank = rank
    }

    public var boardKey: BoardKey { BoardKey(window: window, period: period, dimension: dimension, value: dimensionValue) }
    public var streamID: String { boardKey.streamID }
}

/// The changes of one board period in one worker batch, coalesced into one leaderboard-updates message (schema
/// version 2): one message per board per batch instead of one per member, so a batch that moves a thousand members
/// of a board costs one message, one partition offset (its sequence) and one frame per subscriber. Members are
/// applied exactly as the same number of ``LeaderboardUpdate``s would be (``memberUpdates``), in the order listed; a
/// member marked ``Member/isRemoved`` (a ban) is taken off the board instead (version 2 only).
public struct BoardChanges: Hashable, Sendable, Codable {
    public struct Member: Hashable, Sendable, Codable {
        public var userID: String
        public var total: Int64
        /// Competition rank, when the member is inside the catalog's top N.
        public var rank: Int?
        /// The member left the board (a ban): drop them, everyone below moves up one place. `total` is 0 then. Absent
        /// (not `false`) otherwise, so a message without removals is the bytes it always was.
        public var isRemoved: Bool

        enum CodingKeys: String, CodingKey {
            case userID = "userId", total, rank, isRemoved = "removed"
        }

        public init(userID: String, total: Int64, rank: Int?) {
            self.userID = userID
            self.total = total
            self.rank = rank
            self.isRemoved = false
        }

        /// The member taken off the board.
        public static func removed(_ userID: String) -> Member {
            var member = Member(userID: userID, total: 0, rank: nil)
            member.isRemoved = true
            return member
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            userID = try container.decode(String.self, forKey: .userID)
            total = try container.decode(Int64.self, forKey: .total)
            rank = try container.decodeIfPresent(Int.self, forKey: .rank)
            isRemoved = try container.decodeIfPresent(Bool.self, forKey: .isRemoved) ?? false
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(userID, forKey: .userID)
            try container.encode(total, forKey: .total)
            try container.encodeIfPresent(rank, forKey: .rank)
            if isRemoved { try container.encode(true, forKey: .isRemoved) }
        }
    }

    public var schemaVersion: Int = 2
    public var board: String
    public var window: LeaderboardWindow
    public var period: String
    public var dimension: BoardDimension
    public var dimensionValue: String?
    public var members: [Member]

    public init(board: BoardKey, members: [Member]) {
        self.board = board.id
        self.window = board.window
        self.period = board.period
        self.dimension = board.dimension
        self.dimensionValue = board.value
        self.members = members
    }

    /// One version 1 update: the same board and one member.
    public init(_ update: LeaderboardUpdate) {
        self.init(board: update.boardKey, members: [Member(userID: update.userID, total: update.total, rank: update.rank)])
    }

    public var boardKey: BoardKey { BoardKey(window: window, period: period, dimension: dimension, value: dimensionValue) }
    public var streamID: String { boardKey.streamID }

    /// The same changes as one version 1 update per member, in order.
    public var memberUpdates: [LeaderboardUpdate] {
        let key = boardKey
        return members.map { LeaderboardUpdate(board: key, userID: $0.userID, total: $0.total, rank: $0.rank) }
    }
}

extension BoardKey {
    /// The board across its periods: `daily:region:eu`, `all-time:global`. Updates are keyed by it.
    public var streamID: String { BoardStream(window: window, dimension: dimension, value: value).id }
    public var stream: BoardStream { BoardStream(window: window, dimension: dimension, value: value) }
}

/// A board across all its periods, as clients subscribe to it: window × dimension × value.
public struct BoardStream: Hashable, Sendable, Codable, CustomStringConvertible {
    public var window: LeaderboardWindow
    public var dimension: BoardDimension
    public var value: String?

    public init(window: LeaderboardWindow, dimension: BoardDimension, value: String?) {
        self.window = window
        self.dimension = dimension
        self.value = value
    }

    public var id: String { "\(window.rawValue):\(dimension.rawValue)" + (value.map { ":\($0)" } ?? "") }
    public var description: String { id }

    /// The board of this stream in `period`.
    public func board(period: String) -> BoardKey { BoardKey(window: window, period: period, dimension: dimension, value: value) }

    /// Parses path segments: `daily`, `region`, `eu`; global takes no value, region and guild need one.
    /// - Throws: ``ScoreboardError`` `invalidParameter` naming the bad segment.
    public init(window: String, dimension: String, value: String?) throws(ScoreboardError) {
        guard let parsedWindow = LeaderboardWindow(rawValue: window) else {
            throw ScoreboardError(code: .invalidParameter, reasons: ["window: one of \(LeaderboardWindow.allCases.map(\.rawValue).joined(separator: ", "))"])
        }
        guard let parsedDimension = BoardDimension(rawValue: dimension) else {
            throw ScoreboardError(code: .invalidParameter, reasons: ["dimension: one of global, region, guild"])
        }
        switch (parsedDimension, value) {
        case (.global, .some): throw ScoreboardError(code: .invalidParameter, reasons: ["the global dimension takes no value"])
        case (.region, nil), (.guild, nil): throw ScoreboardError(code: .invalidParameter, reasons: ["the \(dimension) dimension needs a value"])
        case (_, .some(let value)):
            if let problem = ScoreEvent.identifierProblem(value) { throw ScoreboardError(code: .invalidParameter, reasons: ["value: \(problem)"]) }
        default: break
        }
        self.init(window: parsedWindow, dimension: parsedDimension, value: value)
    }

    /// Parses an id such as `daily:region:eu`.
    public init(id: String) throws(ScoreboardError) {
        let parts = id.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 2 else { throw ScoreboardError(code: .invalidParameter, reasons: ["board \(id): expected window:dimension[:value]"]) }
        try self.init(window: parts[0], dimension: parts[1], value: parts.count == 3 ? parts[2] : nil)
    }
}

/// A refused ingest request, published to the rejections topic for the fraud rules.
public struct Rejection: Hashable, Sendable, Codable {
    public var schemaVersion: Int = 1
    public var rejectionID: String
    /// The problem type's last path segment: `action-token-replayed`, `rate-limited`, ….
    public var reason: String
    public var userID: String?
    public var clientIP: String?
    public var action: String?
    public var occurredAt: Timestamp
    public var detail: String?

    enum CodingKeys: String, CodingKey {
        case schemaVersion, rejectionID = "rejectionId", reason, userID = "userId", clientIP = "clientIp", action, occurredAt, detail
    }

    public init(rejectionID: String, reason: String, userID: String?, clientIP: String?, action: String?, occurredAt: Timestamp, detail: String?) {
        self.rejectionID = rejectionID
        self.reason = reason
        self.userID = userID
        self.clientIP = clientIP
        self.action = action
        self.occurredAt = occurredAt
        self.detail = detail
    }

    public var partitionKey: String { userID ?? clientIP ?? "unknown" }
}
