/// One accepted action as the fraud rules see it (from a ``ScoreEvent``).
public struct FraudObservation: Hashable, Sendable {
    public var eventID: String
    public var userID: String
    public var action: String
    public var points: Int64
    public var occurredAt: Timestamp

    public init(eventID: String, userID: String, action: String, points: Int64, occurredAt: Timestamp) {
        self.eventID = eventID
        self.userID = userID
        self.action = action
        self.points = points
        self.occurredAt = occurredAt
    }

    public init(_ event: ScoreEvent) {
        self.init(eventID: event.eventID, userID: event.userID, action: event.action, points: event.points, occurredAt: event.occurredAt)
    }
}

/// One refused request of a known user as the fraud rules see it (from a ``Rejection`` of the rejections topic).
public struct FraudRejectionSignal: Hashable, Sendable {
    public var rejectionID: String
    public var userID: String
    /// The problem type's last path segment: `action-token-replayed`, `invalid-action-token`, ….
    public var reason: String
    public var occurredAt: Timestamp

    public init(rejectionID: String, userID: String, reason: String, occurredAt: Timestamp) {
        self.rejectionID = rejectionID
        self.userID = userID
        self.reason = reason
        self.occurredAt = occurredAt
    }

    /// `nil` for a rejection without a user (refused before authentication): it cannot be pinned on anyone.
    public init?(_ rejection: Rejection) {
        guard let userID = rejection.userID else { return nil }
        self.init(rejectionID: rejection.rejectionID, userID: userID, reason: rejection.reason, occurredAt: rejection.occurredAt)
    }
}

/// A rule firing for a user, with the figures that made it fire.
public struct FraudFlag: Hashable, Sendable, Codable {
    public var userID: String
    public var ruleID: String
    public var severity: FraudSeverity
    public var outcome: FraudOutcome
    public var detectedAt: Timestamp
    /// The event or rejection id that made the rule fire: with ``userID`` and ``ruleID``, a stable identity (the same
    /// events replayed from the same state raise the same flag).
    public var triggeredBy: String
    /// The figures, by name: for a z-score the value, the mean and standard deviation it was judged against, `z` and
    /// the history behind them; for a rule what it counted.
    public var evidence: [String: Double]
    public var detail: String

    enum CodingKeys: String, CodingKey {
        case userID = "userId", ruleID = "rule", severity, outcome, detectedAt, triggeredBy, evidence, detail
    }
}

/// What the detector remembers of one user: small and bounded (rings and minute buckets, never the event history),
/// so it can be stored beside the boards and reloaded.
public struct FraudUserProfile: Hashable, Sendable, Codable {
    public struct MinuteBucket: Hashable, Sendable, Codable {
        public var minute: Int64
        public var actions: Int
        public var points: Int64
    }

    public var eventCount = 0
    public var lastEventAt: Timestamp?
    /// The last few event and rejection ids: one delivered again is recognised and changes nothing.
    public var recentEventIDs: [String] = []
    public var recentRejectionIDs: [String] = []
    /// Times (ms) of the last actions, as many as the rapid-actions rules look at.
    public var recentActionTimes: [Int64] = []
    /// Actions and points per minute over the last hour (or the rate window, if longer).
    public var minuteBuckets: [MinuteBucket] = []
    /// The user's own profile per feature key (`actions-per-minute`, `seconds-between-actions:log`, …).
    public var features: [String: WelfordStatistics] = [:]
    /// What this user adds to the population profile now, per feature key (`nil`: nothing).
    public var populationContribution: [String: Double] = [:]
    /// Consecutive events above the user's own norm, per z-score rule and feature key.
    public var ownOutlierStreaks: [String: Int] = [:]
    /// The last in-session pauses (ms), as many as the regular-intervals rules look at.
    public var recentGaps: [Int64] = []
    /// Per sustained-activity rule: when the current stretch without a rest began (ms).
    public var activeSince: [String: Int64] = [:]
    /// Events per UTC hour of the day.
    public var eventsByHour: [Int] = Array(repeating: 0, count: 24)
    /// Per rejections rule: times (ms) of the matching rejections inside its window.
    public var signalTimes: [String: [Int64]] = [:]
    /// The rules that fired for this user; each fires once until ``FraudDetector/reopen(ruleID:userID:)``.
    public var raisedRules: Set<String> = []

    public init() {}
}

/// Everything the detector maintains: one profile per user and the population's profile per feature key.
public struct FraudState: Hashable, Sendable, Codable {
    public var users: [String: FraudUserProfile]
    /// Welford over the users' own means (one value per user with enough history, flagged users left out so they
    /// cannot widen the norm they are judged against).
    public var population: [String: WelfordStatistics]

    public init(users: [String: FraudUserProfile] = [:], population: [String: WelfordStatistics] = [:]) {
        self.users = users
        self.population = population
    }
}

/// The fraud rules of `pipelines/fraud.yaml` over a stream of events and rejections: deterministic (the same inputs in
/// the same order from the same state give the same flags and state) and replay-safe (an event or rejection already
/// observed changes nothing). The caller stores ``state`` with the effects of the events it observed.
public struct FraudDetector: Sendable {
    public let rules: FraudRuleSet
    public var state: FraudState

    /// How many recent ids per user are remembered to recognise a redelivery. The worker deduplicates by event id in
    /// PostgreSQL too; this covers a redelivery that reaches the detector directly.
    static let rememberedIDs = 32
    static let millisecondsPerMinute: Int64 = 60_000

    /// The z-score rules with their parameters, and how much recent history the rules need: worked out once, not per event.
    private let zScoreRules: [ZScoreRule]
    private let keptActionTimes: Int
    private let keptGaps: Int
    private let isFlagRule: [String: Bool]

    private struct ZScoreRule: Sendable {
        var rule: FraudRule
        var checks: [(check: FraudRuleDefinition.FeatureCheck, key: String)]
        var minimumFeatures: Int
        var threshold: Double
        var minimumHistory: Int
        var minimumPopulation: Int
        var sustainedEvents: Int
    }

    public init(rules: FraudRuleSet, state: FraudState = FraudState()) {
        self.rules = rules
        self.state = state
        var zScoreRules: [ZScoreRule] = []
        var keptActionTimes = 0, keptGaps = 0
        for rule in rules.rules {
            switch rule.check {
            case .zScore(let checks, let minimumFeatures, let threshold, let history, let population, let sustained):
                zScoreRules.append(ZScoreRule(
                    rule: rule, checks: checks.map { ($0, Self.key($0)) }, minimumFeatures: minimumFeatures, threshold: threshold,
                    minimumHistory: history, minimumPopulation: population, sustainedEvents: sustained))
            case .rapidActions(let moreThan, _): keptActionTimes = max(keptActionTimes, moreThan + 1)
            case .regularIntervals(let gaps, _): keptGaps = max(keptGaps, gaps)
            default: break
            }
        }
        self.zScoreRules = zScoreRules
        self.keptActionTimes = keptActionTimes
        self.keptGaps = keptGaps
        isFlagRule = Dictionary(rules.rules.map { ($0.id, $0.outcome == .flag) }, uniquingKeysWith: { $0 || $1 })
    }

    /// After a reviewer dismissed a flag, the rule may fire again for this user.
    public mutating func reopen(ruleID: String, userID: String) {
        state.users[userID]?.raisedRules.remove(ruleID)
    }

    // MARK: - Events

    /// Observes one accepted action and returns the flags (and logged findings) it raises.
    public mutating func observe(_ event: FraudObservation) -> [FraudFlag] {
        // Taken out of the dictionary while it changes, so that its arrays are not copied on write.
        var user = state.users.removeValue(forKey: event.userID) ?? FraudUserProfile()
        defer { state.users[event.userID] = user }
        guard !user.recentEventIDs.contains(event.eventID) else { return [] }
        Self.remember(event.eventID, in: &user.recentEventIDs)

        // Events of one user arrive in log order; a gateway clock a little behind another's must not make time run back.
        let now = max(event.occurredAt.millisecondsSinceEpoch, user.lastEventAt?.millisecondsSinceEpoch ?? .min)
        let gap = user.lastEventAt.map { now - $0.millisecondsSinceEpoch }
        let sessionGap = gap.flatMap { $0 < rules.sessionBreakMilliseconds ? $0 : nil }
        var flags: [FraudFlag] = []
        func raise(_ rule: FraudRule, _ evidence: [String: Double], _ detail: String) {
            guard !user.raisedRules.contains(rule.id) else { return }
            user.raisedRules.insert(rule.id)
            flags.append(FraudFlag(
                userID: event.userID, ruleID: rule.id, severity: rule.severity, outcome: rule.outcome,
                detectedAt: Timestamp(millisecondsSinceEpoch: now), triggeredBy: event.eventID, evidence: evidence, detail: detail))
        }

        // Rates, from minute buckets.
        let minute = now / Self.millisecondsPerMinute
        if let last = user.minuteBuckets.last, last.minute == minute {
            user.minuteBuckets[user.minuteBuckets.count - 1].actions += 1
            user.minuteBuckets[user.minuteBuckets.count - 1].points += event.points
        } else {
            user.minuteBuckets.append(.init(minute: minute, actions: 1, points: event.points))
        }
        let keptMinutes = Int64(max(60, rules.rateWindowMinutes))
        user.minuteBuckets.removeAll { $0.minute <= minute - keptMinutes }
        let rateWindow = Int64(rules.rateWindowMinutes)
        let actionsInWindow = user.minuteBuckets.reduce(0) { $0 + ($1.minute > minute - rateWindow ? $1.actions : 0) }
        let pointsInHour = user.minuteBuckets.reduce(Int64(0)) { $0 + ($1.minute > minute - 60 ? $1.points : 0) }
        func rawSample(_ feature: FraudFeature) -> Double? {
            switch feature {
            case .actionsPerMinute: Double(actionsInWindow) / Double(rateWindow)
            case .pointsPerHour: Double(pointsInHour)
            case .secondsBetweenActions: sessionGap.map { Double($0) / 1_000 }
            }
        }

        // z-scores: the user's current values against their own history (before this event joins it) …
        var samples: [String: Double] = [:]
        for zRule in zScoreRules {
            var evidence: [String: Double] = [:]
            var outliers = 0
            for (check, key) in zRule.checks {
                guard let raw = rawSample(check.feature) else { continue }
                let value = Self.transform(raw, check)
                samples[key] = value
                let own = user.features[key] ?? WelfordStatistics()
                guard let z = own.zScore(of: value, minimumCount: zRule.minimumHistory), Self.isOutlier(z, check.direction, zRule.threshold) else { continue }
                outliers += 1
                let name = check.feature.rawValue
                evidence[name + ".value"] = raw
                evidence[name + ".mean"] = Self.untransform(own.mean, check)
                evidence[name + ".standardDeviation"] = own.standardDeviation
                evidence[name + ".z"] = z
                evidence["history"] = Double(own.count)
            }
            guard outliers >= zRule.minimumFeatures else {
                if user.ownOutlierStreaks[zRule.rule.id] != nil { user.ownOutlierStreaks[zRule.rule.id] = nil }
                continue
            }
            let streak = (user.ownOutlierStreaks[zRule.rule.id] ?? 0) + 1
            user.ownOutlierStreaks[zRule.rule.id] = streak
            if streak >= zRule.sustainedEvents {
                evidence["sustainedEvents"] = Double(streak)
                raise(zRule.rule, evidence, "against the user's own history for \(streak) events in a row: " + Self.zText(evidence, zRule))
            }
        }
        for (key, value) in samples { user.features[key, default: WelfordStatistics()].add(value) }

        // … and the user's means against the population's (leaving the user's own contribution out).
        for key in samples.keys.sorted() {
            if let contribution = user.populationContribution.removeValue(forKey: key) { state.population[key]?.remove(contribution) }
        }
        for zRule in zScoreRules {
            var evidence: [String: Double] = [:]
            var outliers = 0
            for (check, key) in zRule.checks {
                guard let own = user.features[key], own.count >= zRule.minimumHistory, let population = state.population[key],
                      let z = population.zScore(of: own.mean, minimumCount: zRule.minimumPopulation),
                      Self.isOutlier(z, check.direction, zRule.threshold) else { continue }
                outliers += 1
                let name = check.feature.rawValue
                evidence[name + ".value"] = Self.untransform(own.mean, check)
                evidence[name + ".populationMean"] = Self.untransform(population.mean, check)
                evidence[name + ".populationStandardDeviation"] = population.standardDeviation
                evidence[name + ".z"] = z
                evidence[name + ".history"] = Double(own.count)
                evidence["populationUsers"] = Double(population.count)
            }
            // Judged only on an event that moved one of the user's means.
            guard zRule.checks.contains(where: { samples[$0.key] != nil }) else { continue }
            if outliers >= zRule.minimumFeatures {
                raise(zRule.rule, evidence, "the user's means against the population's: " + Self.zText(evidence, zRule))
            }
        }

        // Rules over recent behaviour.
        user.recentActionTimes.append(now)
        if let gap = sessionGap { user.recentGaps.append(gap) }
        for rule in rules.rules {
            switch rule.check {
            case .rapidActions(let moreThan, let within):
                let times = user.recentActionTimes
                if times.count > moreThan, now - times[times.count - moreThan - 1] <= within {
                    let seconds = Double(now - times[times.count - moreThan - 1]) / 1_000
                    raise(rule, ["actions": Double(moreThan + 1), "seconds": seconds, "windowSeconds": Double(within) / 1_000],
                          "\(moreThan + 1) actions in \(Self.text(seconds)) s")
                }
            case .regularIntervals(let gaps, let maximumVariation):
                guard user.recentGaps.count >= gaps else { break }
                let window = user.recentGaps.suffix(gaps).map(Double.init)
                let mean = window.reduce(0, +) / Double(gaps)
                let variance = window.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(gaps - 1)
                // Pauses of (almost) nothing are as regular as it gets.
                let variation = mean < 1 ? 0 : variance.squareRoot() / mean
                if variation <= maximumVariation {
                    raise(rule, ["coefficientOfVariation": variation, "meanSeconds": mean / 1_000, "gaps": Double(gaps)],
                          "the last \(gaps) pauses vary by \(Self.text(variation * 100))% around \(Self.text(mean / 1_000)) s")
                }
            case .sustainedActivity(let minimum, let rest):
                if let gap, gap < rest, let since = user.activeSince[rule.id] {
                    if now - since >= minimum {
                        let hours = Double(now - since) / 3_600_000
                        raise(rule, ["hoursWithoutRest": hours, "restHours": Double(rest) / 3_600_000],
                              "active for \(Self.text(hours)) h without a pause of \(Self.text(Double(rest) / 3_600_000)) h")
                    }
                } else {
                    user.activeSince[rule.id] = now
                }
            case .unusualHours(let minimumHistory, let maximumShare):
                let hour = Int((now / 3_600_000) % 24)
                guard user.eventCount >= minimumHistory else { break }
                let share = Double(user.eventsByHour[hour]) / Double(user.eventCount)
                if share < maximumShare {
                    raise(rule, ["hourUTC": Double(hour), "share": share, "history": Double(user.eventCount)],
                          "active at \(hour):00 UTC, an hour with \(Self.text(share * 100))% of the user's \(user.eventCount) events")
                }
            case .zScore, .rejections:
                break
            }
        }
        if user.recentActionTimes.count > keptActionTimes { user.recentActionTimes.removeFirst(user.recentActionTimes.count - keptActionTimes) }
        if user.recentGaps.count > keptGaps { user.recentGaps.removeFirst(user.recentGaps.count - keptGaps) }
        user.eventsByHour[Int((now / 3_600_000) % 24)] += 1
        user.eventCount += 1
        user.lastEventAt = Timestamp(millisecondsSinceEpoch: now)

        // Back into the population: users with enough history who are not flagged (an outlier has just been). A
        // flagged user leaves it whole, also with the features this event did not sample.
        if isFlagged(user) {
            leavePopulation(&user)
        } else {
            for zRule in zScoreRules {
                for (_, key) in zRule.checks {
                    guard samples[key] != nil, user.populationContribution[key] == nil,
                          let own = user.features[key], own.count >= zRule.minimumHistory else { continue }
                    user.populationContribution[key] = own.mean
                    state.population[key, default: WelfordStatistics()].add(own.mean)
                }
            }
        }
        return flags
    }

    // MARK: - Rejections

    /// Observes one rejection of a known user and returns the flags it raises.
    public mutating func observe(_ rejection: FraudRejectionSignal) -> [FraudFlag] {
        var user = state.users.removeValue(forKey: rejection.userID) ?? FraudUserProfile()
        defer { state.users[rejection.userID] = user }
        guard !user.recentRejectionIDs.contains(rejection.rejectionID) else { return [] }
        Self.remember(rejection.rejectionID, in: &user.recentRejectionIDs)
        let now = rejection.occurredAt.millisecondsSinceEpoch
        var flags: [FraudFlag] = []
        for rule in rules.rules {
            guard case .rejections(let reasons, let atLeast, let within) = rule.check, reasons.contains(rejection.reason) else { continue }
            var times = user.signalTimes[rule.id] ?? []
            times.append(now)
            times.removeAll { $0 < now - within }
            if times.count > atLeast { times.removeFirst(times.count - atLeast) }
            user.signalTimes[rule.id] = times
            if times.count >= atLeast, !user.raisedRules.contains(rule.id) {
                user.raisedRules.insert(rule.id)
                flags.append(FraudFlag(
                    userID: rejection.userID, ruleID: rule.id, severity: rule.severity, outcome: rule.outcome, detectedAt: rejection.occurredAt,
                    triggeredBy: rejection.rejectionID,
                    evidence: ["rejections": Double(times.count), "windowSeconds": Double(within) / 1_000],
                    detail: "\(times.count) rejection(s) for \(rejection.reason) or the like within \(Self.text(Double(within) / 1_000)) s"))
            }
        }
        // A flagged user leaves the population norm.
        if isFlagged(user) { leavePopulation(&user) }
        return flags
    }

    // MARK: - Helpers

    /// Takes everything the user adds to the population profile back out.
    private mutating func leavePopulation(_ user: inout FraudUserProfile) {
        for (key, contribution) in user.populationContribution.sorted(by: { $0.key < $1.key }) { state.population[key]?.remove(contribution) }
        user.populationContribution = [:]
    }

    /// Whether a rule that flags (not one that only logs) has fired for the user.
    private func isFlagged(_ user: FraudUserProfile) -> Bool {
        user.raisedRules.contains { isFlagRule[$0] == true }
    }

    static func remember(_ id: String, in ring: inout [String]) {
        ring.append(id)
        if ring.count > rememberedIDs { ring.removeFirst(ring.count - rememberedIDs) }
    }

    static func key(_ check: FraudRuleDefinition.FeatureCheck) -> String {
        check.feature.rawValue + (check.logarithmic == true ? ":log" : "")
    }

    static func transform(_ value: Double, _ check: FraudRuleDefinition.FeatureCheck) -> Double {
        check.logarithmic == true ? FraudMath.naturalLog(1 + max(0, value)) : value
    }

    static func untransform(_ value: Double, _ check: FraudRuleDefinition.FeatureCheck) -> Double {
        check.logarithmic == true ? FraudMath.exponential(value) - 1 : value
    }

    /// `actions-per-minute 12.3 (z 5.1, log scale); …` for the features in `evidence`.
    private static func zText(_ evidence: [String: Double], _ rule: ZScoreRule) -> String {
        rule.checks.compactMap { check, _ in
            let name = check.feature.rawValue
            guard let z = evidence[name + ".z"], let value = evidence[name + ".value"] else { return nil }
            let against = evidence[name + ".populationMean"] ?? evidence[name + ".mean"] ?? 0
            return "\(name) \(text(value)) against \(text(against)) (z \(text(z))\(check.logarithmic == true ? ", log scale" : ""))"
        }.joined(separator: "; ")
    }

    static func isOutlier(_ z: Double, _ direction: FraudRuleDefinition.FeatureCheck.Direction, _ threshold: Double) -> Bool {
        switch direction {
        case .high: z >= threshold
        case .low: z <= -threshold
        case .both: abs(z) >= threshold
        }
    }

    /// Two decimals, for details (the core has no `String(format:)`).
    static func text(_ value: Double) -> String {
        guard value.isFinite else { return "\(value)" }
        let hundredths = (value * 100).rounded()
        let whole = Int64(hundredths / 100)
        let fraction = Int64(abs(hundredths.truncatingRemainder(dividingBy: 100)))
        let sign = hundredths < 0 && whole == 0 ? "-" : ""
        return "\(sign)\(whole).\(fraction < 10 ? "0" : "")\(fraction)"
    }
}
