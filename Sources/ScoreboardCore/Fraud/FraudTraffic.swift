/// One intended action of the evaluation traffic (one line of its JSONL): `t` seconds from the start, the user, the
/// action, where they play, and whether it re-sends the user's previous action token (which the gateway refuses as
/// `action-token-replayed`, so the rules see a rejection, not an action). `label` is `honest` or `bot:<kind>` in
/// labelled traffic and absent in unlabelled traffic.
public struct FraudTrafficRecord: Hashable, Sendable, Codable {
    public var t: Double
    public var user: String
    public var action: String
    public var region: String?
    public var guild: String?
    public var replay: Bool
    public var label: String?

    public init(t: Double, user: String, action: String, region: String?, guild: String?, replay: Bool, label: String?) {
        self.t = t
        self.user = user
        self.action = action
        self.region = region
        self.guild = guild
        self.replay = replay
        self.label = label
    }

    /// Whether the label marks a bot (`nil` when unlabelled).
    public var isBot: Bool? { label.map(FraudTrafficRecord.isBotLabel) }

    /// `honest`, `human`, `legit` and `normal` are people; anything else (`bot`, `bot:burst`, `fraud`) is not.
    public static func isBotLabel(_ label: String) -> Bool {
        !["honest", "human", "legit", "legitimate", "normal", "benign"].contains(label.lowercased())
    }
}

/// A small seedable generator (SplitMix64) with the distributions the traffic needs. The same seed gives the same
/// traffic on every machine: no `Double.random`, no system entropy.
struct FraudRandom {
    private var generator: SplitMix64

    /// The seed is scrambled first, so that neighbouring seeds start far apart.
    init(seed: UInt64) { generator = SplitMix64(state: seed &* 0x2545_F491_4F6C_DD1D &+ 0x9E37_79B9_7F4A_7C15) }

    mutating func next() -> UInt64 { generator.next() }

    /// Uniform in [0, 1).
    mutating func unit() -> Double { Double(next() >> 11) * 0x1p-53 }
    mutating func uniform(_ low: Double, _ high: Double) -> Double { low + (high - low) * unit() }
    mutating func integer(_ range: ClosedRange<Int>) -> Int { range.lowerBound + Int(next() % UInt64(range.count)) }
    mutating func chance(_ probability: Double) -> Bool { unit() < probability }

    /// Standard normal (Marsaglia's polar method: needs only log and square root).
    mutating func normal() -> Double {
        while true {
            let u = 2 * unit() - 1, v = 2 * unit() - 1
            let s = u * u + v * v
            if s > 0 && s < 1 { return u * (-2 * FraudMath.naturalLog(s) / s).squareRoot() }
        }
    }

    /// Log-normal with the given median and spread of its logarithm.
    mutating func logNormal(median: Double, sigma: Double) -> Double { median * FraudMath.exponential(sigma * normal()) }
    mutating func exponential(mean: Double) -> Double { -mean * FraudMath.naturalLog(1 - unit()) }
}

/// Labelled synthetic traffic for the fraud evaluation: honest players and bots of several kinds, from one seed.
///
/// Honest players keep a daily rhythm in their own time zone (one to three sessions, mostly in the evening, longer at
/// weekends), pause for varied lengths (log-normal gaps around their own pace, breaks of minutes inside a session),
/// chain legitimate fast combos (a few actions a second apart) and some grind for many hours. Bots: bursts on top of
/// human play, metronome-regular intervals, impossible rates, replayed action tokens on top of human play,
/// round-the-clock play at a human pace, and human-looking (log-normal) gaps at a sustained high rate.
public struct FraudTrafficGenerator: Sendable {
    public struct Configuration: Hashable, Sendable {
        public var honestPlayers = 200
        public var botsPerKind = 6
        public var days = 3

        public init() {}
    }

    public enum BotKind: String, CaseIterable, Sendable {
        case burst, metronome, impossibleRate = "impossible-rate", tokenReplay = "token-replay"
        case roundTheClock = "round-the-clock", sustainedHighRate = "sustained-high-rate"
    }

    public var configuration: Configuration

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    static let regions = ["eu", "na", "sa", "asia", "oc"]

    /// The traffic, sorted by time (ties keep generation order).
    public func generate(seed: UInt64) -> [FraudTrafficRecord] {
        var random = FraudRandom(seed: seed)
        var records: [FraudTrafficRecord] = []
        var users: [(id: String, label: String)] = []
        for index in 0..<configuration.honestPlayers { users.append(("player-\(index)", "honest")) }
        for kind in BotKind.allCases {
            for _ in 0..<configuration.botsPerKind { users.append(("player-\(users.count)", "bot:\(kind.rawValue)")) }
        }
        // Shuffle ids so that the label cannot be read from the user id's number.
        var ids = users.map(\.id)
        for index in stride(from: ids.count - 1, to: 0, by: -1) { ids.swapAt(index, random.integer(0...index)) }
        for (index, user) in users.enumerated() {
            var player = PlayerTraffic(id: ids[index], label: user.label, random: FraudRandom(seed: random.next()), days: configuration.days)
            switch user.label {
            case "honest": player.honest()
            case "bot:burst": player.burst()
            case "bot:metronome": player.metronome()
            case "bot:impossible-rate": player.impossibleRate()
            case "bot:token-replay": player.tokenReplay()
            case "bot:round-the-clock": player.roundTheClock()
            default: player.sustainedHighRate()
            }
            records += player.records
        }
        return records.enumerated().sorted { ($0.element.t, $0.offset) < ($1.element.t, $1.offset) }.map(\.element)
    }
}

/// One player's actions over the days of the traffic.
private struct PlayerTraffic {
    let id: String
    let label: String
    var random: FraudRandom
    let seconds: Double
    let region: String
    let guild: String?
    /// Local time = UTC + offset.
    let timeZoneHours: Double
    var records: [FraudTrafficRecord] = []
    var lastBonusDay = -1

    init(id: String, label: String, random: FraudRandom, days: Int) {
        self.id = id
        self.label = label
        self.random = random
        seconds = Double(days) * 86_400
        timeZoneHours = Double(self.random.integer(-8...9))
        region = FraudTrafficGenerator.regions[self.random.integer(0...(FraudTrafficGenerator.regions.count - 1))]
        guild = self.random.chance(0.7) ? "guild-\(self.random.integer(1...30))" : nil
    }

    mutating func emit(_ t: Double, replay: Bool = false) {
        guard t >= 0, t < seconds else { return }
        let day = Int(t / 86_400)
        let action: String
        if replay, let previous = records.last(where: { !$0.replay }) {
            // A replay re-sends the previous action's token.
            action = previous.action
        } else if day != lastBonusDay {
            lastBonusDay = day
            action = "daily-bonus"
        } else {
            let roll = random.unit()
            action = roll < 0.7 ? "complete-quest" : roll < 0.9 ? "pvp-match" : "pvp-win"
        }
        records.append(FraudTrafficRecord(t: (t * 1_000).rounded() / 1_000, user: id, action: action, region: region, guild: guild, replay: replay, label: label))
    }

    /// The UTC second of a local hour on a day.
    func utc(day: Int, localHour: Double) -> Double { Double(day) * 86_400 + (localHour - timeZoneHours) * 3_600 }

    /// A local start hour: evenings mostly, some lunchtimes and mornings.
    mutating func startHour() -> Double {
        let roll = random.unit()
        if roll < 0.6 { return random.uniform(17.5, 22.5) }
        if roll < 0.8 { return random.uniform(11.5, 14) }
        return random.uniform(7, 10)
    }

    /// Human play inside [start, end): log-normal gaps around the player's pace, fast combos, breaks.
    /// `replayShare` of the actions are followed by a replay of their token.
    mutating func humanSession(from start: Double, to end: Double, medianGap: Double, sigma: Double, replayShare: Double = 0) {
        var t = start
        while t < end {
            emit(t)
            if replayShare > 0, random.chance(replayShare) { emit(t + random.uniform(0.5, 20), replay: true) }
            // Reading, moving, choosing: outside a combo a person takes a couple of seconds at least.
            var pause = max(2, random.logNormal(median: medianGap, sigma: sigma))
            if random.chance(0.06) {
                // A legitimate combo: two to four more actions about a second apart, then a breath of ten seconds or more.
                for _ in 0..<random.integer(2...4) {
                    t += random.uniform(0.5, 1.6)
                    emit(t)
                }
                pause = max(10, pause)
            }
            t += random.chance(0.04) ? random.uniform(120, 900) : pause
        }
    }

    /// Human sessions day after day. People take days off; a bot riding on human play (bursts, replays) plays every
    /// day inside the traffic, so that its label stands for behaviour it shows.
    mutating func humanDays(medianGap: Double, sigma: Double, replayShare: Double = 0, takesDaysOff: Bool = true) {
        let grinder = random.chance(0.2)
        let days = Int(seconds / 86_400) + 1
        for day in -1..<days {
            let weekend = (day % 7 + 7) % 7 >= 5
            let dayOff = takesDaysOff || day < 0 ? random.chance(0.15) : false
            let sessions = dayOff ? 0 : random.integer(1...(weekend ? 3 : 2))
            // Sessions of a day one after the other; a grinder's long one at most once a day.
            var starts = (0..<sessions).map { _ in startHour() }.sorted()
            let long = grinder && random.chance(0.5) ? random.integer(0...max(0, sessions - 1)) : -1
            var previousEnd = -Double.infinity
            for index in starts.indices {
                starts[index] = max(starts[index], previousEnd + 0.5)
                let hours = index == long ? random.uniform(4, 10) : min(3, random.logNormal(median: 40, sigma: 0.6) / 60)
                let start = utc(day: day, localHour: starts[index])
                humanSession(from: start, to: start + hours * 3_600, medianGap: medianGap, sigma: sigma, replayShare: replayShare)
                previousEnd = starts[index] + hours
            }
        }
    }

    // MARK: - Honest players

    mutating func honest() {
        let medianGap = min(90, max(8, random.logNormal(median: 22, sigma: 0.4)))
        let sigma = random.uniform(0.6, 1.0)
        humanDays(medianGap: medianGap, sigma: sigma)
        // Now and then a client re-sends a token (a double tap after a timeout): rare, and never a habit.
        let played = records.map(\.t)
        for t in played where random.chance(0.0004) { emit(t + random.uniform(0.2, 3), replay: true) }
    }

    // MARK: - Bots

    mutating func burst() {
        humanDays(medianGap: min(90, max(8, random.logNormal(median: 22, sigma: 0.4))), sigma: random.uniform(0.6, 1.0), takesDaysOff: false)
        let human = records.map(\.t)
        // Every so often during play, a burst of many actions a fraction of a second apart.
        var next = 0.0
        for t in human where t >= next {
            let count = random.integer(12...30)
            var time = t
            for _ in 0..<count {
                time += random.uniform(0.1, 0.6)
                emit(time)
            }
            next = t + random.uniform(1_200, 3_600)
        }
    }

    mutating func metronome() {
        let interval = random.uniform(4, 40)
        let jitter = random.uniform(0.005, 0.04)
        let days = Int(seconds / 86_400) + 1
        for day in 0..<days {
            for _ in 0..<random.integer(1...3) {
                let start = utc(day: day, localHour: random.uniform(0, 24))
                let end = start + random.uniform(2, 8) * 3_600
                var t = start
                while t < end {
                    emit(t)
                    t += interval * (1 + random.uniform(-jitter, jitter))
                }
            }
        }
    }

    mutating func impossibleRate() {
        let days = Int(seconds / 86_400) + 1
        for day in 0..<days {
            for _ in 0..<random.integer(1...2) {
                let start = utc(day: day, localHour: random.uniform(0, 24))
                let end = start + random.uniform(20, 60) * 60
                let low = random.uniform(0.2, 0.5), high = low + random.uniform(0.2, 0.7)
                var t = start
                while t < end {
                    emit(t)
                    t += random.uniform(low, high)
                }
            }
        }
    }

    mutating func tokenReplay() {
        humanDays(medianGap: min(90, max(8, random.logNormal(median: 22, sigma: 0.4))), sigma: random.uniform(0.6, 1.0),
                  replayShare: random.uniform(0.1, 0.4), takesDaysOff: false)
    }

    mutating func roundTheClock() {
        let medianGap = random.uniform(30, 90)
        var t = random.uniform(0, 3_600)
        while t < seconds {
            emit(t)
            // Human-looking pauses, now and then a longer one, but never a night's sleep.
            t += random.chance(0.03) ? random.uniform(600, 2_400) : max(1, random.logNormal(median: medianGap, sigma: 0.8))
        }
    }

    mutating func sustainedHighRate() {
        let medianGap = random.uniform(2.5, 6)
        let days = Int(seconds / 86_400) + 1
        for day in -1..<days {
            let start = utc(day: day, localHour: random.uniform(6, 12))
            let end = start + random.uniform(8, 16) * 3_600
            var t = start
            while t < end {
                emit(t)
                t += random.chance(0.02) ? random.uniform(60, 600) : max(0.3, random.logNormal(median: medianGap, sigma: random.uniform(0.6, 0.9)))
            }
        }
    }
}
