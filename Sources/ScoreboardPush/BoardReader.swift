import ScoreboardCore

/// Reads boards: from the live boards while a period has live data, from the standings archive once it has expired.
/// Ranks are competition ranks (ties share a rank): the rank of a score is one more than the number of strictly
/// higher scores.
///
/// Reads that would reach the archive (a period no longer live) first check that the region or guild has any score
/// at all (``knowsDimensionValue(_:)``; if not, the board is empty and nothing is read), then go through
/// ``ArchiveReads``: a small cache of recent pages and a cap on concurrent queries, so that anonymous clients cannot
/// queue full-board aggregations.
public struct BoardReader: Sendable {
    let live: any LiveBoards
    let standings: any StandingsArchive
    let catalog: LeaderboardCatalog
    public let archive: ArchiveReads
    let knownValues: KnownDimensionValues

    public init(live: any LiveBoards, archive: any StandingsArchive, catalog: LeaderboardCatalog, archiveLimits: ArchiveReads.Limits = .init()) {
        self.live = live
        self.standings = archive
        self.catalog = catalog
        self.archive = ArchiveReads(limits: archiveLimits)
        self.knownValues = KnownDimensionValues()
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
        guard try await live.exists(board) else { return false }
        knownValues.insert(allTime.id)
        return true
    }

    public func top(_ board: BoardKey, limit: Int, offset: Int) async throws -> BoardPage {
        if let slice = try await live.page(of: board, offset: offset, limit: limit) { return page(board, slice, source: "live") }
        // A region or guild without any score has an empty board in every period: nothing to read.
        guard try await knowsDimensionValue(board.stream) else { return page(board, BoardSlice(members: 0, entries: []), source: "archive") }
        let archived = try await archive.read(board: board.id, query: "top|\(limit)|\(offset)") { [standings] in
            page(board, try await standings.page(of: board, offset: offset, limit: limit), source: "archive")
        }
        return archived ?? page(board, BoardSlice(members: 0, entries: []), source: "archive")
    }

    /// The members within `radius` places of `userID`; `nil` when the user is not on the board.
    public func around(_ board: BoardKey, userID: String, radius: Int) async throws -> BoardPage? {
        switch try await live.neighbourhood(of: userID, on: board, radius: radius) {
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
    public func standings(userID: String, now: Timestamp) async throws -> [Standing] {
        var boards: [BoardKey] = []
        for window in Set(catalog.boards.map(\.window)).sorted(by: { $0.rawValue < $1.rawValue }) {
            let period = window.period(containing: now).key
            for placement in try await standings.placements(of: userID, window: window, period: period) {
                for definition in catalog.boards where definition.window == window {
                    if let board = definition.dimension.board(window: window, period: period, region: placement.region, guild: placement.guild),
                       !boards.contains(board) {
                        boards.append(board)
                    }
                }
            }
        }
        let placements = try await live.placements(of: userID, on: boards)
        return boards.compactMap { board in placements[board].map { Standing(board: board, placement: $0) } }
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
