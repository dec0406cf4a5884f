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
    }

    private let state = Mutex(State())
    private let failures = FailureSchedule()

    public init() {}

    public var snapshot: State { state.withLock { $0 } }

    /// The next `count` calls to ``apply(_:aggregate:beforeCommit:)`` throw `error` before changing anything.
    public func failNextApplies(_ count: Int, with error: any Error) { failures.add(count, error) }

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

    public func apply(
        _ batch: LedgerBatch, aggregate: @Sendable ([ScoreEvent]) -> BatchAggregation,
        beforeCommit: @Sendable (LedgerApplied) async throws -> Void
    ) async throws {
        try failures.throwIfScheduled()
        // Reads as the transaction would see them; the state changes only at "COMMIT", below.
        let (fresh, totals) = try state.withLock { state -> (BatchAggregation, [BatchAggregation.TotalKey: Int64]) in
            try Self.checkEpochs(batch, state)
            let aggregation = aggregate(batch.events.map(\.event).filter { !state.eventIDs.contains($0.eventID) })
            var totals = state.totals
            for (key, points) in aggregation.pointsByTotal { totals[key, default: 0] += points }
            let touched = Set(aggregation.pointsByTotal.keys.map(TouchedRow.init))
            return (aggregation, totals.filter { touched.contains(TouchedRow($0.key)) })
        }
        try await beforeCommit(LedgerApplied(newEvents: fresh.events, totals: totals))
        try state.withLock { state in
            // PostgreSQL's row locks serialise batches on the same rows; here the commit re-checks instead.
            try Self.checkEpochs(batch, state)
            for event in fresh.events where state.eventIDs.insert(event.eventID).inserted {
                for (key, points) in aggregate([event]).pointsByTotal { state.totals[key, default: 0] += points }
            }
            for (partition, next) in batch.nextOffsets {
                state.offsets[batch.topic, default: [:]][partition] = max(state.offsets[batch.topic]?[partition] ?? 0, next)
            }
            state.commits += 1
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
public final class MemoryBoardStore: BoardStore, Sendable {
    private let boards = Mutex<[BoardKey: [String: Int64]]>([:])
    private let failures = FailureSchedule()
    let topN: Int

    public init(topN: Int) {
        self.topN = topN
    }

    public var snapshot: [BoardKey: [String: Int64]] { boards.withLock { $0 } }

    /// The next `count` writes throw `error` before changing anything.
    public func failNextWrites(_ count: Int, with error: any Error) { failures.add(count, error) }

    public func setScores(_ scores: [BoardKey: [String: Int64]]) async throws -> [BoardKey: [String: Int]] {
        try failures.throwIfScheduled()
        return boards.withLock { boards in
            var ranks: [BoardKey: [String: Int]] = [:]
            for (board, members) in scores {
                boards[board, default: [:]].merge(members) { _, new in new }
                let all = boards[board]!.values
                for (member, score) in members {
                    let higher = all.filter { $0 > score }.count
                    if higher < topN { ranks[board, default: [:]][member] = higher + 1 }
                }
            }
            return ranks
        }
    }

    public func replaceBoards(_ scores: [BoardKey: [String: Int64]]) async throws {
        try failures.throwIfScheduled()
        boards.withLock { boards in for (board, members) in scores { boards[board] = members } }
    }

    /// Fails while writes are scheduled to fail: the store is "down".
    public func probe() async throws {
        try failures.throwIfScheduled(consuming: false)
    }
}

/// Outputs kept in memory, in publishing order.
public final class MemoryWorkerOutputs: WorkerOutputs, Sendable {
    private let published = Mutex<(updates: [LeaderboardUpdate], deadLetters: [DeadLetter])>(([], []))
    private let failures = FailureSchedule()

    public init() {}

    public var updates: [LeaderboardUpdate] { published.withLock { $0.updates } }
    public var deadLetters: [DeadLetter] { published.withLock { $0.deadLetters } }

    /// The next `count` publishes throw `error` (as a broker that does not acknowledge).
    public func failNextPublishes(_ count: Int, with error: any Error) { failures.add(count, error) }

    public func publishUpdates(_ updates: [LeaderboardUpdate]) async throws {
        try failures.throwIfScheduled()
        published.withLock { $0.updates += updates }
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
