import Foundation
import Hummingbird
import ScoreboardCore
import ScoreboardHTTP
import Synchronization

// A player's achievements and statistics: `GET /v1/users/{id}/achievements` and `GET /v1/users/{id}/stats`, answered
// from what the workers maintain (the achievement stage's progress value and unlock records in PostgreSQL) and the
// user's placement on the global all-time board (memory or Redis), never from a scan of the events.

/// What the workers keep per player (PostgreSQL's stage rows, ``AchievementRows``): the push role's port for the player
/// queries.
public protocol PlayerRecords: Sendable {
    /// The user's progress as last committed; `nil` when no event of theirs was applied.
    func playerProgress(userID: String) async throws -> PlayerProgress?

    /// The user's unlocks, oldest first.
    func achievementUnlocks(userID: String) async throws -> [AchievementUnlock]
}

/// ``PlayerRecords`` in memory, for in-process tests; fails on cue like the other memory ports.
public final class MemoryPlayerRecords: PlayerRecords, Sendable {
    private struct State {
        var progress: [String: PlayerProgress] = [:]
        var unlocks: [String: [AchievementUnlock]] = [:]
        var failing: (any Error)?
    }

    private let state = Mutex(State())

    public init() {}

    public func setProgress(_ progress: PlayerProgress) { state.withLock { $0.progress[progress.userID] = progress } }

    public func addUnlock(_ unlock: AchievementUnlock) { state.withLock { $0.unlocks[unlock.userID, default: []].append(unlock) } }

    /// Every read throws `error` until called again with `nil`.
    public func fail(with error: (any Error)?) { state.withLock { $0.failing = error } }

    public func playerProgress(userID: String) async throws -> PlayerProgress? {
        try state.withLock { state in
            if let error = state.failing { throw error }
            return state.progress[userID]
        }
    }

    public func achievementUnlocks(userID: String) async throws -> [AchievementUnlock] {
        try state.withLock { state in
            if let error = state.failing { throw error }
            return state.unlocks[userID] ?? []
        }
    }
}

/// The player queries' own parts: the records port and the achievements they measure progress against.
public struct PlayerQueries: Sendable {
    public let records: any PlayerRecords
    public let engine: AchievementEngine

    public init(records: any PlayerRecords = MemoryPlayerRecords(), catalog: AchievementCatalog = AchievementCatalog(achievements: [])) {
        self.records = records
        self.engine = AchievementEngine(catalog: catalog)
    }

    /// `GET /v1/users/{id}/achievements`'s answer.
    struct AchievementsBody: Encodable {
        struct Unlocked: Encodable {
            /// The unlock's record id, as the personal channel's `achievement` frame carries it: a client that was away
            /// catches up here and keeps one per id.
            var id: String
            var achievement: String
            var kind: AchievementDefinition.Kind
            /// Event time of what reached it (for a ranking achievement: when the worker saw the rank), ms since the epoch.
            var unlockedAt: Int64
            var triggeredBy: String
        }

        var userId: String
        var unlocked: [Unlocked]
        var next: [AchievementProgress]
    }
}

extension PushGateway {
    func achievements(_ request: Request, _ context: PushRequestContext) async throws -> Response {
        let userID = try Self.pathIdentifier(context, "userId")
        let time = now()
        let (progress, unlocks, _) = try await readPlayer(userID, now: time)
        let body = PlayerQueries.AchievementsBody(
            userId: userID,
            unlocked: unlocks.map {
                .init(
                    id: $0.recordKey.key, achievement: $0.achievementID, kind: $0.kind, unlockedAt: $0.unlockedAt.millisecondsSinceEpoch,
                    triggeredBy: $0.triggeredBy)
            },
            next: players.engine.nextAchievements(of: progress, at: time))
        return Self.jsonBody(try BoardReader.json(body))
    }

    func stats(_ request: Request, _ context: PushRequestContext) async throws -> Response {
        let userID = try Self.pathIdentifier(context, "userId")
        let time = now()
        let (progress, _, placement) = try await readPlayer(userID, now: time)
        let statistics = PlayerStatistics.compute(
            progress: progress, rank: placement.map { (rank: $0.rank, members: $0.members) }, engine: players.engine, at: time)
        return Self.jsonBody(try BoardReader.json(statistics))
    }

    /// The user's progress with every unlock folded in (ranking unlocks are records only: ranks are known after the
    /// workers' transaction) and the best ranks set from the user's current placement on each watched board, the
    /// unlocks, and the placement on the global all-time board. 404 for a user the workers never saw.
    private func readPlayer(
        _ userID: String, now: Timestamp
    ) async throws -> (progress: PlayerProgress, unlocks: [AchievementUnlock], global: LivePlacement?) {
        try await Self.readingDependencies {
            async let storedProgress = players.records.playerProgress(userID: userID)
            async let storedUnlocks = players.records.achievementUnlocks(userID: userID)
            let (stored, unlocks) = try await (storedProgress, storedUnlocks)
            guard var progress = stored ?? (unlocks.isEmpty ? nil : PlayerProgress(userID: userID)) else {
                throw Problem(.notFound, detail: "no event of \(userID) has been applied")
            }
            for unlock in unlocks where progress.unlocked[unlock.achievementID] == nil {
                progress.unlocked[unlock.achievementID] = unlock.unlockedAt
            }
            // Progress towards a ranking achievement is the rank held now on its board's current period.
            var boards: [String: BoardKey] = [:]
            for stream in players.engine.watchedRanks.keys {
                guard let parsed = try? BoardStream(id: stream) else { continue }
                boards[stream] = parsed.board(period: parsed.window.period(containing: now).key)
            }
            let global = BoardKey(window: .allTime, period: LeaderboardWindow.allTime.period(containing: now).key, dimension: .global, value: nil)
            let placements = try await reader.placements(of: userID, on: Array(Set(Array(boards.values) + [global])))
            for (stream, board) in boards {
                if let rank = placements[board]?.rank { progress.bestRanks[stream] = rank } else { progress.bestRanks[stream] = nil }
            }
            return (progress, unlocks, placements[global])
        }
    }
}

extension BoardReader {
    /// The member's placements on these boards (those it is not on are left out): from memory for the boards held
    /// there, the others in one Redis call.
    func placements(of member: String, on boards: [BoardKey]) async throws -> [BoardKey: LivePlacement] {
        let held = memory?.placements(of: member, on: boards).found ?? [:]
        let unheld = boards.filter { held[$0] == nil }
        var found = held.compactMapValues { $0 }
        if !unheld.isEmpty { found.merge(try await live.placements(of: member, on: unheld)) { held, _ in held } }
        return found
    }
}
