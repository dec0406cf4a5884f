/// Runs the fraud detector over evaluation traffic (``FraudTrafficRecord``s) in event time, as fast as it can, and
/// scores it at the user level beside a single events-per-hour threshold. The same detector code the workers run:
/// actions become ``FraudObservation``s priced by the action catalog, replays become `action-token-replayed`
/// rejections.
public struct FraudEvaluation: Sendable {
    /// Precision and recall of one set of flagged users against the bots.
    public struct Score: Hashable, Sendable {
        public var flagged: Int
        public var truePositives: Int
        public var falsePositives: Int
        public var falseNegatives: Int

        public init(flagged: Set<String>, bots: Set<String>) {
            self.flagged = flagged.count
            truePositives = flagged.intersection(bots).count
            falsePositives = flagged.subtracting(bots).count
            falseNegatives = bots.subtracting(flagged).count
        }

        /// 1 when nothing was flagged (no false alarm was raised).
        public var precision: Double { flagged == 0 ? 1 : Double(truePositives) / Double(flagged) }
        public var recall: Double { truePositives + falseNegatives == 0 ? 1 : Double(truePositives) / Double(truePositives + falseNegatives) }
        public var f1: Double { precision + recall == 0 ? 0 : 2 * precision * recall / (precision + recall) }
    }

    /// What one user did and what was found.
    public struct UserOutcome: Hashable, Sendable {
        public var user: String
        /// `nil` in unlabelled traffic.
        public var label: String?
        public var actions: Int
        public var replays: Int
        /// The most actions in any trailing hour: the threshold baseline's one feature.
        public var peakActionsPerHour: Int
        /// The flags raised (outcome `flag`), in the order they were raised.
        public var flags: [FraudFlag]
        /// Findings that are only logged (unusual hours).
        public var logged: [FraudFlag]
        /// The user's profile features (mean and standard deviation of each feature key, sorted by key): what the
        /// IsolationForest baseline is given.
        public var profileFeatures: [(name: String, value: Double)]

        public var isBot: Bool? { label.map(FraudTrafficRecord.isBotLabel) }

        public static func == (lhs: UserOutcome, rhs: UserOutcome) -> Bool {
            lhs.user == rhs.user && lhs.label == rhs.label && lhs.actions == rhs.actions && lhs.flags == rhs.flags
        }
        public func hash(into hasher: inout Hasher) { hasher.combine(user) }
    }

    public var users: [UserOutcome]
    public var actions: Int
    public var replays: Int
    public var state: FraudState

    /// Runs `rules` over `records` (sorted by `t`; ties keep their order), `t` counted from `start`.
    public static func run(records: [FraudTrafficRecord], rules: FraudRuleSet, actions catalog: ActionCatalog, start: Timestamp) -> FraudEvaluation {
        var detector = FraudDetector(rules: rules)
        var order: [String] = []
        var byUser: [String: UserOutcome] = [:]
        var hourWindows: [String: HourWindow] = [:]
        var actionCount = 0, replayCount = 0
        let sorted = records.enumerated().sorted { ($0.element.t, $0.offset) < ($1.element.t, $1.offset) }
        for (index, record) in sorted {
            if byUser[record.user] == nil {
                order.append(record.user)
                byUser[record.user] = UserOutcome(
                    user: record.user, label: record.label, actions: 0, replays: 0, peakActionsPerHour: 0, flags: [], logged: [], profileFeatures: [])
            }
            let time = Timestamp(millisecondsSinceEpoch: start.millisecondsSinceEpoch + Int64((record.t * 1_000).rounded()))
            let found: [FraudFlag]
            if record.replay {
                replayCount += 1
                byUser[record.user]!.replays += 1
                found = detector.observe(FraudRejectionSignal(
                    rejectionID: "r\(index)", userID: record.user, reason: "action-token-replayed", occurredAt: time))
            } else {
                actionCount += 1
                byUser[record.user]!.actions += 1
                let inHour = hourWindows[record.user, default: HourWindow()].add(time.millisecondsSinceEpoch)
                byUser[record.user]!.peakActionsPerHour = max(byUser[record.user]!.peakActionsPerHour, inHour)
                found = detector.observe(FraudObservation(
                    eventID: "e\(index)", userID: record.user, action: record.action, points: catalog.points(for: record.action) ?? 0,
                    occurredAt: time))
            }
            for flag in found {
                if flag.outcome == .flag { byUser[flag.userID]!.flags.append(flag) } else { byUser[flag.userID]!.logged.append(flag) }
            }
        }
        let featureKeys = Set(detector.state.users.values.flatMap { $0.features.keys }).sorted()
        let users = order.map { id in
            var outcome = byUser[id]!
            let profile = detector.state.users[id]
            outcome.profileFeatures = featureKeys.flatMap { key -> [(name: String, value: Double)] in
                let statistics = profile?.features[key] ?? WelfordStatistics()
                return [(key + ".mean", statistics.mean), (key + ".sd", statistics.standardDeviation)]
            }
            return outcome
        }
        return FraudEvaluation(users: users, actions: actionCount, replays: replayCount, state: detector.state)
    }

    /// Whether every user carries a label.
    public var isLabelled: Bool { !users.isEmpty && users.allSatisfy { $0.label != nil } }
    public var bots: Set<String> { Set(users.filter { $0.isBot == true }.map(\.user)) }
    public var flaggedUsers: Set<String> { Set(users.filter { !$0.flags.isEmpty }.map(\.user)) }
    /// The rule ids of flag outcome, in the order of the rule set.
    public func flaggedUsers(byRule rule: String) -> Set<String> { Set(users.filter { $0.flags.contains { $0.ruleID == rule } }.map(\.user)) }

    /// The detector, overall (any rule that flags).
    public var detectorScore: Score { Score(flagged: flaggedUsers, bots: bots) }

    /// The events-per-hour baseline with the threshold that serves it best on this very traffic (chosen with the
    /// labels, which favours the baseline): the highest recall at precision ≥ `minimumPrecision`, else the best F1.
    public func bestThresholdBaseline(minimumPrecision: Double = 0.9) -> (threshold: Int, score: Score) {
        let bots = self.bots
        let candidates = Set(users.map(\.peakActionsPerHour)).sorted()
        var best: (threshold: Int, score: Score)?
        func better(_ a: Score, than b: Score) -> Bool {
            let aMeets = a.precision >= minimumPrecision, bMeets = b.precision >= minimumPrecision
            if aMeets != bMeets { return aMeets }
            return aMeets ? (a.recall, a.precision) > (b.recall, b.precision) : a.f1 > b.f1
        }
        for threshold in candidates {
            let score = Score(flagged: Set(users.filter { $0.peakActionsPerHour >= threshold }.map(\.user)), bots: bots)
            if best.map({ better(score, than: $0.score) }) ?? true { best = (threshold, score) }
        }
        return best ?? (0, Score(flagged: [], bots: bots))
    }

    /// The events-per-hour baseline at a given threshold (flag users with at least `threshold` actions in an hour).
    public func thresholdBaseline(_ threshold: Int) -> Score {
        Score(flagged: Set(users.filter { $0.peakActionsPerHour >= threshold }.map(\.user)), bots: bots)
    }
}

/// The actions of the trailing hour, for the baseline's peak: a queue with a moving head (a bot acting several times
/// a second keeps thousands of times in its hour; removing from the front each time would be quadratic).
private struct HourWindow {
    var times: [Int64] = []
    var head = 0

    /// Adds an action at `now` (ms) and returns how many fall in the hour ending at it.
    mutating func add(_ now: Int64) -> Int {
        times.append(now)
        while times[head] <= now - 3_600_000 { head += 1 }
        if head > 4_096 {
            times.removeFirst(head)
            head = 0
        }
        return times.count - head
    }
}
