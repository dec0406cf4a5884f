import ScoreboardCore
import ScoreboardHTTP

// The push role reaches the outside through these ports only. Redis, PostgreSQL and Kafka implement them in their
// adapters (the executable declares the conformances, ScoreboardCLI/PushPortAdapters.swift); memory implementations
// live beside them, for in-process tests and for fault tests that fail on cue (MemoryPushPorts.swift).

/// The live boards (Redis sorted sets, written by the workers): read only.
public protocol LiveBoards: Sendable {
    /// Whether the board has live data.
    func exists(_ board: BoardKey) async throws -> Bool

    /// Up to `limit` members from place `offset` (0-based); `nil` when the board has no live data.
    func page(of board: BoardKey, offset: Int, limit: Int) async throws -> BoardSlice?

    /// The members within `radius` places of `member`.
    func neighbourhood(of member: String, on board: BoardKey, radius: Int) async throws -> BoardNeighbourhood

    /// The member's score, rank and the member count on each of `boards` it is on (the others are left out).
    func placements(of member: String, on boards: [BoardKey]) async throws -> [BoardKey: LivePlacement]

    /// Answers when the store is reachable, throws when it is not: for readiness.
    func probe() async throws
}

/// The standings of periods whose live board has expired, computed from the stored totals (PostgreSQL), and where
/// each member scored.
public protocol StandingsArchive: Sendable {
    /// Up to `limit` members from place `offset` (0-based), from the stored totals.
    func page(of board: BoardKey, offset: Int, limit: Int) async throws -> BoardSlice

    /// The members within `radius` places of `member`; `nil` when the member is not on the board.
    func neighbourhood(of member: String, on board: BoardKey, radius: Int) async throws -> BoardSlice?

    /// The (region, guild) pairs `member` scored under in one period of `window`.
    func placements(of member: String, window: LeaderboardWindow, period: String) async throws -> [MemberPlacement]
}

/// An update with the partition of the updates log it was read from (its sequence is its offset there).
public struct PartitionedUpdate: Sendable, Hashable {
    public var partition: Int32
    public var update: SequencedUpdate

    public init(partition: Int32, update: SequencedUpdate) {
        self.partition = partition
        self.update = update
    }
}

/// What the updates log tells the feed, in order.
public enum UpdateSourceEvent: Sendable, Hashable {
    /// The source holds these partitions and reads them from their end: the feed is ready.
    case assigned([Int32])
    /// Updates in log order per partition.
    case updates([PartitionedUpdate])
    /// The log is a new incarnation (the topic was recreated, or a broker that keeps its log in memory restarted):
    /// offsets start again from 0, so sequences read before mean nothing in it. Sent before any update of the new log.
    case newIncarnation
}

/// The leaderboard-updates log (Kafka), read from its end by every push process. The adapter owns the decoding of
/// the messages and tells incarnations apart.
public protocol UpdateSource: Sendable {
    /// Reads until graceful shutdown or cancellation, handing every event to `handle`, in order, one at a time.
    /// - Throws: when reading fails for good.
    func run(_ handle: @escaping @Sendable (UpdateSourceEvent) -> Void) async throws
}

/// Everything the push role talks to, gathered for ``buildPush(configuration:ports:logger:)``.
public struct PushPorts: Sendable {
    public var live: any LiveBoards
    public var archive: any StandingsArchive
    public var updates: any UpdateSource
    /// Bearer tokens of personal streams (and their revocations).
    public var authenticator: JWTAuthenticator
    /// What the workers keep per player (PostgreSQL): progress and achievement unlocks.
    public var players: any PlayerRecords

    /// The workers' analytics cells (PostgreSQL); `nil`: the analytics API answers 503.
    public var analytics: (any AnalyticsCells)?
    /// Fraud review (`nil`: the admin fraud endpoints answer 503).
    public var fraudReviews: (any FraudReviews)?
    /// The fraud-flags topic, for the review feed (`nil`: no feed, its stream answers 503).
    public var fraudFlags: (any FraudFlagSource)?
    /// The notifications topic, for the achievements sent on personal channels (`nil`: none are sent).
    public var notifications: (any NotificationSource)?

    public init(
        live: any LiveBoards, archive: any StandingsArchive, updates: any UpdateSource, authenticator: JWTAuthenticator,
        players: any PlayerRecords = MemoryPlayerRecords(), analytics: (any AnalyticsCells)? = nil, fraudReviews: (any FraudReviews)? = nil,
        fraudFlags: (any FraudFlagSource)? = nil, notifications: (any NotificationSource)? = nil
    ) {
        self.analytics = analytics
        self.live = live
        self.archive = archive
        self.updates = updates
        self.authenticator = authenticator
        self.players = players
        self.fraudReviews = fraudReviews
        self.fraudFlags = fraudFlags
        self.notifications = notifications
    }
}
