import ScoreboardCore

// The worker reaches the outside through these ports only. PostgreSQL, Redis and Kafka implement them in their
// adapters (the executable declares the conformances); memory implementations live beside them, for in-process tests
// and for fault tests that fail on cue (MemoryWorkerPorts.swift).

/// The exactly-once ledger: applied events, member totals and the consumer offsets stored beside them
/// (PostgreSQL's `ScoreLedger`).
public protocol WorkerLedger: Sendable {
    /// Claims `partitions` of `topic` for this worker: bumps each epoch (fencing out the previous owner) and returns
    /// where to resume. A `topicID` other than the stored one is a new incarnation of the log: it resumes at 0.
    func claim(topic: String, topicID: String, partitions: [Int32]) async throws -> [PartitionClaim]

    /// Applies a batch in one transaction: checks every partition's epoch (throws ``LedgerFenced`` when another worker
    /// claimed one since), keeps the events whose ids are new, adds `aggregate(newEvents).pointsByTotal` to the
    /// totals, stores the next offsets, reads (and locks until COMMIT) the stage state rows `reads` names, runs
    /// `beforeCommit` with what changed and that state (the stages' "rows in the transaction" step: no I/O there, the
    /// transaction holds row locks), writes the stage state and outbox entries it returns, then commits. Nothing of it
    /// remains when anything throws.
    /// - Returns: The outbox rows written, and what `beforeCommit` returned.
    func apply<Due: Sendable>(
        _ batch: LedgerBatch, aggregate: @Sendable ([ScoreEvent]) -> BatchAggregation,
        reads: @Sendable (LedgerApplied) -> StageReads,
        beforeCommit: @Sendable (LedgerApplied, StageState) async throws -> (outbox: [OutboxEntry], writes: StageWrites, due: Due)
    ) async throws -> (outbox: [PendingOutboxEntry], due: Due)

    /// Runs committed effects (`body`) fenced by the partitions' epochs, then clears the outbox rows `ids`. A claim of
    /// one of the partitions waits for a projection in flight, and a projection after the claim does nothing.
    /// - Returns: `false` when fenced (`body` did not run, the rows stay for the partitions' new owner).
    func project(topic: String, epochs: [Int32: Int64], clearing ids: [Int64], _ body: @Sendable () async throws -> Void) async throws -> Bool

    /// The outbox rows left for `partitions`, in commit order.
    func pendingOutbox(topic: String, partitions: [Int32]) async throws -> [PendingOutboxEntry]

    /// Appends stage records outside a batch, each once per id, in a short transaction of its own: for what is known
    /// only after a batch's outputs (a ranking achievement reached, seen in a board write).
    /// - Returns: How many were new.
    @discardableResult
    func appendStageRecords(_ records: [StageRecord]) async throws -> Int

    /// Which of `keys` have a stage record (one short read, outside any batch).
    func existingStageRecords(_ keys: [StageKey]) async throws -> Set<StageKey>

    /// Every total row of these members in these window periods, as they are now.
    func totals(members: [String], periods: [PeriodKey]) async throws -> [BatchAggregation.TotalKey: Int64]

    /// Runs `body` while no batch is in flight and none can start (for rebuilds).
    func withBatchesPaused<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T

    /// Every total row of a window, all periods.
    func totals(window: LeaderboardWindow) async throws -> [BatchAggregation.TotalKey: Int64]

    /// Answers when the store is reachable (a trivial query), throws when it is not: for readiness between batches.
    func probe() async throws
}

/// The boards readers see (Redis sorted sets), always set to absolute totals so that replays converge.
public protocol BoardStore: Sendable {
    /// Raises these members' scores to at least these totals (never lowers one: totals only grow, so a late write of
    /// an older total changes nothing) and returns each one's score as stored afterwards, with its competition rank
    /// inside the catalog's top N.
    func raiseScores(_ scores: [BoardKey: [String: Int64]]) async throws -> BoardWrite

    /// Replaces each listed board with exactly these scores, atomically per board.
    func replaceBoards(_ scores: [BoardKey: [String: Int64]]) async throws

    /// Answers when the store is reachable, throws when it is not: for readiness between batches.
    func probe() async throws
}

/// Takes members off boards (Redis `ZREM`): what a ban does to the boards its user's deleted totals made. Idempotent.
/// Apart from ``BoardStore`` so that a store wrapping another (the ranking achievements') need not forward it: the
/// worker takes it from ``WorkerPorts/boards`` itself.
public protocol BoardRemovals: Sendable {
    func removeMembers(_ members: [BoardKey: [String]]) async throws
}

/// Where the worker's outputs go (Kafka's leaderboard-updates and dead-letter topics). Each call returns once
/// everything is acknowledged.
public protocol WorkerOutputs: Sendable {
    /// Version 1: one message per member per board.
    func publishUpdates(_ updates: [LeaderboardUpdate]) async throws
    /// Version 2: one message per board per batch, carrying its changed members.
    func publishBoardChanges(_ changes: [BoardChanges]) async throws
    func publishDeadLetters(_ letters: [DeadLetter]) async throws
}

/// Where the fraud stage's flags go after commit (Kafka's fraud-flags topic, and the Redis mark the gateway reads to
/// limit a flagged user). Called again with the same flags after a crash between commit and outputs: idempotent by
/// flag id.
public protocol FraudFlagOutputs: Sendable {
    /// Returns once every flag is acknowledged by the broker and marked open (a flag a reviewer closed stays closed).
    func publishFlags(_ flags: [FraudFlagMessage]) async throws
}

/// Where achievement unlocks go after they are stored (Kafka's notifications topic, read by the push role for the
/// users' personal channels). Called again with the same unlocks after a crash between commit and outputs (or, for a
/// ranking, between the announcement and its mark): readers keep one per ``AchievementNotification/id``.
public protocol AchievementNotifications: Sendable {
    /// Returns once every unlock is acknowledged by the broker.
    func publishUnlocks(_ unlocks: [AchievementUnlock]) async throws
}

/// Which incarnation of a topic the broker holds now (its topic id), `nil` when the topic does not exist.
public protocol TopicIncarnations: Sendable {
    func topicID(of topic: String) async throws -> String?
}

/// The ledger's schema, brought up to date once at start (PostgreSQL's migrations).
public protocol LedgerSchema: Sendable {
    /// Applies what is missing and returns how many migrations that was; safe to run from several workers at once.
    func applyMigrations() async throws -> Int
}

/// Everything a worker talks to, gathered for ``buildWorker(configuration:ports:logger:)``.
public struct WorkerPorts: Sendable {
    public var ledger: any WorkerLedger
    public var boards: any BoardStore
    public var outputs: any WorkerOutputs
    public var topics: any TopicIncarnations
    /// `nil` for a ledger without a schema (the memory one).
    public var schema: (any LedgerSchema)?
    /// Where fraud flags go (`nil`: stored with the batch, published nowhere).
    public var fraudFlags: (any FraudFlagOutputs)?
    /// Where achievement unlocks are announced (`nil`: stored with the batch, announced nowhere).
    public var notifications: (any AchievementNotifications)?

    public init(
        ledger: any WorkerLedger, boards: any BoardStore, outputs: any WorkerOutputs, topics: any TopicIncarnations,
        schema: (any LedgerSchema)? = nil, fraudFlags: (any FraudFlagOutputs)? = nil, notifications: (any AchievementNotifications)? = nil
    ) {
        self.ledger = ledger
        self.boards = boards
        self.outputs = outputs
        self.topics = topics
        self.schema = schema
        self.fraudFlags = fraudFlags
        self.notifications = notifications
    }
}
