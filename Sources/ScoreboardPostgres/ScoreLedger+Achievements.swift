import Foundation
import PostgresNIO
import ScoreboardCore

// The achievements' rows (the worker's AchievementStage, keys in ``AchievementRows``): the ranking unlocks appended after
// a board write, and the readers of the push role's player queries.
extension ScoreLedger {
    /// Appends stage records outside a batch, each once per id (`ON CONFLICT DO NOTHING`), in one statement: its own
    /// short transaction, holding no lock a batch waits for but the new rows' index entries.
    /// - Returns: How many were new.
    @discardableResult
    public func appendStageRecords(_ records: [StageRecord]) async throws -> Int {
        guard !records.isEmpty else { return 0 }
        let rows = try await client.queryRows(Self.insertingRecords(records), logger: logger)
        return rows.count
    }

    /// Which of `keys` have a stage record (the ranking unlocks' announcement marks, ``AchievementRows``).
    public func existingStageRecords(_ keys: [StageKey]) async throws -> Set<StageKey> {
        guard !keys.isEmpty else { return [] }
        let rows = try await client.queryRows("""
            SELECT r.stage, r.id FROM stage_records r
            JOIN unnest(\(keys.map(\.stage))::text[], \(keys.map(\.key))::text[]) AS k(stage, id) ON r.stage = k.stage AND r.id = k.id
            """, logger: logger)
        return Set(try rows.map { row in
            let (stage, id) = try row.decode((String, String).self)
            return StageKey(stage: stage, key: id)
        })
    }

    /// The user's progress as the workers last committed it; `nil` when no event of theirs was applied.
    public func playerProgress(userID: String) async throws -> PlayerProgress? {
        let key = AchievementRows.progressKey(userID: userID)
        guard let stored = try await stageState([key])[key] else { return nil }
        return try JSONDecoder().decode(PlayerProgress.self, from: Data(stored))
    }

    /// The user's unlocks, oldest first (every one: a catalog holds a few dozen achievements at most).
    public func achievementUnlocks(userID: String) async throws -> [AchievementUnlock] {
        let decoder = JSONDecoder()
        return try await stageRecords(stage: AchievementRows.stage, userID: userID, limit: 10_000).map { record in
            try decoder.decode(AchievementUnlock.self, from: Data(record.payload))
        }
    }
}
