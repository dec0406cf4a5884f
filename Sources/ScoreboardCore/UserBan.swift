/// A confirmed fraud flag's ban, as a record of the score-events topic (`topics/score-events.yaml`, the `UserBanned`
/// branch), keyed by the user like their events: it lands behind every event of theirs already in the log and is
/// applied by the one worker that owns that partition, in the same transaction as its batch. The worker deletes the
/// user's totals, takes them off every board (one leaderboard-updates message per board, the member marked removed)
/// and counts none of their events from then on (they are still stored, as evidence). Applying it twice changes
/// nothing, so the push role publishes it inside the review's transaction, before COMMIT.
public struct UserBanned: Hashable, Sendable, Codable {
    public static let kind = "ban"

    public var schemaVersion = 1
    public var kind = UserBanned.kind
    public var userID: String
    public var flagID: String
    /// When the review confirmed the flag, in milliseconds since the Unix epoch.
    public var bannedAt: Int64

    enum CodingKeys: String, CodingKey {
        case schemaVersion, kind, userID = "userId", flagID = "flagId", bannedAt
    }

    public init(userID: String, flagID: String, bannedAt: Int64) {
        self.userID = userID
        self.flagID = flagID
        self.bannedAt = bannedAt
    }

    /// The Kafka message key: the user's events' partition.
    public var partitionKey: String { userID }

    /// Checks what a worker relies on: the version, a user id the topic admits, a flag id.
    /// - Throws: ``ScoreboardError`` with code `invalidEvent` listing each violation.
    public func validate() throws(ScoreboardError) {
        var problems: [String] = []
        if schemaVersion != 1 { problems.append("schemaVersion: unsupported version \(schemaVersion)") }
        if kind != Self.kind { problems.append("kind: must be \(Self.kind)") }
        if let problem = ScoreEvent.eventIdentifierProblem(userID) { problems.append("userId: \(problem)") }
        if flagID.isEmpty || flagID.count > 64 { problems.append("flagId: 1 to 64 characters") }
        if !problems.isEmpty { throw ScoreboardError(code: .invalidEvent, reasons: problems) }
    }
}

/// A consumed ban with where it came from.
public struct SourcedBan: Sendable, Hashable {
    public var ban: UserBanned
    public var partition: Int32
    public var offset: Int64

    public init(ban: UserBanned, partition: Int32, offset: Int64) {
        self.ban = ban
        self.partition = partition
        self.offset = offset
    }
}
