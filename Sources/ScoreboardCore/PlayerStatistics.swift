/// `GET /v1/users/{id}/stats`: computed from the state the workers maintain (``PlayerProgress`` and the user's
/// standing on the global board), never from a scan of the events.
public struct PlayerStatistics: Hashable, Sendable, Codable {
    public enum Trend: String, Hashable, Sendable, Codable { case up, stable, down }

    public var userID: String
    public var score: Int64
    /// Rank on the global all-time board (competition ranking), when the user is on it.
    public var rank: Int?
    /// The share of the board's members at or below the user's score, in percent to one decimal (100: first): the
    /// same figure `GET /v1/users/{id}/standing` gives for the same board.
    public var percentile: Double?
    public var todayScore: Int64
    public var todayActions: Int
    public var currentStreak: Int
    public var longestStreak: Int
    /// This ISO week so far against the same days of the previous ISO week: `up` or `down` beyond ±10 %.
    public var weeklyTrend: Trend
    public var thisWeekScore: Int64
    public var previousWeekScore: Int64
    /// Points per day over the last 7 UTC days, today included.
    public var velocity: Double
    public var achievements: Int
    /// The next score achievement, if any is left.
    public var nextMilestone: AchievementProgress?

    enum CodingKeys: String, CodingKey {
        case userID = "userId", score, rank, percentile, todayScore, todayActions, currentStreak, longestStreak, weeklyTrend
        case thisWeekScore, previousWeekScore, velocity, achievements, nextMilestone
    }

    /// Within this share of the previous week's points, the trend is `stable`.
    public static let stableBand = 0.1

    /// - Parameters:
    ///   - progress: the user's maintained progress.
    ///   - rank: the user's rank on the global all-time board, and how many members it has (`nil`: not on it).
    ///   - now: the time of the question (the core never reads a clock).
    public static func compute(
        progress: PlayerProgress, rank: (rank: Int, members: Int)?, engine: AchievementEngine, at now: Timestamp
    ) -> PlayerStatistics {
        let today = CivilDate.dayNumber(containing: now)
        let todayTotals = progress.recentDays.first { $0.day == today }
        func points(from first: Int, through last: Int) -> Int64 {
            progress.recentDays.reduce(0) { $0 + (($1.day >= first && $1.day <= last) ? $1.points : 0) }
        }
        let monday = ISOWeek(dayNumber: today).mondayDayNumber
        let thisWeek = points(from: monday, through: today)
        let previousWeek = points(from: monday - 7, through: today - 7)
        let trend: Trend
        if Double(thisWeek) > Double(previousWeek) * (1 + stableBand) {
            trend = .up
        } else if Double(thisWeek) < Double(previousWeek) * (1 - stableBand) {
            trend = .down
        } else {
            trend = .stable
        }
        let percentile = rank.map { standing in
            standing.members == 0 ? 0 : (Double(standing.members - standing.rank + 1) / Double(standing.members) * 1000).rounded() / 10
        }
        return PlayerStatistics(
            userID: progress.userID, score: progress.totalPoints, rank: rank?.rank, percentile: percentile.map { min(100, max(0, $0)) },
            todayScore: todayTotals?.points ?? 0, todayActions: todayTotals?.actions ?? 0,
            currentStreak: currentStreak(of: progress, at: now), longestStreak: progress.longestStreak,
            weeklyTrend: trend, thisWeekScore: thisWeek, previousWeekScore: previousWeek,
            velocity: Double(points(from: today - 6, through: today)) / 7,
            achievements: progress.unlocked.count,
            nextMilestone: engine.nextAchievements(of: progress, at: now).first { $0.kind == .score })
    }

    /// The streak still running at `now`: it lasts while the user played today or yesterday (UTC).
    public static func currentStreak(of progress: PlayerProgress, at now: Timestamp) -> Int {
        guard let last = progress.lastActiveDay else { return 0 }
        return CivilDate.dayNumber(containing: now) - last <= 1 ? progress.currentStreak : 0
    }
}
