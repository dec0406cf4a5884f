import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import ScoreboardCore
import ScoreboardHTTP
@testable import ScoreboardPush
import Synchronization
import Testing

/// The push gateway's board memory in process: boards loaded from the live boards, kept current from the updates,
/// dropped and loaded again on a gap, bounded, and answering exactly what the live boards answer.
@Suite(.timeLimit(.minutes(1)))
struct BoardMemoryTests {
    struct Down: Error {}

    static let board = BoardKey.allTime()

    /// A memory whose loads run while `body` does (as they run beside the update source in the gateway).
    func withMemory<T: Sendable>(
        live: MemoryLiveBoards, limits: BoardMemory.Limits = .init(), catalog: LeaderboardCatalog = PushWorld.allBoards,
        now: @escaping @Sendable () -> Timestamp = { Timestamp.now() }, _ body: @Sendable (BoardMemory) async throws -> T
    ) async throws -> T {
        let memory = BoardMemory(limits: limits, catalog: catalog, logger: Logger(label: "test"), now: now)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await memory.runLoads(from: live) }
            defer { group.cancelAll() }
            return try await body(memory)
        }
    }

    /// Reads `board` until memory has loaded it (a read asks for it).
    func loaded(_ board: BoardKey, in memory: BoardMemory, loads: Int? = nil) async {
        while !memory.holds(board) || loads.map({ memory.statistics.loads < $0 }) == true {
            _ = memory.read(board, query: nil) { _ in () }
            await Task.yield()
        }
    }

    func update(_ board: BoardKey, _ changes: [String: Int64]) -> BoardChanges {
        BoardChanges(board: board, members: changes.sorted { $0.key < $1.key }.map { .init(userID: $0.key, total: $0.value, rank: nil) })
    }

    func slice(_ memory: BoardMemory, _ board: BoardKey = board, offset: Int = 0, limit: Int = 10) -> BoardSlice?? {
        if case .computed(let slice, _) = memory.read(board, query: nil, { $0?.slice(from: offset, count: limit) }) { return .some(slice) }
        return nil
    }

    @Test func queriesAreAnsweredFromMemoryAndFollowTheUpdates() async throws {
        let world = PushWorld()
        world.live.setScores(["a": 30, "b": 20, "c": 20, "d": 10], on: Self.board)
        let memory = try #require(world.parts.gateway.reader.memory)
        try await world.withClient { client in
            await world.updates.send(.assigned([0]))
            // A message read from the partition fixes the consumer's position: boards may be loaded from now on.
            await world.updates.publish([sequenced(1, board: .allTime(.region, "eu"), user: "x", total: 1)])
            try await client.execute(uri: "/v1/leaderboards/all-time/global?limit=3", method: .get) { #expect($0.status == .ok) }
            await loaded(Self.board, in: memory)
            // Redis down: the held board still answers, so these answers come from memory.
            world.live.fail(with: Down())
            try await client.execute(uri: "/v1/leaderboards/all-time/global?limit=3", method: .get) { response in
                #expect(response.status == .ok)
                let page = try PushQueryTests.decode(PushQueryTests.Page.self, response)
                #expect(page.members == 4 && page.source == "live")
                #expect(page.entries == [.init(rank: 1, userId: "a", score: 30), .init(rank: 2, userId: "c", score: 20), .init(rank: 2, userId: "b", score: 20)])
            }
            // An update moves e between a and the tie, and b up to the tie with a.
            await world.updates.publish([sequenced(2, user: "e", total: 25), sequenced(3, user: "b", total: 30)])
            try await client.execute(uri: "/v1/leaderboards/all-time/global?limit=3", method: .get) { response in
                let page = try PushQueryTests.decode(PushQueryTests.Page.self, response)
                #expect(page.members == 5)
                #expect(page.entries == [.init(rank: 1, userId: "b", score: 30), .init(rank: 1, userId: "a", score: 30), .init(rank: 3, userId: "e", score: 25)])
            }
            try await client.execute(uri: "/v1/leaderboards/all-time/global/around/c?radius=1", method: .get) { response in
                let page = try PushQueryTests.decode(PushQueryTests.Page.self, response)
                #expect(page.entries == [.init(rank: 3, userId: "e", score: 25), .init(rank: 4, userId: "c", score: 20), .init(rank: 5, userId: "d", score: 10)])
            }
            try await client.execute(uri: "/v1/leaderboards/all-time/global/around/nobody", method: .get) { #expect($0.status == .notFound) }
        }
    }

    /// The encoded answer of a query is kept until its board changes, then encoded again.
    @Test func encodedAnswersAreReusedUntilTheBoardChanges() async throws {
        let live = MemoryLiveBoards([Self.board: ["a": 30, "b": 20]])
        try await withMemory(live: live) { memory in
            let reader = BoardReader(live: live, archive: MemoryStandingsArchive(), catalog: PushWorld.allBoards, memory: memory)
            memory.observe(.assigned([0]))
            memory.apply(update(.allTime(.guild, "g"), ["x": 1]), sequence: 10, partition: 0)
            await loaded(Self.board, in: memory)
            let first = try await reader.topJSON(Self.board, limit: 10, offset: 0)
            guard case .encoded(let kept) = memory.read(Self.board, query: "top|10|0", { _ in () }) else {
                Issue.record("the encoded page was not kept")
                return
            }
            #expect(kept == first)
            memory.apply(update(Self.board, ["c": 40]), sequence: 11, partition: 0)
            guard case .computed = memory.read(Self.board, query: "top|10|0", { _ in () }) else {
                Issue.record("a changed board still answered its old encoding")
                return
            }
            let second = try await reader.topJSON(Self.board, limit: 10, offset: 0)
            #expect(String(buffer: second).contains(#""userId":"c""#))
            #expect(second != first)
        }
    }

    /// A jump in a partition's offsets (an update not seen: here one that also changed Redis) drops the partition's
    /// boards and loads them again from Redis, which then shows the change the memory missed.
    @Test func aGapReloadsTheBoardsOfItsPartition() async throws {
        let live = MemoryLiveBoards([Self.board: ["a": 30]])
        try await withMemory(live: live) { memory in
            memory.observe(.assigned([0, 1]))
            memory.apply(update(Self.board, ["a": 30]), sequence: 1, partition: 0)
            memory.apply(update(.allTime(.guild, "other"), ["z": 1]), sequence: 7, partition: 1)
            await loaded(Self.board, in: memory)
            // Offset 2 is never seen; Redis has its change (and that of offset 3, written before it was published).
            live.setScores(["missed": 50, "b": 5], on: Self.board)
            memory.apply(update(Self.board, ["b": 5]), sequence: 3, partition: 0)
            #expect(memory.statistics.resyncs == 1)
            await loaded(Self.board, in: memory, loads: 2)
            #expect(slice(memory)??.entries.map(\.userID) == ["missed", "a", "b"])
            // Offsets back in order on partition 1: its boards stay.
            memory.apply(update(.allTime(.guild, "other"), ["z": 2]), sequence: 8, partition: 1)
            #expect(memory.holds(Self.board))
        }
    }

    /// A new incarnation of the log, or the source stopping, drops every board: memory answers nothing it cannot vouch for.
    @Test func aNewIncarnationOrAStoppedSourceDropsEveryBoard() async throws {
        let live = MemoryLiveBoards([Self.board: ["a": 30]])
        try await withMemory(live: live) { memory in
            memory.observe(.assigned([0]))
            memory.apply(update(Self.board, ["a": 30]), sequence: 1, partition: 0)
            await loaded(Self.board, in: memory)
            memory.observe(.newIncarnation)
            #expect(!memory.holds(Self.board))
            // Until a message of the new log is read, nothing is loaded again.
            #expect(memory.statistics.boards == 0)
            memory.apply(update(Self.board, ["a": 31]), sequence: 0, partition: 0)
            await loaded(Self.board, in: memory, loads: 2)
            memory.stop()
            #expect(!memory.holds(Self.board))
            #expect(slice(memory) == nil)
        }
    }

    /// Boards are only loaded once a message of their partition (of every partition, while theirs is unknown) has
    /// been read since the assignment: before, the consumer's start position may not be fixed.
    @Test func boardsAreLoadedOnlyOnceTheirPartitionHasBeenRead() {
        var state = BoardMemory.State()
        state.isActive = true
        state.assigned = [0, 1]
        #expect(!state.mayLoad(Self.board))
        state.lastOffsets[0] = 5
        #expect(!state.mayLoad(Self.board))  // its partition unknown, and partition 1 not read yet
        state.partitions[Self.board.streamID] = 0
        #expect(state.mayLoad(Self.board))
        state.partitions[Self.board.streamID] = 1
        #expect(!state.mayLoad(Self.board))
        state.lastOffsets[1] = 0
        #expect(state.mayLoad(Self.board))
        state.isActive = false
        #expect(!state.mayLoad(Self.board))
    }

    /// Bounds: past `maximumBoards` the board read least recently goes; a board larger than `maximumMembersPerBoard`
    /// is never held (its reads go to Redis).
    @Test func memoryIsBoundedAndEvictsTheColdestBoard() async throws {
        let boards = ["a", "b", "c"].map { BoardKey.allTime(.guild, $0) }
        let live = MemoryLiveBoards(Dictionary(uniqueKeysWithValues: boards.map { ($0, ["m": 1]) }))
        let large = BoardKey.allTime(.region, "large")
        live.setScores(Dictionary(uniqueKeysWithValues: (0..<11).map { ("u\($0)", Int64($0)) }), on: large)
        var limits = BoardMemory.Limits()
        limits.maximumBoards = 2
        limits.maximumMembersPerBoard = 10
        try await withMemory(live: live, limits: limits) { memory in
            memory.observe(.assigned([0]))
            memory.apply(update(.allTime(), ["x": 1]), sequence: 1, partition: 0)
            await loaded(boards[0], in: memory)
            await loaded(boards[1], in: memory)
            _ = memory.read(boards[0], query: nil) { _ in () }  // a is now read more recently than b
            await loaded(boards[2], in: memory)
            #expect(memory.holds(boards[0]) && !memory.holds(boards[1]) && memory.holds(boards[2]))
            #expect(memory.statistics.boards == 2)
            // The large board: asked for, loaded, found too large, so not held; asked again, it is not retried yet.
            _ = memory.read(large, query: nil) { _ in () }
            while !memory.isRefused(large) { await Task.yield() }
            #expect(!memory.holds(large))
            // A held board that grows past the bound leaves memory.
            memory.apply(update(boards[0], Dictionary(uniqueKeysWithValues: (0..<10).map { ("n\($0)", 1) })), sequence: 2, partition: 0)
            #expect(!memory.holds(boards[0]))
        }
    }

    /// A board whose Redis key has expired (its period closed and its retention passed) is not answered from memory.
    @Test func aBoardPastItsRedisExpiryIsNotAnsweredFromMemory() async throws {
        let catalog = LeaderboardCatalog(topN: 10, closedPeriodRetention: ["daily": 1], boards: [BoardDefinition(window: .daily, dimension: .global)])
        let today = Timestamp(millisecondsSinceEpoch: 1_780_000_000_000)  // 2026-05-28
        let clock = Mutex(today)
        let board = BoardKey(window: .daily, period: "2026-05-28", dimension: .global, value: nil)
        let live = MemoryLiveBoards([board: ["a": 1]])
        try await withMemory(live: live, catalog: catalog, now: { clock.withLock { $0 } }) { memory in
            memory.observe(.assigned([0]))
            memory.apply(update(board, ["a": 1]), sequence: 1, partition: 0)
            await loaded(board, in: memory)
            clock.withLock { $0 = Timestamp(millisecondsSinceEpoch: today.millisecondsSinceEpoch + 3 * 86_400_000) }
            #expect(slice(memory, board) == nil)
            #expect(!memory.holds(board))
        }
    }

    /// The memory path and the live boards' path answer the same (pages, neighbourhoods, standings, ties) on random
    /// boards and random updates; the Redis adapter is checked the same way in BoardMemoryRedisTests.
    @Test(arguments: [21, 22, 23] as [UInt64])
    func memoryAndLiveBoardsGiveTheSameAnswers(seed: UInt64) async throws {
        var random = SplitMix64(state: seed)
        let board = Self.board
        var initial: [String: Int64] = [:]
        for index in 0..<60 where Bool.random(using: &random) { initial["p\(index)"] = Int64.random(in: 0..<8, using: &random) }
        let live = MemoryLiveBoards([board: initial])
        let changes = (0..<30).map { _ in
            var batch: [String: Int64] = [:]
            for _ in 0..<Int.random(in: 1...5, using: &random) { batch["p\(Int.random(in: 0..<70, using: &random))"] = Int64.random(in: 0..<8, using: &random) }
            return batch
        }
        try await withMemory(live: live) { memory in
            let direct = BoardReader(live: live, archive: MemoryStandingsArchive(), catalog: PushWorld.allBoards)
            let held = BoardReader(live: live, archive: MemoryStandingsArchive(), catalog: PushWorld.allBoards, memory: memory)
            memory.observe(.assigned([0]))
            memory.apply(update(.allTime(.guild, "g"), ["x": 1]), sequence: 0, partition: 0)
            await loaded(board, in: memory)
            for (index, batch) in changes.enumerated() {
                live.setScores(batch, on: board)
                memory.apply(update(board, batch), sequence: Int64(index + 1), partition: 0)
                #expect(memory.holds(board))
                for (offset, limit) in [(0, 10), (3, 5), (50, 100), (80, 10)] {
                    let fromMemory = try await held.topJSON(board, limit: limit, offset: offset)
                    #expect(fromMemory == (try await direct.topJSON(board, limit: limit, offset: offset)))
                }
                for member in ["p0", "p7", "p33", "p69", "nobody"] {
                    let around = try await held.aroundJSON(board, userID: member, radius: 2)
                    #expect(around == (try await direct.aroundJSON(board, userID: member, radius: 2)))
                    let fromMemory = memory.read(board, query: nil) { $0?.placement(of: member) }
                    guard case .computed(let placement, _) = fromMemory else {
                        Issue.record("not held")
                        return
                    }
                    let fromLive = try await live.placements(of: member, on: [board])[board]
                    #expect(placement == fromLive)
                }
            }
        }
    }
}

extension BoardMemoryTests {
    /// Standing: where the user scored is read from the archive once, then kept until an update of that user (which
    /// may place them on a new board); the boards in memory answer without Redis.
    @Test func standingIsAnsweredFromMemoryUntilTheUserIsUpdated() async throws {
        let world = PushWorld()
        let guild = BoardKey.allTime(.guild, "dragons")
        world.live.setScores(["me": 50, "other": 70], on: Self.board)
        world.live.setScores(["me": 50, "x": 60], on: guild)
        world.archive.addPlacement(MemberPlacement(region: nil, guild: "dragons"), of: "me", window: .allTime, period: "all")
        let memory = try #require(world.parts.gateway.reader.memory)
        struct Body: Decodable {
            struct Standing: Decodable, Equatable { var board: String; var rank: Int; var members: Int }
            var standings: [Standing]
        }
        @Sendable func standing(_ client: any TestClientProtocol) async throws -> [Body.Standing] {
            try await client.execute(uri: "/v1/users/me/standing", method: .get) { response in
                #expect(response.status == .ok)
                return try PushQueryTests.decode(Body.self, response).standings.sorted { $0.board < $1.board }
            }
        }
        try await world.withClient { client in
            await world.updates.send(.assigned([0]))
            await world.updates.publish([sequenced(1, board: .allTime(.region, "eu"), user: "someone", total: 1)])
            let first = try await standing(client)
            #expect(first == [.init(board: Self.board.id, rank: 2, members: 2), .init(board: guild.id, rank: 2, members: 2)])
            let queries = world.archive.queries
            await loaded(Self.board, in: memory)
            await loaded(guild, in: memory)
            // Redis and PostgreSQL down: memory answers alone.
            world.live.fail(with: Down())
            world.archive.fail(with: Down())
            #expect(try await standing(client) == first)
            #expect(world.archive.queries == queries)
            // Read from memory alone, its encoded answer is kept (until a board of it or the user changes).
            let periods = LeaderboardWindow.allCases.sorted { $0.rawValue < $1.rawValue }.map { "\($0.rawValue)|\($0.period(containing: Timestamp.now()).key)" }
            #expect(memory.standingAnswer(of: "me", periods: periods).body != nil)
            #expect(try await standing(client) == first)
            // An update of someone else changes the ranks, not where "me" is.
            await world.updates.publish([sequenced(2, user: "third", total: 90)])
            #expect(memory.standingAnswer(of: "me", periods: periods).body == nil)
            #expect(try await standing(client) == [.init(board: Self.board.id, rank: 3, members: 3), .init(board: guild.id, rank: 2, members: 2)])
            #expect(world.archive.queries == queries)
            // An update of "me" (here: a first score in a new region) sends the next standing to the archive again.
            world.archive.fail(with: nil)
            world.live.fail(with: nil)
            world.archive.addPlacement(MemberPlacement(region: "eu", guild: "dragons"), of: "me", window: .allTime, period: "all")
            world.live.setScores(["me": 55], on: .allTime(.region, "eu"))
            await world.updates.publish([sequenced(3, board: .allTime(.region, "eu"), user: "me", total: 55)])
            let after = try await standing(client)
            #expect(after.map(\.board).contains(BoardKey.allTime(.region, "eu").id))
            #expect(world.archive.queries > queries)
        }
    }
}

extension BoardMemoryTests {
    /// Bad input tried: many distinct pages of one board (as a client walking offsets would ask). The encoded answers
    /// kept stay within their byte bound; the answers stay right.
    @Test func encodedAnswersStayWithinTheirByteBound() async throws {
        let live = MemoryLiveBoards([Self.board: Dictionary(uniqueKeysWithValues: (0..<200).map { ("u\($0)", Int64($0)) })])
        var limits = BoardMemory.Limits()
        limits.maximumAnswerBytes = 4_096
        try await withMemory(live: live, limits: limits) { memory in
            let reader = BoardReader(live: live, archive: MemoryStandingsArchive(), catalog: PushWorld.allBoards, memory: memory)
            memory.observe(.assigned([0]))
            memory.apply(update(.allTime(.guild, "g"), ["x": 1]), sequence: 1, partition: 0)
            await loaded(Self.board, in: memory)
            for offset in 0..<100 {
                let body = try await reader.topJSON(Self.board, limit: 20, offset: offset)
                #expect(String(buffer: body).contains(#""userId":"u\#(199 - offset)""#))
                #expect(memory.answerBytes <= 4_096)
            }
        }
    }
}
