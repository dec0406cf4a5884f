/// The action catalog (`pipelines/actions.yaml`): what each action is worth and how often a user may score it.
public struct ActionCatalog: Hashable, Sendable, Codable {
    public var actions: [String: ActionDefinition]

    public init(actions: [String: ActionDefinition]) {
        self.actions = actions
    }

    /// The points for `action`, or `nil` when the catalog does not know it.
    public func points(for action: String) -> Int64? { actions[action]?.points }

    /// - Throws: ``ScoreboardError`` with code `invalidDefinition`, listing every problem.
    public func validate() throws(ScoreboardError) {
        var problems: [String] = []
        if actions.isEmpty { problems.append("actions: at least one") }
        for (id, action) in actions.sorted(by: { $0.key < $1.key }) {
            if let problem = ScoreEvent.identifierProblem(id) { problems.append("\(id): the id \(problem)") }
            if action.points < 0 || action.points > ScoreEvent.Limits.maximumPoints {
                problems.append("\(id).points: from 0 to \(ScoreEvent.Limits.maximumPoints)")
            }
            for limit in action.limits where limit.count < 1 {
                problems.append("\(id).limits: a count of at least 1 per \(limit.per.rawValue)")
            }
        }
        if !problems.isEmpty { throw ScoreboardError(code: .invalidDefinition, reasons: problems.map { "actions: \($0)" }) }
    }
}

public struct ActionDefinition: Hashable, Sendable, Codable {
    public var points: Int64
    public var limits: [ActionLimit]

    public init(points: Int64, limits: [ActionLimit]) {
        self.points = points
        self.limits = limits
    }
}

/// At most `count` scores of the action per user in each `per`.
public struct ActionLimit: Hashable, Sendable, Codable {
    public var count: Int
    public var per: Period

    public enum Period: String, Hashable, Sendable, Codable {
        /// Sliding windows of this length.
        case second, minute, hour
        /// The UTC calendar day: resets at midnight UTC (a "once per day" bonus).
        case utcDay = "utc-day"

        /// The sliding window's length in milliseconds; `nil` for calendar periods.
        public var slidingMilliseconds: Int64? {
            switch self {
            case .second: return 1_000
            case .minute: return 60_000
            case .hour: return 3_600_000
            case .utcDay: return nil
            }
        }
    }

    public init(count: Int, per: Period) {
        self.count = count
        self.per = per
    }
}
