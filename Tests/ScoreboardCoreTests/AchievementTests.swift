import Foundation
@testable import ScoreboardCore
import ScoreboardDefinitions
import Testing

/// Achievements (thresholds, streaks, ranking, counts), their progress, replays, and the player statistics computed
/// from the same maintained state.
@Suite struct AchievementTests {
    static let catalog = try! PipelineCatalog.loadAchievements(directory: repositoryRoot.appendingPathComponent("pipelines"))
    static let engine = AchievementEngine(catalog: catalog)

    static func apply(_ progress: inout PlayerProgress, _ id: String, action: String = "complete-quest", points: Int64 = 10,
                      at time: Timestamp) -> [String] {
        engine.apply(eventID: id, action: action, points: points, at: time, to: &progress).map(\.achievementID)
    }

    @Test func theRepositoryAchievementsLoad() {
        let kinds = Set(Self.catalog.achievements.map(\.kind))
        #expect(kinds == Set(AchievementDefinition.Kind.allCases))
        #expect(Self.catalog.achievements.first { $0.id == "legend" }?.points == 50_000)
    }

    @Test func scoreThresholdsUnlockOnceEachInOrder() {
        var progress = PlayerProgress(userID: "u")
        let day = utc(2026, 3, 2, 12)
        #expect(Self.apply(&progress, "e1", points: 99, at: day).isEmpty)
        #expect(Self.apply(&progress, "e2", points: 1, at: day) == ["beginner"])
        // One event that crosses two thresholds unlocks both.
        #expect(Self.apply(&progress, "e3", points: 4_900, at: day) == ["novice", "expert"])
        #expect(Self.apply(&progress, "e4", points: 10, at: day).isEmpty)
        #expect(progress.unlocked.keys.sorted() == ["beginner", "expert", "novice"])
    }

    @Test func aReplayedEventUnlocksNothingAndCountsNothing() {
        var progress = PlayerProgress(userID: "u")
        let time = utc(2026, 3, 2, 12)
        #expect(Self.apply(&progress, "e1", points: 100, at: time) == ["beginner"])
        let before = progress
        // Bad input: the same event delivered again (a worker restarted before it committed its offsets).
        #expect(Self.apply(&progress, "e1", points: 100, at: time).isEmpty)
        #expect(progress == before)
    }

    @Test func streaksFollowUTCDaysAcrossMidnightAndBreakOnAMissedDay() {
        var progress = PlayerProgress(userID: "u")
        // 23:59:59.999 UTC and 00:00:00 UTC a millisecond later are two days: a streak of 2.
        _ = Self.apply(&progress, "a", at: utc(2026, 3, 1, 23, 59, 59, ms: 999))
        _ = Self.apply(&progress, "b", at: utc(2026, 3, 2))
        #expect(progress.currentStreak == 2)
        // More actions the same day change nothing; so does an event stamped a little earlier by another gateway.
        _ = Self.apply(&progress, "c", at: utc(2026, 3, 2, 22))
        _ = Self.apply(&progress, "d", at: utc(2026, 3, 1, 23, 59))
        #expect(progress.currentStreak == 2)
        // A player in UTC-8 playing at 20:00 local on 2 March plays at 04:00 UTC on 3 March: it is the next UTC day.
        #expect(Self.apply(&progress, "e", at: utc(2026, 3, 3, 4)) == ["regular"])
        #expect(progress.currentStreak == 3 && progress.longestStreak == 3)
        // Missing 4 March breaks it; the longest stays.
        _ = Self.apply(&progress, "f", at: utc(2026, 3, 5, 1))
        #expect(progress.currentStreak == 1 && progress.longestStreak == 3)
        // Seen on 7 March without playing since the 5th: no streak is running.
        #expect(PlayerStatistics.currentStreak(of: progress, at: utc(2026, 3, 7)) == 0)
        #expect(PlayerStatistics.currentStreak(of: progress, at: utc(2026, 3, 6, 23)) == 1)
    }

    @Test func streaksCrossMonthsYearsAndLeapDays() {
        var progress = PlayerProgress(userID: "u")
        for (index, time) in [utc(2027, 12, 30, 12), utc(2027, 12, 31, 12), utc(2028, 1, 1, 12), utc(2028, 2, 28, 12), utc(2028, 2, 29, 12), utc(2028, 3, 1, 12)].enumerated() {
            _ = Self.apply(&progress, "e\(index)", at: time)
        }
        #expect(progress.currentStreak == 3 && progress.longestStreak == 3)
    }

    @Test func rankingUnlocksOnEnteringTheTopOfTheNamedBoard() {
        var progress = PlayerProgress(userID: "u")
        let time = utc(2026, 3, 2, 12)
        #expect(Self.engine.applyRank(11, board: "daily:2026-03-02:global", at: time, to: &progress).isEmpty)
        // A board no achievement watches is ignored.
        #expect(Self.engine.applyRank(1, board: "daily:2026-03-02:region:eu", at: time, to: &progress).isEmpty)
        #expect(Self.engine.applyRank(10, board: "daily:2026-03-02:global", at: time, to: &progress).map(\.achievementID) == ["daily-top-10"])
        // Ranks are absolute values: the same rank again, or a better one, unlocks nothing more.
        let before = progress
        #expect(Self.engine.applyRank(10, board: "daily:2026-03-02:global", at: time, to: &progress).isEmpty)
        #expect(progress == before)
        #expect(Self.engine.applyRank(1, board: "daily:2026-03-03:global", at: time, to: &progress).isEmpty)
        #expect(Self.engine.applyRank(3, board: "all-time:global", at: time, to: &progress).map(\.achievementID) == ["all-time-top-10"])
    }

    @Test func countsAreOfOneActionKind() {
        var progress = PlayerProgress(userID: "u")
        let time = utc(2026, 3, 2, 12)
        for index in 0..<49 { _ = Self.apply(&progress, "w\(index)", action: "pvp-win", points: 0, at: time) }
        for index in 0..<10 { _ = Self.apply(&progress, "m\(index)", action: "pvp-match", points: 0, at: time) }
        #expect(progress.unlocked["gladiator"] == nil)
        #expect(Self.apply(&progress, "w49", action: "pvp-win", points: 0, at: time) == ["gladiator"])
    }

    @Test func progressShowsTheNextAchievementOfEachKind() throws {
        var progress = PlayerProgress(userID: "u")
        let time = utc(2026, 3, 2, 12)
        for index in 0..<30 { _ = Self.apply(&progress, "e\(index)", points: 10, at: time) }
        _ = Self.engine.applyRank(25, board: "daily:2026-03-02:global", at: time, to: &progress)
        let next = Self.engine.nextAchievements(of: progress, at: time)
        #expect(next.map(\.kind) == [.score, .streak, .ranking, .count])
        let score = try #require(next.first { $0.kind == .score })
        #expect(score.achievementID == "novice" && score.current == 300 && score.target == 500 && score.fraction == 0.6)
        let streak = try #require(next.first { $0.kind == .streak })
        #expect(streak.achievementID == "regular" && streak.current == 1)
        #expect(next.first { $0.kind == .ranking }?.current == 25)
        #expect(next.first { $0.kind == .count }?.achievementID == "quester")
    }

    @Test func progressRoundTripsThroughJSON() throws {
        var progress = PlayerProgress(userID: "u")
        _ = Self.apply(&progress, "e1", points: 120, at: utc(2026, 3, 2, 12))
        _ = Self.engine.applyRank(4, board: "all-time:global", at: utc(2026, 3, 2, 12), to: &progress)
        let decoded = try JSONDecoder().decode(PlayerProgress.self, from: try JSONEncoder().encode(progress))
        #expect(decoded == progress)
        // Carrying on from the decoded state is carrying on from the original.
        var original = progress, reloaded = decoded
        #expect(Self.apply(&original, "e1", at: utc(2026, 3, 3)) == Self.apply(&reloaded, "e1", at: utc(2026, 3, 3)))
        #expect(Self.apply(&original, "e2", points: 400, at: utc(2026, 3, 3)) == Self.apply(&reloaded, "e2", points: 400, at: utc(2026, 3, 3)))
        #expect(original == reloaded)
    }

    /// Bad input: a progress value stored before a field existed (only some keys) reads with that field's start value,
    /// instead of failing every batch of the user.
    @Test func progressStoredWithFewerFieldsStillReads() throws {
        let older = #"{"userID":"u","totalPoints":120,"currentStreak":2,"longestStreak":4,"lastActiveDay":20000}"#
        let progress = try JSONDecoder().decode(PlayerProgress.self, from: Data(older.utf8))
        #expect(progress.totalPoints == 120 && progress.currentStreak == 2 && progress.longestStreak == 4 && progress.lastActiveDay == 20_000)
        #expect(progress.actionCounts.isEmpty && progress.recentDays.isEmpty && progress.unlocked.isEmpty && progress.recentEventIDs.isEmpty)
        // Without the user id it is not a progress value at all.
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(PlayerProgress.self, from: Data(#"{"totalPoints":1}"#.utf8)) }
    }

    @Test func rankUnlocksNameTheRecordOfEachAchievementTheRankReaches() {
        let time = utc(2026, 3, 2, 12)
        let unlocks = Self.engine.rankUnlocks(userID: "u", rank: 7, board: "daily:2026-03-02:global", at: time)
        #expect(unlocks.map(\.achievementID) == ["daily-top-10"])
        #expect(unlocks.first?.recordKey == StageKey(stage: "achievements", key: "u:daily-top-10"))
        #expect(unlocks.first?.triggeredBy == "rank:daily:global")
        // Outside the top, on a board no achievement watches, or not a rank: nothing.
        #expect(Self.engine.rankUnlocks(userID: "u", rank: 11, board: "daily:2026-03-02:global", at: time).isEmpty)
        #expect(Self.engine.rankUnlocks(userID: "u", rank: 1, board: "weekly:2026-W10:global", at: time).isEmpty)
        #expect(Self.engine.rankUnlocks(userID: "u", rank: 0, board: "all-time:global", at: time).isEmpty)
        #expect(Self.engine.watchedRanks == ["daily:global": 10, "all-time:global": 10])
    }

    @Test func aBadCatalogIsRefusedWithEveryReason() throws {
        // Bad input: a score without points, a ranking on a board that does not exist, a count without an action, a duplicate.
        let catalog = AchievementCatalog(achievements: [
            .init(id: "a", kind: .score),
            .init(id: "b", kind: .ranking, board: "hourly:global", top: 10),
            .init(id: "c", kind: .count, count: 5),
            .init(id: "c", kind: .streak, days: 3),
        ])
        let error = try #require(throws: ScoreboardError.self) { try catalog.validate() }
        let text = error.reasons.joined(separator: "\n")
        for expected in ["a.points", "b.board", "c.action", "c: declared twice"] { #expect(text.contains(expected), "missing \(expected) in \(text)") }
    }

    /// Bad input: ranking achievements no rank could reach (a board the catalog does not declare, a top beyond the ranks
    /// the workers compute); the repository's own pass.
    @Test func rankingAchievementsAreCheckedAgainstTheBoards() throws {
        let boards = try PipelineCatalog.load(directory: repositoryRoot.appendingPathComponent("pipelines")).leaderboards
        try Self.catalog.validate(against: boards)
        let unreachable = AchievementCatalog(achievements: [
            .init(id: "a", kind: .ranking, board: "daily:global", top: boards.topN + 1),
            .init(id: "b", kind: .ranking, board: "daily:guild:dragons", top: 10),
        ])
        let onlyAllTime = LeaderboardCatalog(topN: boards.topN, closedPeriodRetention: [:], boards: [BoardDefinition(window: .allTime, dimension: .global)])
        let error = try #require(throws: ScoreboardError.self) { try unreachable.validate(against: onlyAllTime) }
        let text = error.reasons.joined(separator: "\n")
        for expected in ["a.top", "a.board", "b.board"] { #expect(text.contains(expected), "missing \(expected) in \(text)") }
    }

    // MARK: - Player statistics

    @Test func statisticsComeFromTheMaintainedState() throws {
        var progress = PlayerProgress(userID: "u")
        // Wednesday 11 March 2026 is in ISO week 11; the previous week began Monday 2 March.
        let now = utc(2026, 3, 11, 18)
        _ = Self.apply(&progress, "p1", points: 100, at: utc(2026, 3, 2, 10))  // last week, Monday
        _ = Self.apply(&progress, "p2", points: 100, at: utc(2026, 3, 4, 10))  // last week, Wednesday
        _ = Self.apply(&progress, "p3", points: 500, at: utc(2026, 3, 6, 10))  // last week, Friday: after the same weekday
        _ = Self.apply(&progress, "t1", points: 150, at: utc(2026, 3, 10, 10))
        _ = Self.apply(&progress, "t2", points: 40, at: utc(2026, 3, 11, 9))
        _ = Self.apply(&progress, "t3", points: 10, at: utc(2026, 3, 11, 17))
        let statistics = PlayerStatistics.compute(progress: progress, rank: (rank: 3, members: 5), engine: Self.engine, at: now)
        #expect(statistics.score == 900)
        #expect(statistics.todayScore == 50 && statistics.todayActions == 2)
        #expect(statistics.currentStreak == 2 && statistics.longestStreak == 2)
        // This week so far (Mon–Wed): 200; the same days of last week: 200: stable.
        #expect(statistics.thisWeekScore == 200 && statistics.previousWeekScore == 200 && statistics.weeklyTrend == .stable)
        // The last 7 days (5–11 March): 500 + 150 + 50.
        #expect(statistics.velocity == 700.0 / 7)
        // Three of the five members are at or below the user's score: 60 %, as the standing endpoint says.
        #expect(statistics.percentile == 60 && statistics.rank == 3)
        #expect(statistics.achievements == 2)  // beginner, novice
        #expect(statistics.nextMilestone?.achievementID == "expert" && statistics.nextMilestone?.current == 900)

        _ = Self.apply(&progress, "t4", points: 100, at: utc(2026, 3, 11, 17, 30))
        #expect(PlayerStatistics.compute(progress: progress, rank: nil, engine: Self.engine, at: now).weeklyTrend == .up)
        // Tuesday of the next week: nothing yet, against Monday and Tuesday of this one (150).
        let nextWeek = PlayerStatistics.compute(progress: progress, rank: (rank: 1, members: 1), engine: Self.engine, at: utc(2026, 3, 17, 8))
        #expect(nextWeek.weeklyTrend == .down && nextWeek.todayScore == 0 && nextWeek.currentStreak == 0 && nextWeek.percentile == 100)
    }
}
