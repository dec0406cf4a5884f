import ScoreboardCore
@testable import ScoreboardPush
import Testing

/// The in-memory ranking against a simple sorted array (``MemoryRanking``: sort everything, count the strictly
/// higher scores) on random operations: the same pages, neighbourhoods, placements and ranks, ties included.
struct BoardRankingTests {
    /// Compares every answer of `ranking` with the oracle's over `scores`.
    func expectSame(_ ranking: BoardRanking, _ scores: [String: Int64], members: [String], seed: UInt64, step: Int) {
        let context = Comment(rawValue: "seed \(seed), step \(step)")
        #expect(ranking.count == scores.count, context)
        // Every page of a few sizes, from every offset (and past the end).
        for limit in [1, 3, 7, 1_000] {
            for offset in stride(from: 0, through: scores.count + 1, by: max(1, limit / 2)) {
                #expect(ranking.slice(from: offset, count: limit) == MemoryRanking.slice(scores, from: offset, count: limit), context)
            }
        }
        for member in members {
            for radius in [0, 1, 4] {
                #expect(ranking.neighbourhood(of: member, radius: radius) == MemoryRanking.neighbourhood(scores, of: member, radius: radius), context)
            }
            let expected = scores[member].map { score in
                LivePlacement(score: score, rank: scores.values.filter { $0 > score }.count + 1, members: scores.count)
            }
            #expect(ranking.placement(of: member) == expected, context)
        }
    }

    /// Bad input tried: many ties (scores from a range of 6), a member set to the score it has, scores going down
    /// as well as up, negative and extreme scores.
    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8] as [UInt64])
    func randomOperationsAnswerAsASortedArray(seed: UInt64) {
        var random = SplitMix64(state: seed)
        let members = (0..<40).map { "m\($0)" } + ["", "Z", "a.b-c_d"]
        var ranking = BoardRanking()
        var scores: [String: Int64] = [:]
        for step in 0..<400 {
            let member = members.randomElement(using: &random)!
            let score: Int64
            switch Int.random(in: 0..<10, using: &random) {
            case 0: score = scores[member] ?? 0  // the same value again
            case 1: score = [Int64.min + 1, Int64.max, -5].randomElement(using: &random)!
            default: score = Int64.random(in: 0..<6, using: &random)
            }
            ranking.set(member, score: score)
            scores[member] = score
            if step % 20 == 0 { expectSame(ranking, scores, members: members, seed: seed, step: step) }
        }
        expectSame(ranking, scores, members: members, seed: seed, step: 400)
    }

    /// A board built from Redis's order (what a load reads) answers the same, before and after further changes.
    @Test(arguments: [11, 12, 13] as [UInt64])
    func aBoardBuiltFromRedisOrderAnswersAsASortedArray(seed: UInt64) {
        var random = SplitMix64(state: seed)
        let members = (0..<300).map { "user\($0)" }
        var scores: [String: Int64] = [:]
        for member in members where Bool.random(using: &random) { scores[member] = Int64.random(in: 0..<50, using: &random) }
        var ranking = BoardRanking(ordered: MemoryRanking.ordered(scores))
        expectSame(ranking, scores, members: Array(members.prefix(40)), seed: seed, step: 0)
        for step in 1...200 {
            let member = members.randomElement(using: &random)!
            let score = Int64.random(in: 0..<50, using: &random)
            ranking.set(member, score: score)
            scores[member] = score
            if step % 50 == 0 { expectSame(ranking, scores, members: Array(members.prefix(40)), seed: seed, step: step) }
        }
    }

    /// The tree stays shallow on sorted input (the worst case of an unbalanced search tree): a page deep in a board
    /// of 100,000 members inserted in order is found, and the ranks are right.
    @Test func aLargeBoardInsertedInOrderStaysUsable() {
        var ranking = BoardRanking()
        for index in 0..<100_000 { ranking.set("u\(index)", score: Int64(index / 2)) }
        let page = ranking.slice(from: 50_000, count: 3)
        #expect(page.members == 100_000)
        // Scores 24999, 24999, 24998: the tie shares the rank of its first place (50,000 and 50,001 are 1-based).
        #expect(page.entries.map(\.score) == [24_999, 24_999, 24_998])
        #expect(page.entries.map(\.rank) == [50_001, 50_001, 50_003])
    }
}
