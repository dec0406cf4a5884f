import ScoreboardCore
import ScoreboardHTTP

// The gateway reaches the outside through these ports only. Redis and Kafka implement them in their adapters (the
// executable declares the conformances, GatewayPortAdapters.swift); memory implementations live beside them, for
// in-process tests and for fault tests that fail on cue (MemoryGatewayPorts.swift).

/// Where the broker put an acknowledged event.
public struct EventPosition: Sendable, Hashable {
    public var partition: Int32
    public var offset: Int64

    public init(partition: Int32, offset: Int64) {
        self.partition = partition
        self.offset = offset
    }
}

/// The score-events topic. The adapter owns the event's encoding and its key (``ScoreEvent/partitionKey``).
public protocol ScoreEventPublishing: Sendable {
    /// Publishes `events` and returns, once every one is acknowledged or refused, where each landed or why not (in
    /// order). It may take as long as the broker's delivery timeout: ``EventPublisher`` puts the deadline on it.
    func publish(_ events: [ScoreEvent]) async -> [Result<EventPosition, any Error>]

    /// Events handed over and not yet acknowledged: a backlog that keeps growing means the broker does not keep up.
    var unacknowledgedCount: Int { get }
}

/// The rejections topic, for the fraud rules. The adapter owns the encoding and the key (``Rejection/partitionKey``).
public protocol RejectionPublishing: Sendable {
    /// Returns once the broker acknowledged `rejection`.
    func publish(_ rejection: Rejection) async throws
}

/// What the gateway remembers between requests (Redis in production): bans, idempotency keys and their answers,
/// spent action tokens, rate-limit windows. Errors mean the store is unreachable or misbehaving; they are never
/// taken as a pass.
///
/// The ingest operations take a whole batch, so that a request of N items costs a few round trips to the store, not
/// N: one for the prechecks, one (per bounded chunk) for the admissions. A single score is a batch of one.
public protocol IngestState: Sendable {
    /// Before anything is spent, for each key (answers in order): is the user banned, and what does the key hold?
    func precheck(_ keys: [IngestKey]) async throws -> [IngestPrecheck]

    /// Decides each claim atomically (limits, token, key) and records it only when admitted. Claims are decided one
    /// after another in order, so a later claim sees what an earlier one recorded (two claims of one key: the second
    /// finds it in use), as separate requests would. Answers are in order; a claim the store failed on gets its own
    /// error and spoils no other. Throws when the store could not be asked at all.
    func admit(_ claims: [IngestClaim]) async throws -> [Result<IngestAdmission, any Error>]

    /// Refuses banned users; records the mint in `limit` (a sliding window) when allowed.
    func checkMint(userID: String, limit: RateLimit, requestID: String, now: Timestamp) async throws -> MintAdmission

    /// Stores each 202 answer under its idempotency key (replacing the pending claim): a repeat gets it back.
    func complete(_ completions: [IngestCompletion]) async throws

    /// The events were not published: frees their keys and tokens, so the clients can retry with both.
    func release(_ releases: [IngestRelease]) async throws

    func setBan(userID: String, banned: Bool) async throws

    /// Lifts a ban set with ``setBan(userID:banned:)``; `false` (nothing changed) when the ban was confirmed by fraud
    /// review: the workers hold that one too (`fraud_bans`) and would keep not counting the user's events, so
    /// lifting it at the gateway alone would accept scores that never count.
    func liftBan(userID: String) async throws -> Bool

    /// Answers when the store is reachable, throws when it is not: for readiness.
    func probe() async throws
}

extension IngestState {
    /// ``precheck(_:)`` for one key.
    public func precheck(userID: String, idempotencyKey: String) async throws -> IngestPrecheck {
        try await precheck([IngestKey(userID: userID, idempotencyKey: idempotencyKey)])[0]
    }

    /// ``admit(_:)`` for one claim: its error is thrown.
    public func admit(_ claim: IngestClaim) async throws -> IngestAdmission {
        try await admit([claim])[0].get()
    }

    /// ``complete(_:)`` for one answer.
    public func complete(userID: String, idempotencyKey: String, record: IdempotencyRecord) async throws {
        try await complete([IngestCompletion(key: IngestKey(userID: userID, idempotencyKey: idempotencyKey), record: record)])
    }

    /// ``release(_:)`` for one event.
    public func release(userID: String, idempotencyKey: String, tokenNonce: String?) async throws {
        try await release([IngestRelease(key: IngestKey(userID: userID, idempotencyKey: idempotencyKey), tokenNonce: tokenNonce)])
    }
}

/// Everything the gateway talks to, gathered for ``buildGateway(configuration:ports:logger:)``. The clients behind
/// them (the Kafka producer) are the caller's to run, before the gateway in the same service group.
public struct GatewayPorts: Sendable {
    public var scoreEvents: any ScoreEventPublishing
    public var rejections: any RejectionPublishing
    public var state: any IngestState
    public var revocations: any TokenRevocations

    public init(
        scoreEvents: any ScoreEventPublishing, rejections: any RejectionPublishing, state: any IngestState, revocations: any TokenRevocations
    ) {
        self.scoreEvents = scoreEvents
        self.rejections = rejections
        self.state = state
        self.revocations = revocations
    }
}
