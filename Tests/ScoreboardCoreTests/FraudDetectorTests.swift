import Foundation
@testable import ScoreboardCore
import ScoreboardDefinitions
import Testing

/// The fraud rules one kind at a time, the profile numerics against references computed here, replay safety and
/// stored state.
@Suite struct FraudDetectorTests {
    static let start = utc(2026, 1, 5)

    static func rule(_ id: String, _ kind: FraudRuleDefinition.Kind, severity: FraudSeverity = .high, outcome: FraudOutcome? = nil,
                     _ configure: (inout FraudRuleDefinition) -> Void) -> FraudRuleDefinition {
        var rule = FraudRuleDefinition(id: id, kind: kind, severity: severity, outcome: outcome)
        configure(&rule)
        return rule
    }

    static func detector(_ rules: FraudRuleDefinition...) throws -> FraudDetector {
        FraudDetector(rules: try FraudCatalog(profiles: .init(rateWindowMinutes: 10, sessionBreakSeconds: 1_800), rules: rules).ruleSet())
    }

    static let rapid = rule("rapid-actions", .rapidActions) { $0.count = 8; $0.withinSeconds = 10 }

    /// Observes one action of `user` at `seconds` after the start; returns the flags.
    static func act(_ detector: inout FraudDetector, _ user: String, at seconds: Double, points: Int64 = 10, id: String? = nil) -> [FraudFlag] {
        detector.observe(FraudObservation(
            eventID: id ?? "\(user)-\(seconds)", userID: user, action: "complete-quest", points: points,
            occurredAt: Timestamp(millisecondsSinceEpoch: start.millisecondsSinceEpoch + Int64((seconds * 1_000).rounded()))))
    }

    // MARK: - Numerics

    @Test func welfordMatchesATwoPassComputationEvenFarFromZero() {
        // Values around 10^9 with a spread of a few units: the one-pass Σx² formula loses every digit here.
        var random = FraudRandom(seed: 42)
        let values = (0..<10_000).map { _ in 1e9 + random.uniform(-5, 5) }
        var statistics = WelfordStatistics()
        for value in values { statistics.add(value) }
        let mean = values.reduce(0, +) / Double(values.count)
        let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(values.count - 1)
        #expect(statistics.count == values.count)
        // Both sides round (the two-pass sum of 10^13 too): agreement to about 10 significant digits of the spread.
        #expect(abs(statistics.mean - mean) < 1e-4)
        #expect(abs(statistics.variance - variance) / variance < 1e-6)
        let naive = (values.reduce(0) { $0 + $1 * $1 } - values.reduce(0, +) * values.reduce(0, +) / Double(values.count)) / Double(values.count - 1)
        #expect(abs(naive - variance) / variance > 1e-3, "the naive formula should be visibly wrong here, or this test proves nothing")
    }

    @Test func removingAValueGivesWhatAddingTheOthersGives() {
        var random = FraudRandom(seed: 7)
        let values = (0..<200).map { _ in random.logNormal(median: 20, sigma: 0.8) }
        var all = WelfordStatistics()
        for value in values { all.add(value) }
        for value in values[..<100] { all.remove(value) }
        var rest = WelfordStatistics()
        for value in values[100...] { rest.add(value) }
        #expect(all.count == rest.count)
        #expect(abs(all.mean - rest.mean) < 1e-9)
        #expect(abs(all.variance - rest.variance) / rest.variance < 1e-9)
    }

    @Test func zScoresNeedAHistoryAndASpread() {
        var statistics = WelfordStatistics()
        for value in [2.0, 4, 4, 4, 5, 5, 7, 9] { statistics.add(value) }
        // Sample standard deviation of these eight values: sqrt(32 / 7).
        let reference = (20 - 5) / (32.0 / 7).squareRoot()
        #expect(abs(statistics.zScore(of: 20, minimumCount: 8)! - reference) < 1e-12)
        #expect(statistics.zScore(of: 20, minimumCount: 9) == nil)
        var constant = WelfordStatistics()
        for _ in 0..<10 { constant.add(3) }
        #expect(constant.zScore(of: 100, minimumCount: 2) == nil)
    }

    @Test func logarithmAndExponentialWithoutFoundation() {
        for x in [1e-9, 0.5, 1, 2, 10, 12_345.678, 1e300] {
            #expect(abs(FraudMath.naturalLog(x) - Foundation.log(x)) <= 1e-14 * max(1, abs(Foundation.log(x))), "ln \(x)")
        }
        for x in [-700.0, -3.5, -1e-6, 0, 1, 2.5, 100, 700] {
            #expect(abs(FraudMath.exponential(x) - Foundation.exp(x)) <= 1e-13 * Foundation.exp(x), "exp \(x)")
        }
    }

    // MARK: - Rules

    @Test func eightActionsInTenSecondsAreAComboNineAreAFlag() throws {
        var detector = try Self.detector(Self.rapid)
        // Bad input: a combo of 8 actions within 10 s (allowed), then a ninth inside the same 10 s.
        var flags: [FraudFlag] = []
        for index in 0..<8 { flags += Self.act(&detector, "combo", at: Double(index) * 1.25) }
        #expect(flags.isEmpty)
        // 9 actions over 10.5 s: still not more than 8 in any 10 s.
        #expect(Self.act(&detector, "combo", at: 10.5).isEmpty)
        var burst = try Self.detector(Self.rapid)
        for index in 0..<8 { _ = Self.act(&burst, "bot", at: Double(index)) }
        let fired = Self.act(&burst, "bot", at: 9.5)
        let flag = try #require(fired.first)
        #expect(flag.ruleID == "rapid-actions" && flag.severity == .high && flag.outcome == .flag)
        #expect(flag.evidence["actions"] == 9 && flag.evidence["seconds"] == 9.5)
        // It fires once per user and rule.
        #expect(Self.act(&burst, "bot", at: 9.6).isEmpty)
    }

    @Test func replayedAndForgedTokensAreCriticalOtherRejectionsAreNot() throws {
        var detector = try Self.detector(Self.rule("token-manipulation", .rejections, severity: .critical) {
            $0.reasons = ["invalid-action-token", "action-token-replayed"]
            $0.count = 3
            $0.withinSeconds = 3_600
        })
        func reject(_ reason: String, at seconds: Int64, id: String) -> [FraudFlag] {
            detector.observe(FraudRejectionSignal(
                rejectionID: id, userID: "u", reason: reason,
                occurredAt: Timestamp(millisecondsSinceEpoch: Self.start.millisecondsSinceEpoch + seconds * 1_000)))
        }
        // Bad input: rate limits and junk bodies are no manipulation, however many.
        for index in 0..<10 { #expect(reject("rate-limited", at: Int64(index), id: "r\(index)").isEmpty) }
        #expect(reject("action-token-replayed", at: 0, id: "a").isEmpty)
        // Two forged or replayed tokens more than an hour later: the first has left the window.
        #expect(reject("invalid-action-token", at: 4_000, id: "b").isEmpty)
        #expect(reject("action-token-replayed", at: 4_100, id: "c").isEmpty)
        let flag = try #require(reject("invalid-action-token", at: 4_200, id: "d").first)
        #expect(flag.ruleID == "token-manipulation" && flag.severity == .critical && flag.evidence["rejections"] == 3)
    }

    @Test func unusualHoursAreOnlyLogged() throws {
        var detector = try Self.detector(Self.rule("unusual-hours", .unusualHours, severity: .low, outcome: .log) {
            $0.minimumHistory = 20
            $0.maximumShare = 0.05
        })
        // Twenty evening actions (20:00 UTC), then one at 04:00 UTC the next night.
        for index in 0..<20 { #expect(Self.act(&detector, "u", at: 20 * 3_600 + Double(index) * 60).isEmpty) }
        let flag = try #require(Self.act(&detector, "u", at: 28 * 3_600).first)
        #expect(flag.outcome == .log && flag.evidence["hourUTC"] == 4 && flag.evidence["share"] == 0)
    }

    @Test func metronomeIntervalsAreFlaggedHumanPausesAreNot() throws {
        let regular = Self.rule("regular-intervals", .regularIntervals) { $0.gaps = 30; $0.maximumVariation = 0.1 }
        var detector = try Self.detector(regular)
        var random = FraudRandom(seed: 3)
        // A human: log-normal pauses around 20 s, for hundreds of actions.
        var t = 0.0
        for _ in 0..<500 {
            #expect(Self.act(&detector, "human", at: t).isEmpty)
            t += random.logNormal(median: 20, sigma: 0.7)
        }
        // Bad input: a bot every 15 s ± 2 %.
        var flags: [FraudFlag] = []
        for index in 0..<31 { flags += Self.act(&detector, "bot", at: Double(index) * 15 * (1 + random.uniform(-0.02, 0.02) / Double(index + 1))) }
        let flag = try #require(flags.first)
        #expect(flag.ruleID == "regular-intervals" && flag.evidence["coefficientOfVariation"]! < 0.1)
    }

    @Test func twentyHoursWithoutARestAreFlaggedASleepResetsTheClock() throws {
        let clock = Self.rule("round-the-clock", .sustainedActivity, severity: .medium) { $0.minimumHours = 20; $0.restHours = 3 }
        var detector = try Self.detector(clock)
        // Sixteen hours of play, an eight-hour sleep, sixteen more hours: never flagged.
        for minute in stride(from: 0, to: 16 * 60, by: 10) { #expect(Self.act(&detector, "human", at: Double(minute) * 60).isEmpty) }
        for minute in stride(from: 24 * 60, to: 40 * 60, by: 10) { #expect(Self.act(&detector, "human", at: Double(minute) * 60).isEmpty) }
        // Bad input: an action every 50 minutes, round the clock.
        var flags: [FraudFlag] = []
        for minute in stride(from: 0, through: 21 * 60, by: 50) { flags += Self.act(&detector, "bot", at: Double(minute) * 60) }
        let flag = try #require(flags.first)
        #expect(flag.ruleID == "round-the-clock" && flag.evidence["hoursWithoutRest"]! >= 20)
    }

    static let profile = rule("profile-outlier", .zScore) {
        $0.features = [.init(feature: .actionsPerMinute, direction: .high, logarithmic: true)]
        $0.zThreshold = 3
        $0.minimumHistory = 30
        $0.minimumPopulation = 10
        $0.sustainedEvents = 5
    }

    @Test func aUserFarAboveThePopulationIsFlaggedWithTheFiguresOfAReferenceComputation() throws {
        var detector = try Self.detector(Self.profile)
        var random = FraudRandom(seed: 11)
        // Twenty players at paces from 20 to 40 s a action, interleaved in time.
        var next = (0..<20).map { Double($0) }
        let paces = (0..<20).map { 20 + Double($0) }
        for _ in 0..<60 {
            for player in 0..<20 {
                #expect(Self.act(&detector, "p\(player)", at: next[player]).isEmpty)
                next[player] += paces[player] * random.uniform(0.5, 1.5)
            }
        }
        // Bad input: a player acting every 2 s from the start: not an outlier against their own history, but against everyone's.
        var flags: [FraudFlag] = []
        var t = next.max()!
        while flags.isEmpty, t < next.max()! + 600 {
            flags += Self.act(&detector, "fast", at: t)
            t += 2
        }
        let flag = try #require(flags.first)
        #expect(flag.ruleID == "profile-outlier")
        // The reference: the players' own mean of ln(1 + actions per minute), and the population's mean and standard
        // deviation over those means, computed in two passes here.
        let key = "actions-per-minute:log"
        let means = (0..<20).map { detector.state.users["p\($0)"]!.features[key]!.mean }
        let populationMean = means.reduce(0, +) / 20
        let populationSD = (means.reduce(0) { $0 + ($1 - populationMean) * ($1 - populationMean) } / 19).squareRoot()
        let fast = detector.state.users["fast"]!.features[key]!
        let z = (fast.mean - populationMean) / populationSD
        #expect(abs(flag.evidence["actions-per-minute.z"]! - z) < 1e-9)
        #expect(z >= 3)
        #expect(abs(flag.evidence["actions-per-minute.populationStandardDeviation"]! - populationSD) < 1e-9)
        #expect(flag.evidence["populationUsers"] == 20)
        // The flagged user has left the population norm.
        #expect(detector.state.population[key]!.count == 20)
    }

    @Test func aSustainedSpeedUpAgainstOnesOwnHistoryIsFlaggedAComboIsNot() throws {
        var detector = try Self.detector(Self.profile)
        var random = FraudRandom(seed: 5)
        var t = 0.0
        for index in 0..<300 {
            #expect(Self.act(&detector, "u", at: t).isEmpty)
            // A combo of three quick actions now and then is part of this user's history.
            t += index % 25 == 0 ? 1 : random.uniform(20, 40)
        }
        // Bad input: the same account now acts every second, far above its own history, for minutes.
        var flags: [FraudFlag] = []
        for _ in 0..<300 where flags.isEmpty {
            t += 1
            flags += Self.act(&detector, "u", at: t)
        }
        let flag = try #require(flags.first)
        #expect(flag.evidence["sustainedEvents"] == 5 && flag.evidence["actions-per-minute.z"]! >= 3)
    }

    // MARK: - Replays and stored state

    @Test func aReplayedEventOrRejectionChangesNothing() throws {
        var detector = try PipelineCatalog.loadFraudRules(directory: repositoryRoot.appendingPathComponent("pipelines")).detector()
        for index in 0..<50 { _ = Self.act(&detector, "u", at: Double(index) * 0.9, id: "e\(index)") }
        _ = detector.observe(FraudRejectionSignal(rejectionID: "r1", userID: "u", reason: "action-token-replayed", occurredAt: Self.start))
        let before = detector.state
        // Bad input: the same event ids and rejection id delivered again, as after a worker restart.
        for index in 45..<50 { #expect(Self.act(&detector, "u", at: Double(index) * 0.9, id: "e\(index)").isEmpty) }
        #expect(detector.observe(FraudRejectionSignal(rejectionID: "r1", userID: "u", reason: "action-token-replayed", occurredAt: Self.start)).isEmpty)
        #expect(detector.state == before)
    }

    @Test func storedStateReloadsAndCarriesOnExactlyAsIfNeverStored() throws {
        let rules = try PipelineCatalog.loadFraudRules(directory: repositoryRoot.appendingPathComponent("pipelines"))
        let traffic = FraudTrafficGenerator(configuration: { var c = FraudTrafficGenerator.Configuration(); c.honestPlayers = 30; c.botsPerKind = 1; c.days = 1; return c }())
            .generate(seed: 9).filter { !$0.replay }
        let half = traffic.count / 2
        func run(_ records: ArraySlice<FraudTrafficRecord>, _ detector: inout FraudDetector) -> [FraudFlag] {
            records.enumerated().flatMap { index, record in
                detector.observe(FraudObservation(
                    eventID: "\(record.user)-\(record.t)", userID: record.user, action: record.action, points: 10,
                    occurredAt: Timestamp(millisecondsSinceEpoch: Self.start.millisecondsSinceEpoch + Int64(record.t * 1_000))))
            }
        }
        var straight = FraudDetector(rules: rules)
        let straightFlags = run(traffic[...], &straight)
        var first = FraudDetector(rules: rules)
        var flags = run(traffic[..<half], &first)
        let stored = try JSONEncoder().encode(first.state)
        var reloaded = FraudDetector(rules: rules, state: try JSONDecoder().decode(FraudState.self, from: stored))
        #expect(reloaded.state == first.state)
        flags += run(traffic[half...], &reloaded)
        #expect(flags == straightFlags)
        #expect(reloaded.state == straight.state)
        #expect(!straightFlags.isEmpty, "the traffic should raise flags, or the comparison proves little")
    }

    // MARK: - The catalog

    @Test func theRepositoryRulesLoadWithTheRequiredKinds() throws {
        let rules = try PipelineCatalog.loadFraudRules(directory: repositoryRoot.appendingPathComponent("pipelines"))
        let byID = Dictionary(uniqueKeysWithValues: rules.rules.map { ($0.id, $0) })
        #expect(byID["rapid-actions"]?.check == .rapidActions(moreThan: 8, withinMilliseconds: 10_000))
        #expect(byID["token-manipulation"]?.severity == .critical)
        #expect(byID["unusual-hours"]?.outcome == .log)
        guard case .zScore(let features, _, let threshold, _, _, _)? = byID["profile-outlier"]?.check else {
            Issue.record("no z-score rule")
            return
        }
        #expect(threshold == 3 && Set(features.map(\.feature)) == Set(FraudFeature.allCases))
    }

    @Test func aBadCatalogIsRefusedWithEveryReason() throws {
        // Bad input: a duplicate id, a z-score rule without its parameters, a rapid rule with a count of 0, an id with ':',
        // two features required of a rule that watches one.
        let catalog = FraudCatalog(profiles: .init(rateWindowMinutes: 0, sessionBreakSeconds: 60), rules: [
            Self.rule("a", .rapidActions) { $0.count = 0; $0.withinSeconds = 10 },
            Self.rule("a", .zScore) { _ in },
            Self.rule("b:c", .unusualHours) { $0.minimumHistory = 10; $0.maximumShare = 0.01 },
            Self.rule("d", .zScore) {
                $0.features = [.init(feature: .pointsPerHour, direction: .high)]
                $0.minimumFeatures = 2
                $0.zThreshold = 3
                $0.minimumHistory = 10
                $0.minimumPopulation = 10
                $0.sustainedEvents = 1
            },
        ])
        let error = try #require(throws: ScoreboardError.self) { try catalog.ruleSet() }
        #expect(error.code == .invalidDefinition)
        let text = error.reasons.joined(separator: "\n")
        for expected in ["rateWindowMinutes", "rules.a.count", "declared twice", "rules.a.features", "rules.a.zThreshold", "rules.b:c: the id",
                         "rules.d.minimumFeatures"] {
            #expect(text.contains(expected), "missing \(expected) in \(text)")
        }
    }
}

extension FraudRuleSet {
    func detector() -> FraudDetector { FraudDetector(rules: self) }
}
