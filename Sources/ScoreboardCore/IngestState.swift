/// The words the ingest gateway and its state store (Redis, or memory in tests) share: what one request claims, which
/// limits it counts against, and what a stored idempotency key holds. The gateway's `IngestState` port speaks them;
/// the store decides how they are kept (keys, scripts, expiry).

/// The 202 answer: where the event landed, and what the catalog made of it.
public struct AcceptedScore: Codable, Sendable, Hashable {
    public var eventID: String
    public var partition: Int32
    public var offset: Int64
    public var userID: String
    public var action: String
    public var points: Int64
    public var occurredAt: Int64

    enum CodingKeys: String, CodingKey {
        case eventID = "eventId", partition, offset, userID = "userId", action, points, occurredAt
    }

    public init(eventID: String, partition: Int32, offset: Int64, userID: String, action: String, points: Int64, occurredAt: Int64) {
        self.eventID = eventID
        self.partition = partition
        self.offset = offset
        self.userID = userID
        self.action = action
        self.points = points
        self.occurredAt = occurredAt
    }
}

/// What an idempotency key holds: pending (no answer) while the event is being published, then the 202 answer. The
/// fingerprint binds the key to the request it was first used with.
public struct IdempotencyRecord: Codable, Sendable, Hashable {
    public var fingerprint: String
    public var answer: AcceptedScore?

    public init(fingerprint: String, answer: AcceptedScore?) {
        self.fingerprint = fingerprint
        self.answer = answer
    }
}

/// One rate limit a request counts against: checked, and recorded when the request passes.
public struct RateLimit: Sendable, Hashable {
    /// Whose requests are counted. Identifiers cannot contain `:` (``ScoreEvent/identifierProblem(_:)``), so no
    /// scope of one user can spell another user's or another layer's.
    public enum Scope: Sendable, Hashable {
        case clientIP(String)
        case user(String)
        /// One user's scores of one action in one window: `minute`, `hour`, `second`, or a calendar day `day:2026-11-25`.
        case action(userID: String, action: String, window: String)
        /// One user's action-token mints.
        case mint(userID: String)
        /// One user's scores while a fraud flag of theirs is open (the adaptive limit).
        case flagged(userID: String)
    }

    public enum Window: Sendable, Hashable {
        /// The last `milliseconds` before now.
        case sliding(milliseconds: Int64)
        /// A calendar period ending at `resetAt` (a counter that expires then).
        case calendar(resetAt: Timestamp)
    }

    /// Which layer, as reported to the client and the rejections topic: `ip`, `user`, `action:<id>:<period>`.
    public var name: String
    public var scope: Scope
    public var count: Int
    public var window: Window

    public init(name: String, scope: Scope, count: Int, window: Window) {
        self.name = name
        self.scope = scope
        self.count = count
        self.window = window
    }
}

/// Everything one ingest request asks of the state store, decided atomically: no limit exceeded, the action token
/// not spent, the idempotency key free; then the request is recorded in every limit, the token spent and the key
/// claimed as pending. Nothing is recorded for a refused request.
public struct IngestClaim: Sendable, Hashable {
    public var userID: String
    /// The canonical idempotency key.
    public var idempotencyKey: String
    public var fingerprint: String
    /// The action token's nonce, spent on admission; `nil` for game servers, which have no tokens.
    public var tokenNonce: String?
    /// How long a spent nonce is remembered: longer than any token lives.
    public var tokenMemory: Duration
    /// How long the pending claim lives if nobody settles it: longer than any publish attempt.
    public var pendingLifetime: Duration
    public var limits: [RateLimit]
    /// Recorded in the sliding windows (unique per request).
    public var requestID: String
    public var now: Timestamp

    public init(
        userID: String, idempotencyKey: String, fingerprint: String, tokenNonce: String?, tokenMemory: Duration, pendingLifetime: Duration,
        limits: [RateLimit], requestID: String, now: Timestamp
    ) {
        self.userID = userID
        self.idempotencyKey = idempotencyKey
        self.fingerprint = fingerprint
        self.tokenNonce = tokenNonce
        self.tokenMemory = tokenMemory
        self.pendingLifetime = pendingLifetime
        self.limits = limits
        self.requestID = requestID
        self.now = now
    }
}

/// The state store's verdict on an ``IngestClaim``.
public enum IngestAdmission: Sendable, Hashable {
    case admitted
    /// `limit` is the ``RateLimit/name`` that refused; the client may retry after the wait.
    case rateLimited(limit: String, retryAfterMilliseconds: Int64)
    case tokenReplayed
    case idempotencyKeyInUse
}

/// The state store's verdict on minting an action token.
public enum MintAdmission: Sendable, Hashable {
    case allowed
    case banned
    case rateLimited(retryAfterMilliseconds: Int64)
}

/// One idempotency key of one user, as a request names it: what ``IngestPrecheck`` looks up.
public struct IngestKey: Sendable, Hashable {
    public var userID: String
    /// The canonical idempotency key.
    public var idempotencyKey: String

    public init(userID: String, idempotencyKey: String) {
        self.userID = userID
        self.idempotencyKey = idempotencyKey
    }
}

/// What the state store holds for an ``IngestKey`` before anything is spent: is the user banned, has the user an
/// open fraud flag (the adaptive limit applies), and what does the key hold (if anything)?
public struct IngestPrecheck: Sendable, Hashable {
    public var banned: Bool
    public var record: IdempotencyRecord?
    public var flagged: Bool

    public init(banned: Bool, record: IdempotencyRecord?, flagged: Bool = false) {
        self.banned = banned
        self.record = record
        self.flagged = flagged
    }
}

/// A published event's 202 answer, to keep under its idempotency key (replacing the pending claim).
public struct IngestCompletion: Sendable, Hashable {
    public var key: IngestKey
    public var record: IdempotencyRecord

    public init(key: IngestKey, record: IdempotencyRecord) {
        self.key = key
        self.record = record
    }
}

/// An event that was not published: its idempotency key and its action token (if any) are freed for a retry.
public struct IngestRelease: Sendable, Hashable {
    public var key: IngestKey
    public var tokenNonce: String?

    public init(key: IngestKey, tokenNonce: String?) {
        self.key = key
        self.tokenNonce = tokenNonce
    }
}
