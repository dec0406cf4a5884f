/// What a worker stage keeps in PostgreSQL beside the boards, read and written inside the batch's transaction, so that
/// it commits with the batch's events and offsets and a replay (whose events the ledger drops as already applied)
/// changes none of it. A stage names what it reads (``StageReads``), gets it locked until commit (``StageState``),
/// computes purely, and hands back what to write (``StageWrites``).
///
/// Four shapes of state, each with the write that stays exact under concurrent workers:
/// - **state**: one opaque value per key (a player's profile, streak, unlock set), read locked and replaced;
/// - **counters**: integers that only receive additions (points per minute), added without a read;
/// - **sets**: distinct members per key (active users per minute), added idempotently; their size is read afterwards;
/// - **records**: append-only rows with a stable id (an achievement unlock, a fraud flag), written once per id.
public struct StageKey: Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    /// The stage that owns the row (its ``WorkerStage`` name).
    public var stage: String
    public var key: String

    public init(stage: String, key: String) {
        self.stage = stage
        self.key = key
    }

    public static func < (lhs: StageKey, rhs: StageKey) -> Bool { (lhs.stage, lhs.key) < (rhs.stage, rhs.key) }
    public var description: String { "\(stage)/\(key)" }
}

/// The state rows a batch reads in its transaction. Each is locked until COMMIT, in key order (so two workers that
/// share a key, such as a population profile, take their locks in one order and cannot deadlock).
public struct StageReads: Sendable, Equatable {
    public var state: Set<StageKey>

    public init(state: Set<StageKey> = []) { self.state = state }

    public static let none = StageReads()

    public mutating func formUnion(_ other: StageReads) { state.formUnion(other.state) }
}

/// The state rows read for a batch, as committed by the batches before it. A key never written is absent.
public struct StageState: Sendable, Equatable {
    public var values: [StageKey: [UInt8]]

    public init(values: [StageKey: [UInt8]] = [:]) { self.values = values }

    public subscript(key: StageKey) -> [UInt8]? { values[key] }
}

/// An append-only row: written once per (stage, id), so a replay that produces it again changes nothing.
public struct StageRecord: Sendable, Equatable, Codable {
    public var key: StageKey
    /// The player it is about, for reads by user (`nil` for records about no one player).
    public var userID: String?
    /// Event time: the time of the event that produced it.
    public var occurredAt: Timestamp
    /// A JSON object (stored as jsonb, so analysts and readers can query it).
    public var payload: [UInt8]

    public init(key: StageKey, userID: String?, occurredAt: Timestamp, payload: [UInt8]) {
        self.key = key
        self.userID = userID
        self.occurredAt = occurredAt
        self.payload = payload
    }
}

/// A set member: `member` belongs to set `set` (sets are named by a ``StageKey``).
public struct StageSetMember: Hashable, Sendable, Codable {
    public var set: StageKey
    public var member: String

    public init(set: StageKey, member: String) {
        self.set = set
        self.member = member
    }
}

/// What a batch's stages write in its transaction.
public struct StageWrites: Sendable, Equatable {
    /// Replaces (or creates) each value.
    public var state: [StageKey: [UInt8]]
    /// Added to each counter (created at 0).
    public var counters: [StageKey: Int64]
    /// Added to their sets; members already there are left as they are.
    public var members: Set<StageSetMember>
    /// Appended; a record whose key exists already is left as it is.
    public var records: [StageRecord]

    public init(
        state: [StageKey: [UInt8]] = [:], counters: [StageKey: Int64] = [:], members: Set<StageSetMember> = [],
        records: [StageRecord] = []
    ) {
        self.state = state
        self.counters = counters
        self.members = members
        self.records = records
    }

    public static let none = StageWrites()

    public var isEmpty: Bool { state.isEmpty && counters.isEmpty && members.isEmpty && records.isEmpty }

    /// Both stages' writes; two stages never write the same key (keys carry the stage's name), and if they did the
    /// later state value wins and counters add up.
    public mutating func merge(_ other: StageWrites) {
        state.merge(other.state) { _, later in later }
        counters.merge(other.counters, uniquingKeysWith: +)
        members.formUnion(other.members)
        records += other.records
    }
}
