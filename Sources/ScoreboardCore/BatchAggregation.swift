/// Pre-aggregates a batch of events before anything is written.
///
/// A member's window total is stored once per (member, window, period, region, guild): the global, region and guild
/// boards of one window project that same row, so a batch writes one row per member and window instead of one per
/// board (a 12-board catalog would otherwise cost 12 writes per event). Points are attributed to the region and guild
/// each event carried, so a member who moves guild keeps old points on the old guild's board.
public struct BatchAggregation: Sendable {
    public struct TotalKey: Hashable, Sendable {
        public var userID: String
        public var window: LeaderboardWindow
        public var period: String
        public var region: String?
        public var guild: String?

        public init(userID: String, window: LeaderboardWindow, period: String, region: String?, guild: String?) {
            self.userID = userID
            self.window = window
            self.period = period
            self.region = region
            self.guild = guild
        }
    }

    /// Points per total row, for the windows the catalog's boards use.
    public private(set) var pointsByTotal: [TotalKey: Int64] = [:]
    /// Events kept, in order, after dropping repeats of an event id within the batch.
    public private(set) var events: [ScoreEvent] = []

    public init(events batch: [ScoreEvent], catalog: LeaderboardCatalog) {
        let windows = Set(catalog.boards.map(\.window))
        var seen: Set<String> = []
        for event in batch where seen.insert(event.eventID).inserted {
            events.append(event)
            for window in windows {
                let key = TotalKey(
                    userID: event.userID, window: window, period: window.period(containing: event.occurredAt).key,
                    region: event.region, guild: event.guild)
                pointsByTotal[key, default: 0] += event.points
            }
        }
    }

    /// Given each total row's new absolute value, the absolute score of every member on every board touched:
    /// global sums all the member's rows of that period, region boards sum the rows of that region, and so on.
    /// - Important: `totals` must hold *every* row of each member and period involved, not only the rows a batch
    ///   touched, or a global score would miss the member's points under other regions or guilds.
    public static func boardScores(totals: [TotalKey: Int64], catalog: LeaderboardCatalog) -> [BoardKey: [String: Int64]] {
        var scores: [BoardKey: [String: Int64]] = [:]
        for (key, total) in totals {
            for board in catalog.boards where board.window == key.window {
                guard let boardKey = board.dimension.board(window: key.window, period: key.period, region: key.region, guild: key.guild)
                else { continue }
                scores[boardKey, default: [:]][key.userID, default: 0] += total
            }
        }
        return scores
    }
}
