import ArgumentParser
import Foundation
import Logging
import ScoreboardCore
import ScoreboardKafka
import ScoreboardLoadgen
import ScoreboardPostgres

extension ScoreboardCommand.Bench {
    /// Scale-out on one machine: the same work with 1 and 2 workers in the group, and the same traffic and
    /// subscribers through 1 and 2 push gateways. On a small box the servers and the roles share the cores, so this
    /// shows where the ceiling is (docs/benchmarks.md says what a larger deployment changes).
    public struct Scale: AsyncParsableCommand {
        public init() {}
        public static let configuration = CommandConfiguration(
            abstract: "Workers and push gateways scaled out: 1 and 2 worker processes, 1 and 2 push gateways, on this machine.")

        @OptionGroup var options: HTTPBenchmarkOptions
        @Option(parsing: .upToNextOption, help: "Worker process counts to measure.") var workers: [Int] = [1, 2]
        @Option(parsing: .upToNextOption, help: "Push gateway counts to measure.") var pushGateways: [Int] = [1, 2]
        @Option(help: "Events produced for each worker measurement.") var events = 100_000
        @Option(help: "Members the events are spread over.") var users = 10_000
        @Option(help: "Events per second through the gateway while measuring the push gateways.") var rate: Double = 2_000
        @Option(help: "SSE subscribers, split evenly over the push gateways.") var subscribers = 1_000
        @Option(help: "Seconds of traffic per push measurement.") var seconds: Double = 15
        @Option(help: "Repetitions; medians are reported.") var repetitions = 2

        public func validate() throws {
            guard workers.allSatisfy({ $0 >= 1 }), pushGateways.allSatisfy({ $0 >= 1 }) else { throw ValidationError("counts start at 1") }
            guard events > 0, users > 0, subscribers >= 0, rate > 0, seconds > 0, repetitions >= 1 else {
                throw ValidationError("--events, --users, --rate, --seconds and --repetitions must be positive")
            }
        }

        public func run() async throws {
            let bench = try options.benchmark()
            for count in workers {
                var rates: [Double] = [], cpu: [Double] = []
                for repetition in 1...repetitions {
                    let measured = try await bench.withStack { processes, runID in
                        try await measureWorkers(count, processes: processes, runID: runID, settings: bench.connection)
                    }
                    rates.append(measured.rate)
                    cpu.append(measured.cpuPerThousand)
                    print(String(format: "%d worker(s), repetition %d: %.0f events/s, %.1f ms of worker CPU per 1,000 events", count, repetition, measured.rate, measured.cpuPerThousand))
                }
                try BenchLine(name: "\(count) worker(s)", values: rates, unit: "events/s").report(benchmark: "scale", to: options.record)
                try BenchLine(name: "\(count) worker(s) CPU per 1k events", values: cpu, unit: "ms").report(benchmark: "scale", to: options.record)
            }
            for count in pushGateways {
                var p50: [Double] = [], p99: [Double] = []
                for repetition in 1...repetitions {
                    let measured = try await bench.withStack { processes, runID in
                        try await measurePush(count, bench: bench, processes: processes, runID: runID)
                    }
                    p50.append(measured.p50)
                    p99.append(measured.p99)
                    print(String(format: "%d push gateway(s), repetition %d: 202 → update p50 %.1f ms, p99 %.1f ms to %d subscribers at %.0f events/s",
                                 count, repetition, measured.p50, measured.p99, subscribers, rate))
                }
                try BenchLine(name: "\(count) push gateway(s) 202 → update p50", values: p50, unit: "ms").report(benchmark: "scale", to: options.record)
                try BenchLine(name: "\(count) push gateway(s) 202 → update p99", values: p99, unit: "ms").report(benchmark: "scale", to: options.record)
            }
        }

        struct WorkerMeasurement: Sendable {
            var rate: Double
            var cpuPerThousand: Double
        }

        /// Produces `events` straight into the score-events topic, then starts `count` worker processes in one group
        /// and times the stored offsets from the first commit to the last event: the group's join is not the work.
        func measureWorkers(_ count: Int, processes: BenchProcesses, runID: String, settings connection: ConnectionSettings) async throws -> WorkerMeasurement {
            var settings = connection
            settings.topicNamespace = processes.environment["SCOREBOARD_TOPIC_NAMESPACE"] ?? ""
            settings.postgres.schema = processes.environment["SCOREBOARD_POSTGRES_SCHEMA"] ?? "bench"
            let logger = makeLogger("scoreboard.bench")
            try await BenchEvents.produce(events, users: users, topic: settings.topics.scoreEvents, kafka: settings.kafkaClient, logger: logger)
            let store = PostgresStore(configuration: settings.postgres, logger: logger)
            let events = self.events
            return try await store.withRunningClient { store in
                var started: [BenchProcesses.Started] = []
                for index in 1...count { started.append(try await processes.start("worker \(index)", ["worker"])) }
                let roles = Dictionary(uniqueKeysWithValues: started.map { ($0.name, $0.process.processIdentifier) })
                let before = BenchCPU.sample(roles)
                let total = Int64(events)
                var first: (ContinuousClock.Instant, Int64)?
                let deadline = ContinuousClock.now + .seconds(600)
                while ContinuousClock.now < deadline {
                    let rows = try await store.client.queryRows("SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets", logger: logger)
                    let done = try rows.first?.decode(Int64.self) ?? 0
                    if first == nil, done > 0 { first = (.now, done) }
                    if done >= total, let (start, atStart) = first {
                        let elapsed = (ContinuousClock.now - start).seconds
                        let after = BenchCPU.sample(roles)
                        let cpu = roles.keys.reduce(0) { $0 + after.seconds[$1, default: 0] - before.seconds[$1, default: 0] }
                        print("  " + before.cost(until: after, units: Double(total)).line(unit: "events"))
                        return WorkerMeasurement(rate: Double(total - atStart) / max(elapsed, 0.001), cpuPerThousand: cpu * 1000 / Double(total) * 1000)
                    }
                    try await Task.sleep(for: .milliseconds(20))
                }
                throw BenchError("\(count) worker(s) did not apply \(events) events within 600 s")
            }
        }

        struct PushMeasurement: Sendable {
            var p50: Double
            var p99: Double
        }

        /// One gateway and one worker; `count` push gateways. Players are drawn uniformly from a million, as in
        /// `bench latency`: a Zipf draw over a few thousand would make the catalog's per-player limits answer 429. One load generator per push gateway, each sending
        /// `rate / count` events/s with its share of the subscribers: together the same traffic and subscribers
        /// as with one push gateway. Reported: the median over the generators of their p50 and the worst p99.
        func measurePush(_ count: Int, bench: HTTPBenchmark, processes: BenchProcesses, runID: String) async throws -> PushMeasurement {
            let gateway = try await processes.start("gateway", HTTPBenchmark.gatewayArguments)
            _ = try await processes.start("worker", ["worker"])
            var pushes: [BenchProcesses.Started] = []
            for index in 1...count {
                pushes.append(try await processes.start("push \(index)", ["push", "--max-streams-per-address", "1000000"]))
            }
            let (share, rate, seconds) = (subscribers / count, self.rate, self.seconds)
            let reports = try await withThrowingTaskGroup(of: LoadReport.self) { group in
                for (index, push) in pushes.enumerated() {
                    group.addTask {
                        try await bench.load(
                            .batch, gateway: gateway.port, push: push.port, runID: "\(runID)p\(index)", rate: rate / Double(count), seconds: seconds,
                            connections: max(4, 16 / count), batchSize: 20, users: 1_000_000, zipf: 0, subscribers: share)
                    }
                }
                var reports: [LoadReport] = []
                for try await report in group { reports.append(report) }
                return reports
            }
            let p50s = reports.compactMap { $0.endToEnd?.p50 }
            let p99s = reports.compactMap { $0.endToEnd?.p99 }
            guard !p50s.isEmpty else { throw BenchError("no subscriber saw an update") }
            return PushMeasurement(p50: HTTPBenchmark.median(p50s), p99: p99s.max() ?? .nan)
        }
    }
}

/// The events the worker benchmarks produce straight into the score-events topic: `count` events of `users` members
/// over 3 regions and 5 guilds, stamped now (so each counts on every board), encoded as the gateway publishes them
/// (the score-event JSON lives in one place).
enum BenchEvents {
    static func produce(_ count: Int, users: Int, topic: String, kafka: KafkaClientConfiguration, logger: Logger) async throws {
        var configuration = KafkaProducerConfiguration(client: kafka)
        configuration.linger = .milliseconds(20)
        let producer = try KafkaProducer(configuration: configuration, logger: logger)
        let now = Timestamp.now()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await producer.run() }
            for chunk in stride(from: 0, to: count, by: 10_000) {
                let messages = try (chunk..<min(chunk + 10_000, count)).map { index in
                    let user = index % users
                    let event = ScoreEvent(
                        eventID: UUID().uuidString.lowercased(), userID: "user-\(user)", action: "complete-quest", points: 10, occurredAt: now,
                        region: "region-\(user % 3)", guild: "guild-\(user % 5)", idempotencyKey: UUID().uuidString.lowercased(), source: .gameServer)
                    return try KafkaScoreEvents.message(for: event, topic: topic)
                }
                for report in try await producer.send(batch: messages) { _ = try report.get() }
            }
            await producer.shutdown()
            group.cancelAll()
        }
    }
}
