/// The values the workers' exactly-once ledger speaks in: claims, batches and what a batch changed. The ledger
/// itself is a port of the worker (`WorkerLedger`); PostgreSQL implements it.

/// Where a worker resumes a partition, and the epoch that fences its writes.
public struct PartitionClaim: Sendable, Hashable {
    public var partition: Int32
    public var nextOffset: Int64
    public var epoch: Int64

    public init(partition: Int32, nextOffset: Int64, epoch: Int64) {
        self.partition = partition
        self.nextOffset = nextOffset
        self.epoch = epoch
    }
}

/// A consumed event with where it came from.
public struct SourcedEvent: Sendable, Hashable {
    public var event: ScoreEvent
    public var partition: Int32
    public var offset: Int64

    public init(event: ScoreEvent, partition: Int32, offset: Int64) {
        self.event = event
        self.partition = partition
        self.offset = offset
    }
}

/// One batch for the ledger: its events and bans, each partition's next offset after it, and the epoch claimed for each.
public struct LedgerBatch: Sendable {
    public var topic: String
    public var events: [SourcedEvent]
    public var nextOffsets: [Int32: Int64]
    public var epochs: [Int32: Int64]
    /// The users banned by records of this batch (``UserBanned``).
    public var bans: [SourcedBan]

    public init(topic: String, events: [SourcedEvent], nextOffsets: [Int32: Int64], epochs: [Int32: Int64], bans: [SourcedBan] = []) {
        self.topic = topic
        self.events = events
        self.nextOffsets = nextOffsets
        self.epochs = epochs
        self.bans = bans
    }
}

/// What a batch changed: the events that were new and counted, every total row of the members and periods they
/// touched, and the total rows its bans deleted.
public struct LedgerApplied: Sendable {
    /// New events of users not banned (a banned user's events are stored, never counted, and reach no stage).
    public var newEvents: [ScoreEvent]
    public var totals: [BatchAggregation.TotalKey: Int64]
    /// Every total row the batch's bans deleted (the boards their users were on are made from them); empty when the
    /// bans were applied before (a replay).
    public var removedTotals: [BatchAggregation.TotalKey: Int64]
    /// Where each ban of the batch came from, by user: its outbox entry belongs to that partition.
    public var banPartitions: [String: Int32]

    public init(
        newEvents: [ScoreEvent], totals: [BatchAggregation.TotalKey: Int64], removedTotals: [BatchAggregation.TotalKey: Int64] = [:],
        banPartitions: [String: Int32] = [:]
    ) {
        self.newEvents = newEvents
        self.totals = totals
        self.removedTotals = removedTotals
        self.banPartitions = banPartitions
    }
}

/// Another worker claimed one of the batch's partitions after this one did: the batch was rolled back.
public struct LedgerFenced: Error, CustomStringConvertible {
    public var partitions: [Int32]

    public init(partitions: [Int32]) {
        self.partitions = partitions
    }

    public var description: String { "fenced out of partitions \(partitions): another worker owns them now" }
}

/// A message the worker could not read, as published to the dead-letter topic (`topics/dead-letter.yaml`).
public struct DeadLetter: Sendable, Hashable, Codable {
    public var schemaVersion = 1
    public var sourceTopic: String
    public var sourcePartition: Int32
    public var sourceOffset: Int64
    public var error: String
    /// The message's bytes, base64.
    public var payload: String
    public var failedAt: Int64
    /// The source message's key, which the dead letter keeps (not part of its JSON).
    public var key: [UInt8]?

    enum CodingKeys: String, CodingKey {
        case schemaVersion, sourceTopic, sourcePartition, sourceOffset, error, payload, failedAt
    }

    public init(sourceTopic: String, sourcePartition: Int32, sourceOffset: Int64, error: String, payload: String, failedAt: Int64, key: [UInt8]?) {
        self.sourceTopic = sourceTopic
        self.sourcePartition = sourcePartition
        self.sourceOffset = sourceOffset
        self.error = error
        self.payload = payload
        self.failedAt = failedAt
        self.key = key
    }
}

/// The servers the roles depend on.
public enum ServerKind: String, Sendable, Hashable {
    case postgres, redis, kafka
}

/// An error that says which server failed, so that a role can report the dependency that is down (readiness names
/// it) without knowing the adapter's error types.
public protocol ServerFailure: Error {
    var server: ServerKind { get }
}
