import ArgumentParser
import Foundation
import Logging
import ScoreboardCore
import ScoreboardDefinitions
import ScoreboardKafka
import ScoreboardPostgres
import ScoreboardRedis

/// `scoreboard`: one executable, one subcommand per role or task.
public struct ScoreboardCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "scoreboard",
        abstract: "A real-time scoreboard platform fed by Kafka.",
        subcommands: [Dev.self, Gateway.self, Worker.self, Push.self, Rebuild.self, Token.self, Topics.self, Migrate.self, Doctor.self, Bench.self, Loadgen.self, Fraud.self, Analytics.self]
    )

    public init() {}
}

/// Logs go to stderr as `key=value` lines; `SCOREBOARD_LOG_LEVEL` (trace … critical) sets the level.
public func makeLogger(_ label: String) -> Logger {
    var logger = Logger(label: label)
    let level = ProcessInfo.processInfo.environment["SCOREBOARD_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:))
    logger.logLevel = level ?? .warning
    return logger
}

extension ScoreboardCommand {
    public struct Topics: AsyncParsableCommand {
        public init() {}
        public static let configuration = CommandConfiguration(abstract: "Manage the Kafka topics declared in topics/.", subcommands: [Apply.self])

        public struct Apply: AsyncParsableCommand {
            public init() {}
            public static let configuration = CommandConfiguration(
                abstract: "Create the declared topics that are missing and report drift (idempotent).")

            @OptionGroup var connection: ConnectionOptions

            @Option(help: "The folder of topic definitions (default: topics/ of the repository).")
            var topicsDirectory: String?

            @Flag(help: "Exit with status 3 when a topic differs from its definition.")
            var failOnDrift = false

            public func run() async throws {
                let settings = try connection.settings()
                let directory = topicsDirectory.map { URL(fileURLWithPath: $0) }
                    ?? DefinitionsLocation.root().appendingPathComponent("topics")
                let catalog = try TopicCatalog.load(directory: directory).namespaced(settings.topicNamespace)
                let admin = try KafkaAdminClient(configuration: settings.kafkaClient, logger: makeLogger("scoreboard.topics"))
                let outcomes = try await TopicsApplier(admin: admin).apply(catalog)
                var drifted = false
                for outcome in outcomes {
                    switch outcome.result {
                    case .created:
                        print("created    \(outcome.topic)")
                    case .upToDate:
                        print("up to date \(outcome.topic)\(outcome.configsChecked ? "" : " (partitions checked; the broker does not report configs)")")
                    case .drift(let differences):
                        drifted = true
                        print("DRIFT      \(outcome.topic)")
                        for difference in differences { print("           \(difference)") }
                    }
                }
                if drifted && failOnDrift { throw ExitCode(3) }
            }
        }
    }

    public struct Migrate: AsyncParsableCommand {
        public init() {}
        public static let configuration = CommandConfiguration(abstract: "Apply the PostgreSQL migrations that have not been applied yet.")

        @OptionGroup var connection: ConnectionOptions

        public func run() async throws {
            let settings = try connection.settings()
            let logger = makeLogger("scoreboard.migrate")
            let store = PostgresStore(configuration: settings.postgres, logger: logger)
            let report = try await store.withRunningClient { try await $0.migrate() }
            print("schema \(settings.postgres.schema): applied \(report.applied.count) migration(s)\(report.applied.isEmpty ? "" : " \(report.applied)"), \(report.alreadyApplied.count) already applied")
        }
    }

    public struct Doctor: AsyncParsableCommand {
        public init() {}
        public static let configuration = CommandConfiguration(
            abstract: "Check Kafka, Redis and PostgreSQL; exit non-zero naming any that is down.")

        @OptionGroup var connection: ConnectionOptions

        @Option(help: "Seconds to wait for each server.")
        var timeout: Int = 8

        public func run() async throws {
            let settings = try connection.settings()
            let checks = await ScoreboardCLI.Doctor(settings: settings, logger: makeLogger("scoreboard.doctor"), timeout: .seconds(timeout)).run()
            for check in checks {
                let status = check.isHealthy ? "ok  " : "DOWN"
                print("\(status) \(check.server.padding(toLength: 9, withPad: " ", startingAt: 0)) \(check.endpoint)  \(check.detail)")
            }
            let down = checks.filter { !$0.isHealthy }.map(\.server)
            if !down.isEmpty {
                FileHandle.standardError.write(Data("doctor: down: \(down.joined(separator: ", "))\n".utf8))
                throw ExitCode(1)
            }
        }
    }

    public struct Bench: AsyncParsableCommand {
        public init() {}
        public static let configuration = CommandConfiguration(abstract: "Benchmarks that compare against a baseline measured in the same run.", subcommands: [Kafka.self, Worker.self, Ingest.self, Latency.self, Queries.self, Fanout.self, Scale.self, BaselineServer.self])

        public struct Worker: AsyncParsableCommand {
            public init() {}
            public static let configuration = CommandConfiguration(
                abstract: "Worker throughput end to end, beside PostgreSQL and Redis write floors measured in the same run.")

            @OptionGroup var connection: ConnectionOptions
            @Option(help: "Score events per repetition.") var events = 100_000
            @Option(help: "Distinct members.") var users = 10_000
            @Option(help: "Repetitions; medians are reported.") var repetitions = 3
            @Option(help: "The Redis database to use; it is FLUSHED.") var redisDatabase = 8
            @Option(help: "The leaderboard-updates schema version the worker publishes (1: per member, 2: per board).")
            var updateSchemaVersion = WorkerBenchmark.Configuration().updateSchemaVersion
            @Option(help: "Append the results as JSON lines to this file (for scripts/bench-chart.py).") var record: String?
            @Flag(help: "Run the analytics stage too (analytics/metrics.yaml), as the worker role does.") var analytics = false

            public func run() async throws {
                var configuration = WorkerBenchmark.Configuration()
                if analytics { configuration.analytics = try AnalyticsCatalog.load(directory: DefinitionsLocation.root().appendingPathComponent("analytics")) }
                configuration.updateSchemaVersion = updateSchemaVersion
                configuration.events = events
                configuration.users = users
                configuration.repetitions = repetitions
                configuration.redisDatabase = redisDatabase
                let pipelines = try PipelineCatalog.load(directory: DefinitionsLocation.root().appendingPathComponent("pipelines"))
                print("Worker benchmark: \(events) events of \(users) members, \(pipelines.leaderboards.boards.count) boards, \(repetitions) repetitions")
                let result = try await WorkerBenchmark(
                    connection: try connection.settings(), pipelines: pipelines, configuration: configuration, logger: makeLogger("scoreboard.bench"),
                    progress: { print($0) }).run()
                let median = KafkaBenchmark.Measurement.median
                let worker = median(result.workerRates), postgres = median(result.postgresFloorRates), redis = median(result.redisFloorRates)
                print("")
                print(String(format: "worker (median)          %10.0f events/s", worker))
                print(String(format: "PostgreSQL floor         %10.0f event rows/s   worker / floor %.2f", postgres, worker / postgres))
                print(String(format: "Redis floor              %10.0f ZADD/s", redis))
                try BenchLine(name: "worker events/s", values: result.workerRates, unit: "events/s", baseline: result.postgresFloorRates)
                    .record(benchmark: "worker", to: record)
            }
        }

        public struct Kafka: AsyncParsableCommand {
            public init() {}
            public static let configuration = CommandConfiguration(
                abstract: "Producer and consumer throughput of ScoreboardKafka beside bare librdkafka loops.")

            @OptionGroup var connection: ConnectionOptions
            @Option(help: "Messages per run and side.") var messages = 200_000
            @Option(help: "Value size in bytes.") var valueSize = 200
            @Option(help: "Partitions of the benchmark topics.") var partitions: Int32 = 8
            @Option(help: "Repetitions; medians are reported.") var repetitions = 3

            public func run() async throws {
                var configuration = KafkaBenchmark.Configuration()
                configuration.messages = messages
                configuration.valueSize = valueSize
                configuration.partitions = partitions
                configuration.repetitions = repetitions
                print("Kafka benchmark: \(messages) messages of \(valueSize) bytes, \(partitions) partitions, \(repetitions) repetitions, librdkafka \(KafkaRuntime.version)")
                let benchmark = KafkaBenchmark(
                    connection: try connection.settings(), configuration: configuration, logger: makeLogger("scoreboard.bench"),
                    progress: { print($0) })
                let measurements = try await benchmark.run()
                print("")
                print("what      librdkafka (median)   ScoreboardKafka (median)   ratio   paired ratio   overhead")
                for measurement in measurements {
                    let overhead = (1 - measurement.pairedRatio) * 100
                    print(String(format: "%-9@ %12.0f msg/s   %15.0f msg/s   %6.2f   %12.2f   %7.1f%%",
                                 measurement.name as NSString, measurement.baselineMedian, measurement.wrapperMedian,
                                 measurement.ratio, measurement.pairedRatio, overhead))
                }
            }
        }
    }
}
