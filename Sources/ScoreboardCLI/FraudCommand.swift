import ArgumentParser
import Foundation
import ScoreboardCore
import ScoreboardDefinitions

extension ScoreboardCommand {
    /// `scoreboard fraud generate|eval`: the fraud rules of `pipelines/fraud.yaml` over labelled synthetic traffic or a
    /// JSONL file, scored at the user level beside two baselines (docs/fraud.md).
    public struct Fraud: ParsableCommand {
        public init() {}
        public static let configuration = CommandConfiguration(
            abstract: "Evaluate the fraud rules on synthetic or recorded traffic (docs/fraud.md).", subcommands: [Eval.self, Generate.self])

        /// The size of the synthetic traffic.
        struct TrafficOptions: ParsableArguments {
            @Option(help: "Honest players in the synthetic traffic.") var honest = 200
            @Option(help: "Bots of each kind in the synthetic traffic.") var botsPerKind = 6
            @Option(help: "Days of synthetic traffic.") var days = 3

            var configuration: FraudTrafficGenerator.Configuration {
                var configuration = FraudTrafficGenerator.Configuration()
                configuration.honestPlayers = honest
                configuration.botsPerKind = botsPerKind
                configuration.days = days
                return configuration
            }
        }

        public struct Generate: ParsableCommand {
            public init() {}
            public static let configuration = CommandConfiguration(abstract: "Write labelled synthetic traffic as JSONL (one intended action a line).")

            @Option(help: "The generator's seed.") var seed: UInt64 = 1
            @OptionGroup var traffic: TrafficOptions
            @Option(help: "Write here instead of standard output.") var output: String?

            public func run() throws {
                let records = FraudTrafficGenerator(configuration: traffic.configuration).generate(seed: seed)
                try FraudJSONLines.write(records.map(FraudJSONLines.line), to: output)
            }
        }

        public struct Eval: ParsableCommand {
            public init() {}
            public static let configuration = CommandConfiguration(
                abstract: "Run the fraud rules over traffic and print precision and recall per rule and overall, beside the baselines.")

            @Option(help: "The seed of the synthetic traffic (ignored with --events). The rules were tuned on seed 1.") var seed: UInt64 = 2
            @OptionGroup var traffic: TrafficOptions
            @Option(help: "Read the traffic from this JSONL file (labelled or not) instead of generating it.") var events: String?
            @Option(help: "Write the flagged users here as JSONL (default with --events: standard output).") var flags: String?
            @Option(help: "Milliseconds since the Unix epoch that t = 0 stands for (default: Monday 2026-01-05 00:00 UTC).")
            var startMs: Int64 = 1_767_571_200_000
            @Flag(help: "Also run the IsolationForest baseline (needs scripts/fraud/isolation-forest.sh install; fails without it).")
            var isolationForest = false
            @Option(help: "The pipelines folder (default: pipelines/ of the repository).") var pipelines: String?

            public func run() throws {
                let directory = pipelines.map { URL(fileURLWithPath: $0) } ?? DefinitionsLocation.root().appendingPathComponent("pipelines")
                let rules = try PipelineCatalog.loadFraudRules(directory: directory)
                let catalog = try PipelineCatalog.load(directory: directory).actions
                let records: [FraudTrafficRecord]
                let source: String
                if let events {
                    records = try FraudJSONLines.read(URL(fileURLWithPath: events))
                    source = events
                } else {
                    records = FraudTrafficGenerator(configuration: traffic.configuration).generate(seed: seed)
                    source = "synthetic traffic, seed \(seed)"
                }
                let evaluation = FraudEvaluation.run(records: records, rules: rules, actions: catalog, start: Timestamp(millisecondsSinceEpoch: startMs))
                // With --events and no --flags, the flagged users are the output and the report goes to stderr.
                let flagsToStandardOutput = events != nil && flags == nil
                var report = FraudReport(evaluation: evaluation, rules: rules, source: source)
                if isolationForest {
                    guard evaluation.isLabelled else { throw ValidationError("--isolation-forest needs labelled traffic") }
                    report.isolationForest = try IsolationForestBaseline.run(evaluation, seed: seed)
                }
                let text = report.text()
                if flagsToStandardOutput { FileHandle.standardError.write(Data(text.utf8)) } else { print(text, terminator: "") }
                if flagsToStandardOutput || flags != nil {
                    try FraudJSONLines.write(try FraudJSONLines.flaggedUsers(evaluation), to: flags)
                }
            }
        }
    }
}

/// The JSONL of `fraud eval --events` and `fraud generate`.
enum FraudJSONLines {
    /// One line as read: every field but `t`, `user` and `action` may be absent. A label is `label` (a string:
    /// `honest`, `bot`, `bot:<kind>`), or a boolean `bot` or `fraud`.
    struct Line: Codable {
        var t: Double
        var user: String
        var action: String
        var region: String?
        var guild: String?
        var replay: Bool?
        var label: String?
        var bot: Bool?
        var fraud: Bool?
    }

    static func line(_ record: FraudTrafficRecord) -> Line {
        Line(t: record.t, user: record.user, action: record.action, region: record.region, guild: record.guild,
             replay: record.replay ? true : nil, label: record.label)
    }

    /// - Throws: a `ValidationError` naming the first bad line.
    static func read(_ file: URL) throws -> [FraudTrafficRecord] {
        let text = try String(contentsOf: file, encoding: .utf8)
        let decoder = JSONDecoder()
        var records: [FraudTrafficRecord] = []
        for (index, line) in text.split(whereSeparator: \.isNewline).enumerated() where !line.allSatisfy(\.isWhitespace) {
            let parsed: Line
            do {
                parsed = try decoder.decode(Line.self, from: Data(line.utf8))
            } catch {
                throw ValidationError("\(file.lastPathComponent) line \(index + 1): expected {\"t\", \"user\", \"action\", …}: \(error)")
            }
            guard parsed.t.isFinite, parsed.t >= 0 else { throw ValidationError("\(file.lastPathComponent) line \(index + 1): t must be seconds ≥ 0") }
            let label = parsed.label ?? (parsed.bot ?? parsed.fraud).map { $0 ? "bot" : "honest" }
            records.append(FraudTrafficRecord(
                t: parsed.t, user: parsed.user, action: parsed.action, region: parsed.region, guild: parsed.guild,
                replay: parsed.replay ?? false, label: label))
        }
        return records
    }

    /// `{"user", "rules", "evidence"}` per flagged user: evidence by rule, `details` beside.
    struct FlaggedUser: Encodable {
        var user: String
        var rules: [String]
        var evidence: [String: [String: Double]]
        var details: [String: String]
        var label: String?
    }

    static func flaggedUsers(_ evaluation: FraudEvaluation) throws -> [FlaggedUser] {
        evaluation.users.filter { !$0.flags.isEmpty }.map { user in
            FlaggedUser(
                user: user.user, rules: user.flags.map(\.ruleID),
                evidence: Dictionary(user.flags.map { ($0.ruleID, $0.evidence) }, uniquingKeysWith: { first, _ in first }),
                details: Dictionary(user.flags.map { ($0.ruleID, $0.detail) }, uniquingKeysWith: { first, _ in first }), label: user.label)
        }
    }

    static func write(_ lines: [some Encodable], to path: String?) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var output = Data()
        for line in lines {
            output.append(try encoder.encode(line))
            output.append(0x0A)
        }
        if let path {
            try output.write(to: URL(fileURLWithPath: path))
        } else {
            FileHandle.standardOutput.write(output)
        }
    }
}

/// The IsolationForest (scikit-learn) over the same profile features the detector keeps, run by
/// `scripts/fraud/isolation-forest.sh`. Told the true share of bots (which favours it).
enum IsolationForestBaseline {
    static func run(_ evaluation: FraudEvaluation, seed: UInt64) throws -> FraudEvaluation.Score {
        struct Input: Encodable {
            struct User: Encodable {
                var user: String
                var features: [Double]
            }
            var featureNames: [String]
            var users: [User]
            var contamination: Double
            var seed: UInt64
        }
        struct Output: Decodable { var flagged: [String] }
        let input = Input(
            featureNames: evaluation.users.first?.profileFeatures.map(\.name) ?? [],
            users: evaluation.users.map { .init(user: $0.user, features: $0.profileFeatures.map(\.value)) },
            contamination: min(0.5, max(0.001, Double(evaluation.bots.count) / Double(max(1, evaluation.users.count)))), seed: seed)
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("scoreboard-fraud-features-\(ProcessInfo.processInfo.processIdentifier).json")
        try JSONEncoder().encode(input).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [DefinitionsLocation.root().appendingPathComponent("scripts/fraud/isolation-forest.sh").path, "run", file.path]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.standardError
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ValidationError("the IsolationForest baseline failed (exit \(process.terminationStatus)); install it with scripts/fraud/isolation-forest.sh install")
        }
        let flagged = try JSONDecoder().decode(Output.self, from: data).flagged
        return FraudEvaluation.Score(flagged: Set(flagged), bots: evaluation.bots)
    }
}

/// The evaluation's printed report.
struct FraudReport {
    var evaluation: FraudEvaluation
    var rules: FraudRuleSet
    var source: String
    var isolationForest: FraudEvaluation.Score?

    func text() -> String {
        var lines: [String] = []
        let users = evaluation.users
        let bots = evaluation.bots
        lines.append("traffic: \(source): \(users.count) users\(evaluation.isLabelled ? " (\(bots.count) bots)" : ""), \(evaluation.actions) actions, \(evaluation.replays) replayed tokens")
        func percent(_ value: Double) -> String { String(format: "%5.1f%%", value * 100) }
        // `%-40@` does not pad on Linux's Foundation: pad by hand.
        func pad(_ text: String, _ width: Int) -> String { text.count >= width ? text : text + String(repeating: " ", count: width - text.count) }
        func row(_ name: String, _ score: FraudEvaluation.Score) -> String {
            pad(name, 44) + String(format: "%7d %5d %5d   %@   %@", score.flagged, score.truePositives, score.falsePositives,
                                   percent(score.precision), percent(score.recall))
        }
        let header = pad("", 44) + "flagged    TP    FP   precision   recall"
        guard evaluation.isLabelled else {
            lines.append("unlabelled traffic: \(evaluation.flaggedUsers.count) users flagged")
            for rule in rules.rules where rule.outcome == .flag {
                lines.append("  " + pad(rule.id, 24) + " \(evaluation.flaggedUsers(byRule: rule.id).count) users")
            }
            return lines.joined(separator: "\n") + "\n"
        }
        lines.append("")
        lines.append("rule (user level)" + header.dropFirst("rule (user level)".count))
        for rule in rules.rules {
            if rule.outcome == .log {
                // Logged findings are no flags; their row says how often they would have been right.
                let logged = Set(users.filter { $0.logged.contains { $0.ruleID == rule.id } }.map(\.user))
                lines.append(row("\(rule.id) (logged only, not in overall)", FraudEvaluation.Score(flagged: logged, bots: bots)))
            } else {
                lines.append(row(rule.id, FraudEvaluation.Score(flagged: evaluation.flaggedUsers(byRule: rule.id), bots: bots)))
            }
        }
        lines.append(row("detector overall (any flag)", evaluation.detectorScore))

        lines.append("")
        lines.append("recall by kind of user (which rules caught them):")
        let kinds = Set(users.compactMap(\.label)).sorted()
        for kind in kinds {
            let members = users.filter { $0.label == kind }
            let caught = members.filter { !$0.flags.isEmpty }
            var byRule: [String: Int] = [:]
            for user in caught { for flag in user.flags { byRule[flag.ruleID, default: 0] += 1 } }
            let rulesText = byRule.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            lines.append("  " + pad(kind, 26) + String(format: " %4d users, %4d flagged  ", members.count, caught.count) + rulesText)
        }

        lines.append("")
        lines.append("side by side (user level; goal: recall ≥ 95% at precision ≥ 90%)")
        lines.append(header)
        lines.append(row("detector (pipelines/fraud.yaml)", evaluation.detectorScore))
        let baseline = evaluation.bestThresholdBaseline()
        lines.append(row("events/hour ≥ \(baseline.threshold) (best for this traffic)", baseline.score))
        if let isolationForest {
            lines.append(row("IsolationForest (told the bot share)", isolationForest))
        } else {
            lines.append(pad("IsolationForest", 44) + "not run (--isolation-forest)")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
