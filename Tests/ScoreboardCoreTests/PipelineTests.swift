import Foundation
import ScoreboardCore
import ScoreboardDefinitions
import Testing

@Suite struct PipelineTests {
    let pipelines = try! PipelineCatalog.load(directory: repositoryRoot.appendingPathComponent("pipelines"))

    @Test func repositoryCatalogsMatchTheProduct() {
        #expect(pipelines.leaderboards.boards.count == 12)
        #expect(Set(pipelines.leaderboards.boards.map(\.window)) == Set(LeaderboardWindow.allCases))
        #expect(Set(pipelines.leaderboards.boards.map(\.dimension)) == Set(BoardDimension.allCases))
        #expect(pipelines.actions.points(for: "complete-quest") == 10)
        #expect(pipelines.actions.actions["complete-quest"]?.limits == [ActionLimit(count: 10, per: .minute)])
        #expect(pipelines.actions.actions["daily-bonus"]?.limits == [ActionLimit(count: 1, per: .utcDay)])
        #expect(pipelines.actions.actions["pvp-match"]?.limits == [ActionLimit(count: 5, per: .hour)])
        #expect(pipelines.actions.points(for: "grant-myself-a-million") == nil)
    }

    @Test func anEventCountsOnEveryBoardItHasAValueFor() {
        var event = validEvent()
        event.occurredAt = utc(2026, 11, 23, 10)
        let ids = Set(pipelines.leaderboards.boards(for: event).map(\.id))
        #expect(ids == [
            "all-time:all:global", "all-time:all:region:eu", "all-time:all:guild:guild-7",
            "daily:2026-11-23:global", "daily:2026-11-23:region:eu", "daily:2026-11-23:guild:guild-7",
            "weekly:2026-W48:global", "weekly:2026-W48:region:eu", "weekly:2026-W48:guild:guild-7",
            "monthly:2026-11:global", "monthly:2026-11:region:eu", "monthly:2026-11:guild:guild-7",
        ])
        event.guild = nil
        #expect(pipelines.leaderboards.boards(for: event).count == 8)
        #expect(BoardKey(window: .daily, period: "2026-11-23", dimension: .region, value: "eu").redisKey == "sb:board:daily:2026-11-23:region:eu")
    }

    @Test func badCatalogsAreRefusedWithEveryReason() throws {
        let duplicate = BoardDefinition(window: .daily, dimension: .global)
        let boards = LeaderboardCatalog(topN: 0, closedPeriodRetention: ["all-time": 3, "yearly": 1, "daily": 0], boards: [duplicate, duplicate])
        let boardError = try #require(throws: ScoreboardError.self) { try boards.validate() }
        #expect(boardError.reasons.count == 5, "\(boardError.reasons)")
        let actions = ActionCatalog(actions: [
            "free points": ActionDefinition(points: 5, limits: []),
            "huge": ActionDefinition(points: 5_000_000, limits: [ActionLimit(count: 0, per: .hour)]),
        ])
        let actionError = try #require(throws: ScoreboardError.self) { try actions.validate() }
        #expect(actionError.reasons.count == 3, "\(actionError.reasons)")
    }

    @Test func competitionRankingSharesRanksOnTies() {
        #expect(CompetitionRanking.ranks(forDescending: [50, 40, 40, 30]) == [1, 2, 2, 4])
        #expect(CompetitionRanking.ranks(forDescending: [9, 9, 9]) == [1, 1, 1])
        #expect(CompetitionRanking.ranks(forDescending: []) == [])
        // A page further down the board starts at the rank of its first score.
        #expect(CompetitionRanking.ranks(forDescending: [20, 20, 10], firstPosition: 6, firstRank: 7) == [7, 7, 9])
        // A slice whose first score ties with members above it: positions 1 and 2 of [80, 80, 20].
        #expect(CompetitionRanking.ranks(forDescending: [80, 20], firstPosition: 1, firstRank: 1) == [1, 3])
        #expect(CompetitionRanking.ranks(forDescending: [80, 80, 20, 20, 5], firstPosition: 3, firstRank: 2) == [2, 2, 6, 6, 8])
    }

    @Test func batchAggregationWritesOneRowPerMemberWindowAndAttributesPointsToTheEventsGuild() {
        func event(_ id: Int, user: String, points: Int64, guild: String?, at time: Timestamp) -> ScoreEvent {
            var event = validEvent()
            event.eventID = "00000000-0000-4000-8000-" + String(repeating: "0", count: 12 - String(id).count) + String(id)
            event.userID = user
            event.points = points
            event.guild = guild
            event.occurredAt = time
            return event
        }
        let day = utc(2026, 11, 23, 12)
        let batch = [
            event(1, user: "ann", points: 10, guild: "red", at: day),
            event(2, user: "ann", points: 25, guild: "red", at: day),
            event(2, user: "ann", points: 25, guild: "red", at: day),   // the same event again: counted once
            event(3, user: "ann", points: 40, guild: "blue", at: day),  // ann moved to another guild
            event(4, user: "bob", points: 50, guild: nil, at: utc(2026, 11, 24, 0)),
        ]
        let aggregation = BatchAggregation(events: batch, catalog: pipelines.leaderboards)
        #expect(aggregation.events.count == 4)
        // ann: two (region, guild) combinations × 4 windows; bob: one × 4.
        #expect(aggregation.pointsByTotal.count == 12)
        let annDailyRed = BatchAggregation.TotalKey(userID: "ann", window: .daily, period: "2026-11-23", region: "eu", guild: "red")
        #expect(aggregation.pointsByTotal[annDailyRed] == 35)

        let scores = BatchAggregation.boardScores(totals: aggregation.pointsByTotal, catalog: pipelines.leaderboards)
        #expect(scores[BoardKey(window: .daily, period: "2026-11-23", dimension: .global, value: nil)] == ["ann": 75])
        #expect(scores[BoardKey(window: .daily, period: "2026-11-23", dimension: .guild, value: "red")] == ["ann": 35])
        #expect(scores[BoardKey(window: .daily, period: "2026-11-23", dimension: .guild, value: "blue")] == ["ann": 40])
        #expect(scores[BoardKey(window: .daily, period: "2026-11-24", dimension: .global, value: nil)] == ["bob": 50])
        #expect(scores[BoardKey(window: .allTime, period: "all", dimension: .region, value: "eu")] == ["ann": 75, "bob": 50])
        #expect(scores.keys.filter { $0.dimension == .guild && $0.period == "2026-11-24" }.isEmpty)
    }
}
