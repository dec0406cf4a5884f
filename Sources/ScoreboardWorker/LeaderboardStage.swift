import Foundation
import Metrics
import ScoreboardCore

/// The leaderboards, the first ``WorkerStage``: the boards the new events touched are raised to their members'
/// committed absolute totals in Redis, and the changes are published on leaderboard-updates.
///
/// Its outbox entry names, per source partition, the members and window periods the batch touched. The normal path
/// never reads it (the projector has the totals the transaction returned); a recovering owner reads each member's
/// current rows for those periods and projects every board they make, which sets the same or newer numbers.
///
/// A ban (``UserBanned``, applied by the ledger in the batch's transaction) takes its user off every board their deleted
/// totals made: the entry names those boards, the outputs remove the member from Redis (`ZREM`: idempotent, so a
/// recovering owner does it again safely) and publish the board's message with the member marked removed. A batch's
/// removals run before its raises, so the ranks published with the raises already leave the banned user out.
struct LeaderboardStage: WorkerStage {
    let catalog: LeaderboardCatalog
    let ledger: any WorkerLedger
    let boards: any BoardStore
    /// Takes banned users off the boards (`nil`: a store that cannot, whose boards keep them until a rebuild).
    let removals: (any BoardRemovals)?
    let outputs: any WorkerOutputs
    /// 1: one message per member per board (`LeaderboardUpdate`); 2: one per board per batch (`BoardChanges`).
    let updateSchemaVersion: Int

    var name: String { "leaderboards" }

    /// Each changed board's changed members and their absolute totals, and the members banned off each board.
    struct Due: Sendable {
        var changed: [BoardKey: [String: Int64]]
        var removed: [BoardKey: [String]] = [:]
    }

    /// What a recovering owner needs: whose totals to read, and in which periods; and who left which boards.
    struct Payload: Codable {
        var members: [String]
        var periods: [PeriodKey]
        /// Absent in entries written before bans existed.
        var removed: [Removal]?
    }

    /// Members taken off one board period.
    struct Removal: Codable {
        var stream: BoardStream
        var period: String
        var members: [String]
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
        // Banned users: off every board their deleted rows made, recorded with the ban's partition.
        var removed: [BoardKey: [String]] = [:]
        var removalsByPartition: [Int32: [Removal]] = [:]
        for (board, members) in BatchAggregation.boardScores(totals: applied.removedTotals, catalog: catalog).sorted(by: { $0.key.id < $1.key.id }) {
            let users = members.keys.sorted()
            removed[board] = users
            for user in users {
                guard let partition = applied.banPartitions[user] else { continue }
                removalsByPartition[partition, default: []].append(Removal(stream: board.stream, period: board.period, members: [user]))
            }
        }
        let encoder = JSONEncoder()
        let outbox = try Set(byPartition.keys).union(removalsByPartition.keys).sorted().map { partition in
            let touched = byPartition[partition] ?? ([], [])
            let payload = Payload(members: touched.members.sorted(), periods: Array(touched.periods), removed: removalsByPartition[partition])
            return OutboxEntry(stage: name, partition: partition, payload: Array(try encoder.encode(payload)))
        }
        return StageRows(outbox: outbox, due: Due(changed: changed, removed: removed))
    }

    func outputs(_ due: Due) async throws {
        // A period whose key has expired is not on any board any more: nothing to remove there.
        let now = Timestamp.now()
        let removed = due.removed.filter { board, _ in catalog.redisExpiry(of: board).map { $0 > now } ?? true }
        guard !due.changed.isEmpty || !removed.isEmpty else { return }
        let writing = ContinuousClock.now
        if !removed.isEmpty, let removals {
            try await removals.removeMembers(removed)
            Counter(label: "worker_banned_board_removals_total").increment(by: removed.values.reduce(0) { $0 + $1.count })
        }
        // Published as stored after the write: a member's published total never goes back, even when this write was
        // overtaken by a newer one (`BoardStore.raiseScores`).
        let write = due.changed.isEmpty ? BoardWrite() : try await boards.raiseScores(due.changed)
        Timer(label: "worker_write_duration_seconds", dimensions: [("store", "redis")]).recordInterval(since: writing)
        let publishing = ContinuousClock.now
        defer { Timer(label: "worker_write_duration_seconds", dimensions: [("store", "kafka")]).recordInterval(since: publishing) }
        let changed = due.changed.keys.sorted { $0.id < $1.id }
        if updateSchemaVersion >= 2 {
            // One message per board: its raised members, then those who left it.
            let published = Set(changed).union(removals == nil ? [] : Array(removed.keys)).sorted { $0.id < $1.id }
            let messages = published.map { board in
                BoardChanges(
                    board: board,
                    members: (write.scores[board] ?? due.changed[board] ?? [:]).sorted { $0.key < $1.key }.map { member, total in
                        BoardChanges.Member(userID: member, total: total, rank: write.ranks[board]?[member])
                    } + (removals == nil ? [] : removed[board] ?? []).map(BoardChanges.Member.removed))
            }
            try await outputs.publishBoardChanges(messages)
            Counter(label: "worker_updates_published_total").increment(by: messages.count)
        } else {
            // Version 1 cannot say "removed": its readers keep a banned member until their next snapshot.
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
        var removed: [BoardKey: Set<String>] = [:]
        for entry in entries {
            let payload = try decoder.decode(Payload.self, from: Data(entry.payload))
            members.formUnion(payload.members)
            periods.formUnion(payload.periods)
            for removal in payload.removed ?? [] { removed[removal.stream.board(period: removal.period), default: []].formUnion(removal.members) }
        }
        let totals = try await ledger.totals(members: members.sorted(), periods: Array(periods))
        let now = Timestamp.now()
        // Every board these members are on in those periods (a superset of what the batches changed; the same
        // absolute values again change nothing), except periods whose key has expired.
        let changed = BatchAggregation.boardScores(totals: totals, catalog: catalog)
            .filter { board, _ in catalog.redisExpiry(of: board).map { $0 > now } ?? true }
        // A banned member has no totals left, so the raises above cannot put them back; the removals run again.
        return Due(changed: changed, removed: removed.mapValues { $0.sorted() })
    }
}
