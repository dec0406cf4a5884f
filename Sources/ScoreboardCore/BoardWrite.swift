/// What a board write left in the store: each written member's score as stored afterwards (at least the one written:
/// boards only ever rise, see `RedisBoardStore`) and its competition rank where it is inside the catalog's top N.
public struct BoardWrite: Sendable, Hashable {
    public var scores: [BoardKey: [String: Int64]]
    public var ranks: [BoardKey: [String: Int]]

    public init(scores: [BoardKey: [String: Int64]] = [:], ranks: [BoardKey: [String: Int]] = [:]) {
        self.scores = scores
        self.ranks = ranks
    }
}
