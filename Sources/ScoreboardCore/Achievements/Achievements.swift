/// One achievement of `pipelines/achievements.yaml`: a kind and the target that kind reads.
public struct AchievementDefinition: Hashable, Sendable, Codable {
    public enum Kind: String, Hashable, Sendable, Codable, CaseIterable {
        /// All-time points reach `points`.
        case score
        /// Active on `days` consecutive UTC days.
        case streak
        /// Entered the top `top` of the board stream `board` (`daily:global`, `all-time:region`, …).
        case ranking
        /// `count` actions of the kind `action`.
        case count
    }

    public var id: String
    public var kind: Kind
    public var name: String?
    public var points: Int64?
    public var days: Int?
    public var board: String?
    public var top: Int?
    public var action: String?
    public var count: Int?

    public init(id: String, kind: Kind, name: String? = nil, points: Int64? = nil, days: Int? = nil, board: String? = nil, top: Int? = nil,
                action: String? = nil, count: Int? = nil) {
        self.id = id
        self.kind = kind
        self.name = name
        self.points = points
        self.days = days
        self.board = board
        self.top = top
        self.action = action
        self.count = count
    }

    /// The number to reach: points, days, the rank to enter (or better) or the action count.
    public var target: Int64 {
        switch kind {
        case .score: points ?? 0
        case .streak: Int64(days ?? 0)
        case .ranking: Int64(top ?? 0)
        case .count: Int64(count ?? 0)
        }
    }
}

/// The achievements: a new one is an entry in `pipelines/achievements.yaml`, not code.
public struct AchievementCatalog: Hashable, Sendable, Codable {
    public var achievements: [AchievementDefinition]

    public init(achievements: [AchievementDefinition]) {
        self.achievements = achievements
    }

    /// - Throws: ``ScoreboardError`` with code `invalidDefinition`, listing every problem.
    public func validate() throws(ScoreboardError) {
        var problems: [String] = []
        if achievements.isEmpty { problems.append("achievements: at least one") }
        var seen: Set<String> = []
        for achievement in achievements {
            let name = achievement.id
            if let problem = ScoreEvent.identifierProblem(achievement.id) { problems.append("\(name): the id \(problem)") }
            if !seen.insert(achievement.id).inserted { problems.append("\(name): declared twice") }
            switch achievement.kind {
            case .score:
                if !(1...Int64.max / 2).contains(achievement.points ?? 0) { problems.append("\(name).points: a score kind needs points of at least 1") }
            case .streak:
                if !(1...3_660).contains(achievement.days ?? 0) { problems.append("\(name).days: a streak kind needs days from 1 to 3660") }
            case .ranking:
                if !(1...10_000).contains(achievement.top ?? 0) { problems.append("\(name).top: a ranking kind needs top from 1 to 10000") }
                do {
                    _ = try BoardStream(id: achievement.board ?? "")
                } catch {
                    problems.append("\(name).board: a ranking kind needs a board stream such as daily:global (\(error.reasons.joined(separator: "; ")))")
                }
            case .count:
                if !(1...100_000_000).contains(achievement.count ?? 0) { problems.append("\(name).count: a count kind needs a count of at least 1") }
                if let problem = ScoreEvent.identifierProblem(achievement.action ?? "") { problems.append("\(name).action: \(problem)") }
            }
        }
        if !problems.isEmpty { throw ScoreboardError(code: .invalidDefinition, reasons: problems.map { "achievements: \($0)" }) }
    }
}

extension AchievementCatalog {
    /// Checks the ranking achievements against the boards: a board stream that is not a declared board, or a `top`
    /// beyond the ranks the workers compute (`topN`), could never be reached, silently.
    /// - Throws: ``ScoreboardError`` with code `invalidDefinition`, listing every problem.
    public func validate(against boards: LeaderboardCatalog) throws(ScoreboardError) {
        var problems: [String] = []
        for achievement in achievements where achievement.kind == .ranking {
            guard let stream = try? BoardStream(id: achievement.board ?? "") else { continue }  // validate() names it
            if !boards.boards.contains(BoardDefinition(window: stream.window, dimension: stream.dimension)) {
                problems.append("achievements: \(achievement.id).board: \(stream.id) is not a board of leaderboards.yaml")
            }
            if let top = achievement.top, top > boards.topN {
                problems.append("achievements: \(achievement.id).top: ranks are computed inside the top \(boards.topN) only (leaderboards.yaml topN)")
            }
        }
        if !problems.isEmpty { throw ScoreboardError(code: .invalidDefinition, reasons: problems) }
    }
}

/// An achievement reached by a user: stored once, sent on the user's personal channel.
public struct AchievementUnlock: Hashable, Sendable, Codable {
    public var userID: String
    public var achievementID: String
    public var kind: AchievementDefinition.Kind
    public var unlockedAt: Timestamp
    /// The event id (or `rank:<board>`) that reached it.
    public var triggeredBy: String

    enum CodingKeys: String, CodingKey {
        case userID = "userId", achievementID = "achievement", kind, unlockedAt, triggeredBy
    }

    public init(userID: String, achievementID: String, kind: AchievementDefinition.Kind, unlockedAt: Timestamp, triggeredBy: String) {
        self.userID = userID
        self.achievementID = achievementID
        self.kind = kind
        self.unlockedAt = unlockedAt
        self.triggeredBy = triggeredBy
    }

    /// Its record: one per (user, achievement), so whatever reaches it again (a replayed batch, a rank seen again after
    /// a restart) writes the same id, which the store keeps once.
    public var recordKey: StageKey { AchievementRows.unlockKey(userID: userID, achievementID: achievementID) }
}

/// An unlock as the workers publish it on the notifications topic (`topics/notifications.yaml`, keyed by user) and as
/// the push role sends it on the user's personal channel. `id` is the unlock's record id (`<user>:<achievement>`):
/// the store keeps one unlock per id, but a projection that runs twice (a crash between a batch's commit and its
/// outputs, or between a ranking's announcement and its mark) publishes it again, so readers keep one per `id`.
public struct AchievementNotification: Hashable, Sendable, Codable {
    public var schemaVersion = 1
    public var id: String
    public var unlock: AchievementUnlock

    public init(_ unlock: AchievementUnlock) {
        self.id = unlock.recordKey.key
        self.unlock = unlock
    }

    public var userID: String { unlock.userID }
}

/// Where the achievements' state lives in the worker stages' tables (migration 0005): the worker's stage writes it,
/// the query role reads it, both through these keys.
public enum AchievementRows {
    /// The stage's name (`WorkerStage.name`): the `stage` column of its rows.
    public static let stage = "achievements"

    /// A user's ``PlayerProgress`` (a state value).
    public static func progressKey(userID: String) -> StageKey { StageKey(stage: stage, key: "user:\(userID)") }

    /// A user's unlock of one achievement (a record, written once).
    public static func unlockKey(userID: String, achievementID: String) -> StageKey {
        StageKey(stage: stage, key: "\(userID):\(achievementID)")
    }

    /// The stage of the marks that say a ranking unlock was announced (its own stage, so that the unlock listings
    /// never read them).
    public static let announcementStage = "achievement-announcements"

    /// The mark appended once a ranking unlock was announced: a worker that sees the rank again (after a restart)
    /// announces nothing more.
    public static func announcedKey(_ unlock: StageKey) -> StageKey { StageKey(stage: announcementStage, key: unlock.key) }
}

/// How far a user is from an achievement not yet reached.
public struct AchievementProgress: Hashable, Sendable, Codable {
    public var achievementID: String
    public var kind: AchievementDefinition.Kind
    /// Points, days in the current streak, the best rank reached (`nil` if never ranked), or actions.
    public var current: Int64?
    public var target: Int64
    /// 0 to 1 (for ranking: 1 once inside the top; otherwise the share of the way from unranked, not linear).
    public var fraction: Double

    enum CodingKeys: String, CodingKey {
        case achievementID = "achievement", kind, current, target, fraction
    }
}

/// What is maintained per user for achievements and player statistics, updated by each new event (and rank), never
/// by scanning events. Small and bounded (14 days of daily totals), Codable so it is stored beside the totals.
public struct PlayerProgress: Hashable, Sendable, Codable {
    public struct Day: Hashable, Sendable, Codable {
        /// Days since 1970-01-01 (UTC).
        public var day: Int
        public var points: Int64
        public var actions: Int
    }

    public var userID: String
    public var totalPoints: Int64 = 0
    public var actionCounts: [String: Int] = [:]
    public var currentStreak = 0
    public var longestStreak = 0
    /// The last UTC day (days since 1970-01-01) with an action.
    public var lastActiveDay: Int?
    /// The best (lowest) rank seen per board stream that a ranking achievement watches.
    public var bestRanks: [String: Int] = [:]
    public var unlocked: [String: Timestamp] = [:]
    /// Totals of the last 14 UTC days with activity, oldest first.
    public var recentDays: [Day] = []
    /// The last event ids: an event delivered again changes nothing.
    public var recentEventIDs: [String] = []

    public static let keptDays = 14
    static let rememberedIDs = 32

    public init(userID: String) {
        self.userID = userID
    }

    enum CodingKeys: String, CodingKey {
        case userID, totalPoints, actionCounts, currentStreak, longestStreak, lastActiveDay, bestRanks, unlocked, recentDays, recentEventIDs
    }

    /// Every field but the user's id may be missing: a value stored by an older worker, before a field was added, reads
    /// as that field's start value instead of failing the batch that reads it.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        userID = try container.decode(String.self, forKey: .userID)
        totalPoints = try container.decodeIfPresent(Int64.self, forKey: .totalPoints) ?? 0
        actionCounts = try container.decodeIfPresent([String: Int].self, forKey: .actionCounts) ?? [:]
        currentStreak = try container.decodeIfPresent(Int.self, forKey: .currentStreak) ?? 0
        longestStreak = try container.decodeIfPresent(Int.self, forKey: .longestStreak) ?? 0
        lastActiveDay = try container.decodeIfPresent(Int.self, forKey: .lastActiveDay)
        bestRanks = try container.decodeIfPresent([String: Int].self, forKey: .bestRanks) ?? [:]
        unlocked = try container.decodeIfPresent([String: Timestamp].self, forKey: .unlocked) ?? [:]
        recentDays = try container.decodeIfPresent([Day].self, forKey: .recentDays) ?? []
        recentEventIDs = try container.decodeIfPresent([String].self, forKey: .recentEventIDs) ?? []
    }
}

/// Applies events and ranks to a user's ``PlayerProgress`` and returns the achievements they unlock: each at most once
/// per user, and an event already applied (its id among the recent ones) changes nothing.
public struct AchievementEngine: Sendable {
    public let catalog: AchievementCatalog

    public init(catalog: AchievementCatalog) {
        self.catalog = catalog
    }

    /// Applies one new event of `progress.userID`.
    public func apply(eventID: String, action: String, points: Int64, at time: Timestamp, to progress: inout PlayerProgress) -> [AchievementUnlock] {
        guard !progress.recentEventIDs.contains(eventID) else { return [] }
        progress.recentEventIDs.append(eventID)
        if progress.recentEventIDs.count > PlayerProgress.rememberedIDs { progress.recentEventIDs.removeFirst() }

        progress.totalPoints += points
        progress.actionCounts[action, default: 0] += 1
        let day = CivilDate.dayNumber(containing: time)
        switch progress.lastActiveDay {
        case nil:
            progress.currentStreak = 1
            progress.lastActiveDay = day
        case let last? where day == last + 1:
            progress.currentStreak += 1
            progress.lastActiveDay = day
        case let last? where day > last + 1:
            progress.currentStreak = 1
            progress.lastActiveDay = day
        default:
            break  // the same day, or (a clock behind another's) an earlier one: the streak stands
        }
        progress.longestStreak = max(progress.longestStreak, progress.currentStreak)
        if let index = progress.recentDays.lastIndex(where: { $0.day == day }) {
            progress.recentDays[index].points += points
            progress.recentDays[index].actions += 1
        } else {
            progress.recentDays.append(.init(day: day, points: points, actions: 1))
            progress.recentDays.sort { $0.day < $1.day }
        }
        progress.recentDays.removeAll { $0.day <= (progress.lastActiveDay ?? day) - PlayerProgress.keptDays }
        return unlock(in: &progress, at: time, triggeredBy: eventID) { achievement, progress in
            switch achievement.kind {
            case .score: progress.totalPoints >= achievement.target
            case .streak: Int64(progress.currentStreak) >= achievement.target
            case .count: Int64(progress.actionCounts[achievement.action ?? "", default: 0]) >= achievement.target
            case .ranking: false
            }
        }
    }

    /// Applies a rank the user holds on a board (`board` is the stream id, such as `daily:global`, or a concrete board
    /// id, whose period is ignored). Ranks are absolute, so applying one again changes nothing.
    public func applyRank(_ rank: Int, board: String, at time: Timestamp, to progress: inout PlayerProgress) -> [AchievementUnlock] {
        let stream = (try? BoardKey.streamID(ofBoardID: board)) ?? board
        guard rank >= 1, catalog.achievements.contains(where: { $0.kind == .ranking && $0.board == stream }) else { return [] }
        progress.bestRanks[stream] = min(progress.bestRanks[stream] ?? .max, rank)
        return unlock(in: &progress, at: time, triggeredBy: "rank:\(stream)") { achievement, progress in
            achievement.kind == .ranking && achievement.board == stream && Int64(progress.bestRanks[stream] ?? .max) <= achievement.target
        }
    }

    /// The ranking achievements a rank reaches, for a user whose progress is not at hand: ranks are known only after a
    /// board write, outside the batch's transaction, so these are stored as records by their ids (a rank seen again
    /// writes the same ids, kept once). `board` is a concrete board id or a stream id.
    public func rankUnlocks(userID: String, rank: Int, board: String, at time: Timestamp) -> [AchievementUnlock] {
        guard rank >= 1 else { return [] }
        let stream = (try? BoardKey.streamID(ofBoardID: board)) ?? board
        return catalog.achievements.filter { $0.kind == .ranking && $0.board == stream && Int64(rank) <= $0.target }.map { achievement in
            AchievementUnlock(userID: userID, achievementID: achievement.id, kind: .ranking, unlockedAt: time, triggeredBy: "rank:\(stream)")
        }
    }

    /// The board streams ranking achievements watch, with the largest `top` each needs.
    public var watchedRanks: [String: Int] {
        catalog.achievements.reduce(into: [:]) { watched, achievement in
            guard achievement.kind == .ranking, let board = achievement.board else { return }
            watched[board] = max(watched[board] ?? 0, Int(achievement.target))
        }
    }

    private func unlock(
        in progress: inout PlayerProgress, at time: Timestamp, triggeredBy: String,
        _ isReached: (AchievementDefinition, PlayerProgress) -> Bool
    ) -> [AchievementUnlock] {
        var unlocks: [AchievementUnlock] = []
        for achievement in catalog.achievements where progress.unlocked[achievement.id] == nil && isReached(achievement, progress) {
            progress.unlocked[achievement.id] = time
            unlocks.append(AchievementUnlock(
                userID: progress.userID, achievementID: achievement.id, kind: achievement.kind, unlockedAt: time, triggeredBy: triggeredBy))
        }
        return unlocks
    }

    /// The next achievement of each kind the user has not reached: the one closest to done (the lower target on a tie).
    public func nextAchievements(of progress: PlayerProgress, at now: Timestamp) -> [AchievementProgress] {
        let streak = PlayerStatistics.currentStreak(of: progress, at: now)
        var next: [AchievementDefinition.Kind: AchievementProgress] = [:]
        for achievement in catalog.achievements where progress.unlocked[achievement.id] == nil {
            let current: Int64?
            let fraction: Double
            switch achievement.kind {
            case .score:
                current = progress.totalPoints
                fraction = Double(progress.totalPoints) / Double(achievement.target)
            case .streak:
                current = Int64(streak)
                fraction = Double(streak) / Double(achievement.target)
            case .count:
                let count = Int64(progress.actionCounts[achievement.action ?? "", default: 0])
                current = count
                fraction = Double(count) / Double(achievement.target)
            case .ranking:
                let best = progress.bestRanks[achievement.board ?? ""]
                current = best.map(Int64.init)
                fraction = best.map { Double(achievement.target) / Double(max($0, 1)) } ?? 0
            }
            let candidate = AchievementProgress(
                achievementID: achievement.id, kind: achievement.kind, current: current, target: achievement.target, fraction: min(1, max(0, fraction)))
            if let existing = next[achievement.kind],
               (existing.fraction, -existing.target) >= (candidate.fraction, -candidate.target) { continue }
            next[achievement.kind] = candidate
        }
        return AchievementDefinition.Kind.allCases.compactMap { next[$0] }
    }
}

extension BoardKey {
    /// The stream of a concrete board id (`daily:2026-11-23:region:eu` → `daily:region:eu`); a stream id is returned
    /// as it is.
    static func streamID(ofBoardID id: String) throws(ScoreboardError) -> String {
        let parts = id.split(separator: ":", maxSplits: 3, omittingEmptySubsequences: false).map(String.init)
        if parts.count >= 3, BoardDimension(rawValue: parts[2]) != nil {
            return try BoardStream(window: parts[0], dimension: parts[2], value: parts.count == 4 ? parts[3] : nil).id
        }
        return try BoardStream(id: id).id
    }
}
