import Foundation
import NIOCore
import ScoreboardCore

/// Reads boards: from the live boards while a period has live data, from the standings archive once it has expired.
/// Ranks are competition ranks (ties share a rank): the rank of a score is one more than the number of strictly
/// higher scores.
///
/// Reads that would reach the archive (a period no longer live) first check that the region or guild has any score
/// at all (``knowsDimensionValue(_:)``; if not, the board is empty and nothing is read), then go through
/// ``ArchiveReads``: a small cache of recent pages and a cap on concurrent queries, so that anonymous clients cannot
/// queue full-board aggregations.
///
/// Live boards the ``BoardMemory`` holds are answered from it, with the same ranks and order as Redis's; their
/// encoded answers are kept until the board changes (``topJSON(_:limit:offset:)``, ``aroundJSON(_:userID:radius:)``).
public struct BoardReader: Sendable {
    let live: any LiveBoards
    let standings: any StandingsArchive
    let catalog: LeaderboardCatalog
    public let archive: ArchiveReads
    let knownValues: KnownDimensionValues
    /// The hot boards in memory; `nil`: every read goes to Redis.
    public let memory: BoardMemory?

    public init(
        live: any LiveBoards, archive: any StandingsArchive, catalog: LeaderboardCatalog, archiveLimits: ArchiveReads.Limits = .init(),
        memory: BoardMemory? = nil
    ) {
        self.live = live
        self.standings = archive
        self.catalog = catalog
        self.archive = ArchiveReads(limits: archiveLimits)
        self.knownValues = KnownDimensionValues()
        self.memory = memory
    }

    /// Whether the stream's region or guild has ever had a score (global streams always exist). The all-time board
    /// of a value is created by its first score and never expires, so one existence check answers it; known values
    /// are remembered, so a board read pays it once per value.
    public func knowsDimensionValue(_ stream: BoardStream) async throws -> Bool {
        guard let value = stream.value else { return true }
        let allTime = BoardStream(window: .allTime, dimension: stream.dimension, value: value)
        // Without an all-time board for the dimension there is nothing to check against: accept.
        guard catalog.declares(allTime) else { return true }
        if knownValues.contains(allTime.id) { return true }
        let board = allTime.board(period: LeaderboardWindow.allTime.period(containing: Timestamp(millisecondsSinceEpoch: 0)).key)
        let exists: Bool
        if case .computed(let held, _) = memory?.read(board, query: nil, { $0 != nil }) { exists = held } else { exists = try await live.exists(board) }
        guard exists else { return false }
        knownValues.insert(allTime.id)
        return true
    }

    public func top(_ board: BoardKey, limit: Int, offset: Int) async throws -> BoardPage {
        if let slice = try await livePage(board, offset: offset, limit: limit) { return page(board, slice, source: "live") }
        // A region or guild without any score has an empty board in every period: nothing to read.
        guard try await knowsDimensionValue(board.stream) else { return page(board, BoardSlice(members: 0, entries: []), source: "archive") }
        let archived = try await archive.read(board: board.id, query: "top|\(limit)|\(offset)") { [standings] in
            page(board, try await standings.page(of: board, offset: offset, limit: limit), source: "archive")
        }
        return archived ?? page(board, BoardSlice(members: 0, entries: []), source: "archive")
    }

    /// The members within `radius` places of `userID`; `nil` when the user is not on the board.
    public func around(_ board: BoardKey, userID: String, radius: Int) async throws -> BoardPage? {
        switch try await liveNeighbourhood(board, userID: userID, radius: radius) {
        case .slice(let slice):
            return page(board, slice, source: "live")
        case .notOnBoard:
            return nil
        case .noBoard:
            guard try await knowsDimensionValue(board.stream) else { return nil }
            return try await archive.read(board: board.id, query: "around|\(userID)|\(radius)") { [standings] in
                try await standings.neighbourhood(of: userID, on: board, radius: radius).map { page(board, $0, source: "archive") }
            }
        }
    }

    /// The user's score, rank and percentile on every board of every declared window's current period.
    ///
    /// Where the user scored comes from memory when it has it (kept until an update of the user), else from the
    /// archive, every window at once (concurrent queries, not one after another); the boards in memory answer at
    /// once, the others in one round trip to Redis.
    public func standings(userID: String, now: Timestamp) async throws -> [Standing] {
        try await readStandings(userID: userID, now: now).standings
    }

    /// Where a user scored in one period (`window|period`): a child task's result (a struct, never a tuple: see
    /// SourceRulesTests).
    struct PeriodPlacements: Sendable {
        var period: String
        var placements: [MemberPlacement]
    }

    /// A standing read: the standings, the periods they are of, and the version of every board read when all of them
    /// came from memory (`nil` when some came from Redis).
    struct StandingsRead {
        var standings: [Standing]
        var periods: [String]
        var versions: [BoardKey: Int]?
    }

    func readStandings(userID: String, now: Timestamp) async throws -> StandingsRead {
        let windows = Set(catalog.boards.map(\.window)).sorted(by: { $0.rawValue < $1.rawValue })
        let periods = windows.map { "\($0.rawValue)|\($0.period(containing: now).key)" }
        let (known, isReading) = memory?.placements(of: userID, periods: periods) ?? ([:], false)
        var read: [String: [MemberPlacement]]?
        do {
            if known.count < periods.count { read = try await withThrowingTaskGroup(of: PeriodPlacements.self) { group in
                for (window, period) in zip(windows, periods) where known[period] == nil {
                    group.addTask { [standings] in
                        PeriodPlacements(
                            period: period, placements: try await standings.placements(of: userID, window: window, period: window.period(containing: now).key))
                    }
                }
                var read: [String: [MemberPlacement]] = [:]
                for try await found in group { read[found.period] = found.placements }
                return read
            } }
        } catch {
            if isReading { memory?.endPlacementRead(of: userID, periods: periods, read: nil) }
            throw error
        }
        if isReading { memory?.endPlacementRead(of: userID, periods: periods, read: read) }
        let found = periods.map { known[$0] ?? read?[$0] ?? [] }
        var boards: [BoardKey] = []
        for (window, placements) in zip(windows, found) {
            let period = window.period(containing: now).key
            for placement in placements {
                for definition in catalog.boards where definition.window == window {
                    if let board = definition.dimension.board(window: window, period: period, region: placement.region, guild: placement.guild),
                       !boards.contains(board) {
                        boards.append(board)
                    }
                }
            }
        }
        let (held, versions) = memory?.placements(of: userID, on: boards) ?? ([:], [:])
        var placements = held.compactMapValues { $0 }
        let unheld = boards.filter { held[$0] == nil }
        if !unheld.isEmpty { placements.merge(try await live.placements(of: userID, on: unheld)) { held, _ in held } }
        let answer = boards.compactMap { board in placements[board].map { Standing(board: board, placement: $0) } }
        return StandingsRead(standings: answer, periods: periods, versions: unheld.isEmpty && memory != nil ? versions : nil)
    }

    /// ``standings(userID:now:)`` as the JSON body of its answer; from memory, the same bytes until one of its boards
    /// changes or the user is updated.
    public func standingJSON(userID: String, now: Timestamp) async throws -> ByteBuffer {
        struct Body: Encodable {
            var userId: String
            var standings: [Standing]
        }
        let periods = Set(catalog.boards.map(\.window)).sorted(by: { $0.rawValue < $1.rawValue }).map { "\($0.rawValue)|\($0.period(containing: now).key)" }
        let (kept, epoch) = memory?.standingAnswer(of: userID, periods: periods) ?? (nil, 0)
        if let kept { return kept }
        let read = try await readStandings(userID: userID, now: now)
        let body = try Self.json(Body(userId: userID, standings: read.standings))
        if let versions = read.versions { memory?.storeStanding(body, of: userID, periods: read.periods, versions: versions, epoch: epoch) }
        return body
    }

    // MARK: - Encoded answers

    /// ``top(_:limit:offset:)`` as the JSON body of its answer; from memory, the same bytes until the board changes.
    public func topJSON(_ board: BoardKey, limit: Int, offset: Int) async throws -> ByteBuffer {
        let query = "top|\(limit)|\(offset)"
        switch memory?.read(board, query: query, { $0?.slice(from: offset, count: limit) }) {
        case .encoded(let body): return body
        case .computed(.some(let slice), let version):
            let body = try Self.json(page(board, slice, source: "live"))
            memory?.store(body, board: board, query: query, version: version)
            return body
        default: return try Self.json(try await top(board, limit: limit, offset: offset))
        }
    }

    /// ``around(_:userID:radius:)`` as the JSON body of its answer (`nil`: not on the board); from memory, the same
    /// bytes until the board changes.
    public func aroundJSON(_ board: BoardKey, userID: String, radius: Int) async throws -> ByteBuffer? {
        let query = "around|\(userID)|\(radius)"
        switch memory?.read(board, query: query, { ranking in ranking.map { $0.neighbourhood(of: userID, radius: radius) } }) {
        case .encoded(let body): return body.readableBytes == 0 ? nil : body
        case .computed(.some(let slice), let version):
            // Not on the board is kept as an empty body.
            let body = try slice.map { try Self.json(page(board, $0, source: "live")) } ?? ByteBuffer()
            memory?.store(body, board: board, query: query, version: version)
            return body.readableBytes == 0 ? nil : body
        default: return try await around(board, userID: userID, radius: radius).map { try Self.json($0) }
        }
    }

    /// JSON as the query API writes it: sorted keys, slashes as they are.
    static func json<T: Encodable>(_ value: T) throws -> ByteBuffer {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return ByteBuffer(bytes: try encoder.encode(value))
    }

    // MARK: - Live boards: memory, else Redis

    private func livePage(_ board: BoardKey, offset: Int, limit: Int) async throws -> BoardSlice? {
        if case .computed(let slice, _) = memory?.read(board, query: nil, { $0?.slice(from: offset, count: limit) }) { return slice }
        return try await live.page(of: board, offset: offset, limit: limit)
    }

    private func liveNeighbourhood(_ board: BoardKey, userID: String, radius: Int) async throws -> BoardNeighbourhood {
        let held = memory?.read(board, query: nil) { ranking -> BoardNeighbourhood in
            guard let ranking else { return .noBoard }
            return ranking.neighbourhood(of: userID, radius: radius).map { .slice($0) } ?? .notOnBoard
        }
        if case .computed(let neighbourhood, _) = held { return neighbourhood }
        return try await live.neighbourhood(of: userID, on: board, radius: radius)
    }

    /// The top N of a board for a stream snapshot.
    public func snapshot(_ board: BoardKey) async throws -> BoardPage {
        try await top(board, limit: catalog.topN, offset: 0)
    }

    private func page(_ board: BoardKey, _ slice: BoardSlice, source: String) -> BoardPage {
        BoardPage(
            board: board.id, window: board.window, period: board.period, dimension: board.dimension, value: board.value, members: slice.members,
            entries: slice.entries, source: source)
    }
}
