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
public protocol IngestState: Sendable {
    /// Before anything is spent: is the user banned, and what does the idempotency key hold (if anything)?
    func precheck(userID: String, idempotencyKey: String) async throws -> (banned: Bool, record: IdempotencyRecord?)

    /// Decides `claim` atomically (limits, token, key) and records it only when admitted.
    func admit(_ claim: IngestClaim) async throws -> IngestAdmission

    /// Refuses banned users; records the mint in `limit` (a sliding window) when allowed.
    func checkMint(userID: String, limit: RateLimit, requestID: String, now: Timestamp) async throws -> MintAdmission

    /// Stores the 202 answer under the idempotency key (replacing the pending claim): a repeat gets it back.
    func complete(userID: String, idempotencyKey: String, record: IdempotencyRecord) async throws

    /// The event was not published: frees the key and the token, so the client can retry with both.
    func release(userID: String, idempotencyKey: String, tokenNonce: String?) async throws

    func setBan(userID: String, banned: Bool) async throws

    /// Answers when the store is reachable, throws when it is not: for readiness.
    func probe() async throws
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
