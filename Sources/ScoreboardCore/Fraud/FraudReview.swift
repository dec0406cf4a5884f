/// The words of fraud review that the query role (push), its PostgreSQL adapter and the tests share: a flag with its
/// review status, the review itself, the filters of the flag listing and the audit log's entries.

/// Where a flag stands: open until an admin reviews it, then confirmed (the user is banned) or dismissed.
public enum FraudFlagStatus: String, Hashable, Sendable, Codable, CaseIterable {
    case open, confirmed, dismissed
}

/// An admin's decision on a flag.
public enum FraudReviewDecision: String, Hashable, Sendable, Codable, CaseIterable {
    case confirm, dismiss

    public var status: FraudFlagStatus { self == .confirm ? .confirmed : .dismissed }
}

/// A review, written once per flag.
public struct FraudReview: Hashable, Sendable, Codable {
    public var decision: FraudReviewDecision
    public var note: String
    /// The admin's user id (the bearer token's subject).
    public var reviewer: String
    public var reviewedAt: Int64

    public init(decision: FraudReviewDecision, note: String, reviewer: String, reviewedAt: Int64) {
        self.decision = decision
        self.note = note
        self.reviewer = reviewer
        self.reviewedAt = reviewedAt
    }
}

/// A flag as reviewers list it: the flag as published, its status, and its review once there is one. Encoded flat:
/// the flag's fields, then `status` and `review`.
public struct ReviewedFraudFlag: Hashable, Sendable, Codable {
    public var flag: FraudFlagMessage
    public var status: FraudFlagStatus
    public var review: FraudReview?

    enum CodingKeys: String, CodingKey { case status, review }

    public init(flag: FraudFlagMessage, review: FraudReview?) {
        self.flag = flag
        self.status = review?.decision.status ?? .open
        self.review = review
    }

    public init(from decoder: any Decoder) throws {
        flag = try FraudFlagMessage(from: decoder)
        let container = try decoder.container(keyedBy: CodingKeys.self)
        status = try container.decode(FraudFlagStatus.self, forKey: .status)
        review = try container.decodeIfPresent(FraudReview.self, forKey: .review)
    }

    public func encode(to encoder: any Encoder) throws {
        try flag.encode(to: encoder)
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(status, forKey: .status)
        try container.encode(review, forKey: .review)
    }
}

/// The filters and page of `GET /v1/admin/fraud-flags`: flags in detection order (oldest first), after `cursor`.
public struct FraudFlagQuery: Hashable, Sendable {
    public var status: FraudFlagStatus?
    public var rule: String?
    public var userID: String?
    /// Detection time in `[from, to)`, milliseconds since the epoch.
    public var from: Int64?
    public var to: Int64?
    public var limit: Int
    public var after: FraudFlagCursor?

    public init(
        status: FraudFlagStatus? = nil, rule: String? = nil, userID: String? = nil, from: Int64? = nil, to: Int64? = nil, limit: Int = 50,
        after: FraudFlagCursor? = nil
    ) {
        self.status = status
        self.rule = rule
        self.userID = userID
        self.from = from
        self.to = to
        self.limit = limit
        self.after = after
    }
}

/// Where a page of flags ended: the last flag's detection time and id (flags are ordered by both). Spelt
/// `<detectedAt>.<flagId>` in the API.
public struct FraudFlagCursor: Hashable, Sendable {
    public var detectedAt: Int64
    public var flagID: String

    public init(detectedAt: Int64, flagID: String) {
        self.detectedAt = detectedAt
        self.flagID = flagID
    }

    public init?(_ text: String) {
        let parts = text.split(separator: ".", maxSplits: 1)
        // As openapi.yaml spells it: digits, a dot, a flag id (lowercase hexadecimal and dashes).
        let idCharacters = Set("0123456789abcdef-")
        guard parts.count == 2, parts[0].count <= 18, parts[0].allSatisfy(\.isASCII), let at = Int64(parts[0]), at >= 0,
              (1...64).contains(parts[1].count), parts[1].allSatisfy(idCharacters.contains) else { return nil }
        self.init(detectedAt: at, flagID: String(parts[1]))
    }

    public var text: String { "\(detectedAt).\(flagID)" }
}

/// One entry of the append-only audit log of admin actions.
public struct FraudAuditEntry: Hashable, Sendable, Codable {
    public var id: Int64
    public var at: Int64
    /// The admin who acted.
    public var actor: String
    /// `review-confirm`, `review-dismiss`.
    public var action: String
    public var userID: String?
    public var flagID: String?
    public var note: String?

    enum CodingKeys: String, CodingKey {
        case id, at, actor, action, userID = "userId", flagID = "flagId", note
    }

    public init(id: Int64, at: Int64, actor: String, action: String, userID: String?, flagID: String?, note: String?) {
        self.id = id
        self.at = at
        self.actor = actor
        self.action = action
        self.userID = userID
        self.flagID = flagID
        self.note = note
    }
}

/// Why a review was refused; nothing was changed.
public enum FraudReviewRefusal: Error, Hashable, Sendable {
    case unknownFlag
    case alreadyReviewed(FraudFlagStatus)
}

/// What a review changed, for the effects outside PostgreSQL (Redis, Kafka) that run before it commits.
public struct FraudReviewEffects: Hashable, Sendable {
    public var flag: FraudFlagMessage
    public var decision: FraudReviewDecision
    /// A confirmed flag's ban, to publish on the score-events topic: the worker that owns the user's events applies
    /// it (their totals deleted, off every board, later events not counted).
    public var ban: UserBanned?

    public init(flag: FraudFlagMessage, decision: FraudReviewDecision, ban: UserBanned?) {
        self.flag = flag
        self.decision = decision
        self.ban = ban
    }
}
