import ScoreboardCore
import ScoreboardHTTP

/// Recomputes the Redis boards from PostgreSQL's totals: every all-time board and every period still retained.
///
/// It runs while the workers' batches are paused (``WorkerLedger/withBatchesPaused(_:)``), so it reads totals no batch
/// in flight is changing and writes nothing older than what a worker already projected: run under traffic, the
/// boards are exact once the traffic stops.
public struct BoardRebuild: Sendable {
    let ledger: any WorkerLedger
    let boards: any BoardStore
    let catalog: LeaderboardCatalog

    public init(ledger: any WorkerLedger, boards: any BoardStore, catalog: LeaderboardCatalog) {
        self.ledger = ledger
        self.boards = boards
        self.catalog = catalog
    }

    /// What one window's rebuild wrote.
    public struct WindowReport: Sendable {
        public var window: LeaderboardWindow
        public var boards: Int
        public var totalRows: Int
    }

    /// Rebuilds every window, calling `progress` after each.
    /// - Returns: The number of boards written.
    @discardableResult
    public func run(progress: @escaping @Sendable (WindowReport) -> Void = { _ in }) async throws -> Int {
        let catalog = self.catalog
        let ledger = self.ledger
        let boards = self.boards
        return try await ledger.withBatchesPaused {
            let now = Timestamp.now()
            var count = 0
            for window in Set(catalog.boards.map(\.window)).sorted(by: { $0.rawValue < $1.rawValue }) {
                let totals = try await ledger.totals(window: window)
                let scores = BatchAggregation.boardScores(totals: totals, catalog: catalog)
                    .filter { board, _ in catalog.redisExpiry(of: board).map { $0 > now } ?? true }
                try await boards.replaceBoards(scores)
                progress(WindowReport(window: window, boards: scores.count, totalRows: totals.count))
                count += scores.count
            }
            return count
        }
    }
}
