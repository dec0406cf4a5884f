/// The ledger's outbox: what a committed batch still owes outside PostgreSQL (Redis boards, published updates, dead
/// letters), written in the batch's own transaction and cleared once done. A worker that crashes between the commit
/// and those effects leaves its rows behind; the partition's next owner finds them when it claims the partition and
/// produces the effects from the state then current, so a batch's effects are never lost, whatever stops when.

/// One pending piece of work: which worker stage owes it, for which source partition, and the stage's own encoding
/// of what to redo (the ledger stores the bytes and never reads them).
public struct OutboxEntry: Sendable, Hashable {
    /// The stage's name (`WorkerStage.name`), so that a recovering worker hands each row back to the stage that wrote it.
    public var stage: String
    /// The source partition whose events owe this work: its next owner recovers it.
    public var partition: Int32
    public var payload: [UInt8]

    public init(stage: String, partition: Int32, payload: [UInt8]) {
        self.stage = stage
        self.partition = partition
        self.payload = payload
    }
}

/// An outbox row as stored: its id orders the rows in commit order, and names it when it is cleared.
public struct PendingOutboxEntry: Sendable, Hashable {
    public var id: Int64
    public var entry: OutboxEntry

    public init(id: Int64, entry: OutboxEntry) {
        self.id = id
        self.entry = entry
    }
}

/// A window and one of its periods, by key (`daily`, `2026-11-25`): a member's rows in it make their scores on the
/// window's boards of that period.
public struct PeriodKey: Sendable, Hashable, Codable {
    public var window: LeaderboardWindow
    public var period: String

    public init(window: LeaderboardWindow, period: String) {
        self.window = window
        self.period = period
    }
}
