import ScoreboardCore
import ServiceLifecycle
import Synchronization

// The push role's ports in memory, with the same answers as the real adapters (ranks and order as Redis gives them).
// Each can be told to fail while "down", so a fault test runs in milliseconds beside the real-server one.

/// Boards in memory, read like Redis sorted sets: highest score first, ties by member descending (`ZREVRANGE`),
/// competition ranks.
public final class MemoryLiveBoards: LiveBoards, Sendable {
    private let boards: Mutex<[BoardKey: [String: Int64]]>
    private let outage = MemoryOutage()

    public init(_ boards: [BoardKey: [String: Int64]] = [:]) {
        self.boards = Mutex(boards)
    }

    /// Sets these members' scores on `board` (creating it), as a worker's batch does.
    public func setScores(_ scores: [String: Int64], on board: BoardKey) {
        boards.withLock { $0[board, default: [:]].merge(scores) { _, new in new } }
    }

    /// Removes the board, as an expired Redis key.
    public func expire(_ board: BoardKey) { _ = boards.withLock { $0.removeValue(forKey: board) } }

    /// While `error` is set every call throws it (Redis is down); `nil` brings the store back.
    public func fail(with error: (any Error)?) { outage.set(error) }

    public func exists(_ board: BoardKey) async throws -> Bool {
        try outage.check()
        return boards.withLock { $0[board] != nil }
    }

    public func page(of board: BoardKey, offset: Int, limit: Int) async throws -> BoardSlice? {
        try outage.check()
        return boards.withLock { $0[board] }.map { MemoryRanking.slice($0, from: offset, count: limit) }
    }

    public func neighbourhood(of member: String, on board: BoardKey, radius: Int) async throws -> BoardNeighbourhood {
        try outage.check()
        guard let scores = boards.withLock({ $0[board] }) else { return .noBoard }
        return MemoryRanking.neighbourhood(scores, of: member, radius: radius).map { .slice($0) } ?? .notOnBoard
    }

    public func placements(of member: String, on boards: [BoardKey]) async throws -> [BoardKey: LivePlacement] {
        try outage.check()
        let all = self.boards.withLock { $0 }
        var placements: [BoardKey: LivePlacement] = [:]
        for board in boards {
            guard let scores = all[board], let score = scores[member] else { continue }
            placements[board] = LivePlacement(score: score, rank: scores.values.filter { $0 > score }.count + 1, members: scores.count)
        }
        return placements
    }

    public func probe() async throws { try outage.check() }
}

/// Archived standings in memory: the final boards of closed periods and where each member scored.
public final class MemoryStandingsArchive: StandingsArchive, Sendable {
    struct State {
        var boards: [BoardKey: [String: Int64]] = [:]
        var placements: [String: [MemberPlacement]] = [:]
        var queries = 0
    }

    private let state = Mutex(State())
    private let outage = MemoryOutage()

    public init() {}

    /// Stores the final standings of a closed board period.
    public func setScores(_ scores: [String: Int64], on board: BoardKey) {
        state.withLock { $0.boards[board, default: [:]].merge(scores) { _, new in new } }
    }

    /// Records that `member` scored under `placement` in `period` of `window`.
    public func addPlacement(_ placement: MemberPlacement, of member: String, window: LeaderboardWindow, period: String) {
        state.withLock { $0.placements["\(member)|\(window.rawValue)|\(period)", default: []].append(placement) }
    }

    /// While `error` is set every call throws it (PostgreSQL is down); `nil` brings the store back.
    public func fail(with error: (any Error)?) { outage.set(error) }

    /// Calls answered or failed so far (what cache tests count).
    public var queries: Int { state.withLock { $0.queries } }

    public func page(of board: BoardKey, offset: Int, limit: Int) async throws -> BoardSlice {
        let scores = try read { $0.boards[board] ?? [:] }
        return MemoryRanking.slice(scores, from: offset, count: limit)
    }

    public func neighbourhood(of member: String, on board: BoardKey, radius: Int) async throws -> BoardSlice? {
        let scores = try read { $0.boards[board] ?? [:] }
        return MemoryRanking.neighbourhood(scores, of: member, radius: radius)
    }

    public func placements(of member: String, window: LeaderboardWindow, period: String) async throws -> [MemberPlacement] {
        try read { $0.placements["\(member)|\(window.rawValue)|\(period)"] ?? [] }
    }

    private func read<T>(_ body: (State) -> T) throws -> T {
        state.withLock { $0.queries += 1 }
        try outage.check()
        return state.withLock { body($0) }
    }
}

/// An updates log in memory. `send` returns once the feed has handled the event, so a test can look at the result
/// at once, without waiting for a condition.
public final class MemoryUpdateSource: UpdateSource, Sendable {
    typealias Delivery = (event: UpdateSourceEvent, handled: CheckedContinuation<Void, Never>)
    private let deliveries: AsyncStream<Delivery>
    private let input: AsyncStream<Delivery>.Continuation

    public init() {
        (deliveries, input) = AsyncStream.makeStream(of: Delivery.self)
    }

    /// Hands `event` to the feed and returns once it is handled: the feed must be running (or have stopped, then it
    /// returns at once).
    public func send(_ event: UpdateSourceEvent) async {
        await withCheckedContinuation { continuation in
            if case .terminated = input.yield((event, continuation)) { continuation.resume() }
        }
    }

    /// Publishes updates on `partition`, as a worker would; their sequences are what the caller gives.
    public func publish(_ updates: [SequencedUpdate], partition: Int32 = 0) async {
        await send(.updates(updates.map { PartitionedUpdate(partition: partition, update: $0) }))
    }

    public func run(_ handle: @escaping @Sendable (UpdateSourceEvent) -> Void) async throws {
        for await delivery in deliveries.cancelOnGracefulShutdown() {
            handle(delivery.event)
            delivery.handled.resume()
        }
        // Later sends return at once instead of waiting for a feed that is gone.
        input.finish()
    }
}

/// Whether a memory port is "down", and with what error.
final class MemoryOutage: Sendable {
    private let error = Mutex<(any Error)?>(nil)

    func set(_ error: (any Error)?) { self.error.withLock { $0 = error } }

    func check() throws {
        if let error = error.withLock({ $0 }) { throw error }
    }
}

/// Redis's order and competition ranks over a dictionary of scores.
enum MemoryRanking {
    static func ordered(_ scores: [String: Int64]) -> [(userID: String, score: Int64)] {
        scores.map { (userID: $0.key, score: $0.value) }.sorted { $0.score != $1.score ? $0.score > $1.score : $0.userID > $1.userID }
    }

    static func slice(_ scores: [String: Int64], from offset: Int, count: Int) -> BoardSlice {
        let all = ordered(scores)
        let range = min(offset, all.count)..<min(offset + count, all.count)
        return BoardSlice(members: all.count, entries: range.map { ranked(all, at: $0) })
    }

    static func neighbourhood(_ scores: [String: Int64], of member: String, radius: Int) -> BoardSlice? {
        let all = ordered(scores)
        guard let position = all.firstIndex(where: { $0.userID == member }) else { return nil }
        let range = max(0, position - radius)..<min(all.count, position + radius + 1)
        return BoardSlice(members: all.count, entries: range.map { ranked(all, at: $0) })
    }

    private static func ranked(_ all: [(userID: String, score: Int64)], at index: Int) -> RankedMember {
        let first = all.firstIndex { $0.score == all[index].score } ?? index
        return RankedMember(rank: first + 1, userID: all[index].userID, score: all[index].score)
    }
}
