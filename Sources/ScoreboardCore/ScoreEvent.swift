/// A validated score event: what the ingest gateway publishes, keyed by ``userID``, and what workers consume.
///
/// The gateway stamps ``eventID``, ``occurredAt`` and ``points`` (from the action catalog; clients never choose
/// their points). ``schemaVersion`` lets consumers read old and new events side by side; the JSON Schema of this
/// version is `topics/score-events.yaml`, and tests check the two agree.
public struct ScoreEvent: Hashable, Sendable, Codable {
    public static let currentSchemaVersion = 1

    public var schemaVersion: Int
    /// Server-assigned UUID; workers deduplicate on it.
    public var eventID: String
    public var userID: String
    /// The action catalog's id, for example `complete-quest`.
    public var action: String
    public var points: Int64
    /// Server-stamped time of acceptance, in milliseconds since the Unix epoch (UTC). Windows are computed from it.
    public var occurredAt: Timestamp
    public var region: String?
    public var guild: String?
    /// The client's idempotency key (a UUID): a repeated key yields the same event, never a second one.
    public var idempotencyKey: String
    public var source: Source

    public enum Source: String, Hashable, Sendable, Codable {
        case player
        case gameServer = "game-server"
    }

    enum CodingKeys: String, CodingKey {
        case schemaVersion, eventID = "eventId", userID = "userId", action, points, occurredAt, region, guild
        case idempotencyKey, source
    }

    public init(
        schemaVersion: Int = ScoreEvent.currentSchemaVersion, eventID: String, userID: String, action: String,
        points: Int64, occurredAt: Timestamp, region: String?, guild: String?, idempotencyKey: String, source: Source
    ) {
        self.schemaVersion = schemaVersion
        self.eventID = eventID
        self.userID = userID
        self.action = action
        self.points = points
        self.occurredAt = occurredAt
        self.region = region
        self.guild = guild
        self.idempotencyKey = idempotencyKey
        self.source = source
    }

    /// The Kafka message key: one user's events stay on one partition, in order.
    public var partitionKey: String { userID }

    // MARK: - Validation

    /// The limits an event must respect.
    public enum Limits {
        public static let identifierMaxLength = 64
        public static let maximumPoints: Int64 = 1_000_000
        /// Events stamped before 2020 or after 2100 are a bug, not a score.
        public static let earliest = Timestamp(millisecondsSinceEpoch: 1_577_836_800_000)
        public static let latest = Timestamp(millisecondsSinceEpoch: 4_102_444_800_000)
    }

    /// Checks every field; returns all problems found, not only the first.
    /// - Throws: ``ScoreboardError`` with code `invalidEvent` listing each violation.
    public func validate() throws(ScoreboardError) {
        var problems: [String] = []
        if schemaVersion != Self.currentSchemaVersion { problems.append("schemaVersion: unsupported version \(schemaVersion)") }
        if !UUIDText.isValid(eventID) { problems.append("eventId: must be a UUID") }
        if !UUIDText.isValid(idempotencyKey) { problems.append("idempotencyKey: must be a UUID") }
        if let problem = Self.eventIdentifierProblem(userID) { problems.append("userId: \(problem)") }
        if let problem = Self.eventIdentifierProblem(action) { problems.append("action: \(problem)") }
        if let region, let problem = Self.eventIdentifierProblem(region) { problems.append("region: \(problem)") }
        if let guild, let problem = Self.eventIdentifierProblem(guild) { problems.append("guild: \(problem)") }
        if points < 0 || points > Limits.maximumPoints { problems.append("points: must be from 0 to \(Limits.maximumPoints)") }
        if occurredAt < Limits.earliest || occurredAt > Limits.latest { problems.append("occurredAt: outside 2020-2100") }
        if !problems.isEmpty { throw ScoreboardError(code: .invalidEvent, reasons: problems) }
    }

    /// Identifiers from outside (user ids in JWT `sub`, path parameters and bodies; regions, guilds, actions) are 1 to
    /// 64 characters of `A-Z a-z 0-9 _ . -`: safe in URLs, and unambiguous as parts of Redis keys, whose parts are
    /// separated by `:` (a user id `alice:pvp-win` once shared a rate-limit key with another user's).
    /// `topics/requests/*.yaml` and `openapi.yaml` spell the same rule as ``identifierPattern``.
    public static func identifierProblem(_ value: String) -> String? {
        if value.isEmpty { return "must not be empty" }
        if value.utf8.count > Limits.identifierMaxLength { return "must have at most \(Limits.identifierMaxLength) characters" }
        let allowed = value.utf8.allSatisfy { byte in
            byte.isASCIILetterOrDigit || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-")
        }
        return allowed ? nil : "may only contain letters, digits, _ . -"
    }

    /// ``identifierProblem(_:)`` as a JSON Schema pattern (with `minLength: 1, maxLength: 64`).
    public static let identifierPattern = "^[A-Za-z0-9_.-]+$"

    /// The topic's own, older rule (`topics/score-events.yaml`), which also allows `:`: events accepted before the
    /// edge narrowed stay in the log for its retention and must still replay. Nothing new can carry a `:`.
    static func eventIdentifierProblem(_ value: String) -> String? {
        if value.contains(":") { return identifierProblem(value.replacing(":", with: "_")) }
        return identifierProblem(value)
    }
}

/// Milliseconds since the Unix epoch, UTC. Core never reads the clock: callers pass time in.
public struct Timestamp: Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    public var millisecondsSinceEpoch: Int64

    public init(millisecondsSinceEpoch: Int64) {
        self.millisecondsSinceEpoch = millisecondsSinceEpoch
    }

    public init(from decoder: any Decoder) throws {
        millisecondsSinceEpoch = try decoder.singleValueContainer().decode(Int64.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(millisecondsSinceEpoch)
    }

    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool { lhs.millisecondsSinceEpoch < rhs.millisecondsSinceEpoch }

    public var description: String { "\(millisecondsSinceEpoch)ms" }
}

extension UInt8 {
    /// `0-9 A-Z a-z`: the core of every identifier alphabet we accept (user ids, actions, topic names).
    var isASCIILetterOrDigit: Bool {
        (48...57).contains(self) || (65...90).contains(self) || (97...122).contains(self)
    }
}
