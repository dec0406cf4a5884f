/// How serious a flag is. `critical` is for proof of manipulation (a forged or replayed token), not for a statistic.
public enum FraudSeverity: String, Hashable, Sendable, Codable, CaseIterable {
    case low, medium, high, critical
}

/// What a rule does when it fires: raise a flag (reviewers see it, the gateway limits the user while it is open) or
/// only log it.
public enum FraudOutcome: String, Hashable, Sendable, Codable {
    case flag, log
}

/// The behaviour profile features, each maintained per user and for the population (Welford mean and variance).
public enum FraudFeature: String, Hashable, Sendable, Codable, CaseIterable {
    /// Actions in the profile's rate window (minutes, ending with the current one), per minute.
    case actionsPerMinute = "actions-per-minute"
    /// Seconds since the user's previous action, within a session (a longer pause than the session break is none).
    case secondsBetweenActions = "seconds-between-actions"
    /// Points in the last 60 minutes.
    case pointsPerHour = "points-per-hour"
}

/// One rule of `pipelines/fraud.yaml`, as written: a kind and the parameters that kind reads.
public struct FraudRuleDefinition: Hashable, Sendable, Codable {
    public enum Kind: String, Hashable, Sendable, Codable, CaseIterable {
        case zScore = "z-score"
        case rapidActions = "rapid-actions"
        case rejections
        case regularIntervals = "regular-intervals"
        case sustainedActivity = "sustained-activity"
        case unusualHours = "unusual-hours"
    }

    /// A feature a z-score rule judges, and which side of the mean is suspicious.
    public struct FeatureCheck: Hashable, Sendable, Codable {
        public enum Direction: String, Hashable, Sendable, Codable { case high, low, both }
        public var feature: FraudFeature
        public var direction: Direction
        /// Judge `ln(1 + value)` instead of the value: rates and pauses are skewed (a few fast players, long pauses),
        /// and the logarithm makes their spread symmetric enough for a z-score to mean what it says.
        public var logarithmic: Bool?

        public init(feature: FraudFeature, direction: Direction, logarithmic: Bool? = nil) {
            self.feature = feature
            self.direction = direction
            self.logarithmic = logarithmic
        }
    }

    public var id: String
    public var kind: Kind
    public var severity: FraudSeverity
    /// `flag` when absent.
    public var outcome: FraudOutcome?
    public var description: String?

    // z-score
    public var features: [FeatureCheck]?
    /// How many of the features must be outliers at once (default 1).
    public var minimumFeatures: Int?
    public var zThreshold: Double?
    /// Events of a user before their own profile judges them or their profile joins (and is judged by) the population.
    public var minimumHistory: Int?
    /// Users in the population profile before it judges anyone.
    public var minimumPopulation: Int?
    /// Consecutive events whose rate is an outlier against the user's own history before that raises a flag (one
    /// fast minute is a combo; ten events in a row far above one's own norm is a change of behaviour).
    public var sustainedEvents: Int?
    // rapid-actions, rejections
    public var count: Int?
    public var withinSeconds: Double?
    // rejections
    public var reasons: [String]?
    // regular-intervals
    public var gaps: Int?
    public var maximumVariation: Double?
    // sustained-activity
    public var minimumHours: Double?
    public var restHours: Double?
    // unusual-hours
    public var maximumShare: Double?

    public init(id: String, kind: Kind, severity: FraudSeverity, outcome: FraudOutcome? = nil) {
        self.id = id
        self.kind = kind
        self.severity = severity
        self.outcome = outcome
    }
}

/// `pipelines/fraud.yaml` as written.
public struct FraudCatalog: Hashable, Sendable, Codable {
    public struct Profiles: Hashable, Sendable, Codable {
        /// The window of the actions-per-minute feature, in minutes.
        public var rateWindowMinutes: Int
        /// A pause at least this long ends a session: it is no "seconds between actions" sample.
        public var sessionBreakSeconds: Double

        public init(rateWindowMinutes: Int, sessionBreakSeconds: Double) {
            self.rateWindowMinutes = rateWindowMinutes
            self.sessionBreakSeconds = sessionBreakSeconds
        }
    }

    public var profiles: Profiles
    public var rules: [FraudRuleDefinition]

    public init(profiles: Profiles, rules: [FraudRuleDefinition]) {
        self.profiles = profiles
        self.rules = rules
    }

    /// Checks every rule and turns the catalog into the rules the detector runs.
    /// - Throws: ``ScoreboardError`` with code `invalidDefinition`, listing every problem.
    public func ruleSet() throws(ScoreboardError) -> FraudRuleSet {
        var problems: [String] = []
        if !(1...60).contains(profiles.rateWindowMinutes) { problems.append("profiles.rateWindowMinutes: from 1 to 60") }
        if !(profiles.sessionBreakSeconds > 0) { problems.append("profiles.sessionBreakSeconds: more than 0") }
        if rules.isEmpty { problems.append("rules: at least one") }
        var seen: Set<String> = []
        var compiled: [FraudRule] = []
        for definition in rules {
            let name = "rules.\(definition.id)"
            if let problem = ScoreEvent.identifierProblem(definition.id) { problems.append("\(name): the id \(problem)") }
            if !seen.insert(definition.id).inserted { problems.append("\(name): declared twice") }
            var ruleProblems: [String] = []
            func require<T>(_ value: T?, _ field: String, _ isValid: (T) -> Bool, _ expectation: String) -> T? {
                guard let value else {
                    ruleProblems.append("\(name).\(field): required by kind \(definition.kind.rawValue)")
                    return nil
                }
                guard isValid(value) else {
                    ruleProblems.append("\(name).\(field): \(expectation)")
                    return nil
                }
                return value
            }
            let check: FraudRule.Check?
            switch definition.kind {
            case .zScore:
                let features = require(definition.features, "features", { !$0.isEmpty }, "at least one")
                let threshold = require(definition.zThreshold, "zThreshold", { $0 > 0 }, "more than 0")
                let history = require(definition.minimumHistory, "minimumHistory", { $0 >= 2 }, "at least 2")
                let population = require(definition.minimumPopulation, "minimumPopulation", { $0 >= 2 }, "at least 2")
                let sustained = require(definition.sustainedEvents, "sustainedEvents", { $0 >= 1 }, "at least 1")
                let together = definition.minimumFeatures ?? 1
                if !(1...max(1, features?.count ?? 1)).contains(together) {
                    ruleProblems.append("\(name).minimumFeatures: from 1 to the number of features")
                }
                if let features, let threshold, let history, let population, let sustained, (1...features.count).contains(together) {
                    check = .zScore(features: features, minimumFeatures: together, threshold: threshold, minimumHistory: history,
                                    minimumPopulation: population, sustainedEvents: sustained)
                } else { check = nil }
            case .rapidActions:
                let count = require(definition.count, "count", { $0 >= 1 && $0 <= 1_000 }, "from 1 to 1000")
                let within = require(definition.withinSeconds, "withinSeconds", { $0 > 0 }, "more than 0")
                if let count, let within { check = .rapidActions(moreThan: count, withinMilliseconds: Int64(within * 1_000)) } else { check = nil }
            case .rejections:
                let reasons = require(definition.reasons, "reasons", { !$0.isEmpty }, "at least one")
                let count = require(definition.count, "count", { $0 >= 1 && $0 <= 1_000 }, "from 1 to 1000")
                let within = require(definition.withinSeconds, "withinSeconds", { $0 > 0 }, "more than 0")
                if let reasons, let count, let within {
                    check = .rejections(reasons: Set(reasons), atLeast: count, withinMilliseconds: Int64(within * 1_000))
                } else { check = nil }
            case .regularIntervals:
                let gaps = require(definition.gaps, "gaps", { $0 >= 5 && $0 <= 1_000 }, "from 5 to 1000")
                let variation = require(definition.maximumVariation, "maximumVariation", { $0 > 0 && $0 < 1 }, "between 0 and 1")
                if let gaps, let variation { check = .regularIntervals(gaps: gaps, maximumVariation: variation) } else { check = nil }
            case .sustainedActivity:
                let hours = require(definition.minimumHours, "minimumHours", { $0 > 0 }, "more than 0")
                let rest = require(definition.restHours, "restHours", { $0 > 0 }, "more than 0")
                if let hours, let rest {
                    check = .sustainedActivity(minimumMilliseconds: Int64(hours * 3_600_000), restMilliseconds: Int64(rest * 3_600_000))
                } else { check = nil }
            case .unusualHours:
                let history = require(definition.minimumHistory, "minimumHistory", { $0 >= 1 }, "at least 1")
                let share = require(definition.maximumShare, "maximumShare", { $0 > 0 && $0 < 1 }, "between 0 and 1")
                if let history, let share { check = .unusualHours(minimumHistory: history, maximumShare: share) } else { check = nil }
            }
            problems += ruleProblems
            if let check {
                compiled.append(FraudRule(id: definition.id, severity: definition.severity, outcome: definition.outcome ?? .flag, check: check))
            }
        }
        if !problems.isEmpty { throw ScoreboardError(code: .invalidDefinition, reasons: problems.map { "fraud: \($0)" }) }
        return FraudRuleSet(
            rateWindowMinutes: profiles.rateWindowMinutes, sessionBreakMilliseconds: Int64(profiles.sessionBreakSeconds * 1_000),
            rules: compiled)
    }
}

/// A checked rule, its parameters typed by kind.
public struct FraudRule: Hashable, Sendable {
    public enum Check: Hashable, Sendable {
        case zScore(features: [FraudRuleDefinition.FeatureCheck], minimumFeatures: Int, threshold: Double, minimumHistory: Int,
                    minimumPopulation: Int, sustainedEvents: Int)
        case rapidActions(moreThan: Int, withinMilliseconds: Int64)
        case rejections(reasons: Set<String>, atLeast: Int, withinMilliseconds: Int64)
        case regularIntervals(gaps: Int, maximumVariation: Double)
        case sustainedActivity(minimumMilliseconds: Int64, restMilliseconds: Int64)
        case unusualHours(minimumHistory: Int, maximumShare: Double)
    }

    public var id: String
    public var severity: FraudSeverity
    public var outcome: FraudOutcome
    public var check: Check
}

/// The rules the detector runs, checked (``FraudCatalog/ruleSet()`` builds it).
public struct FraudRuleSet: Hashable, Sendable {
    public var rateWindowMinutes: Int
    public var sessionBreakMilliseconds: Int64
    public var rules: [FraudRule]
}
