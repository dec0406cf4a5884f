import ScoreboardCore
import Synchronization

/// The worker's ports in memory, with the same semantics as the real adapters: epochs fence, event ids deduplicate,
/// and nothing of a batch remains when its `beforeCommit` throws. Each can be told to fail its next calls, so a fault
/// test runs in milliseconds beside the real-server one.
public final class MemoryWorkerLedger: WorkerLedger, Sendable {
    public struct State: Sendable {
        public var topicIDs: [String: String] = [:]
        public var offsets: [String: [Int32: Int64]] = [:]
        public var epochs: [String: [Int32: Int64]] = [:]
        public var eventIDs: Set<String> = []
        public var totals: [BatchAggregation.TotalKey: Int64] = [:]
        public var commits = 0
        /// The outbox rows committed and not yet cleared, in commit order.
        public var outbox: [PendingOutboxEntry] = []
        public var nextOutboxID: Int64 = 1
        public var projections = 0
        /// The stages' state (StageState.swift): values, counters, set members and records.
        public var stageState: [StageKey: [UInt8]] = [:]
        public var counters: [StageKey: Int64] = [:]
        public var members: Set<StageSetMember> = []
        public var records: [StageKey: StageRecord] = [:]
        /// Banned users (PostgreSQL's `fraud_bans`): their events are stored, never counted.
        public var banned: Set<String> = []
    }

    private let state = Mutex(State())
    private let failures = FailureSchedule()
    private let projectionFailures = FailureSchedule()
    private let commitFailures = FailureSchedule()

    public init() {}

    public var snapshot: State { state.withLock { $0 } }

    /// The next `count` calls to ``apply(_:aggregate:reads:beforeCommit:)`` throw `error` before changing anything.
    public func failNextApplies(_ count: Int, with error: any Error) { failures.add(count, error) }

    /// The next `count` calls to ``apply(_:aggregate:reads:beforeCommit:)`` commit and then throw `error`, as a connection
    /// lost during COMMIT does: the caller cannot tell that the batch committed.
    public func failAfterNextCommits(_ count: Int, with error: any Error) { commitFailures.add(count, error) }

    /// The next `count` calls to ``project(topic:epochs:clearing:_:)`` throw `error` before running their effects.
    public func failNextProjections(_ count: Int, with error: any Error) { projectionFailures.add(count, error) }

    public func claim(topic: String, topicID: String, partitions: [Int32]) async throws -> [PartitionClaim] {
        state.withLock { state in
            if state.topicIDs[topic] != topicID {
                state.topicIDs[topic] = topicID
                state.offsets[topic] = [:]
            }
            return partitions.sorted().map { partition in
                let epoch = (state.epochs[topic]?[partition] ?? 0) + 1
                state.epochs[topic, default: [:]][partition] = epoch
                return PartitionClaim(partition: partition, nextOffset: state.offsets[topic]?[partition] ?? 0, epoch: epoch)
            }
        }
    }

    public func apply<Due: Sendable>(
        _ batch: LedgerBatch, aggregate: @Sendable ([ScoreEvent]) -> BatchAggregation,
        reads: @Sendable (LedgerApplied) -> StageReads,
        beforeCommit: @Sendable (LedgerApplied, StageState) async throws -> (outbox: [OutboxEntry], writes: StageWrites, due: Due)
    ) async throws -> (outbox: [PendingOutboxEntry], due: Due) {
        try failures.throwIfScheduled()
        // Reads as the transaction would see them; the state changes only at "COMMIT", below.
        let banUsers = Set(batch.bans.map(\.ban.userID))
        let (stored, fresh, totals, removed) = try state.withLock { state -> ([ScoreEvent], BatchAggregation, [BatchAggregation.TotalKey: Int64], [BatchAggregation.TotalKey: Int64]) in
            try Self.checkEpochs(batch, state)
            let stored = batch.events.map(\.event).filter { !state.eventIDs.contains($0.eventID) }
            // A banned user's events are stored, not counted; their totals go with the batch's ban.
            let banned = state.banned.union(banUsers)
            let aggregation = aggregate(stored.filter { !banned.contains($0.userID) })
            var totals = state.totals.filter { !banUsers.contains($0.key.userID) }
            for (key, points) in aggregation.pointsByTotal { totals[key, default: 0] += points }
            let touched = Set(aggregation.pointsByTotal.keys.map(TouchedRow.init))
            return (
                stored, aggregation, totals.filter { touched.contains(TouchedRow($0.key)) },
                state.totals.filter { banUsers.contains($0.key.userID) })
        }
        let applied = LedgerApplied(
            newEvents: fresh.events, totals: totals, removedTotals: removed,
            banPartitions: Dictionary(batch.bans.map { ($0.ban.userID, $0.partition) }, uniquingKeysWith: { first, _ in first }))
        let wanted = reads(applied)
        let stageState = state.withLock { state in StageState(values: state.stageState.filter { wanted.state.contains($0.key) }) }
        let (entries, writes, due) = try await beforeCommit(applied, stageState)
        let written = try state.withLock { state in
            // PostgreSQL's row locks serialise batches on the same rows; here the commit re-checks instead.
            try Self.checkEpochs(batch, state)
            state.banned.formUnion(banUsers)
            state.totals = state.totals.filter { !banUsers.contains($0.key.userID) }
            for event in stored where state.eventIDs.insert(event.eventID).inserted && !state.banned.contains(event.userID) {
                for (key, points) in aggregate([event]).pointsByTotal { state.totals[key, default: 0] += points }
            }
            for (partition, next) in batch.nextOffsets {
                state.offsets[batch.topic, default: [:]][partition] = max(state.offsets[batch.topic]?[partition] ?? 0, next)
            }
            state.stageState.merge(writes.state) { _, new in new }
            state.counters.merge(writes.counters, uniquingKeysWith: +)
            state.members.formUnion(writes.members)
            for record in writes.records where state.records[record.key] == nil { state.records[record.key] = record }
            var written: [PendingOutboxEntry] = []
            for entry in entries {
                written.append(PendingOutboxEntry(id: state.nextOutboxID, entry: entry))
                state.nextOutboxID += 1
            }
            state.outbox += written
            state.commits += 1
            return written
        }
        try commitFailures.throwIfScheduled()
        return (written, due)
    }

    public func project(topic: String, epochs: [Int32: Int64], clearing ids: [Int64], _ body: @Sendable () async throws -> Void) async throws -> Bool {
        try projectionFailures.throwIfScheduled()
        let current = state.withLock { state in epochs.keys.allSatisfy { state.epochs[topic]?[$0] == epochs[$0] } }
        guard current else { return false }
        try await body()
        let cleared = Set(ids)
        state.withLock { state in
            state.outbox.removeAll { cleared.contains($0.id) }
            state.projections += 1
        }
        return true
    }

    public func appendStageRecords(_ records: [StageRecord]) async throws -> Int {
        try failures.throwIfScheduled()
        return state.withLock { state in
            records.reduce(0) { added, record in
                guard state.records[record.key] == nil else { return added }
                state.records[record.key] = record
                return added + 1
            }
        }
    }

    public func existingStageRecords(_ keys: [StageKey]) async throws -> Set<StageKey> {
        try failures.throwIfScheduled()
        return state.withLock { state in Set(keys.filter { state.records[$0] != nil }) }
    }

    public func pendingOutbox(topic: String, partitions: [Int32]) async throws -> [PendingOutboxEntry] {
        let wanted = Set(partitions)
        return state.withLock { $0.outbox.filter { wanted.contains($0.entry.partition) } }
    }

    public func totals(members: [String], periods: [PeriodKey]) async throws -> [BatchAggregation.TotalKey: Int64] {
        let (users, wanted) = (Set(members), Set(periods))
        return state.withLock { state in
            state.totals.filter { users.contains($0.key.userID) && wanted.contains(PeriodKey(window: $0.key.window, period: $0.key.period)) }
        }
    }

    private static func checkEpochs(_ batch: LedgerBatch, _ state: State) throws {
        let lost = batch.nextOffsets.keys.sorted().filter { state.epochs[batch.topic]?[$0] != batch.epochs[$0] }
        if !lost.isEmpty { throw LedgerFenced(partitions: lost) }
    }

    public func withBatchesPaused<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        try await body()
    }

    public func totals(window: LeaderboardWindow) async throws -> [BatchAggregation.TotalKey: Int64] {
        state.withLock { $0.totals.filter { $0.key.window == window } }
    }

    /// Fails while applies are scheduled to fail: the store is "down".
    public func probe() async throws {
        try failures.throwIfScheduled(consuming: false)
    }

    private struct TouchedRow: Hashable {
        var userID: String
        var window: LeaderboardWindow
        var period: String

        init(_ key: BatchAggregation.TotalKey) {
            (userID, window, period) = (key.userID, key.window, key.period)
        }
    }
}

/// Boards in memory; ranks computed as Redis would (one more than the number of strictly higher scores).
public final class MemoryBoardStore: BoardStore, BoardRemovals, Sendable {
    private let boards = Mutex<[BoardKey: [String: Int64]]>([:])
    private let failures = FailureSchedule()
    let topN: Int

    public init(topN: Int) {
        self.topN = topN
    }

    public var snapshot: [BoardKey: [String: Int64]] { boards.withLock { $0 } }

    /// The next `count` writes throw `error` before changing anything.
    public func failNextWrites(_ count: Int, with error: any Error) { failures.add(count, error) }

    public func raiseScores(_ scores: [BoardKey: [String: Int64]]) async throws -> BoardWrite {
        try failures.throwIfScheduled()
        return boards.withLock { boards in
            var write = BoardWrite()
            for (board, members) in scores {
                boards[board, default: [:]].merge(members) { old, new in max(old, new) }
                let stored = boards[board]!
                let all = stored.values
                for member in members.keys {
                    let score = stored[member]!
                    write.scores[board, default: [:]][member] = score
                    let higher = all.filter { $0 > score }.count
                    if higher < topN { write.ranks[board, default: [:]][member] = higher + 1 }
                }
            }
            return write
        }
    }

    public func replaceBoards(_ scores: [BoardKey: [String: Int64]]) async throws {
        try failures.throwIfScheduled()
        boards.withLock { boards in for (board, members) in scores { boards[board] = members } }
    }

    public func removeMembers(_ members: [BoardKey: [String]]) async throws {
        try failures.throwIfScheduled()
        boards.withLock { boards in
            for (board, users) in members { for user in users { boards[board]?.removeValue(forKey: user) } }
        }
    }

    /// Fails while writes are scheduled to fail: the store is "down".
    public func probe() async throws {
        try failures.throwIfScheduled(consuming: false)
    }
}

/// Outputs kept in memory, in publishing order.
public final class MemoryWorkerOutputs: WorkerOutputs, Sendable {
    private let published = Mutex<(updates: [LeaderboardUpdate], changes: [BoardChanges], deadLetters: [DeadLetter])>(([], [], []))
    private let failures = FailureSchedule()

    public init() {}

    /// Version 1 updates, one per member per board.
    public var updates: [LeaderboardUpdate] { published.withLock { $0.updates } }
    /// Version 2 messages, one per board per batch.
    public var boardChanges: [BoardChanges] { published.withLock { $0.changes } }
    public var deadLetters: [DeadLetter] { published.withLock { $0.deadLetters } }

    /// The next `count` publishes throw `error` (as a broker that does not acknowledge).
    public func failNextPublishes(_ count: Int, with error: any Error) { failures.add(count, error) }

    public func publishUpdates(_ updates: [LeaderboardUpdate]) async throws {
        try failures.throwIfScheduled()
        published.withLock { $0.updates += updates }
    }

    public func publishBoardChanges(_ changes: [BoardChanges]) async throws {
        try failures.throwIfScheduled()
        published.withLock { $0.changes += changes }
    }

    public func publishDeadLetters(_ letters: [DeadLetter]) async throws {
        try failures.throwIfScheduled()
        published.withLock { $0.deadLetters += letters }
    }
}

/// A topic directory in memory: set the id to simulate a recreated topic.
public final class MemoryTopicIncarnations: TopicIncarnations, Sendable {
    private let ids: Mutex<[String: String]>

    public init(_ ids: [String: String] = [:]) {
        self.ids = Mutex(ids)
    }

    public func set(_ topic: String, id: String?) { ids.withLock { $0[topic] = id } }

    public func topicID(of topic: String) async throws -> String? { ids.withLock { $0[topic] } }
}

/// Errors queued for the next calls of a memory port.
final class FailureSchedule: Sendable {
    private let queue = Mutex<[any Error]>([])

    func add(_ count: Int, _ error: any Error) {
        queue.withLock { $0 += Array(repeating: error, count: count) }
    }

    /// Throws the next scheduled error; `consuming: false` leaves it scheduled (a probe of a port that is "down").
    func throwIfScheduled(consuming: Bool = true) throws {
        if let error = queue.withLock({ $0.isEmpty ? nil : consuming ? $0.removeFirst() : $0[0] }) { throw error }
    }
}
