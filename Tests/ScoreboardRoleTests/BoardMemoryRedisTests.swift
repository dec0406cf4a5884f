import Foundation
import Logging
import ScoreboardCore
@testable import ScoreboardPush
import ScoreboardRedis
import Testing

// The conformance the executable declares (ScoreboardCLI/PushPortAdapters.swift), which this target does not link.
extension RedisBoardReads: LiveBoards {}

/// The memory path and the Redis path give the same answers for the same board: a board in the shared local Redis
/// (database 21, a key unique per run) is loaded into memory as the gateway loads it, then changed in both by random
/// batches (as a worker's `ZADD` and its update message), and every page, neighbourhood and standing is compared
/// with what ``RedisBoardReads`` answers.
@Suite(.timeLimit(.minutes(1)))
struct BoardMemoryRedisTests {
    @Test(arguments: [31, 32] as [UInt64])
    func memoryAndRedisGiveTheSameAnswers(seed: UInt64) async throws {
        let redis = RedisConnectionPool(configuration: try GatewayHarness.localRedis(), logger: Logger(label: "test"))
        defer { redis.close() }
        let reads = RedisBoardReads(redis: redis)
        let board = BoardKey.allTime(.guild, "memory-\(UUID().uuidString.prefix(8))")
        var random = SplitMix64(state: seed)
        func zadd(_ scores: [String: Int64]) async throws {
            try await redis.send(["ZADD", board.redisKey] + scores.sorted { $0.key < $1.key }.flatMap { [String($0.value), $0.key] })
        }
        // Many ties (scores 0 to 9), members whose order as bytes decides them.
        var initial: [String: Int64] = [:]
        for index in 0..<200 where Bool.random(using: &random) { initial["p\(index)"] = Int64.random(in: 0..<10, using: &random) }
        initial["Z"] = 5
        initial["a.b-c_d"] = 5
        try await zadd(initial)

        let memory = BoardMemory(catalog: PushWorld.allBoards, logger: Logger(label: "test"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await memory.runLoads(from: reads) }
            defer { group.cancelAll() }
            let direct = BoardReader(live: reads, archive: MemoryStandingsArchive(), catalog: PushWorld.allBoards)
            let held = BoardReader(live: reads, archive: MemoryStandingsArchive(), catalog: PushWorld.allBoards, memory: memory)
            memory.observe(.assigned([0]))
            memory.apply(BoardChanges(board: .allTime(), members: [.init(userID: "x", total: 1, rank: nil)]), sequence: 0, partition: 0)
            while !memory.holds(board) {
                _ = memory.read(board, query: nil) { _ in () }
                await Task.yield()
            }
            for step in 1...15 {
                var batch: [String: Int64] = [:]
                for _ in 0..<Int.random(in: 1...8, using: &random) { batch["p\(Int.random(in: 0..<220, using: &random))"] = Int64.random(in: 0..<10, using: &random) }
                try await zadd(batch)
                memory.apply(
                    BoardChanges(board: board, members: batch.map { .init(userID: $0.key, total: $0.value, rank: nil) }), sequence: Int64(step), partition: 0)
                #expect(memory.holds(board))
                for (offset, limit) in [(0, 10), (7, 13), (90, 50), (250, 10)] {
                    let fromMemory = try await held.topJSON(board, limit: limit, offset: offset)
                    #expect(fromMemory == (try await direct.topJSON(board, limit: limit, offset: offset)), "step \(step)")
                }
                for member in ["p0", "p1", "p50", "p150", "Z", "a.b-c_d", "nobody"] {
                    let around = try await held.aroundJSON(board, userID: member, radius: 3)
                    #expect(around == (try await direct.aroundJSON(board, userID: member, radius: 3)), "step \(step)")
                    guard case .computed(let placement, _) = memory.read(board, query: nil, { $0?.placement(of: member) }) else {
                        Issue.record("the board left memory")
                        return
                    }
                    let fromRedis = try await reads.placements(of: member, on: [board])[board]
                    #expect(placement == fromRedis, "step \(step), \(member)")
                }
            }
        }
        // (Left behind when the test fails: keys unique per run in the tests' own database.)
        try await redis.send(["DEL", board.redisKey])
    }

    /// Standing's one round trip: the script answers score, rank (ties share it) and member count for every board the
    /// member is on, and leaves out the boards it is not on, or that do not exist.
    @Test func placementsOfEveryBoardInOneRoundTrip() async throws {
        let redis = RedisConnectionPool(configuration: try GatewayHarness.localRedis(), logger: Logger(label: "test"))
        defer { redis.close() }
        let reads = RedisBoardReads(redis: redis)
        let run = UUID().uuidString.prefix(8)
        let on = BoardKey.allTime(.guild, "on-\(run)"), other = BoardKey.allTime(.guild, "other-\(run)"), missing = BoardKey.allTime(.guild, "missing-\(run)")
        try await redis.send(["ZADD", on.redisKey, "30", "a", "20", "me", "20", "b", "10", "c"])
        try await redis.send(["ZADD", other.redisKey, "5", "someone"])
        let placements = try await reads.placements(of: "me", on: [missing, on, other])
        #expect(placements == [on: LivePlacement(score: 20, rank: 2, members: 4)])
        try await redis.send(["DEL", on.redisKey, other.redisKey])
    }
}
