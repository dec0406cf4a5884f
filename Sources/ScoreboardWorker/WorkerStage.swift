import ScoreboardCore

/// One kind of work a batch does beside the exactly-once ledger (leaderboards first; achievements, fraud profiles and
/// analytics plug in the same way). Each batch runs every stage in two steps:
///
/// 1. **Rows in the transaction** (``rows(for:)``): inside the batch's ledger transaction, once the new events and
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

    /// Step 1, inside the transaction: the outbox entries (one per source partition involved, each tagged with
    /// ``name``) and what the outputs step needs.
    func rows(for batch: StageInput) throws -> (outbox: [OutboxEntry], due: Due)

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

/// One stage's outputs for one batch, its `Due` type erased: the pipeline carries a list of these from the ledger to
/// the projector.
struct StagedOutputs: Sendable {
    var outbox: [OutboxEntry]
    var run: @Sendable () async throws -> Void
}

extension WorkerStage {
    func staged(_ input: StageInput) throws -> StagedOutputs {
        let (outbox, due) = try rows(for: input)
        return StagedOutputs(outbox: outbox, run: { try await self.outputs(due) })
    }

    func recovered(_ entries: [OutboxEntry]) async throws -> StagedOutputs {
        let due = try await recover(entries)
        return StagedOutputs(outbox: [], run: { try await self.outputs(due) })
    }
}
