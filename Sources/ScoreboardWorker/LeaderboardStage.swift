import Foundation
import Metrics
import ScoreboardCore

/// The leaderboards, the first ``WorkerStage``: the boards the new events touched are raised to their members'
/// committed absolute totals in Redis, and the changes are published on leaderboard-updates.
///
/// Its outbox entry names, per source partition, the members and window periods the batch touched. The normal path
/// never reads it (the projector has the totals the transaction returned); a recovering owner reads each member's
/// current rows for those periods and projects every board they make, which sets the same or newer numbers.
struct LeaderboardStage: WorkerStage {
    let catalog: LeaderboardCatalog
    let ledger: any WorkerLedger
    let boards: any BoardStore
    let outputs: any WorkerOutputs
    /// 1: one message per member per board (`LeaderboardUpdate`); 2: one per board per batch (`BoardChanges`).
    let updateSchemaVersion: Int

    var name: String { "leaderboards" }

    /// Each changed board's changed members and their absolute totals.
    struct Due: Sendable {
        var changed: [BoardKey: [String: Int64]]
    }

    /// What a recovering owner needs: whose totals to read, and in which periods.
    struct Payload: Codable {
        var members: [String]
        var periods: [PeriodKey]
    }

    func rows(for batch: StageInput, state: StageState) throws -> StageRows<Due> {
        let applied = batch.applied
        let scores = BatchAggregation.boardScores(totals: applied.totals, catalog: catalog)
        // Only boards the new events touched: a member's rows in other regions/guilds come along for the global sum,
        // but their own boards did not change.
        let touched = Set(applied.newEvents.flatMap { catalog.boards(for: $0) })
        let touchedMembers = Set(applied.newEvents.map(\.userID))
        var changed: [BoardKey: [String: Int64]] = [:]
        for (board, members) in scores where touched.contains(board) {
            let relevant = members.filter { touchedMembers.contains($0.key) }
            if !relevant.isEmpty { changed[board] = relevant }
        }
        let windows = Set(catalog.boards.map(\.window))
        var byPartition: [Int32: (members: Set<String>, periods: Set<PeriodKey>)] = [:]
        for event in applied.newEvents {
            guard let partition = batch.partitions[event.eventID] else { continue }
            byPartition[partition, default: ([], [])].members.insert(event.userID)
            for window in windows {
                byPartition[partition, default: ([], [])].periods.insert(
                    PeriodKey(window: window, period: window.period(containing: event.occurredAt).key))
            }
        }
        let encoder = JSONEncoder()
        let outbox = try byPartition.sorted { $0.key < $1.key }.map { partition, touched in
            OutboxEntry(
                stage: name, partition: partition,
                payload: Array(try encoder.encode(Payload(members: touched.members.sorted(), periods: Array(touched.periods)))))
        }
        return StageRows(outbox: outbox, due: Due(changed: changed))
    }

    func outputs(_ due: Due) async throws {
        guard !due.changed.isEmpty else { return }
        // Published as stored after the write: a member's published total never goes back, even when this write was
        // overtaken by a newer one (`BoardStore.raiseScores`).
        let writing = ContinuousClock.now
        let write = try await boards.raiseScores(due.changed)
        Timer(label: "worker_write_duration_seconds", dimensions: [("store", "redis")]).recordInterval(since: writing)
        let publishing = ContinuousClock.now
        defer { Timer(label: "worker_write_duration_seconds", dimensions: [("store", "kafka")]).recordInterval(since: publishing) }
        let changed = due.changed.keys.sorted { $0.id < $1.id }
        if updateSchemaVersion >= 2 {
            let messages = changed.map { board in
                BoardChanges(board: board, members: (write.scores[board] ?? due.changed[board]!).sorted { $0.key < $1.key }.map { member, total in
                    BoardChanges.Member(userID: member, total: total, rank: write.ranks[board]?[member])
                })
            }
            try await outputs.publishBoardChanges(messages)
            Counter(label: "worker_updates_published_total").increment(by: messages.count)
        } else {
            var updates: [LeaderboardUpdate] = []
            for board in changed {
                for (member, total) in (write.scores[board] ?? due.changed[board]!).sorted(by: { $0.key < $1.key }) {
                    updates.append(LeaderboardUpdate(board: board, userID: member, total: total, rank: write.ranks[board]?[member]))
                }
            }
            try await outputs.publishUpdates(updates)
            Counter(label: "worker_updates_published_total").increment(by: updates.count)
        }
    }

    func recover(_ entries: [OutboxEntry]) async throws -> Due {
        let decoder = JSONDecoder()
        var members: Set<String> = []
        var periods: Set<PeriodKey> = []
        for entry in entries {
            let payload = try decoder.decode(Payload.self, from: Data(entry.payload))
            members.formUnion(payload.members)
            periods.formUnion(payload.periods)
        }
        let totals = try await ledger.totals(members: members.sorted(), periods: Array(periods))
        let now = Timestamp.now()
        // Every board these members are on in those periods (a superset of what the batches changed; the same
        // absolute values again change nothing), except periods whose key has expired.
        let changed = BatchAggregation.boardScores(totals: totals, catalog: catalog)
            .filter { board, _ in catalog.redisExpiry(of: board).map { $0 > now } ?? true }
        return Due(changed: changed)
    }
}
