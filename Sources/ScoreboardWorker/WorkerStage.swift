import ScoreboardCore

/// One kind of work a batch does beside the exactly-once ledger (leaderboards first; achievements, fraud profiles and
/// analytics plug in the same way). Each batch runs every stage in two steps:
///
/// 1. **Rows in the transaction** (``rows(for:state:)``): inside the batch's ledger transaction, once the new events and
///    their totals are known. Pure work, no I/O: the transaction holds row locks. It returns what the stage owes after
///    commit, and the outbox entries that record it; those commit with the batch, in the same transaction as its
///    events, totals and offsets.
/// 2. **Outputs after commit** (``outputs(_:)``): Redis, Kafka, anything outside PostgreSQL. Run by the worker's
///    projector, in commit order, fenced by the partitions' epochs, after which the outbox entries are cleared. Outputs
///    must be idempotent and order-independent for one member (absolute values that only rise), because they can run
///    again: after a crash between commit and outputs, the partition's next owner finds the entries and calls
///    ``recover(_:)``, which rebuilds the same outputs from the state current then.
public protocol WorkerStage: Sendable {
    /// What the stage owes after commit, from step 1 to step 2.
    associatedtype Due: Sendable

    /// Tags the stage's outbox entries, so that a recovering worker hands each back to the stage that wrote it.
    var name: String { get }

    /// Which of its state rows the stage reads for this batch (``StageReads``): the ledger reads and locks them in the
    /// transaction, after the batch's events are deduplicated, and hands them to ``rows(for:state:)``.
    func reads(for batch: StageInput) -> StageReads

    /// Step 1, inside the transaction: the outbox entries (one per source partition involved, each tagged with
    /// ``name``), the stage's state writes (``StageWrites``, keys named with ``name``: they commit with the batch), and
    /// what the outputs step needs. Pure: `state` holds what ``reads(for:)`` named, as committed before this batch.
    func rows(for batch: StageInput, state: StageState) throws -> StageRows<Due>

    /// Step 2, after commit.
    func outputs(_ due: Due) async throws

    /// What the outbox entries a previous owner left owe, rebuilt from the state current now.
    func recover(_ entries: [OutboxEntry]) async throws -> Due
}

/// What a stage sees of a batch inside its transaction.
public struct StageInput: Sendable {
    /// The events that were new (repeats of applied event ids dropped) and every total row of their members' periods.
    public var applied: LedgerApplied
    /// Each new event's source partition, by event id: outbox entries are kept per partition, for its next owner.
    public var partitions: [String: Int32]
    /// The batch's unreadable messages.
    public var deadLetters: [DeadLetter]
}

/// What a stage's step 1 returns.
public struct StageRows<Due: Sendable>: Sendable {
    public var outbox: [OutboxEntry]
    public var writes: StageWrites
    public var due: Due

    public init(outbox: [OutboxEntry] = [], writes: StageWrites = .none, due: Due) {
        self.outbox = outbox
        self.writes = writes
        self.due = due
    }
}

/// One stage's outputs for one batch, its `Due` type erased: the pipeline carries a list of these from the ledger to
/// the projector.
struct StagedOutputs: Sendable {
    var outbox: [OutboxEntry]
    var writes: StageWrites = .none
    var run: @Sendable () async throws -> Void
}

extension WorkerStage {
    /// A stage that keeps no state reads none.
    public func reads(for batch: StageInput) -> StageReads { .none }

    func staged(_ input: StageInput, state: StageState) throws -> StagedOutputs {
        let rows = try rows(for: input, state: state)
        let due = rows.due
        return StagedOutputs(outbox: rows.outbox, writes: rows.writes, run: { try await self.outputs(due) })
    }

    func recovered(_ entries: [OutboxEntry]) async throws -> StagedOutputs {
        let due = try await recover(entries)
        return StagedOutputs(outbox: [], run: { try await self.outputs(due) })
    }
}
