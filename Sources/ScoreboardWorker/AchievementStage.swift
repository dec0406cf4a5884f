import Foundation
import Metrics
import ScoreboardCore
import Synchronization

/// Achievements and what the player statistics read (`pipelines/achievements.yaml`; ``AchievementEngine``), a
/// ``WorkerStage`` after the leaderboards.
///
/// Per user one ``PlayerProgress`` value (state key `user:<id>`, ``AchievementRows``), read locked in the batch's
/// transaction, advanced by each of the user's new events in event order, and written back in the same transaction:
/// totals, action counts, streaks and the last 14 days' points and actions, everything `GET /v1/users/{id}/stats`
/// needs, so that nothing ever scans the events. Each unlock is also an append-once record with the id
/// `<user>:<achievement>`, written in the same transaction. Only new events reach a stage (the ledger drops the ones
/// already applied), so a replayed batch advances nothing and unlocks nothing; and if it ever did, the record's id would
/// keep the first unlock and drop the second.
///
/// Ranking achievements ("entered the top 10 of daily:global") cannot be decided in the transaction: a rank is known
/// only once Redis holds the new totals. ``RankAchievementBoards`` watches the leaderboard stage's board writes (after
/// commit, inside its fenced projection) and appends the unlocks those ranks reach, by the same ids, in a short
/// transaction of their own. A projection run again (a crash before its outbox rows were cleared, the next owner's
/// recovery) sees the same or later ranks and writes the same ids: nothing new.
///
/// Every unlock is announced after commit on the notifications topic (``AchievementNotifications``), for the user's
/// personal channel: the batch's outbox entry (one per source partition) carries its unlocks, so a worker that stops
/// between the commit and the outputs leaves them to the partition's next owner, which publishes exactly them. Ranking
/// unlocks are announced by ``RankAchievementBoards`` right after their append. Either may be announced twice (the
/// record is not): readers keep one per record id.
struct AchievementStage: WorkerStage {
    let engine: AchievementEngine
    /// `nil`: unlocks are stored, not announced (a worker composed without the notifications topic, as in some tests).
    let notifications: (any AchievementNotifications)?

    var name: String { AchievementRows.stage }

    /// What the batch unlocked (announced after commit).
    struct Due: Sendable {
        var unlocks: [AchievementUnlock]
        /// Announced again from the outbox by a recovering owner: the unlocks were counted when they were stored.
        var isRecovered = false
    }

    func reads(for batch: StageInput) -> StageReads {
        StageReads(state: Set(batch.applied.newEvents.map { AchievementRows.progressKey(userID: $0.userID) }))
    }

    func rows(for batch: StageInput, state: StageState) throws -> StageRows<Due> {
        let events = batch.applied.newEvents
        guard !events.isEmpty else { return StageRows(due: Due(unlocks: [])) }
        // Event order per user: by event time, ties in log order (one user's events are on one partition, in order).
        let ordered = events.enumerated().sorted { ($0.element.occurredAt, $0.offset) < ($1.element.occurredAt, $1.offset) }.map(\.element)
        let decoder = JSONDecoder()
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        var progress: [String: PlayerProgress] = [:]
        var unlocks: [AchievementUnlock] = []
        for event in ordered {
            if progress[event.userID] == nil {
                let key = AchievementRows.progressKey(userID: event.userID)
                if let stored = state[key] {
                    do {
                        progress[event.userID] = try decoder.decode(PlayerProgress.self, from: Data(stored))
                    } catch {
                        // Retried with the batch, visibly (the worker reports the failure): starting the user over
                        // would lose their streaks and counts without anyone knowing.
                        throw ScoreboardError(code: .invalidEvent, reasons: ["the stored progress of \(event.userID) is unreadable: \(error)"])
                    }
                } else {
                    progress[event.userID] = PlayerProgress(userID: event.userID)
                }
            }
            unlocks += engine.apply(eventID: event.eventID, action: event.action, points: event.points, at: event.occurredAt, to: &progress[event.userID]!)
        }
        var writes = StageWrites()
        for (user, value) in progress {
            writes.state[AchievementRows.progressKey(userID: user)] = Array(try encoder.encode(value))
        }
        writes.records = try unlocks.map { unlock in
            StageRecord(key: unlock.recordKey, userID: unlock.userID, occurredAt: unlock.unlockedAt, payload: Array(try encoder.encode(unlock)))
        }
        // What is still to announce, per source partition (an unlock's trigger is the event that reached it), for
        // the partition's next owner should this worker stop before its outputs.
        var byPartition: [Int32: [AchievementUnlock]] = [:]
        if notifications != nil {
            // An unlock always has its event's partition; -1 only guards a caller that left it out.
            for unlock in unlocks { byPartition[batch.partitions[unlock.triggeredBy] ?? -1, default: []].append(unlock) }
        }
        let outbox = try byPartition.sorted { $0.key < $1.key }.map { partition, unlocks in
            OutboxEntry(stage: name, partition: partition, payload: Array(try encoder.encode(unlocks)))
        }
        return StageRows(outbox: outbox, writes: writes, due: Due(unlocks: unlocks))
    }

    func outputs(_ due: Due) async throws {
        guard !due.unlocks.isEmpty else { return }
        try await notifications?.publishUnlocks(due.unlocks)
        if !due.isRecovered { Counter(label: "worker_achievements_unlocked_total").increment(by: due.unlocks.count) }
    }

    /// The unlocks the entries carry (their records committed with the batch): announced again, not counted again.
    func recover(_ entries: [OutboxEntry]) async throws -> Due {
        let decoder = JSONDecoder()
        return Due(unlocks: try entries.flatMap { try decoder.decode([AchievementUnlock].self, from: Data($0.payload)) }, isRecovered: true)
    }
}

/// The board store as the leaderboard stage sees it when achievements are on: every write's ranks (``BoardWrite``, the
/// members written and their competition ranks inside the catalog's top N) are checked against the ranking
/// achievements, and the unlocks they reach are appended as records (``WorkerLedger/appendStageRecords(_:)``) before
/// the write returns, so inside the projection that the partitions' epochs fence, and then announced
/// (``AchievementNotifications``) unless an announcement mark (``AchievementRows/announcedKey(_:)``, appended after
/// the announcement) says it was. Appending is idempotent by id; the ids appended and announced by this process are
/// remembered (bounded), so a top-10 member who scores in every batch costs no round trip after the first. A
/// projection that stops after the append and before the mark runs again (its outbox rows stay) and announces it
/// again: an unlock may be announced twice, never not at all; a restarted process that sees an old rank again finds
/// the mark and announces nothing.
final class RankAchievementBoards: BoardStore, Sendable {
    let base: any BoardStore
    let engine: AchievementEngine
    let ledger: any WorkerLedger
    let notifications: (any AchievementNotifications)?
    /// The board streams ranking achievements watch, and the largest rank each needs.
    private let watched: [String: Int]
    private let appended = Mutex<Set<String>>([])
    /// Remembered ids at most; past it the memory starts again (a repeat then costs one idempotent insert).
    static let rememberedIDs = 100_000

    init(base: any BoardStore, engine: AchievementEngine, ledger: any WorkerLedger, notifications: (any AchievementNotifications)? = nil) {
        self.base = base
        self.engine = engine
        self.ledger = ledger
        self.notifications = notifications
        self.watched = engine.watchedRanks
    }

    func raiseScores(_ scores: [BoardKey: [String: Int64]]) async throws -> BoardWrite {
        let write = try await base.raiseScores(scores)
        try await appendRankUnlocks(write, at: Timestamp.now())
        return write
    }

    /// Appends the ranking unlocks `write`'s ranks reach and this process has not appended yet.
    func appendRankUnlocks(_ write: BoardWrite, at time: Timestamp) async throws {
        guard !watched.isEmpty else { return }
        var unlocks: [AchievementUnlock] = []
        for (board, ranks) in write.ranks {
            guard let top = watched[board.streamID] else { continue }
            for (member, rank) in ranks where rank <= top {
                unlocks += engine.rankUnlocks(userID: member, rank: rank, board: board.streamID, at: time)
            }
        }
        let fresh = appended.withLock { seen in unlocks.filter { !seen.contains($0.recordKey.key) } }
        guard !fresh.isEmpty else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let records = try fresh.map { unlock in
            StageRecord(key: unlock.recordKey, userID: unlock.userID, occurredAt: unlock.unlockedAt, payload: Array(try encoder.encode(unlock)))
        }
        let added = try await ledger.appendStageRecords(records)
        if let notifications {
            // Announced unless an announcement mark says it was (by this process before a restart, or by another
            // worker); marked after the announcement, so a stop in between announces it again, never not at all.
            let announced = try await ledger.existingStageRecords(fresh.map { AchievementRows.announcedKey($0.recordKey) })
            let unannounced = fresh.filter { !announced.contains(AchievementRows.announcedKey($0.recordKey)) }
            if !unannounced.isEmpty {
                try await notifications.publishUnlocks(unannounced)
                try await ledger.appendStageRecords(unannounced.map { unlock in
                    StageRecord(
                        key: AchievementRows.announcedKey(unlock.recordKey), userID: unlock.userID, occurredAt: unlock.unlockedAt,
                        payload: Array("{}".utf8))
                })
            }
        }
        // Remembered only once announced: an announcement that fails is retried with the projection.
        appended.withLock { seen in
            if seen.count + fresh.count > Self.rememberedIDs { seen.removeAll() }
            seen.formUnion(fresh.map(\.recordKey.key))
        }
        if added > 0 { Counter(label: "worker_achievements_unlocked_total").increment(by: added) }
    }

    func replaceBoards(_ scores: [BoardKey: [String: Int64]]) async throws { try await base.replaceBoards(scores) }

    func probe() async throws { try await base.probe() }
}
